"""train.py: config and its errors, precision, optimizer and schedule, observability, eval_only,
finetuning, compile prefixes."""

import json
import math
import re
import shutil
from contextlib import nullcontext
from dataclasses import asdict, fields

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ONE_THREAD, ROOT, read_jsonl, run_script, run_train_main, train, train_args

from gptkit import checkpoint, hardware
from gptkit.base import UserError
from gptkit.configurator import parse_args
from gptkit.hardware import cpu_has_fast_bf16, pick_dtype, precision
from gptkit.loader import BatchLoader
from gptkit.pretrained import crop_block_size, from_pretrained, save_pretrained
from gptkit.train_config import TrainConfig, configure_adamw, model_config, validate
from model import GPT, GPTConfig
from train import get_lr, seq_len

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process tiny models

# --------------------------------------------------------------------------------------------------
# Config


def config_error(argv, monkeypatch, capsys):
    code, out, err = run_train_main(argv, monkeypatch, capsys)
    assert code != 0 and len(err) == 1 and err[0].startswith("error: "), (code, err)
    return err[0]


def test_config_file_errors_name_the_file_line_and_key(tmp_path, monkeypatch, capsys):
    path = tmp_path / "cfg.py"
    path.write_text("batch_size = 4\nlearning_rte = 1e-3\n")
    assert (
        config_error([path], monkeypatch, capsys)
        == f"error: {path}: unknown config key 'learning_rte'; did you mean learning_rate?"
    )
    path.write_text("dropout = 0.1\nn_layer = 2.5\n")
    assert (
        config_error([path], monkeypatch, capsys)
        == f"error: {path}: n_layer=2.5 should be int, like the default 12"
    )
    path.write_text("batch_size = 4\n\nn_layer = = 3\n")
    assert config_error([path], monkeypatch, capsys).startswith(f"error: {path}:3: syntax error")
    path.write_text("import os\n")
    assert "a config file holds only `key = value` lines" in config_error(
        [path], monkeypatch, capsys
    )
    path.write_text("out_dir = __import__('os').getcwd()\n")  # parsed, never executed
    assert "only literals, arithmetic and names assigned above" in config_error(
        [path], monkeypatch, capsys
    )
    assert config_error([tmp_path / "missing.py"], monkeypatch, capsys) == (
        f"error: cannot read config file {tmp_path / 'missing.py'}: No such file or directory"
    )


@pytest.mark.parametrize(
    "line, message",
    [
        ("n_layer = 2 ** 10 ** 10", "`2 ** 10 ** 10` is too large"),  # once ran until killed
        ("wandb_run_name = 'ab' * 10 ** 12", "is too long"),
        ("learning_rate = 1 / 0", "cannot compute `1 / 0` (division by zero)"),
        ("learning_rate = 10.0 ** 400", "`10.0 ** 400` is too large"),
        ("max_iters = 5 % 0", "cannot compute `5 % 0` (integer modulo by zero)"),
    ],
)
def test_config_arithmetic_is_bounded(tmp_path, line, message):
    path = tmp_path / "cfg.py"
    path.write_text(line + "\n")
    # a hang fails here, not forever
    result = run_script("train.py", path, "--device=cpu", check=False, timeout=30)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


