"""
One Tokenizer interface over three kinds: characters, GPT-2's BPE (tiktoken), and a byte-level BPE
trained on your corpus (Hugging Face `tokenizers`). Each has encode(str) -> list[int],
decode(list[int]) -> str, vocab_size, eot (end-of-text id or None) and meta() for meta.json.
new_tokenizer(kind, ...) makes one for a corpus; load_tokenizer(meta, directory) rebuilds the one a
dataset was prepared with.
"""

import hashlib
import os

from configurator import UserError


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
        return {"tokenizer": "char", "vocab_size": self.vocab_size, "chars": self.chars, "eot": None}


class GPT2Tokenizer:
    """GPT-2's byte-level BPE via tiktoken (50257 tokens, <|endoftext|> = 50256)."""

    kind = "gpt2"

    def __init__(self):
        import tiktoken

        try:
            self.enc = tiktoken.get_encoding("gpt2")
        except Exception as e:  # tiktoken raises requests/urllib/blobfile errors when offline
            names = ", ".join(f"{name} as {cache_name}" for name, cache_name in gpt2_cache_names().items())
            raise UserError(
                f"cannot load tiktoken's GPT-2 files ({type(e).__name__}). Offline: copy them into a directory under "
                f"tiktoken's cache names ({names}: the sha1 of their URLs) and set TIKTOKEN_CACHE_DIR to that directory"
            ) from None
        self.vocab_size = self.enc.n_vocab
        self.eot = self.enc.eot_token

    def encode(self, text):
        return self.enc.encode_ordinary(text)

    def decode(self, ids):
        return self.enc.decode(list(ids))

    def meta(self):
        return {"tokenizer": "gpt2", "vocab_size": self.vocab_size, "eot": self.eot}


GPT2_FILE_URLS = {
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
}


def gpt2_cache_names():
    """{file: name in tiktoken's cache}: the sha1 of the file's download URL, as tiktoken/load.py names it."""
    return {name: hashlib.sha1(url.encode()).hexdigest() for name, url in GPT2_FILE_URLS.items()}


def gpt2_cache_dir(files_dir, cache_dir):
    """Lay out encoder.json and vocab.bpe from files_dir as tiktoken's cache in cache_dir; point TIKTOKEN_CACHE_DIR here."""
    import shutil

    os.makedirs(cache_dir, exist_ok=True)
    for name, cache_name in gpt2_cache_names().items():
        source = os.path.join(files_dir, name)
        if not os.path.isfile(source):
            raise UserError(f"{files_dir} has no {name}")
        shutil.copyfile(source, os.path.join(cache_dir, cache_name))
    return cache_dir


class BPETokenizer:
    """A byte-level BPE trained on the corpus with Hugging Face `tokenizers`, saved as tokenizer.json."""

    kind = "bpe"
    EOT = "<|endoftext|>"

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.tok.encode_special_tokens = True  # "<|endoftext|>" in a text is text, as in tiktoken's encode_ordinary
        self.vocab_size = tokenizer.get_vocab_size()
        self.eot = tokenizer.token_to_id(self.EOT)

    @classmethod
    def train(cls, text, vocab_size):
        if vocab_size < 257:
            raise UserError(f"vocab_size={vocab_size} is too small for a byte-level BPE: at least 257 (256 bytes + {cls.EOT})")
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
        # the hash tells two BPEs of the same size apart (trained on different text), so a checkpoint is
        # never resumed or sampled with the wrong one
        digest = hashlib.sha256(self.tok.to_str().encode()).hexdigest()
        return {"tokenizer": "bpe", "vocab_size": self.vocab_size, "tokenizer_file": "tokenizer.json", "eot": self.eot,
                "tokenizer_sha256": digest}  # fmt: skip


def new_tokenizer(kind, text, train_text, vocab_size=2048):
    """A tokenizer for a corpus: char (its alphabet), gpt2, or a BPE of vocab_size trained on train_text."""
    if kind == "char":
        return CharTokenizer.from_text(text)  # the whole text: val may hold a character train lacks
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "bpe":
        return BPETokenizer.train(train_text, vocab_size)  # never sees val, so val loss stays honest
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
            raise UserError(f"{path} is missing: meta.json names a trained BPE tokenizer stored there")
        return BPETokenizer.load(path)
    raise UserError(f"meta.json in {directory} names an unknown tokenizer {kind!r} (char, gpt2 or bpe)")
