"""Faults: each ends in one clear `error:` line, a non-zero exit, and nothing lost."""

import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import ONE_THREAD, ROOT, run_train_main, train, train_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process tiny models


@pytest.fixture
def resumable(tiny_run, tmp_path):
    """A copy of the tiny run's out_dir (checkpoint at iter 60) to resume from and break."""
    for name in ("ckpt.pt", "meta.json", "metrics.jsonl"):
        shutil.copy(tiny_run / name, tmp_path / name)
    return tmp_path


def assert_one_error_line(code, err, *fragments):
    assert code != 0
    assert len(err) == 1 and err[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err[0], err


def test_resume_without_a_checkpoint(char_data, tmp_path, monkeypatch, capsys):
    code, _, err = run_train_main(
        train_args(char_data, tmp_path, "--init_from=resume")[1:], monkeypatch, capsys
    )
    assert_one_error_line(code, err, f"no checkpoint at {tmp_path / 'ckpt.pt'}")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_or_truncated_checkpoint_is_refused_and_left_untouched(
    char_data, resumable, damage, monkeypatch, capsys
):
    path = resumable / "ckpt.pt"
    data = path.read_bytes()
    damaged = b"not a checkpoint" * 100 if damage == "garbage" else data[: len(data) // 2]
    path.write_bytes(damaged)
    code, _, err = run_train_main(
        train_args(char_data, resumable, "--init_from=resume")[1:], monkeypatch, capsys
    )
    assert_one_error_line(code, err, str(path), "corrupt, truncated or unsafe", "left untouched")
    assert path.read_bytes() == damaged


def test_out_dir_not_writable(char_data, tmp_path, monkeypatch, capsys):
    # Tests run as root, whom permissions do not stop; a path under a regular file cannot be
    # written by anyone.
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for out_dir in (blocker / "out", blocker):
        code, _, err = run_train_main(train_args(char_data, out_dir)[1:], monkeypatch, capsys)
        assert_one_error_line(code, err, f"out_dir {out_dir} is not writable")
    assert blocker.read_text() == ""


def test_disk_full_while_saving_keeps_the_old_checkpoint(char_data, resumable):
    before = (resumable / "ckpt.pt").read_bytes()
    assert len(before) > 200_000  # larger than the limit below, so its rewrite must fail

    def small_disk():
        # writes past 200 kB fail with EFBIG, like a full disk (SIGXFSZ would kill the
        # process instead)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    args = train_args(
        char_data,
        resumable,
        "--dtype=float32",
        "--init_from=resume",
        "--max_iters=62",
        "--eval_interval=1",
        "--eval_iters=2",
    )
    result = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=small_disk,
        env={**os.environ, **ONE_THREAD},
        timeout=120,
    )
    err = result.stderr.strip().splitlines()
    assert_one_error_line(
        result.returncode,
        err,
        f"could not write {resumable / 'ckpt.pt'}",
        "File too large",
        "previous checkpoint is kept",
    )
    assert (resumable / "ckpt.pt").read_bytes() == before
    # no half-written temp file left behind
    assert not [p.name for p in resumable.iterdir() if ".tmp" in p.name]


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(
    char_data, resumable
):
    before = (resumable / "ckpt.pt").read_bytes()
    # a learning rate of 1e30 blows the weights up to inf within a step: a real divergence, not a
    # planted NaN; eval_interval=1 also makes the next evaluation meet it, which must not save the
    # diverged weights
    result = train(
        char_data,
        resumable,
        "--init_from=resume",
        "--max_iters=70",
        "--eval_interval=1",
        "--eval_iters=2",
        "--learning_rate=1e30",
        "--decay_lr=False",
        check=False,
    )
    err = result.stderr.strip().splitlines()
    assert_one_error_line(
        result.returncode, err, "training diverged", "last good checkpoint", "is kept"
    )
    assert err[0].startswith(("error: loss is nan at iter 6", "error: loss is inf at iter 6"))
    assert (resumable / "ckpt.pt").read_bytes() == before


@pytest.mark.parametrize("bug", [ValueError, RuntimeError, OSError])
def test_a_bug_is_not_a_user_error_and_keeps_its_traceback(bug, char_data, tmp_path, monkeypatch):
    """Only UserError becomes one `error:` line; any other exception inside main propagates,
    traceback and all."""
    import train as train_module

    def broken(*args, **kwargs):
        raise bug("an internal bug")

    monkeypatch.setattr(train_module, "build_model", broken)
    monkeypatch.setattr(sys, "argv", ["train.py", *map(str, train_args(char_data, tmp_path)[1:])])
    with pytest.raises(bug, match="an internal bug"):
        train_module.run_cli(train_module.main)