def test_wrong_type_names_key_value_and_expected_type(monkeypatch, capsys):
    assert (
        config_error(["--dropout=lots"], monkeypatch, capsys)
        == "error: --dropout=lots: dropout='lots' should be float, like the default 0.0"
    )
    assert (
        config_error(["--max_iters=1.5"], monkeypatch, capsys)
        == "error: --max_iters=1.5: max_iters=1.5 should be int, like the default 600000"
    )
    # a switch that also takes a word
    assert (
        config_error(["--compile=maybe"], monkeypatch, capsys)
        == "error: compile='maybe' must be True, False or auto"
    )


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--n_embd=33", "--n_head=2"], "n_embd=33 must be divisible by n_head=2"),
        (["--batch_size=0"], "batch_size=0 must be at least 1"),
        (["--block_size=2000000"], "block_size=2000000 is too large for the train split"),
        (["--dtype=float8"], "dtype='float8' must be one of"),
        (["--sdpa=maybe"], "sdpa='maybe' must be auto, true or false"),
        (["--muon_weight_decay=0.1"], "muon_weight_decay=0.1 must be >= 0, and is for optimizer"),
        (["--gradient_accumulation_steps=0"], "gradient_accumulation_steps=0 must be at least 1"),
        (
            ["--seq_warmup_iters=4", "--block_size=30"],
            "seq_warmup_iters=4 must be >= 0, and > 0 needs a block_size divisible by 4",
        ),
    ],
)
def test_invalid_combinations_fail_in_one_line_before_any_work(
    char_data, tmp_path, bad, message, monkeypatch, capsys
):
    out_dir = tmp_path / "out"
    assert message in config_error(train_args(char_data, out_dir, *bad)[1:], monkeypatch, capsys)
    assert not out_dir.exists()  # nothing was created


def test_dataset_not_prepared(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    assert "is not prepared" in config_error(
        train_args(tmp_path / "empty", tmp_path / "out")[1:], monkeypatch, capsys
    )


def test_help_lists_every_key_with_its_default():
    result = run_script("train.py", "--help")
    assert result.returncode == 0 and result.stderr == ""
    for f in fields(TrainConfig):
        assert f"--{f.name}={f.default!r}" in result.stdout


def test_shipped_configs_parse_and_validate():
    for name in sorted(p.name for p in (ROOT / "config").glob("*.py")):
        validate(parse_args(TrainConfig(), [str(ROOT / "config" / name)]))
    gpt2 = parse_args(TrainConfig(), [str(ROOT / "config" / "train_gpt2.py")])
    # ~0.5M tokens per step (nanoGPT)
    assert gpt2.batch_size * gpt2.block_size * gpt2.gradient_accumulation_steps == 491_520
    assert gpt2.compile and gpt2.wandb_log
    # my_text is the user's own
    shipped = [p.name for p in (ROOT / "config").glob("*.py") if p.name != "train_my_text.py"]
    for name in ["", *shipped]:  # "": the defaults
        dataset = parse_args(TrainConfig(), [str(ROOT / "config" / name)] if name else []).dataset
        # every default dataset can be prepared
        assert (ROOT / "data" / dataset / "prepare.py").is_file(), (
            name,
            dataset,
        )
    finetune = parse_args(TrainConfig(), [str(ROOT / "config" / "finetune_shakespeare.py")])
    assert finetune.init_from.startswith("gpt2") and finetune.dataset == "shakespeare"


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "config").glob("speedrun_*.py")))
def test_speedrun_configs_train_a_few_steps(name, char_data, tmp_path, monkeypatch, capsys):
    """Each frontier config, as shipped but for a few short steps: its model and optimizer build and
    learn."""
    cfg = parse_args(TrainConfig(), [str(ROOT / "config" / f"{name}.py")])
    assert (
        cfg.max_iters == cfg.lr_decay_iters == cfg.eval_interval
        and 0 < cfg.seq_warmup_iters < cfg.max_iters
    )
    few = [
        "--max_iters=4",
        "--lr_decay_iters=4",
        "--seq_warmup_iters=2",
        "--eval_interval=4",
        "--eval_iters=1",
        "--batch_size=4",
    ]
    argv = [
        str(ROOT / "config" / f"{name}.py"),
        f"--dataset={char_data}",
        f"--out_dir={tmp_path}",
        "--progress=False",
        *few,
    ]
    code, _, err = run_train_main(argv, monkeypatch, capsys)
    assert code == 0, err
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    assert [m["iter"] for m in metrics] == [0, 4] and metrics[1]["train_loss"] < metrics[0][
        "train_loss"
    ]


# --------------------------------------------------------------------------------------------------
# Precision, optimizer, schedule


