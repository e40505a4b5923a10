"""train.py's wiring, each piece shown to act: the out_dir lock against a second run, grad_clip
clipping the update, Muon's optimizer state through a checkpoint, and compile=True through train.py
itself."""

import copy
import json
import os

import pytest
import torch
from conftest import ONE_THREAD, read_jsonl, run_script, run_train_main, train, train_args

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
    choices = hardware.training_choices("cpu", dtype="float32", measure=False)
    progress = train_module.Progress()
    run = train_module.Run(
        cfg, distributed.Distributed(), hw, None, model, model, optimizer, progress, choices
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


COMPILE_RUN = [
    "--n_layer=1",
    "--block_size=8",
    "--batch_size=2",
    "--max_iters=12",
    "--eval_interval=12",
    "--eval_iters=2",
]


def final_losses(out_dir):
    last = read_jsonl(out_dir / "metrics.jsonl")[-1]
    return last["iter"], last["train_loss"], last["val_loss"]


def test_compile_true_trains_to_the_eager_loss_and_saves_the_plain_models_keys(char_data, tmp_path):
    """torch.compile on the CPU (inductor and a C++ compiler): with a cold inductor cache the
    suite's slowest test, nearly all of it compiling the training graphs; far quicker once
    /tmp/torchinductor_<user> holds them (docs/performance.md)."""
    train(char_data, tmp_path / "eager", *COMPILE_RUN)
    train(char_data, tmp_path / "compiled", "--compile=True", *COMPILE_RUN)
    eager, compiled = final_losses(tmp_path / "eager"), final_losses(tmp_path / "compiled")
    # the same training in float32, up to the compiled kernels' own rounding
    assert eager[0] == compiled[0] == 12 and eager[1:] == pytest.approx(compiled[1:], abs=1e-3)
    saved = torch.load(tmp_path / "compiled" / "ckpt.pt", weights_only=True)
    assert saved["iter_num"] == 12 and saved["config"]["compile"] is True
    # no "_orig_mod." prefix
    assert saved["model"].keys() == GPT(GPTConfig(**saved["model_args"])).state_dict().keys()


def test_compile_auto_stays_eager_when_the_steps_left_cannot_pay_for_a_compile(char_data, tmp_path):
    result = train(char_data, tmp_path, "--compile=auto", *COMPILE_RUN)
    choices = json.loads((tmp_path / "choices.json").read_text())
    why = choices["reasons"]["compile"]
    assert choices["compile"] is False and "would not pay back a cold compile" in why
    assert f"compile = False: {why}" in result.stdout
    assert final_losses(tmp_path)[0] == 12


def test_compile_auto_compiles_when_it_pays_then_keeps_the_faster_step(
    char_data, tmp_path, monkeypatch, capsys
):
    """A free compile always pays: the run compiles after its timed eager steps, times the compiled
    ones and keeps whichever is faster, saying so."""
    monkeypatch.setattr(hardware, "COLD_COMPILE_S", (0.0, 0.0))
    # 7 eager steps, the compiling one, 5 timed compiled ones, and a few more
    longer = ["--max_iters=16", "--eval_interval=16"]
    args = train_args(char_data, tmp_path, "--dtype=float32", "--compile=auto", *COMPILE_RUN)
    code, out, _ = run_train_main([*args[1:], *longer], monkeypatch, capsys)
    choices = json.loads((tmp_path / "choices.json").read_text())
    why = choices["reasons"]["compile"]
    assert code == 0 and "which pays back a cold compile" in why and "; compiled in " in why
    kept = choices["compile"]
    assert why.endswith("kept" if kept else "back to eager")
    assert f"compile = {kept}: {why}" in out
    assert final_losses(tmp_path)[0] == 16


def test_compile_pays_when_the_eager_steps_left_outlast_a_cold_compile():
    (first, further), speedup = hardware.COLD_COMPILE_S, hardware.COMPILE_SPEEDUP
    for graphs in (1, 3):
        # the steps whose eager time, sped up, saves exactly a cold compile of that many graphs
        break_even = (first + further * (graphs - 1)) / (1 - 1 / speedup) / 0.1
        assert hardware.compile_pays(0.1, int(break_even) + 10, graphs)[0]
        assert not hardware.compile_pays(0.1, int(break_even) - 10, graphs)[0]
    assert hardware.decide_compile("auto", "cpu", measure=True)[0] == "auto"
    # ranks under torchrun decide untimed, and alike
    assert hardware.decide_compile("auto", "cpu", measure=False)[0] is False
    assert hardware.decide_compile("auto", "cuda", measure=False)[0] is True
    assert hardware.decide_compile(True, "cpu", measure=True) == (True, "set by compile")
