"""
What every data/<name>/prepare.py does, on one of two paths:

- a text that fits in memory (Tiny Shakespeare, your own .txt files): prepare_cli reads it, splits
  it 90/10, encodes it with the chosen tokenizer and writes train.bin / val.bin and meta.json;
- a corpus that does not (FineWeb): prepare_stream streams documents, tokenizes them with GPT-2's
  BPE in worker processes and writes fixed-size shards val_000.bin, ..., train_000.bin, ... as it
  goes.

Token files are flat arrays of ids, uint16 when the vocabulary fits, else uint32. meta.json says
everything train.py and sample.py need, so they never guess:
    {"tokenizer": "char" | "gpt2" | "bpe", "vocab_size": 65, "dtype": "uint16",
     "chars": [...] (char only),
     "tokenizer_file": "tokenizer.json", "tokenizer_sha256": "..." (bpe only),
     "eot": id or null, "source": "...", "train_tokens": N, "val_tokens": N, "val_bytes": N}
"""

import argparse
import collections
import contextlib
import glob
import hashlib
import itertools
import json
import multiprocessing
import os

import numpy as np

from gptkit.base import DATA_ROOT, UserError, atomic_path
from gptkit.tokenizer import GPT2Tokenizer, new_tokenizer

# Karpathy's char-rnn Tiny Shakespeare (public domain), shipped with the repo so that everything
# works offline
TINY_SHAKESPEARE = os.path.join(DATA_ROOT, "tinyshakespeare.txt")
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def read_text(path):
    """The text of a .txt file, or of every .txt file in a directory (sorted, joined by blank
    lines)."""
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, name) for name in os.listdir(path) if name.endswith(".txt")
        )
        if not files:
            raise UserError(f"{path} holds no .txt files")
    elif os.path.isfile(path):
        files = [path]
    else:
        raise UserError(f"input {path} does not exist")
    texts = []
    for file in files:
        with open(file, "rb") as f:
            raw = f.read()
        if b"\x00" in raw:
            raise UserError(f"{file} looks binary (it has NUL bytes); give a UTF-8 text file")
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise UserError(
                f"{file} is not UTF-8 text (byte {e.start}); give a UTF-8 text file"
            ) from None
    text = "\n\n".join(texts)
    if not text.strip():
        raise UserError(f"{path} is empty")
    return text


def tiny_shakespeare(input_path=None):
    """(text, source): --input if given, else the Tiny Shakespeare that ships with the repo
    (sha256-checked)."""
    if input_path:
        return read_text(input_path), input_path
    with open(TINY_SHAKESPEARE, "rb") as f:
        raw = f.read()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != TINY_SHAKESPEARE_SHA256:
        raise UserError(
            f"{TINY_SHAKESPEARE} has sha256 {digest[:12]}..., not Tiny Shakespeare's: "
            "restore it with git checkout"
        )
    return raw.decode("utf-8"), "Tiny Shakespeare"


def token_dtype(vocab_size):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def write_tokens(path, ids, vocab_size):
    """Write token ids to a flat binary file of the vocabulary's dtype."""
    ids = np.asarray(ids)
    assert ids.size == 0 or int(ids.max()) < vocab_size, (int(ids.max()), vocab_size)
    with atomic_path(path) as tmp:
        ids.astype(token_dtype(vocab_size)).tofile(tmp)


def write_meta(out_dir, meta):
    with atomic_path(os.path.join(out_dir, "meta.json")) as tmp, open(tmp, "w") as f:
        json.dump(meta, f, indent=1)


def start_output(out_dir):
    """Make out_dir and drop a previous preparation's meta.json and token files: no stale shard
    outlives a rerun."""
    os.makedirs(out_dir, exist_ok=True)
    for pattern in ("meta.json", "train*.bin", "val*.bin"):
        for path in glob.glob(os.path.join(out_dir, pattern)):
            os.remove(path)


def split_text(text, val_fraction=0.1):
    """(train, val): the first 90% of characters train, the rest val, as nanoGPT splits."""
    split = int(len(text) * (1 - val_fraction))
    return text[:split], text[split:]


def prepare(text, tokenizer, out_dir, source, val_fraction=0.1):
    """Split text, encode both parts, write train.bin, val.bin, tokenizer.json (bpe) and, last,
    meta.json."""
    return prepare_split(*split_text(text, val_fraction), tokenizer, out_dir, source)