def test_dtype_auto(monkeypatch):
    assert pick_dtype("auto", "cpu") == ("bfloat16" if cpu_has_fast_bf16() else "float32")
    assert pick_dtype("auto", "mps") == "float32"
    assert pick_dtype("float16", "cpu") == "float16"  # an explicit choice is kept
    # CUDA cannot run here: ask its capability query both ways
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype("auto", "cuda") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype("auto", "cuda") == "float16"


# Hardware-aware choices: the decide_* functions take the machine's facts as arguments, so both
# answers of each question are tested here whatever CPU runs the suite
AVX2 = frozenset({"avx2", "fma"})  # AMD EPYC Zen 3: bf16 emulated
# AMD EPYC Zen 4: native bf16 dot products, no AMX
ZEN4 = frozenset({"avx2", "avx512f", "avx512_bf16"})
XEON_AMX = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})


@pytest.mark.parametrize(
    "flags, bf16_speedup, expected",
    [
        (AVX2, None, "float32"),  # emulated bf16: never, whatever a timing would say
        (AVX2, 3.0, "float32"),
        (ZEN4, 2.5, "bfloat16"),
        (XEON_AMX, 4.0, "bfloat16"),
        (ZEN4, None, "bfloat16"),  # flags alone (pick_dtype, for sampling; DDP ranks)
        (XEON_AMX, 0.9, "float32"),  # the flags promise it, this torch build does not deliver
    ],
)
def test_autocast_and_newton_schulz_dtypes_follow_native_and_measured_bf16(
    flags, bf16_speedup, expected
):
    dtype, why = hardware.decide_dtype("auto", "cpu", flags, bf16_speedup)
    assert dtype == expected and why
    assert hardware.decide_newton_schulz_dtype("cpu", flags, bf16_speedup)[0] == expected
    # explicit is kept
    assert hardware.decide_dtype("float32", "cpu", XEON_AMX, 4.0) == (
        "float32",
        "set by dtype",
    )
    assert hardware.decide_dtype("bfloat16", "cpu", AVX2, None)[0] == "bfloat16"
    # sampling: weights packed in bf16 where bf16 is native, fp32 elsewhere; fp32 on GPUs (bound by
    # launches)
    assert hardware.decide_sampling_dtype("auto", "cpu", XEON_AMX)[0] == "bfloat16"
    assert hardware.decide_sampling_dtype("auto", "cpu", AVX2)[0] == "float32"
    assert hardware.decide_sampling_dtype("auto", "cuda", frozenset())[0] == "float32"
    assert (
        hardware.decide_newton_schulz_dtype("cuda", frozenset(), None, cuda_bf16=True)[0]
        == "bfloat16"
    )
    assert (
        hardware.decide_newton_schulz_dtype("cuda", frozenset(), None, cuda_bf16=False)[0]
        == "float32"
    )


def test_sdpa_auto_is_the_explicit_math_in_bf16_on_cpu_and_sdpa_elsewhere():
    decide = hardware.decide_sdpa
    assert decide("auto", "cpu", "bfloat16")[0] is False
    assert decide("auto", "cpu", "float32")[0] is True
    assert decide("auto", "cuda", "bfloat16")[0] is True
    assert decide("true", "cpu", "bfloat16") == (True, "set by sdpa")
    assert decide("False", "cuda", "float16")[0] is False  # --sdpa=False, as before sdpa had "auto"
    assert (
        decide(False, "cuda", "float16")[0] is False and decide(True, "cpu", "bfloat16")[0] is True
    )


