"""Resume continues the run as it was: `train.py --init_from=resume --out_dir=X` alone takes the
run's own settings from its checkpoint and matches the uninterrupted run bit for bit, also after
Ctrl-C; a changed key is applied and named in one line; a refused resume prints its one error line
and nothing else; --eval_only reads the run's settings too."""

import json
import shutil
import signal

import pytest
import torch
from conftest import (
    ONE_THREAD,
    read_jsonl,
    run_script,
    run_train_main,
    start_until,
    train,
    train_args,
)

# a run whose settings are none of the defaults' that matter: its dataset (default fineweb), batch
# size (12), seed (1337), dtype (auto: bf16 on a CPU with native bf16) and dropout (0.0, so the RNG
# state must be restored too)
RUN = [
    "--batch_size=4",
    "--gradient_accumulation_steps=2",
    "--seed=7",
    "--dropout=0.1",
    "--learning_rate=3e-3",
    "--warmup_iters=5",
    "--lr_decay_iters=20",
    "--eval_interval=5",
    "--eval_iters=3",
    "--log_interval=5",
]
COMPARED = ("iter", "train_loss", "val_loss", "lr", "tokens")
DIVERGES = "; the run no longer matches an uninterrupted one"


def metrics(out):
    return [{k: m[k] for k in COMPARED} for m in read_jsonl(out / "metrics.jsonl")]


def resume(out, *extra, check=True):
    """The README's resume: the out_dir and nothing else of the run's settings."""
    return run_script(
        "train.py", "--init_from=resume", f"--out_dir={out}", *extra, env=ONE_THREAD, check=check
    )


@pytest.fixture(scope="module")
def uninterrupted(char_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    train(char_data, out, *RUN, "--max_iters=20")
    return out


@pytest.fixture(scope="module")
def half_run(char_data, tmp_path_factory):
    """The same run stopped at iter 10 (max_iters=10; max_iters does not shape the lr schedule,
    lr_decay_iters does)."""
    out = tmp_path_factory.mktemp("half_run")
    train(char_data, out, *RUN, "--max_iters=10")
    return out


def copy_run(run, out):
    shutil.copytree(run, out, ignore=shutil.ignore_patterns(".lock"))
    return out


def test_resume_with_only_the_out_dir_continues_the_run_as_it_was(
    half_run, uninterrupted, tmp_path
):
    out = copy_run(half_run, tmp_path / "out")
    result = resume(out, "--max_iters=20")
    assert metrics(out) == metrics(uninterrupted)  # == on floats: bit for bit
    assert [m["iter"] for m in metrics(out)] == [0, 5, 10, 15, 20]
    # the one key given differs from the run's and is named; it changes no weight, so no warning
    assert result.stdout.splitlines()[0] == "max_iters: 10 -> 20" and DIVERGES not in result.stdout
    saved, expected = (
        torch.load(d / "ckpt.pt", weights_only=True)["config"] for d in (out, uninterrupted)
    )
    for key in (
        "dataset",
        "batch_size",
        "gradient_accumulation_steps",
        "device",
        "dtype",
        "seed",
        "dropout",
        "block_size",
        "n_layer",
    ):
        assert saved[key] == expected[key], key
    # per invocation, not the run's
    assert json.loads((out / "config.json").read_text())["init_from"] == "resume"


def test_a_changed_key_is_applied_and_named_in_one_line(half_run, tmp_path):
    out = copy_run(half_run, tmp_path / "out")
    result = resume(out, "--max_iters=12", "--eval_interval=2", "--batch_size=2", "--dropout=0.0")
    lines = result.stdout.splitlines()
    # sorted by key, before anything else is printed (the machine's choices come next)
    assert lines[:4] == [
        f"batch_size: 4 -> 2{DIVERGES}",
        f"dropout: 0.1 -> 0.0{DIVERGES}",
        "eval_interval: 5 -> 2",
        "max_iters: 10 -> 12",
    ], result.stdout
    checkpoint = torch.load(out / "ckpt.pt", weights_only=True)
    assert (
        checkpoint["iter_num"] == 12
        and checkpoint["config"]["batch_size"] == 2
        and checkpoint["config"]["seed"] == 7
    )
    assert checkpoint["model_args"]["dropout"] == 0.0
    # tokens are counted, not iter * today's batch: 10 iters of 2 micro-steps of 4 rows,
    # then 2 of 2 of 2
    block = checkpoint["config"]["block_size"]
    assert checkpoint["tokens"] == metrics(out)[-1]["tokens"] == (10 * 2 * 4 + 2 * 2 * 2) * block


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--batch_size=2", "--n_layer=3"],
            "was trained with other settings, which cannot change on resume: "
            "n_layer: checkpoint 2 vs given 3",
        ),
        (["--batch_size=2", "--dataset=no_such_dataset"], "no_such_dataset"),
    ],
)
def test_a_refused_resume_prints_its_error_line_and_nothing_else(
    half_run, tmp_path, monkeypatch, capsys, extra, message
):
    out = copy_run(half_run, tmp_path / "out")
    code, stdout, err = run_train_main(
        ["--init_from=resume", f"--out_dir={out}", *extra], monkeypatch, capsys
    )
    assert code == 2 and stdout == "", (stdout, err)
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert torch.load(out / "ckpt.pt", weights_only=True)["iter_num"] == 10


def test_eval_only_with_only_the_out_dir_scores_the_run_on_its_own_dataset(
    half_run, char_data, tmp_path
):
    out = copy_run(half_run, tmp_path / "out")
    result = run_script("train.py", "--eval_only=True", f"--out_dir={out}", env=ONE_THREAD)
    scored = json.loads((out / "eval.json").read_text())
    assert json.loads(result.stdout.splitlines()[-1]) == scored and scored["iter"] == 10
    meta = json.loads((char_data / "meta.json").read_text())
    # every target of the run's val split, in its block_size's windows
    assert scored["tokens"] == meta["val_tokens"] - 1


def test_ctrl_c_finishes_the_step_saves_and_exits_130_then_resume_continues_exactly(
    char_data, uninterrupted, tmp_path
):
    out = tmp_path / "out"
    proc = start_until(
        out / "ckpt_000005.pt",
        *train_args(char_data, out, "--dtype=float32", *RUN, "--max_iters=20", "--keep_last=5"),
    )
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    checkpoint = torch.load(out / "ckpt.pt", weights_only=True)
    assert (
        f"stopped by signal at iter {checkpoint['iter_num']}; checkpoint saved to {out / 'ckpt.pt'}"
        in stdout
    )
    assert 5 <= checkpoint["iter_num"] < 20, "the signal came too late"
    resume(out)  # max_iters=20 is the run's own
    assert metrics(out) == metrics(uninterrupted)
