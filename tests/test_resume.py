"""Exact resume: a run killed (SIGKILL) or stopped (SIGTERM) and resumed matches the uninterrupted
run bit for bit."""

import signal

import pytest
import torch
from conftest import read_jsonl, start_until, train, train_args

# dropout > 0 so the resumed run must also restore the RNG state; 2 micro-steps so accumulation
# resumes too; keep_last makes ckpt_000020.pt appear once the iter-20 checkpoint is complete; the
# interruption comes during the sequence-length warmup (train.seq_len), whose windows must
# continue as they were
ARGS = [
    "--max_iters=50",
    "--eval_interval=10",
    "--eval_iters=4",
    "--log_interval=10",
    "--learning_rate=3e-3",
    "--warmup_iters=5",
    "--lr_decay_iters=50",
    "--dropout=0.1",
    "--gradient_accumulation_steps=2",
    "--keep_last=20",
    "--seq_warmup_iters=40",
]
COMPARED = ("iter", "train_loss", "val_loss", "lr", "tokens")


@pytest.fixture(scope="module")
def uninterrupted(char_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    train(char_data, out, *ARGS)
    return [{k: m[k] for k in COMPARED} for m in read_jsonl(out / "metrics.jsonl")]


def start_and_interrupt(char_data, out, sig):
    """Start a run, send `sig` as soon as its iter-20 checkpoint exists, and return (returncode,
    stdout, stderr)."""
    args = train_args(char_data, out, "--dtype=float32", *ARGS)
    proc = start_until(out / "ckpt_000020.pt", *args)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


def resumed_metrics(char_data, out):
    checkpoint_iter = torch.load(out / "ckpt.pt", weights_only=True)["iter_num"]
    assert 20 <= checkpoint_iter < 50, (
        f"the interruption came too late (checkpoint at {checkpoint_iter})"
    )
    train(char_data, out, *ARGS, "--init_from=resume")
    return checkpoint_iter, [{k: m[k] for k in COMPARED} for m in read_jsonl(out / "metrics.jsonl")]


def test_sigkill_then_resume_matches_uninterrupted_run_bit_for_bit(
    char_data, tmp_path, uninterrupted
):
    returncode, _, _ = start_and_interrupt(char_data, tmp_path, signal.SIGKILL)
    # really killed: no handler, no chance to save anything more
    assert returncode == -signal.SIGKILL
    checkpoint_iter, metrics = resumed_metrics(char_data, tmp_path)
    assert [m["iter"] for m in metrics] == list(range(0, 51, 10))
    # == on floats: bit for bit, at every eval before and after the kill
    assert metrics == uninterrupted
    assert len([m for m in metrics if m["iter"] > checkpoint_iter]) >= 1


def test_sigterm_saves_a_checkpoint_and_resume_continues_exactly(
    char_data, tmp_path, uninterrupted
):
    returncode, stdout, _ = start_and_interrupt(char_data, tmp_path, signal.SIGTERM)
    assert returncode == 128 + signal.SIGTERM
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert f"stopped by signal at iter {checkpoint['iter_num']}; checkpoint saved" in stdout
    assert checkpoint["iter_num"] >= 20
    _, metrics = resumed_metrics(char_data, tmp_path)
    assert metrics == uninterrupted


def test_checkpoint_written_before_sdpa_was_a_model_field_resumes(char_data, tiny_run, tmp_path):
    """Checkpoints of the code before `sdpa` moved into GPTConfig (model_args without it) load and
    resume."""
    import shutil

    for name in ("meta.json", "metrics.jsonl"):
        shutil.copy(tiny_run / name, tmp_path / name)
    old = torch.load(tiny_run / "ckpt.pt", weights_only=True)
    del old["model_args"]["sdpa"]  # what the earlier train.py wrote: GPTConfig's fields had no sdpa
    torch.save(old, tmp_path / "ckpt.pt")
    args = [
        "--max_iters=90",
        "--eval_interval=30",
        "--eval_iters=5",
        "--log_interval=10",
        "--learning_rate=3e-3",
        "--warmup_iters=5",
        "--lr_decay_iters=60",
        "--init_from=resume",
        "--sdpa=False",
    ]
    train(char_data, tmp_path, *args)
    resumed = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert resumed["iter_num"] == 90 and resumed["model_args"]["sdpa"] is False
    assert [m["iter"] for m in read_jsonl(tmp_path / "metrics.jsonl")] == [0, 30, 60, 90]