def test_threads_are_torchs_own_and_say_why():
    assert hardware.decide_threads(None, 2) == (
        2,
        "torch's default (set OMP_NUM_THREADS to change it)",
    )
    assert hardware.decide_threads("1", 1) == (1, "OMP_NUM_THREADS=1")


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="the flags promise no bf16: nothing is timed")
def test_bf16_withheld_by_an_avx2_limit_is_timed_slow_and_not_chosen():
    """The AVX2 stand-in: the flags still say avx512_bf16, the kernels are limited to AVX2 (bf16
    emulated)."""
    code = (
        "from gptkit import hardware; c = hardware.training_choices('cpu', n_embd=128); "
        "print(c.dtype, c.facts['bf16_matmul_speedup'])"
    )
    out = run_script(
        "-c", code, env={"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    ).stdout.split()
    # one round of timing says it (hardware.measure_bf16_speedup)
    assert out[0] == "float32" and float(out[1]) < 0.25, out


def test_training_choices_on_this_machine():
    choices = hardware.training_choices("cpu", dtype="auto", sdpa="auto", n_embd=128)
    speedup = choices.facts["bf16_matmul_speedup"]
    assert (speedup is not None) == cpu_has_fast_bf16()  # timed only where the flags promise bf16
    fast = cpu_has_fast_bf16() and speedup >= hardware.BF16_MIN_SPEEDUP
    assert choices.dtype == choices.newton_schulz_dtype == ("bfloat16" if fast else "float32")
    assert choices.sdpa == (not fast) and set(choices.reasons) == {
        "dtype",
        "newton_schulz_dtype",
        "sdpa",
        "threads",
        "compile",
    }
    assert choices.threads == torch.get_num_threads()  # reported, not changed
    assert hardware.training_choices("cpu", dtype="float32", sdpa="False").sdpa is False
    # what DDP ranks decide: the flags alone
    untimed = hardware.training_choices("cpu", n_embd=128, measure=False)
    assert untimed.facts["bf16_matmul_speedup"] is None and untimed.dtype == pick_dtype(
        "auto", "cpu"
    )


def test_precision_context_and_grad_scaler():
    ctx, scaler = precision("float32", "cpu")
    assert isinstance(ctx, nullcontext) and not scaler.is_enabled()
    ctx, scaler = precision("bfloat16", "cpu")
    with ctx:
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert not scaler.is_enabled()  # bfloat16 has float32's range: no loss scaling
    ctx, scaler = precision("float16", "cpu")
    with ctx:
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float16
    assert scaler.is_enabled()


def test_weight_decay_only_on_matrices_and_embeddings():
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=8, bias=True))
    optimizer = configure_adamw(model, 0.1, 1e-3, (0.9, 0.95), "cpu")
    assert isinstance(optimizer, torch.optim.AdamW)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(
        p.dim() < 2 for p in no_decay["params"]
    )
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert len(no_decay["params"]) > 0


def test_lr_schedule_warmup_then_cosine_to_min_lr():
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=110)
    warmup = [get_lr(it, cfg) for it in range(11)]
    assert (
        warmup == sorted(warmup)
        and warmup[0] == pytest.approx(1e-3 / 11)
        and warmup[10] == pytest.approx(1e-3)
    )
    assert get_lr(60, cfg) == pytest.approx((1e-3 + 1e-4) / 2)  # halfway through the cosine
    decay = [get_lr(it, cfg) for it in range(10, 111)]
    assert decay == sorted(decay, reverse=True) and decay[-1] == pytest.approx(1e-4)
    assert get_lr(10_000, cfg) == 1e-4
    assert get_lr(5, TrainConfig(decay_lr=False, learning_rate=3e-4)) == 3e-4


def test_seq_warmup_quarter_then_half_then_whole_windows(char_data, tmp_path, monkeypatch, capsys):
    cfg = TrainConfig(block_size=128, seq_warmup_iters=110)
    assert [seq_len(it, cfg) for it in (0, 54, 55, 109, 110, 10_000)] == [32, 32, 64, 64, 128, 128]
    assert {seq_len(it, TrainConfig(block_size=128)) for it in range(5)} == {128}
    # a run with it trains on other windows than one without, from the first step on (same tokens,
    # cut)
    args = [
        "--max_iters=2",
        "--eval_interval=2",
        "--eval_iters=1",
        "--log_interval=1",
        "--dtype=float32",
    ]
    first = []
    for n in (2, 0):
        code, out, _ = run_train_main(
            train_args(char_data, tmp_path / str(n), *args, f"--seq_warmup_iters={n}")[1:],
            monkeypatch,
            capsys,
        )
        # "iter 1: loss x"
        first.append(
            next(line for line in out.splitlines() if line.startswith("iter 1:")).split(",")[0]
        )
        assert code == 0
    assert first[0] != first[1], first
    # two evaluations (0 and 2) are no curve: no matplotlib at all
    assert not list(tmp_path.glob("*/loss.png"))


