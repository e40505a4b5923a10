"""out_dir belongs to one run at a time: the overwrite refusal, the lock (real processes), the
resume check."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import torch
from conftest import ONE_THREAD, ROOT, read_jsonl, run_script, train, train_args

ARGS = [
    "--eval_interval=10",
    "--eval_iters=2",
    "--log_interval=1000",
    "--learning_rate=3e-3",
    "--warmup_iters=5",
]
FOREVER = "--max_iters=1000000"  # a run that trains until it is stopped


def start(char_data, out, *extra):
    args = train_args(char_data, out, "--dtype=float32", *ARGS, *extra)
    env = {**os.environ, **ONE_THREAD}
    return subprocess.Popen(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(condition, procs, what):
    deadline = time.monotonic() + 120
    while not condition():
        for proc in procs:
            assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {what} after 120 s"
        time.sleep(0.01)


def run_files(out):
    """{name: bytes} of what a run leaves in out_dir, but the lock file (whose pid is the last
    holder's)."""
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}


def copy_run(tiny_run, out):
    shutil.copytree(tiny_run, out, ignore=shutil.ignore_patterns(".lock"))
    return out


def assert_one_error_line(result, expected):
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {expected}"], result.stderr


def test_a_new_run_never_replaces_a_checkpoint_unless_told_to(char_data, tiny_run, tmp_path):
    out = copy_run(tiny_run, tmp_path / "out")
    shutil.copy(out / "ckpt.pt", out / "ckpt_000060.pt")  # as keep_last leaves them
    before = run_files(out)
    best = torch.load(out / "ckpt.pt", weights_only=True)["best_val_loss"]
    (tmp_path / "hf").mkdir()  # a Hugging Face directory to start from: refused before it is read
    for init_from in ("scratch", tmp_path / "hf"):
        result = train(
            char_data, out, *ARGS, "--max_iters=4", f"--init_from={init_from}", check=False
        )
        assert_one_error_line(
            result,
            f"{out} already holds a checkpoint (iter 60, best val loss {best:.4f}): "
            "continue it with --init_from=resume, "
            "start elsewhere with another --out_dir, or replace it with --overwrite=True",
        )
        assert run_files(out) == before  # byte for byte, nothing added

    train(char_data, out, *ARGS, "--max_iters=4", "--eval_interval=2", "--overwrite=True")
    assert torch.load(out / "ckpt.pt", weights_only=True)["iter_num"] == 4
    # the old run's rows are gone
    assert [m["iter"] for m in read_jsonl(out / "metrics.jsonl")] == [0, 2, 4]
    assert not (out / "ckpt_000060.pt").exists()  # the old run's numbered checkpoints too


def test_two_runs_started_at_once_one_trains_the_other_stops_at_the_lock(char_data, tmp_path):
    procs = [start(char_data, tmp_path, FOREVER, f"--seed={seed}") for seed in (1, 2)]
    try:
        # the loser stops at the lock while starting; the winner trains until told to stop
        wait_until(lambda: any(p.poll() is not None for p in procs), [], "exit")
        (loser,) = [p for p in procs if p.poll() is not None]
        (winner,) = [p for p in procs if p is not loser]
        _, loser_err = loser.communicate()
        wait_until(lambda: (tmp_path / "ckpt.pt").exists(), [winner], "checkpoint")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # saves a checkpoint and exits
    winner_out, _ = winner.communicate(timeout=120)

    assert loser.returncode == 2, loser_err
    assert loser_err.strip().splitlines() == [
        f"error: out_dir {tmp_path} is in use by another training run (pid {winner.pid}); "
        "wait for it to end, or choose another --out_dir"
    ]
    assert winner.returncode == 128 + signal.SIGTERM, winner_out
    # everything in out_dir is the winner's: its seed in config.json and the checkpoint, one row
    # per evaluation
    winner_seed = json.loads((tmp_path / "config.json").read_text())["seed"]
    assert winner_seed == 1 + procs.index(winner)
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert checkpoint["config"]["seed"] == winner_seed
    assert f"stopped by signal at iter {checkpoint['iter_num']}" in winner_out
    iters = [m["iter"] for m in read_jsonl(tmp_path / "metrics.jsonl")]
    assert iters == list(range(0, iters[-1] + 1, 10)) and iters[-1] >= 10


