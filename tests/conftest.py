"""Shared fixtures: a prepared Tiny Shakespeare (from ../shared, never the network) and a tiny trained run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHAKESPEARE = SHARED / "data" / "tinyshakespeare.txt"
GPT2_FILES = SHARED / "tokenizers" / "gpt2"

# a model small enough to train 50 iterations in seconds
TINY = [
    "--n_layer=2",
    "--n_head=2",
    "--n_embd=32",
    "--block_size=32",
    "--batch_size=8",
    "--gradient_accumulation_steps=1",
    "--dropout=0.0",
    "--device=cpu",
]


def run_script(*args, env=None, check=True, timeout=300):
    """Run a repo script as a user would, in a subprocess; returns CompletedProcess with text output."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    result = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def train_args(data_dir, out_dir, *extra):
    return ["train.py", f"--dataset={data_dir}", f"--out_dir={out_dir}", *TINY, "--progress=False", *extra]


@pytest.fixture(scope="session")
def char_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("shakespeare_char")
    run_script("data/shakespeare_char/prepare.py", f"--input={SHAKESPEARE}", f"--out_dir={out}")
    return out


@pytest.fixture(scope="session")
def tiny_run(char_data, tmp_path_factory):
    """A 60-iteration run on Tiny Shakespeare characters: its out_dir."""
    out = tmp_path_factory.mktemp("tiny_run")
    args = ["--max_iters=60", "--eval_interval=30", "--eval_iters=5", "--log_interval=10", "--learning_rate=3e-3",
            "--warmup_iters=5", "--lr_decay_iters=60", "--dtype=float32"]  # fmt: skip
    run_script(*train_args(char_data, out, *args))
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny in-process models on one thread: on a busy 2-core machine two OpenMP threads
    spin-wait for each other and make tiny forward passes ~100x slower (measured: 13 s vs 0.07 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiktoken_cache(tmp_path_factory):
    """GPT-2's tokenizer files from ../shared laid out as tiktoken's offline cache: set TIKTOKEN_CACHE_DIR to it."""
    from data.tokenizer import gpt2_cache_dir

    return gpt2_cache_dir(GPT2_FILES, tmp_path_factory.mktemp("tiktoken_cache"))
