"""
nanoGPT's data folders, read as this project's: data/<name>/train.bin and val.bin (uint16 token ids) with a meta.pkl
for a character vocabulary (pickle.dump({'vocab_size', 'itos': {id: char}, 'stoi': {char: id}}), as nanoGPT's
data/shakespeare_char/prepare.py writes it), or without one, GPT-2 BPE.

meta.pkl is a pickle, and this project never runs one: read_meta_pkl checks every pickle instruction first and
accepts only those that build dicts, strings and ints. nanogpt.py (at the top) reads nanoGPT's checkpoints.
"""

import io
import os
import pickle
import pickletools
import sys

import numpy as np

from base import UserError
from data.tokenizer import CharTokenizer, GPT2Tokenizer

DATA_ROOT = os.path.dirname(os.path.abspath(__file__))  # this repo's data/


# ----------------------------------------------------------------------------------------------------
# meta.pkl

# The pickle opcodes of dicts, strings and ints, in every protocol (0-5). Nothing here looks up or calls a Python
# object: GLOBAL, STACK_GLOBAL, REDUCE, BUILD, INST, OBJ, NEWOBJ, EXT* and PERSID, which do, are all refused.
PLAIN_OPCODES = frozenset(
    "PROTO FRAME STOP MARK POP POP_MARK EMPTY_DICT DICT SETITEM SETITEMS INT BININT BININT1 BININT2 LONG LONG1 LONG4 "
    "UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8 MEMOIZE PUT BINPUT LONG_BINPUT GET BINGET LONG_BINGET".split()
)


class _NoObjects(pickle.Unpickler):
    """A second lock: PLAIN_OPCODES already keeps out every opcode that would get here."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not plain data")


def read_meta_pkl(path):
    """nanoGPT's meta.pkl as a dict, read without running anything: only dicts, strings and ints are accepted, checked
    opcode by opcode before the pickle is loaded. Anything else (the objects a pickle can build or call) is refused."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    try:
        for opcode, _, pos in pickletools.genops(data):
            if opcode.name not in PLAIN_OPCODES:
                raise UserError(
                    f"{path} holds more than plain dicts, strings and ints (pickle opcode {opcode.name} at byte {pos}, "
                    "which builds or calls Python objects), so it was not loaded; nanoGPT's meta.pkl is "
                    "{'vocab_size': int, 'itos': {int: str}, 'stoi': {str: int}}"
                )
        meta = _NoObjects(io.BytesIO(data)).load()
    except (ValueError, pickle.UnpicklingError, EOFError) as e:  # not a pickle, or cut short
        if isinstance(e, UserError):
            raise
        raise UserError(f"{path} is not a readable pickle ({e}); nanoGPT's data/<name>/prepare.py writes it") from None
    return check_meta(meta, path)


def check_meta(meta, path):
    """The meta dict, if it is nanoGPT's character vocabulary: itos ids 0..vocab_size-1, stoi its inverse."""
    ok = isinstance(meta, dict) and type(meta.get("vocab_size")) is int and isinstance(meta.get("itos"), dict)
    ok = ok and isinstance(meta.get("stoi"), dict)
    if ok:
        itos, stoi = meta["itos"], meta["stoi"]
        ok = sorted(itos, key=str) == sorted(range(len(itos)), key=str) and all(type(i) is int for i in itos)
        ok = ok and all(type(s) is str for s in itos.values()) and stoi == {s: i for i, s in itos.items()}
        ok = ok and meta["vocab_size"] == len(itos)
    if not ok:
        raise UserError(
            f"{path} is not nanoGPT's meta.pkl: it should be {{'vocab_size': N, 'itos': {{0..N-1: str}}, 'stoi': "
            "the inverse of itos}}, as its data/shakespeare_char/prepare.py writes"
        )
    return meta


def meta_tokenizer(meta):
    """nanoGPT's meta.pkl as our CharTokenizer: the same ids, encode per character, decode by joining."""
    return CharTokenizer([meta["itos"][i] for i in range(meta["vocab_size"])])


# ----------------------------------------------------------------------------------------------------
# Data folders


def data_meta(data_dir):
    """meta.json's content for a nanoGPT data folder (train.bin + val.bin, no meta.json): its meta.pkl's characters,
    or, without one, GPT-2 BPE. None when data_dir is not one: no .bin pair, or one of this repo's own data/<name>
    folders without meta.pkl (what an interrupted prepare.py leaves). Each .bin must be whole uint16 ids in the vocabulary."""
    bins = [os.path.join(data_dir, f"{split}.bin") for split in ("train", "val")]
    meta_pkl = os.path.join(data_dir, "meta.pkl")
    ours = os.path.isfile(os.path.join(data_dir, "prepare.py")) and os.path.dirname(os.path.abspath(data_dir)) == DATA_ROOT
    if not all(map(os.path.isfile, bins)) or (ours and not os.path.isfile(meta_pkl)):
        return None
    if os.path.isfile(meta_pkl):
        meta = meta_tokenizer(read_meta_pkl(meta_pkl)).meta()
        if meta["vocab_size"] > 2**16:
            raise UserError(f"{meta_pkl} has {meta['vocab_size']} tokens, more than nanoGPT's uint16 .bin files can hold")
    else:
        meta = GPT2Tokenizer().meta()
        print(f"{data_dir} has no meta.json or meta.pkl: read as nanoGPT's GPT-2 BPE tokens (uint16)", file=sys.stderr)
    for path in bins:
        check_bin(path, meta["vocab_size"])
    return {**meta, "dtype": "uint16", "source": f"nanoGPT data folder {data_dir}"}


def check_bin(path, vocab_size, chunks=16, chunk_tokens=1 << 20):
    """A nanoGPT .bin must be whole uint16 tokens, each < vocab_size. The ids are checked in full up to 16M tokens, and
    in 16 spread chunks of 1M beyond (OpenWebText's 9B-token train.bin in a second)."""
    size = os.path.getsize(path)
    if size == 0 or size % 2:
        raise UserError(f"{path} has {size} bytes, not a whole number of uint16 tokens: write it again with nanoGPT's prepare.py")
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    starts = [0] if len(tokens) <= chunks * chunk_tokens else np.linspace(0, len(tokens) - chunk_tokens, chunks).astype(int)
    for start in starts:
        chunk = np.asarray(tokens[start : start + (len(tokens) if len(starts) == 1 else chunk_tokens)])
        if len(chunk) >= 1024 and not chunk[1::2].any():
            raise UserError(
                f"{path} looks like ids wider than 16 bits (every second uint16 is 0): nanoGPT's .bin files are uint16, "
                "np.array(ids, dtype=np.uint16).tofile(path); write it again that way"
            )
        if chunk.max() >= vocab_size:
            raise UserError(
                f"{path} holds token id {int(chunk.max())}, outside the vocabulary of {vocab_size}: it does not belong to "
                "this meta.pkl (or is not uint16); prepare it again"
            )
