"""
Batches of random windows from a prepared dataset directory (train.bin/val.bin, or shards
train_000.bin, train_001.bin, ...), or a nanoGPT data folder (gptkit/nanogpt.py), read through
np.memmap so the corpus never has to fit in memory.

A batch is a pure function of (seed, split, step, micro_step): no hidden state. A resumed run
therefore draws exactly the batches the uninterrupted run would have, and evaluation uses the same
fixed batches every time.
"""

import glob
import json
import os

import numpy as np
import torch

from gptkit.base import DATA_ROOT, UserError
from gptkit.nanogpt import data_meta

SPLIT_IDS = {"train": 0, "val": 1}


def prepare_hint(data_dir):
    """What to run to prepare data_dir: its own prepare.py, or any of them with --out_dir."""
    name = os.path.basename(os.path.normpath(data_dir))
    if os.path.isfile(os.path.join(DATA_ROOT, name, "prepare.py")):
        return f"run python data/{name}/prepare.py first"
    scripts = ", ".join(
        sorted(
            os.path.basename(os.path.dirname(p))
            for p in glob.glob(os.path.join(DATA_ROOT, "*", "prepare.py"))
        )
    )
    return (
        f"prepare it first with python data/<name>/prepare.py --out_dir={data_dir} "
        f"(<name>: {scripts})"
    )


def data_dir_for(dataset):
    """A dataset's directory: a path to a prepared directory, or the name of one under data/."""
    if os.path.isdir(dataset):
        return dataset
    return os.path.join(DATA_ROOT, dataset)


def load_meta(data_dir):
    path = os.path.join(data_dir, "meta.json")
    if not os.path.isfile(path):
        meta = data_meta(data_dir)  # a nanoGPT data folder: train.bin, val.bin (+ meta.pkl)
        if meta is None:
            raise UserError(f"{data_dir} is not prepared (no meta.json): {prepare_hint(data_dir)}")
        return meta
    with open(path) as f:
        return json.load(f)


def split_files(data_dir, split):
    """The token files of a split: split.bin, or its shards split_000.bin, split_001.bin, ..."""
    single = os.path.join(data_dir, f"{split}.bin")
    files = (
        [single]
        if os.path.isfile(single)
        else sorted(glob.glob(os.path.join(data_dir, f"{split}_[0-9]*.bin")))
    )
    if not files:
        raise UserError(
            f"{data_dir} has no {split}.bin or {split}_000.bin: {prepare_hint(data_dir)}"
        )
    return files


def open_tokens(path, dtype):
    """A token file as a read-only memmap; a file cut short (not whole tokens) is named, with the
    fix."""
    size = os.path.getsize(path)
    if size % dtype.itemsize or size == 0:
        raise UserError(
            f"{path} is truncated or empty "
            f"({size} bytes, not a whole number of {dtype.name} tokens): "
            f"prepare the dataset again ({prepare_hint(os.path.dirname(path))})"
        )
    return np.memmap(path, dtype=dtype, mode="r")


class BatchLoader:
    def __init__(self, data_dir, block_size, batch_size, device="cpu", seed=1337):
        self.meta = load_meta(data_dir)
        self.block_size, self.batch_size, self.seed = block_size, batch_size, seed
        self.device = torch.device(device)
        dtype = np.dtype(self.meta.get("dtype", "uint16"))
        self.shards = {}
        for split in SPLIT_IDS:
            shards = [open_tokens(f, dtype) for f in split_files(data_dir, split)]
            longest = max(len(s) for s in shards)
            if longest <= block_size:
                raise UserError(
                    f"block_size={block_size} is too large for the {split} split of {data_dir} "
                    f"(its longest file has {longest} tokens); lower block_size"
                )
            self.shards[split] = [s for s in shards if len(s) > block_size]
        # window starts per shard; a global start index picks a shard by these cumulative counts
        self.starts = {
            split: np.cumsum([len(s) - block_size for s in shards])
            for split, shards in self.shards.items()
        }

    def num_tokens(self, split):
        return sum(len(s) for s in self.shards[split])

    def get_batch(self, split, step, micro_step=0):
        """(x, y), each (batch_size, block_size) int64, y shifted by one; a pure function of its
        arguments."""
        return self._random_batch(split, [self.seed, SPLIT_IDS[split], 0, step, micro_step])

    def eval_batches(self, split, n):
        """n fixed batches: the same at every evaluation and in every run with the same seed."""
        return [self._random_batch(split, [self.seed, SPLIT_IDS[split], 1, i]) for i in range(n)]

    def _random_batch(self, split, seed_words):
        # a counter-based stream: no state to save or restore
        rng = np.random.default_rng(seed_words)
        starts = rng.integers(0, self.starts[split][-1], size=self.batch_size)
        shard_of = np.searchsorted(self.starts[split], starts, side="right")
        offsets = starts - np.concatenate([[0], self.starts[split]])[shard_of]
        windows = [
            self.shards[split][s][o : o + self.block_size + 1]
            for s, o in zip(shard_of, offsets, strict=True)
        ]
        windows = np.stack(windows).astype(np.int64)  # (B, block_size + 1)
        return self._to_device(torch.from_numpy(windows))

    def full_split_batches(self, split):
        """Every token of the split once: non-overlapping windows, in batches (the last ones
        shorter)."""
        for shard in self.shards[split]:
            starts = np.arange(0, len(shard) - 1, self.block_size)
            for i in range(0, len(starts), self.batch_size):
                chunk = starts[i : i + self.batch_size]
                length = min(self.block_size, len(shard) - 1 - int(chunk[-1]))
                if length < self.block_size:  # the final partial window goes alone
                    full = chunk[:-1]
                    if len(full):
                        yield self._windows(shard, full, self.block_size)
                    yield self._windows(shard, chunk[-1:], length)
                else:
                    yield self._windows(shard, chunk, self.block_size)

    def _windows(self, shard, starts, length):
        windows = np.stack([shard[o : o + length + 1] for o in starts]).astype(np.int64)
        return self._to_device(torch.from_numpy(windows))

    def _to_device(self, windows):
        x, y = windows[:, :-1], windows[:, 1:]
        if self.device.type == "cuda":
            # pinned memory lets the copy run asynchronously with the GPU's work
            x = x.pin_memory().to(self.device, non_blocking=True)
            y = y.pin_memory().to(self.device, non_blocking=True)
            return x, y
        return x.contiguous().to(self.device), y.contiguous().to(self.device)