def test_readers_need_no_lock_and_kill_9_leaves_no_stale_lock(char_data, tmp_path):
    holder = start(char_data, tmp_path, FOREVER)
    try:
        wait_until(lambda: (tmp_path / "ckpt.pt").exists(), [holder], "checkpoint")
        assert (tmp_path / ".lock").read_text().strip() == str(holder.pid)
        # paused, it keeps the lock and leaves the CPU to the readers
        holder.send_signal(signal.SIGSTOP)
        # while it holds the lock: sample.py and eval_only read the checkpoint, and take no lock
        sampled = run_script(
            "sample.py",
            f"--out_dir={tmp_path}",
            "--num_samples=1",
            "--max_new_tokens=10",
            "--device=cpu",
            env=ONE_THREAD,
        )
        assert sampled.stdout.strip()
        train(char_data, tmp_path, "--eval_only=True")
        assert json.loads((tmp_path / "eval.json").read_text())["iter"] >= 10
        # undisturbed
        assert holder.poll() is None
        assert (tmp_path / ".lock").read_text().strip() == str(holder.pid)
    finally:
        holder.kill()  # SIGKILL: no handler runs, nothing is cleaned up
    holder.communicate(timeout=60)
    assert holder.returncode == -signal.SIGKILL

    # the OS dropped the dead run's lock: a resume runs (with max_iters, a key that may change
    # on resume)
    iter_num = torch.load(tmp_path / "ckpt.pt", weights_only=True)["iter_num"]
    train(char_data, tmp_path, *ARGS, "--init_from=resume", f"--max_iters={iter_num + 10}")
    assert read_jsonl(tmp_path / "metrics.jsonl")[-1]["iter"] == iter_num + 10


def test_resume_refuses_settings_the_checkpoint_fixes_and_applies_those_that_may_change(
    char_data, tiny_run, tmp_path
):
    out = copy_run(tiny_run, tmp_path / "out")
    before = run_files(out)
    result = train(
        char_data,
        out,
        "--init_from=resume",
        "--max_iters=62",
        "--n_layer=1",
        "--block_size=64",
        "--weight_decay=0.5",
        check=False,
    )
    assert_one_error_line(
        result,
        f"{out / 'ckpt.pt'} was trained with other settings, which cannot change on resume: "
        "n_layer: checkpoint 2 vs given 1, "
        "block_size: checkpoint 32 vs given 64, weight_decay: checkpoint 0.1 vs given 0.5; "
        "drop them to continue it, or start a new run with another --out_dir",
    )
    assert run_files(out) == before

    # no model keys given: the defaults (n_layer=12, ...) are not the user's and do not count;
    # dropout, a shorter block_size and max_iters may change, and dropout is applied
    args = [
        f"--dataset={char_data}",
        f"--out_dir={out}",
        "--init_from=resume",
        "--max_iters=62",
        "--eval_interval=2",
        "--eval_iters=2",
        "--block_size=16",
        "--batch_size=8",
        "--gradient_accumulation_steps=1",
        "--dropout=0.1",
        "--device=cpu",
        "--dtype=float32",
        "--progress=False",
    ]
    run_script("train.py", *args, env=ONE_THREAD)
    checkpoint = torch.load(out / "ckpt.pt", weights_only=True)
    assert checkpoint["iter_num"] == 62
    kept = {k: checkpoint["model_args"][k] for k in ("n_layer", "n_embd", "block_size", "dropout")}
    assert kept == dict(n_layer=2, n_embd=32, block_size=32, dropout=0.1)


def test_resume_and_eval_only_without_block_size_keep_the_runs_own(char_data, tiny_run, tmp_path):
    """TrainConfig's default block_size (1024) is longer than the run's (32): the run's own is
    used."""
    out = copy_run(tiny_run, tmp_path / "out")
    args = [
        f"--dataset={char_data}",
        f"--out_dir={out}",
        "--eval_iters=2",
        "--batch_size=8",
        "--gradient_accumulation_steps=1",
        "--device=cpu",
        "--dtype=float32",
        "--progress=False",
    ]
    run_script(
        "train.py",
        *args,
        "--init_from=resume",
        "--max_iters=62",
        "--eval_interval=2",
        env=ONE_THREAD,
    )
    last = read_jsonl(out / "metrics.jsonl")[-1]
    assert last["iter"] == 62 and last["tokens"] == 62 * 8 * 32
    run_script("train.py", *args, "--eval_only=True", env=ONE_THREAD)
    assert json.loads((out / "eval.json").read_text())["iter"] == 62