def prepare_split(train_text, val_text, tokenizer, out_dir, source, **extra_meta):
    """prepare() for a corpus that comes already split; extra_meta goes into meta.json as is."""
    train_ids, val_ids = tokenizer.encode(train_text), tokenizer.encode(val_text)
    if len(val_ids) < 2:
        raise UserError(
            f"the text is too small to split ({len(train_text) + len(val_text)} characters)"
        )
    start_output(out_dir)
    write_tokens(os.path.join(out_dir, "train.bin"), train_ids, tokenizer.vocab_size)
    write_tokens(os.path.join(out_dir, "val.bin"), val_ids, tokenizer.vocab_size)
    meta = tokenizer.meta()
    if meta.get("tokenizer_file"):
        with atomic_path(os.path.join(out_dir, meta["tokenizer_file"])) as tmp:
            tokenizer.save(tmp)
    meta.update(
        dtype=np.dtype(token_dtype(tokenizer.vocab_size)).name,
        source=source,
        train_tokens=len(train_ids),
        val_tokens=len(val_ids),
        val_bytes=len(val_text.encode("utf-8")),
        **extra_meta,
    )
    write_meta(out_dir, meta)
    print(
        f"{source}: {len(train_text) + len(val_text):,} characters, "
        f"{tokenizer.kind} tokenizer with vocab {tokenizer.vocab_size:,}"
    )
    print(f"train has {len(train_ids):,} tokens, val has {len(val_ids):,} tokens -> {out_dir}")
    return meta


def add_refused_input(parser):
    """--input on a generated corpus's command line: listed, so every prepare script answers it, and
    refused by refuse_input."""
    parser.add_argument(
        "--input",
        help="not taken: this corpus is generated (a text of your own: data/my_text/prepare.py)",
    )


def refuse_input(args, why):
    """One error line for --input given to a generated corpus; why: what it generates, and why its
    guarantees need that."""
    if args.input is not None:
        raise UserError(
            f"{why}, so it reads no --input; "
            "prepare a text of your own with data/my_text/prepare.py --input=PATH"
        )