# --------------------------------------------------------------------------------------------------
# A short run: log lines, metrics.jsonl, loss.png, config.json


@pytest.fixture(scope="module")
def logged_run(char_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("logged_run")
    args = [
        "--max_iters=20",
        "--eval_interval=10",
        "--eval_iters=3",
        "--log_interval=5",
        "--gradient_accumulation_steps=2",
        "--warmup_iters=4",
        "--lr_decay_iters=20",
        "--learning_rate=2e-3",
        "--keep_last=1",
        "--keep_best=True",
    ]
    result = train(char_data, out, *args)
    return (
        out,
        result.stdout,
        parse_args(TrainConfig(), train_args(char_data, out, "--dtype=float32", *args)[1:]),
    )


LOG_LINE = re.compile(
    r"^iter (\d+): loss (\d+\.\d{4}), lr (\S+), grad norm (\d+\.\d{4}), "
    r"(\d+\.\d) ms/iter, ([\d,]+) tok/s, mfu (\d+\.\d)%$",
    re.M,
)


def test_log_lines_metrics_and_config_json(logged_run):
    out, stdout, cfg = logged_run
    lines = LOG_LINE.findall(stdout)
    assert [int(line[0]) for line in lines] == [5, 10, 15, 20]
    for it, loss, lr, grad_norm, ms, tok_s, mfu in lines:
        assert lr == f"{get_lr(int(it) - 1, cfg):.2e}"  # the lr of the step just taken
        assert (
            0 < float(grad_norm)
            and 0 < float(ms)
            and int(tok_s.replace(",", "")) > 0
            and 0 <= float(mfu) <= 100
        )
        assert 3.0 < float(loss) < 4.5
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["iter"] for m in metrics] == [0, 10, 20]
    assert [m["lr"] for m in metrics] == [get_lr(it, cfg) for it in (0, 10, 20)]
    assert [m["tokens"] for m in metrics] == [it * 2 * 8 * 32 for it in (0, 10, 20)]
    assert json.loads((out / "config.json").read_text()) == asdict(cfg)
    # keep_last=1 keeps only the newest numbered checkpoint; keep_best keeps the lowest val loss
    assert sorted(p.name for p in out.glob("ckpt*.pt")) == [
        "ckpt.pt",
        "ckpt_000020.pt",
        "ckpt_best.pt",
    ]
    best = torch.load(out / "ckpt_best.pt", weights_only=True)
    assert best["best_val_loss"] == min(m["val_loss"] for m in metrics if m["iter"] > 0)


def test_the_last_step_is_evaluated_and_saved_between_eval_intervals(char_data, tmp_path):
    train(
        char_data,
        tmp_path,
        "--max_iters=7",
        "--eval_interval=5",
        "--eval_iters=2",
        "--learning_rate=3e-3",
        "--warmup_iters=2",
    )
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    assert [m["iter"] for m in metrics] == [0, 5, 7]
    # still learning, so the final weights are the best
    assert metrics[2]["val_loss"] < metrics[1]["val_loss"]
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["iter_num"] == 7


def test_loss_png_is_a_valid_image(logged_run):
    import matplotlib.image

    path = logged_run[0] / "loss.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (400, 600) and image.std() > 0  # 6x4 in at 100 dpi, not blank


# --------------------------------------------------------------------------------------------------
# eval_only: the whole val split, against a hand computation


