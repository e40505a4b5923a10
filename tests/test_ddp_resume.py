"""DDP resume: 2 gloo ranks under torchrun, killed (kill -9, both ranks and torchrun) and resumed
under torchrun with only --init_from=resume --out_dir, match the uninterrupted 2-rank run bit for
bit. Dropout is 0, so no rank's RNG matters; the batches are a function of (seed, step, micro-step)
and gloo's all-reduce is deterministic."""

import os
import signal

import torch
from conftest import ONE_THREAD, read_jsonl, run_script, start_until, torchrun_ranks, train_args
from test_ddp import ARGS, TORCHRUN

# keep_last: ckpt_000004.pt appears once the iter-4 checkpoint is complete
DDP = [*ARGS, "--keep_last=10"]
COMPARED = ("iter", "train_loss", "val_loss", "lr", "tokens")


def metrics(out):
    return [{k: m[k] for k in COMPARED} for m in read_jsonl(out / "metrics.jsonl")]


def test_ddp_ranks_killed_and_resumed_match_the_uninterrupted_run_bit_for_bit(char_data, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_script(*TORCHRUN, *train_args(char_data, whole, *DDP), env=ONE_THREAD)
    proc = start_until(killed / "ckpt_000004.pt", *TORCHRUN, *train_args(char_data, killed, *DDP))
    ranks = torchrun_ranks(proc)
    for pid in [*ranks, proc.pid]:  # like a lost node: nothing more is saved
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert len(ranks) == 2 and proc.returncode == -signal.SIGKILL
    checkpoint_iter = torch.load(killed / "ckpt.pt", weights_only=True)["iter_num"]
    assert 4 <= checkpoint_iter < 12, f"the kill came too late (checkpoint at {checkpoint_iter})"

    resumed = run_script(
        *TORCHRUN, "train.py", "--init_from=resume", f"--out_dir={killed}", env=ONE_THREAD
    )
    assert "2 rank(s)" in resumed.stdout and resumed.stdout.count("model: ") == 1
    assert metrics(killed) == metrics(whole)  # == on floats
    assert [m["iter"] for m in metrics(killed)] == [0, 4, 8, 12]
