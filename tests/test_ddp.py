"""DDP for real: torchrun with 2 gloo processes on the CPU against 1 process with twice the gradient
accumulation."""

import os
import re
import signal

import torch
from conftest import (
    ONE_THREAD,
    read_jsonl,
    run_script,
    start_until,
    torchrun_ranks,
    train,
    train_args,
)

ARGS = [
    "--dtype=float32",
    "--max_iters=12",
    "--eval_interval=4",
    "--eval_iters=3",
    "--log_interval=1",
    "--learning_rate=3e-3",
    "--warmup_iters=2",
    "--lr_decay_iters=12",
    "--gradient_accumulation_steps=4",
]
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def grad_norms(stdout):
    return [float(g) for g in re.findall(r"grad norm (\d+\.\d+)", stdout)]


def test_two_ranks_match_one_process_with_twice_the_accumulation(char_data, tmp_path):
    single = train(char_data, tmp_path / "single", *ARGS)
    # 4 micro-batches per step in total: 2 on each of 2 ranks, or 4 in one process
    ddp = run_script(*TORCHRUN, *train_args(char_data, tmp_path / "ddp", *ARGS), env=ONE_THREAD)

    expected = read_jsonl(tmp_path / "single" / "metrics.jsonl")
    got = read_jsonl(tmp_path / "ddp" / "metrics.jsonl")
    assert [m["iter"] for m in got] == [0, 4, 8, 12]
    for a, b in zip(expected, got, strict=True):
        assert abs(a["val_loss"] - b["val_loss"]) < 1e-5
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-5
        assert a["tokens"] == b["tokens"]
    # the gradient itself (its norm is scale-sensitive, unlike Adam's update): averaged over
    # ranks as over micro-steps
    assert len(grad_norms(ddp.stdout)) == 12
    for a, b in zip(grad_norms(single.stdout), grad_norms(ddp.stdout), strict=True):
        assert abs(a - b) <= 2e-4
    # only rank 0 logs (and writes): each line once, and "2 rank(s)"
    assert ddp.stdout.count("model: ") == 1 and "2 rank(s)" in ddp.stdout
    assert [int(i) for i in re.findall(r"^step (\d+):", ddp.stdout, re.M)] == [0, 4, 8, 12]


def test_sigterm_to_one_rank_stops_both_after_a_checkpoint(char_data, tmp_path):
    out = tmp_path / "ddp"
    args = [
        *train_args(char_data, out, *ARGS),
        "--max_iters=1000",
        "--lr_decay_iters=1000",
        "--keep_last=10",
    ]
    proc = start_until(out / "ckpt_000004.pt", *TORCHRUN, *args)
    ranks = torchrun_ranks(proc)
    environ = {pid: open(f"/proc/{pid}/environ", "rb").read().split(b"\0") for pid in ranks}
    rank1 = next(pid for pid in ranks if b"RANK=1" in environ[pid])
    # rank 1 alone: rank 0 learns of it at the next step and stops with it
    os.kill(rank1, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    stopped = re.search(r"stopped by signal at iter (\d+); checkpoint saved", stdout)
    assert stopped and 4 <= int(stopped[1]) < 1000, (stdout, stderr)
    assert torch.load(out / "ckpt.pt", weights_only=True)["iter_num"] == int(stopped[1])
    # both ranks left through 128 + SIGTERM
    assert "exitcode  : 143" in stderr and "terminate called" not in stderr