def prepare_cli(here, doc, tokenizer, input_required=False):
    """The command line of a text prepare script: Tiny Shakespeare or --input (input_required: no
    default), tokenized by --tokenizer."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    default = "" if input_required else " (default: Tiny Shakespeare)"
    parser.add_argument("--input", help=f"a .txt file or a directory of them{default}")
    parser.add_argument(
        "--out_dir", default=here, help="where the bins and meta.json go (default: here)"
    )
    parser.add_argument(
        "--tokenizer",
        default=tokenizer,
        choices=["char", "gpt2", "bpe"],
        help=f"default: {tokenizer}",
    )
    parser.add_argument(
        "--vocab_size",
        type=int,
        default=2048,
        help="bpe only: the vocabulary to train (default: 2048)",
    )
    args = parser.parse_args()
    if input_required and not args.input:
        raise UserError(f"give your text: python {os.path.relpath(here)}/prepare.py --input=PATH")
    text, source = tiny_shakespeare(args.input)
    train_text, _ = split_text(text)
    prepare(
        text, new_tokenizer(args.tokenizer, text, train_text, args.vocab_size), args.out_dir, source
    )


# --------------------------------------------------------------------------------------------------
# The streaming path: a corpus larger than memory


def stream_documents(input_path=None, dataset=None, name=None, text_field="text"):
    """
    The text of each document, streamed with `datasets`: from the Hugging Face dataset `dataset`
    (config `name`), or from local files (parquet, jsonl/json, or .txt whose blank-line-separated
    paragraphs are the documents) through the same streaming code path. Nothing is opened until the
    first document is asked for.
    """
    try:
        from datasets import load_dataset
    except ImportError:
        raise UserError(
            "streaming a corpus needs the datasets package: pip install datasets"
        ) from None
    if input_path:
        builder, files = local_dataset_files(input_path)
        extra = {"sample_by": "paragraph"} if builder == "text" else {}
        ds = load_dataset(builder, data_files=files, split="train", streaming=True, **extra)
    else:
        try:
            ds = load_dataset(dataset, name=name, split="train", streaming=True)
        except (OSError, ValueError) as e:
            # offline or unknown: ConnectionError, DatasetNotFoundError (OSErrors);
            # a bad name: ValueError
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UserError(
                f"cannot open the dataset {dataset} ({reason}); offline, pass --input=FILE.parquet"
            ) from None
    for row in ds:
        text = row.get(text_field)
        if not isinstance(text, str):
            raise UserError(
                f"documents need a text column {text_field!r}; "
                f"this one has {sorted(row)} (see --text_field)"
            )
        yield text


STREAM_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".txt": "text"}


def local_dataset_files(path):
    """(datasets builder, files) for a file or a directory of files of one format."""
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, f)
            for f in os.listdir(path)
            if os.path.splitext(f)[1] in STREAM_FORMATS
        )
    elif os.path.isfile(path):
        files = [path]
    else:
        raise UserError(f"input {path} does not exist")
    formats = {STREAM_FORMATS.get(os.path.splitext(f)[1]) for f in files}
    if not files or len(formats) != 1 or None in formats:
        raise UserError(f"{path}: give .parquet, .jsonl/.json or .txt files, all of one format")
    return formats.pop(), files


def encode_documents(texts):
    """In a worker: documents -> one uint16 array, each preceded by <|endoftext|> (GPT-2's
    separator)."""
    # tiktoken caches the encoding, so this is cheap after a worker's first chunk
    enc = GPT2Tokenizer()
    ids = []
    for text in texts:
        ids.append(enc.eot)
        ids.extend(enc.encode(text))
    return np.array(ids, dtype=np.uint16)


def encoded_chunks(documents, num_proc, chunk_docs=256):
    """
    Token arrays of successive chunks of documents, tokenized in order by num_proc worker processes.
    At most 2 * num_proc chunks are in flight: Pool.imap would read all its input ahead, holding the
    corpus in memory.
    """
    documents = iter(documents)
    # the pool starts before the first document is read: forking never copies a reader
    with multiprocessing.Pool(num_proc) as pool:
        pending = collections.deque()
        while chunk := list(itertools.islice(documents, chunk_docs)):
            pending.append(pool.apply_async(encode_documents, (chunk,)))
            if len(pending) >= 2 * num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class ShardWriter:
    """
    Tokens in, fixed-size shards out: the first val_tokens tokens fill val_000.bin, val_001.bin,
    ..., the rest train_000.bin, ...; each shard holds shard_tokens tokens (the last of a split
    fewer). Only one shard is ever in memory.
    """

    def __init__(self, out_dir, shard_tokens, val_tokens, tokenizer):
        self.out_dir, self.val_tokens, self.tokenizer = out_dir, val_tokens, tokenizer
        self.buffer = np.empty(shard_tokens, dtype=token_dtype(tokenizer.vocab_size))
        self.fill, self.split, self.index = 0, "val", 0
        self.counts = {"train": 0, "val": 0}
        self.val_bytes = 0

    def capacity(self):
        """Tokens the current shard takes: a full shard, or what is left of val."""
        if self.split == "val":
            return min(len(self.buffer), self.val_tokens - self.counts["val"] + self.fill)
        return len(self.buffer)

    def add(self, ids):
        while len(ids):
            n = min(self.capacity() - self.fill, len(ids))
            self.buffer[self.fill : self.fill + n] = ids[:n]
            self.fill, ids = self.fill + n, ids[n:]
            self.counts[self.split] += n
            if self.fill == self.capacity():
                self.flush()

    def flush(self):
        if not self.fill:
            return
        shard = self.buffer[: self.fill]
        write_tokens(
            os.path.join(self.out_dir, f"{self.split}_{self.index:03d}.bin"),
            shard,
            self.tokenizer.vocab_size,
        )
        if self.split == "val":
            # bits per byte needs the text's size: decode, without the separators
            text_ids = shard[shard != self.tokenizer.eot].tolist()
            self.val_bytes += len(self.tokenizer.enc.decode_bytes(text_ids))
        self.fill, self.index = 0, self.index + 1
        if self.split == "val" and self.counts["val"] == self.val_tokens:
            self.split, self.index = "train", 0


def prepare_stream(documents, out_dir, source, shard_tokens, val_tokens, max_tokens=0, num_proc=1):
    """Tokenize streamed documents with GPT-2's BPE into shards and meta.json; stop after max_tokens
    (0: all)."""
    from tqdm import tqdm

    if shard_tokens < 1 or val_tokens < 1 or max_tokens < 0 or num_proc < 1:
        raise UserError("shard_tokens, val_tokens and num_proc must be >= 1, max_tokens >= 0")
    tokenizer = GPT2Tokenizer()  # fails here, with its one-line hint, before any worker starts
    start_output(out_dir)
    writer = ShardWriter(out_dir, shard_tokens, val_tokens, tokenizer)
    total = 0
    bar = tqdm(
        total=max_tokens or None, unit="tok", unit_scale=True, desc="tokenizing", disable=None
    )
    # closing the chunks' generator stops the workers
    with bar, contextlib.closing(encoded_chunks(documents, num_proc)) as chunks:
        for ids in chunks:
            if max_tokens:
                ids = ids[: max_tokens - total]
            writer.add(ids)
            total += len(ids)
            bar.update(len(ids))
            if total == max_tokens:
                break
    writer.flush()
    if writer.counts["train"] == 0:
        raise UserError(
            f"{source} gave only {total:,} tokens, all for val; "
            f"give more text or lower --val_tokens={val_tokens}"
        )
    meta = {
        **tokenizer.meta(),
        "dtype": writer.buffer.dtype.name,
        "source": source,
        "shard_tokens": shard_tokens,
        "train_tokens": writer.counts["train"],
        "val_tokens": writer.counts["val"],
        "val_bytes": writer.val_bytes,
    }
    write_meta(out_dir, meta)
    print(
        f"{source}: {total:,} tokens, val {meta['val_tokens']:,} "
        f"and train {meta['train_tokens']:,} in shards of {shard_tokens:,}"
    )
    print(f"-> {out_dir}")
    return meta
