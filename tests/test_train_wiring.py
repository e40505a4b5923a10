"""train.py's wiring, each piece shown to act: the out_dir lock against a second run, grad_clip
clipping the update, Muon's optimizer state through a checkpoint, and compile=True through train.py
itself."""

import copy
import json
import os

import pytest
import torch
from conftest import ONE_THREAD, read_jsonl, run_script, train, train_args

import train as train_module
from gptkit import checkpoint, distributed, hardware
from gptkit.train_config import TrainConfig
from model import GPT, GPTConfig


def test_a_second_run_cannot_take_an_out_dir_a_first_run_holds(char_data, tmp_path):
    held = checkpoint.lock_out_dir(str(tmp_path))  # this test process is the first run
    try:
        # the timeout bounds a run that would wait for the lock (or train) instead of stopping at it
        result = run_script(
            *train_args(char_data, tmp_path, "--max_iters=2"),
            env=ONE_THREAD,
            check=False,
            timeout=60,
        )
        # the holder's lock is untouched
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    finally:
        held.close()
    assert result.returncode == 2 and result.stdout == "", result.stdout
    assert result.stderr.strip().splitlines() == [
        f"error: out_dir {tmp_path} is in use by another training run (pid {os.getpid()}); "
        "wait for it to end, or choose another --out_dir"
    ]
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # nothing written


@pytest.mark.parametrize("grad_clip", [0.0, 0.05])
def test_grad_clip_scales_the_update_and_the_logged_norm_is_the_unclipped_one(
    grad_clip, one_torch_thread
):
    """train.train_step with plain SGD, whose update is lr x the gradient it is given (AdamW's
    barely depends on scale)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8))
    x, y = torch.randint(11, (2, 2, 8), generator=torch.Generator().manual_seed(1))
    reference = copy.deepcopy(model)
    reference(x, y)[1].backward()
    grads = [p.grad.clone() for p in reference.parameters()]
    norm = torch.cat([g.flatten() for g in grads]).norm().item()
    assert grad_clip < norm / 2  # so clipping at 0.05 changes the update
    before = [p.detach().clone() for p in model.parameters()]

    lr = 0.1
    cfg = TrainConfig(grad_clip=grad_clip, gradient_accumulation_steps=1)
    ctx, scaler = hardware.precision("float32", "cpu")
    hw = hardware.Hardware("cpu", "cpu", "float32", ctx, scaler)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    run = train_module.Run(
        cfg, distributed.Distributed(), hw, None, model, model, optimizer, train_module.Progress()
    )
    _, grad_norm, _, _ = train_module.train_step(run, x, y, lambda micro_step: (x, y))

    # what log_step prints: the norm before clipping
    assert grad_norm == pytest.approx(norm, rel=1e-5)
    scale = grad_clip / norm if grad_clip else 1.0  # 0 disables clipping
    for p, p0, g in zip(model.parameters(), before, grads, strict=True):
        torch.testing.assert_close(p0 - p.detach(), lr * scale * g, rtol=1e-4, atol=1e-7)


def assert_identical(a, b, where="checkpoint"):
    """Two checkpoint values equal to the last bit: tensors by torch.equal, containers item by
    item."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


# Newton-Schulz's dtype is decided per process by timing a bf16 matmul; with oneDNN held to AVX2,
# bf16 is emulated (far slower than fp32: docs/performance.md), so every process decides float32
# whatever the load, and two runs can be compared bit for bit
MUON_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
MUON = [
    "--optimizer=muon",
    "--muon_lr=0.05",
    "--learning_rate=3e-3",
    "--embedding_lr=0.1",
    "--tie_weights=False",
    "--sdpa=False",
    "--eval_interval=4",
    "--eval_iters=2",
    "--warmup_iters=3",
    "--lr_decay_iters=12",
]


def test_muon_state_round_trips_through_a_checkpoint_bit_for_bit(char_data, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(char_data, whole, *MUON, "--max_iters=12", env=MUON_ENV)
    train(char_data, split, *MUON, "--max_iters=8", env=MUON_ENV)
    train(char_data, split, *MUON, "--max_iters=12", "--init_from=resume", env=MUON_ENV)
    assert all(
        json.loads((d / "choices.json").read_text())["newton_schulz_dtype"] == "float32"
        for d in (whole, split)
    )
    assert [m["iter"] for m in read_jsonl(split / "metrics.jsonl")] == [0, 4, 8, 12]
    compared = ("iter", "train_loss", "val_loss", "lr")
    assert [{k: m[k] for k in compared} for m in read_jsonl(split / "metrics.jsonl")] == [
        {k: m[k] for k in compared} for m in read_jsonl(whole / "metrics.jsonl")
    ]
    resumed, uninterrupted = (torch.load(d / "ckpt.pt", weights_only=True) for d in (split, whole))
    # Muon's momentum buffers and AdamW's moments, every parameter group's settings, and the weights
    assert_identical(resumed["optimizer"], uninterrupted["optimizer"], "optimizer")
    assert_identical(resumed["model"], uninterrupted["model"], "model")
    assert any("momentum_buffer" in state for state in resumed["optimizer"]["state"].values())


def test_compile_true_through_train_py_saves_the_plain_models_keys(char_data, tmp_path):
    """torch.compile on the CPU (inductor and a C++ compiler): with a cold inductor cache the
    suite's slowest test, nearly all of it compiling the evaluation and training graphs; far
    quicker once /tmp/torchinductor_<user> holds them (docs/performance.md)."""
    args = [
        "--compile=True",
        "--n_layer=1",
        "--block_size=8",
        "--batch_size=2",
        "--max_iters=2",
        "--eval_interval=2",
        "--eval_iters=1",
    ]
    train(char_data, tmp_path, *args)
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert saved["iter_num"] == 2 and saved["config"]["compile"] is True
    # no "_orig_mod." prefix
    assert saved["model"].keys() == GPT(GPTConfig(**saved["model_args"])).state_dict().keys()