def test_eval_only_whole_split_matches_hand_computation(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir(), out.mkdir()
    val = rng.integers(0, 5, 103).astype(np.uint16)
    rng.integers(0, 5, 500).astype(np.uint16).tofile(data / "train.bin")
    val.tofile(data / "val.bin")
    meta = {
        "tokenizer": "char",
        "vocab_size": 5,
        "chars": list("abcde"),
        "dtype": "uint16",
        "val_bytes": 103,
    }
    (data / "meta.json").write_text(json.dumps(meta))
    torch.manual_seed(0)
    config = GPTConfig(block_size=16, vocab_size=5, n_layer=1, n_head=1, n_embd=8)
    model = GPT(config)
    torch.save(
        {"model": model.state_dict(), "model_args": asdict(config), "iter_num": 7}, out / "ckpt.pt"
    )

    args = [
        f"--dataset={data}",
        f"--out_dir={out}",
        "--eval_only=True",
        "--batch_size=3",
        "--block_size=16",
        "--device=cpu",
        "--dtype=float32",
    ]
    code, stdout, err = run_train_main(args, monkeypatch, capsys)
    assert code == 0, err
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result == json.loads((out / "eval.json").read_text())

    # by hand: non-overlapping windows 0, 16, ..., 96 (the last one 6 tokens), every target once
    model.eval()
    nats, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, 102, 16):
            length = min(16, 102 - start)
            x = torch.from_numpy(val[start : start + length].astype(np.int64))[None]
            y = torch.from_numpy(val[start + 1 : start + length + 1].astype(np.int64))[None]
            logits, _ = model(x, y)
            nats += F.cross_entropy(logits[0], y[0], reduction="sum").item()
            count += length
    assert count == 102 == result["tokens"] and result["iter"] == 7
    assert result["loss"] == pytest.approx(nats / count, abs=1e-6)
    assert result["perplexity"] == pytest.approx(math.exp(nats / count), rel=1e-6)
    # = bits per character here
    assert result["bits_per_token"] == pytest.approx(nats / count / math.log(2), abs=1e-6)
    assert result["bits_per_byte"] == pytest.approx(nats / math.log(2) / 103, abs=1e-6)

    # the same split scored with the int8 weights sample.py --quantize=int8 samples with: close, not
    # equal
    code, stdout, err = run_train_main([*args, "--quantize=int8"], monkeypatch, capsys)
    assert code == 0, err
    int8 = json.loads(stdout.strip().splitlines()[-1])
    assert int8["quantize"] == "int8" and int8["tokens"] == 102
    assert 0 < abs(int8["loss"] - result["loss"]) < 0.01, (int8["loss"], result["loss"])
    # training: refused
    code, _, err = run_train_main([*args[:2], "--quantize=int8"], monkeypatch, capsys)
    assert code == 2 and err == [
        "error: --quantize=int8 is for --eval_only=True (sample.py takes it too)"
    ]


# --------------------------------------------------------------------------------------------------
# Finetuning from GPT-2 weights (a tiny random GPT-2 in Hugging Face format, GPT-2 BPE token data)


@pytest.fixture(scope="module")
def gpt2_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2_tokens")
    rng = np.random.default_rng(0)
    rng.integers(0, 50257, 4000).astype(np.uint16).tofile(path / "train.bin")
    rng.integers(0, 50257, 500).astype(np.uint16).tofile(path / "val.bin")
    meta = {
        "tokenizer": "gpt2",
        "vocab_size": 50257,
        "dtype": "uint16",
        "eot": 50256,
        "val_bytes": 2000,
    }
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def test_finetune_starts_from_pretrained_weights(gpt2_data, tmp_path):
    torch.manual_seed(123)
    hf_dir = tmp_path / "tiny-gpt2"
    save_pretrained(
        GPT(GPTConfig(block_size=64, vocab_size=50257, n_layer=1, n_head=2, n_embd=16)), hf_dir
    )
    out = tmp_path / "out"
    args = [
        f"--init_from={hf_dir}",
        "--block_size=32",
        "--batch_size=4",
        "--max_iters=2",
        "--eval_interval=2",
        "--eval_iters=2",
        "--n_layer=6",
        "--n_embd=64",
        "--n_head=4",
        "--bias=False",
    ]
    train(gpt2_data, out, *args)

    # the first evaluation is the pretrained model's loss on the fixed eval batches: it started from
    # those weights
    pretrained = crop_block_size(from_pretrained(str(hf_dir)), 32)
    pretrained.eval()
    loader = BatchLoader(str(gpt2_data), 32, 4, "cpu", TrainConfig.seed)
    with torch.no_grad():
        expected = sum(pretrained(x, y)[1].item() for x, y in loader.eval_batches("val", 2)) / 2
    assert read_jsonl(out / "metrics.jsonl")[0]["val_loss"] == pytest.approx(expected, abs=1e-6)
    checkpoint = torch.load(out / "ckpt.pt", weights_only=True)
    assert checkpoint["iter_num"] == 2
    assert {
        k: checkpoint["model_args"][k]
        for k in ("n_layer", "n_embd", "block_size", "vocab_size", "bias")
    } == dict(n_layer=1, n_embd=16, block_size=32, vocab_size=50257, bias=True)


