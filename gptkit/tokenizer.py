"""
One Tokenizer interface over three kinds: characters, GPT-2's BPE (tiktoken), and a byte-level BPE
trained on your corpus (Hugging Face `tokenizers`). Each has encode(str) -> list[int],
decode(list[int]) -> str, vocab_size, eot (end-of-text id or None) and meta() for meta.json.
new_tokenizer(kind, ...) makes one for a corpus; load_tokenizer(meta, directory) rebuilds the one a
dataset was prepared with.
"""

import functools
import hashlib
import os

from gptkit.base import DATA_ROOT, UserError


class CharTokenizer:
    """One token per character of the corpus' alphabet."""

    kind = "char"

    def __init__(self, chars):
        self.chars = list(chars)
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}
        self.vocab_size = len(self.chars)
        self.eot = None

    @classmethod
    def from_text(cls, text):
        return cls(sorted(set(text)))

    def encode(self, text):
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            raise UserError(f"characters not in this model's vocabulary: {''.join(unknown)!r}")
        return [self.stoi[ch] for ch in text]

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)

    def meta(self):
        return {
            "tokenizer": "char",
            "vocab_size": self.vocab_size,
            "chars": self.chars,
            "eot": None,
        }


class GPT2Tokenizer:
    """GPT-2's byte-level BPE via tiktoken (50257 tokens, <|endoftext|> = 50256), from the files in
    data/gpt2_tokenizer/."""

    kind = "gpt2"

    def __init__(self):
        self.enc = gpt2_encoding()
        self.vocab_size = self.enc.n_vocab
        self.eot = self.enc.eot_token

    def encode(self, text):
        return self.enc.encode_ordinary(text)

    def decode(self, ids):
        return self.enc.decode(list(ids))

    def meta(self):
        return {"tokenizer": "gpt2", "vocab_size": self.vocab_size, "eot": self.eot}


GPT2_DIR = os.path.join(DATA_ROOT, "gpt2_tokenizer")
# OpenAI's GPT-2 BPE files (MIT), shipped with the repo; these are the sha256 tiktoken checks
# after a download
GPT2_SHA256 = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


@functools.cache
def gpt2_encoding(directory=GPT2_DIR):
    """
    tiktoken's "gpt2" encoding built from local encoder.json + vocab.bpe: the same ranks, pattern
    and special token as tiktoken.get_encoding("gpt2"), with no download and no TIKTOKEN_CACHE_DIR
    to set up.
    """
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

    paths = {name: os.path.join(directory, name) for name in GPT2_SHA256}
    for name, path in paths.items():
        if not os.path.isfile(path):
            raise UserError(
                f"{path} is missing: GPT-2's tokenizer files ship with the repo "
                f"(git checkout {GPT2_DIR})"
            )
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != GPT2_SHA256[name]:
            raise UserError(
                f"{path} has sha256 {digest[:12]}..., not GPT-2's {GPT2_SHA256[name][:12]}...: "
                "restore the original file"
            )
    # the hashes again: tiktoken may serve a path from its cache, and must then check that copy too
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=paths["vocab.bpe"],
        encoder_json_file=paths["encoder.json"],
        vocab_bpe_hash=GPT2_SHA256["vocab.bpe"],
        encoder_json_hash=GPT2_SHA256["encoder.json"],
    )
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=50257,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: 50256},
    )


class BPETokenizer:
    """A byte-level BPE trained on the corpus with Hugging Face `tokenizers`, saved as
    tokenizer.json."""

    kind = "bpe"
    EOT = "<|endoftext|>"

    def __init__(self, tokenizer):
        self.tok = tokenizer
        # "<|endoftext|>" in a text is text, as in tiktoken's encode_ordinary
        self.tok.encode_special_tokens = True
        self.vocab_size = tokenizer.get_vocab_size()
        self.eot = tokenizer.token_to_id(self.EOT)

    @classmethod
    def train(cls, text, vocab_size):
        if vocab_size < 257:
            raise UserError(
                f"vocab_size={vocab_size} is too small for a byte-level BPE: "
                f"at least 257 (256 bytes + {cls.EOT})"
            )
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[cls.EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any text encodes
            show_progress=False,
        )
        tok.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path):
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(path))

    def save(self, path):
        self.tok.save(path)

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def meta(self):
        # the hash tells two BPEs of the same size apart (trained on different text), so a
        # checkpoint is never resumed or sampled with the wrong one
        digest = hashlib.sha256(self.tok.to_str().encode()).hexdigest()
        return {
            "tokenizer": "bpe",
            "vocab_size": self.vocab_size,
            "tokenizer_file": "tokenizer.json",
            "eot": self.eot,
            "tokenizer_sha256": digest,
        }


def new_tokenizer(kind, text, train_text, vocab_size=2048):
    """A tokenizer for a corpus: char (its alphabet), gpt2, or a BPE of vocab_size trained on
    train_text."""
    if kind == "char":
        return CharTokenizer.from_text(text)  # the whole text: val may hold a character train lacks
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "bpe":
        # never sees val, so val loss stays honest
        return BPETokenizer.train(train_text, vocab_size)
    raise UserError(f"unknown tokenizer {kind!r}: char, gpt2 or bpe")


def load_tokenizer(meta, directory):
    """The tokenizer described by a meta.json dict; directory holds its tokenizer.json if any."""
    kind = meta.get("tokenizer")
    if kind == "char":
        return CharTokenizer(meta["chars"])
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "bpe":
        path = os.path.join(directory, meta.get("tokenizer_file", "tokenizer.json"))
        if not os.path.isfile(path):
            raise UserError(
                f"{path} is missing: meta.json names a trained BPE tokenizer stored there"
            )
        return BPETokenizer.load(path)
    raise UserError(
        f"meta.json in {directory} names an unknown tokenizer {kind!r} (char, gpt2 or bpe)"
    )
