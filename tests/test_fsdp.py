"""FSDP2 for real: torchrun with 2 gloo processes on the CPU, sharded, against 1 process; killed and
resumed."""

import os
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
    torchrun_ranks,
    train,
    train_args,
)
from test_ddp import ARGS, TORCHRUN, grad_norms

# keep_last: ckpt_000004.pt appears once the iter-4 checkpoint is complete
FSDP = [*ARGS, "--keep_last=10", "--fsdp=True"]
COMPARED = ("iter", "train_loss", "val_loss", "lr", "tokens")


def metrics(out):
    return [{k: m[k] for k in COMPARED} for m in read_jsonl(out / "metrics.jsonl")]


def assert_close_metrics(expected, got):
    assert [m["iter"] for m in got] == [m["iter"] for m in expected] == [0, 4, 8, 12]
    for a, b in zip(expected, got, strict=True):
        assert abs(a["val_loss"] - b["val_loss"]) < 1e-5, (a, b)
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-5, (a, b)
        assert a["tokens"] == b["tokens"]


@pytest.fixture(scope="module")
def single(char_data, tmp_path_factory):
    """One process, 4 micro-batches per step: (out_dir, stdout)."""
    out = tmp_path_factory.mktemp("single")
    return out, train(char_data, out, *ARGS, "--keep_last=10").stdout


@pytest.fixture(scope="module")
def sharded(char_data, tmp_path_factory):
    """2 FSDP ranks, 2 micro-batches each, uninterrupted: (out_dir, stdout)."""
    out = tmp_path_factory.mktemp("fsdp")
    return out, run_script(*TORCHRUN, *train_args(char_data, out, *FSDP), env=ONE_THREAD).stdout


def test_two_fsdp_ranks_match_one_process_and_save_its_checkpoint_format(
    char_data, single, sharded
):
    (single_out, single_stdout), (out, stdout) = single, sharded
    assert "2 rank(s)" in stdout and stdout.count("model: ") == 1
    assert_close_metrics(metrics(single_out), metrics(out))
    # clipped on DTensors, same norm
    for a, b in zip(grad_norms(single_stdout), grad_norms(stdout), strict=True):
        assert abs(a - b) <= 2e-4
    # one file, keyed as one process keys it: the optimizer state by parameter index, not by
    # sharded name
    expected, got = (torch.load(d / "ckpt.pt", weights_only=True) for d in (single_out, out))
    assert got.keys() == expected.keys() and got["model"].keys() == expected["model"].keys()
    assert got["optimizer"]["param_groups"] == expected["optimizer"]["param_groups"]
    assert got["optimizer"]["state"].keys() == expected["optimizer"]["state"].keys()
    for i, state in expected["optimizer"]["state"].items():
        torch.testing.assert_close(got["optimizer"]["state"][i], state, atol=1e-5, rtol=1e-4)
    for name, tensor in expected["model"].items():
        torch.testing.assert_close(got["model"][name], tensor, atol=1e-5, rtol=1e-4)
    # the checkpoint is whole: one process evaluates it and samples from it
    result = train(char_data, out, "--eval_only=True")
    assert '"iter": 12' in result.stdout and '"split": "val"' in result.stdout
    sample = run_script(
        "sample.py",
        f"--out_dir={out}",
        "--device=cpu",
        "--max_new_tokens=20",
        "--num_samples=1",
        "--seed=1",
    )
    assert "20 tokens in" in sample.stderr and sample.stdout.count("---------------") == 1


def test_sigkill_of_fsdp_ranks_then_resume_sharded_and_in_one_process(
    char_data, tmp_path, single, sharded
):
    killed = tmp_path / "killed"
    proc = start_until(killed / "ckpt_000004.pt", *TORCHRUN, *train_args(char_data, killed, *FSDP))
    # both ranks and torchrun, like a lost node: nothing more is saved (torchrun starts each rank
    # in its own session)
    ranks = torchrun_ranks(proc)
    for pid in [*ranks, proc.pid]:
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert len(ranks) == 2 and proc.returncode == -signal.SIGKILL
    checkpoint_iter = torch.load(killed / "ckpt.pt", weights_only=True)["iter_num"]
    assert 4 <= checkpoint_iter < 12, f"the kill came too late (checkpoint at {checkpoint_iter})"
    one_process = tmp_path / "one_process"
    shutil.copytree(killed, one_process)

    # sharded again: the optimizer state re-shards exactly, so the losses are bit for bit the
    # uninterrupted run's
    run_script(
        *TORCHRUN, *train_args(char_data, killed, *FSDP, "--init_from=resume"), env=ONE_THREAD
    )
    assert metrics(killed) == metrics(sharded[0])  # == on floats
    # in one process with twice the accumulation: the FSDP checkpoint is a single-process one
    train(char_data, one_process, *ARGS, "--init_from=resume")
    assert_close_metrics(metrics(single[0]), metrics(one_process))


def test_fsdp_resumes_a_single_process_checkpoint(char_data, tmp_path, single):
    out = tmp_path / "from_single"
    out.mkdir()
    for name in ("ckpt_000008.pt", "meta.json"):  # the single-process run as it was at iter 8
        shutil.copy(single[0] / name, out / ("ckpt.pt" if name.endswith(".pt") else name))
    (out / "metrics.jsonl").write_text((single[0] / "metrics.jsonl").read_text())
    run_script(*TORCHRUN, *train_args(char_data, out, *FSDP, "--init_from=resume"), env=ONE_THREAD)
    assert_close_metrics(metrics(single[0]), metrics(out))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--fsdp=True"],
            "error: fsdp=True shards the model across processes: launch with torchrun",
        ),
        (
            ["--fsdp=True", "--optimizer=muon"],
            "error: optimizer=muon needs whole weight matrices, which fsdp=True shards",
        ),
    ],
)
def test_fsdp_config_errors_are_one_line(char_data, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.delenv("RANK", raising=False)
    code, _, err = run_train_main(train_args(char_data, tmp_path, *args)[1:], monkeypatch, capsys)
    assert code != 0 and len(err) == 1 and err[0].startswith(message), err