# --------------------------------------------------------------------------------------------------
# torch.compile's `_orig_mod.` prefix


def test_checkpoint_with_orig_mod_prefix_still_resumes_and_samples(char_data, tiny_run, tmp_path):
    checkpoint = torch.load(tiny_run / "ckpt.pt", weights_only=True)
    # as an old compiled run saved it
    checkpoint["model"] = {f"_orig_mod.{k}": v for k, v in checkpoint["model"].items()}
    torch.save(checkpoint, tmp_path / "ckpt.pt")
    for name in ("meta.json", "metrics.jsonl"):
        shutil.copy(tiny_run / name, tmp_path / name)
    sampled = run_script(
        "sample.py",
        f"--out_dir={tmp_path}",
        "--start=ROMEO:",
        "--max_new_tokens=20",
        "--num_samples=1",
        "--device=cpu",
        env=ONE_THREAD,
    )
    assert sampled.stdout.startswith("ROMEO:")
    train(
        char_data,
        tmp_path,
        "--init_from=resume",
        "--max_iters=62",
        "--eval_interval=2",
        "--eval_iters=2",
    )
    resaved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert resaved["iter_num"] == 62
    assert not any(k.startswith("_orig_mod.") for k in resaved["model"])


def test_compiled_model_saves_plain_keys():
    # what train.py saves when compile=True: the uncompiled model's state dict, which torch.compile
    # shares
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=1, n_embd=8))
    compiled = torch.compile(model)  # wrapping is cheap; nothing compiles until the first call
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    assert checkpoint.clean_state_dict(compiled.state_dict()).keys() == model.state_dict().keys()


def test_train_config_takes_the_model_keys_from_gpt_config():
    """TrainConfig lists GPTConfig's keys itself (composition, each key with its own type): a switch
    added to model.py must be added there too, with the same default but where training differs."""
    assert {f.name for f in fields(GPTConfig)} <= {f.name for f in fields(TrainConfig)}
    train_defaults = {f.name: f.default for f in fields(TrainConfig)}
    for f in fields(GPTConfig):
        if f.name not in ("bias", "vocab_size", "sdpa"):  # TRAINING_MODEL_DEFAULTS
            assert train_defaults[f.name] == f.default, f.name
    # the model's own checks judge a run's settings, as one UserError line
    with pytest.raises(UserError, match="n_embd=33 must be divisible by n_head=2"):
        validate(TrainConfig(n_embd=33, n_head=2))
    assert TrainConfig().bias is False and GPTConfig().bias is True
    # decided for the machine, then given to model_config as a bool
    assert TrainConfig().sdpa == "auto"
    # vocab_size=0: the dataset's
    assert model_config(TrainConfig(n_layer=2), vocab_size=65, sdpa=False) == GPTConfig(
        vocab_size=65, n_layer=2, bias=False, sdpa=False
    )
    # padded
    assert (
        model_config(
            parse_args(TrainConfig(), ["--vocab_size=128"]), vocab_size=65, sdpa=True
        ).vocab_size
        == 128
    )
