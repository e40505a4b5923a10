"""
Device, dtype and autocast: the one choice every script (train, sample, attention, bench) makes the
same way; and, for training, the precision and kernel choices made for the machine at hand, each
with why.

    hw = hardware.setup("auto", "auto")  # device, device_type, dtype, ctx (autocast), scaler
    python -c "from gptkit import hardware; print(hardware.training_choices('cpu'))"
"""

import functools
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch

from gptkit.base import UserError

DTYPES = ("auto", "float32", "bfloat16", "float16")  # the --dtype choices


def pick_device(name):
    if name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(
                f"device={name} but CUDA is not available; use --device=cpu or --device=auto"
            )
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_flags():
    """The CPU's feature flags (/proc/cpuinfo's "flags" line), empty where there is no such file
    (macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith("flags")]
    except OSError:
        return frozenset()
    return frozenset(lines[0].split(":", 1)[1].split()) if lines else frozenset()


def cpu_has_fast_bf16(flags=None):
    """bf16 matmuls beat fp32 on CPUs with AVX512-BF16 or AMX; elsewhere they are emulated, slower
    (docs/performance.md)."""
    flags = cpu_flags() if flags is None else flags
    return "avx512_bf16" in flags or "amx_bf16" in flags


def kind(device):
    """The device's type: "cuda" for "cuda:1" and the like, else its own name ("cpu", "mps")."""
    return "cuda" if str(device).startswith("cuda") else str(device)


def pick_dtype(name, device_type):
    """The autocast dtype for training or evaluation from capabilities alone (training also
    measures, see training_choices; DDP ranks do not)."""
    cuda_bf16 = device_type == "cuda" and torch.cuda.is_bf16_supported()
    flags = cpu_flags() if device_type == "cpu" else frozenset()
    return decide_dtype(name, device_type, flags, None, cuda_bf16)[0]


def pick_sampling_dtype(name, device_type):
    """The dtype for sampling one token at a time: on a CPU the dtype its weights are packed in."""
    flags = cpu_flags() if device_type == "cpu" else frozenset()
    onednn_bf16 = (
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
    if not onednn_bf16:  # packed bf16 weights need oneDNN's bf16 kernels (ONEDNN_MAX_CPU_ISA)
        flags -= {"avx512_bf16", "amx_bf16"}
    return decide_sampling_dtype(name, device_type, flags)[0]


# --------------------------------------------------------------------------------------------------
# Choices for training. The decide_* functions are pure: they take what was found out about the
# machine (CPU flags, a measured bf16/fp32 speed ratio) as arguments and return (choice, why), so
# every answer of every question is tested without the hardware (tests/test_train.py).
# training_choices gathers the facts.

BF16_MIN_SPEEDUP = 1.2  # bf16 must beat fp32 clearly: it also costs casts and precision


def decide_dtype(requested, device_type, flags, bf16_speedup, cuda_bf16=False):
    """(autocast dtype, why). On CPU, bf16 only with native support (flags) that a measurement, if
    any, confirms."""
    if requested != "auto":
        return requested, "set by dtype"
    if device_type == "cuda":
        return (
            ("bfloat16", "CUDA supports bf16")
            if cuda_bf16
            else ("float16", "CUDA without bf16: fp16 with loss scaling")
        )
    if device_type != "cpu":
        return "float32", f"{device_type}: float32 is the safe choice"
    if not cpu_has_fast_bf16(flags):
        return "float32", "no avx512_bf16/amx_bf16: this CPU emulates bf16, slower than fp32"
    if bf16_speedup is not None and bf16_speedup < BF16_MIN_SPEEDUP:
        return (
            "float32",
            f"avx512_bf16/amx_bf16, but a bf16 matmul measured only {bf16_speedup:.2f}x fp32's "
            "speed",
        )
    measured = (
        f", measured {bf16_speedup:.2f}x fp32's matmul speed"
        if bf16_speedup is not None
        else " (not timed)"
    )
    return (
        "bfloat16",
        f"native bf16 ({', '.join(sorted(flags & {'avx512_bf16', 'amx_bf16'}))}){measured}",
    )


def decide_sampling_dtype(requested, device_type, flags):
    """(dtype, why) for sampling one token at a time, where every step streams all the weights:
    float32 on GPUs (bound by kernel launches, where autocast only adds casts), bf16 weights on CPUs
    with native bf16 (half the bytes to stream), float32 elsewhere."""
    if requested != "auto":
        return requested, "set by dtype"
    if device_type == "cuda":
        return "float32", "one token at a time is bound by kernel launches; autocast adds casts"
    if device_type == "cpu" and cpu_has_fast_bf16(flags):
        return "bfloat16", "native bf16: weights packed in bf16 (decoding.prepare_for_decoding)"
    return "float32", "no native bf16 here: float32 weights"


def decide_newton_schulz_dtype(device_type, flags, bf16_speedup, cuda_bf16=False):
    """(Muon's Newton-Schulz dtype, why): bf16 where bf16 matmuls are fast, else fp32, whatever
    --dtype says: emulated bf16 makes Muon slower than AdamW (docs/performance.md)."""
    dtype, why = decide_dtype("auto", device_type, flags, bf16_speedup, cuda_bf16)
    return ("bfloat16", why) if dtype == "bfloat16" else ("float32", why)


def decide_sdpa(requested, device_type, dtype):
    """(use F.scaled_dot_product_attention, why). requested: "auto" | "true" | "false" (any case) or
    a bool. CPU kernels measured at T=128, hs=32 (docs/performance.md)."""
    requested = str(requested).lower()
    if requested != "auto":
        return requested == "true", "set by sdpa"
    if device_type != "cpu":
        return True, "fused flash/memory-efficient kernels on GPU"
    if dtype == "float32":
        return (
            True,
            "CPU, float32: SDPA's kernel measured as fast as the explicit math or faster",
        )
    return (
        False,
        f"CPU, {dtype}: SDPA's kernel (its backward) measured slower than the explicit math",
    )


def decide_threads(env_threads, threads):
    """(intra-op threads, why): torch's own (one per core, or OMP_NUM_THREADS), reported, never
    changed. Changing it with the machine's load would make a run's speed and numbers depend on what
    else ran."""
    if env_threads:
        return threads, f"OMP_NUM_THREADS={env_threads}"
    return threads, "torch's default (set OMP_NUM_THREADS to change it)"


@functools.cache
def measure_bf16_speedup(n_embd, repeats=7):
    """
    fp32 time / bf16 time of the MLP's matmul, (1024, n_embd) @ (n_embd, 4 n_embd), on the CPU now:
    > 1 when bf16 is faster. Flags say what the CPU can do, not what this torch build makes of it.
    The repeats alternate the two dtypes and each keeps its fastest time (timeit's advice): on a
    busy machine the slower ones measure the other processes; one round suffices when bf16 is
    clearly emulated. Once per process.
    """
    generator = torch.Generator().manual_seed(0)
    fp32 = (
        torch.randn(1024, n_embd, generator=generator),
        torch.randn(n_embd, 4 * n_embd, generator=generator),
    )
    bf16 = tuple(t.bfloat16() for t in fp32)
    best = {}
    for _ in range(repeats):
        for name, (a, b) in (("fp32", fp32), ("bf16", bf16)):
            a @ b  # warm up: packing buffers, kernel selection
            t0 = time.perf_counter()
            a @ b
            best[name] = min(best.get(name, math.inf), time.perf_counter() - t0)
        # emulated bf16 is many times slower than fp32: no repeat can make it fast, and each
        # repeat costs time there
        if best["bf16"] > 4 * best["fp32"]:
            break
    return best["fp32"] / best["bf16"]


@dataclass(frozen=True)
class TrainingChoices:
    """What training runs with on this machine, each with why (train.py prints them and writes
    choices.json, bench.py reports them)."""

    dtype: str  # autocast dtype
    newton_schulz_dtype: str  # Muon's orthogonalization (gptkit/muon.py)
    sdpa: bool  # F.scaled_dot_product_attention, else the explicit math (GPTConfig.sdpa)
    threads: int  # torch's intra-op threads
    # torch.compile the training step: True, False, or "auto" until train.py's timed first steps
    # decide (compile_pays, then a compiled step measured against the eager one)
    compile: bool | str
    reasons: dict  # choice -> why
    facts: dict  # what the choices were made from: bf16 flags, the measured bf16 speedup, cores


def training_choices(device, dtype="auto", sdpa="auto", n_embd=768, measure=True, compile=False):
    """
    Look at the machine (device: a --device setting, "auto" too) and decide (the decide_*
    functions) what --dtype, --sdpa and --compile ("auto" or not) become. On a CPU whose flags
    promise native bf16, and when measure, this first times a bf16 against an fp32 matmul of the
    model's width (a fraction of a second). measure=False decides by the flags alone: DDP ranks do,
    since their timings could differ and they must agree.
    """
    device_type = kind(pick_device(device))
    flags, speedup, facts = frozenset(), None, {}
    cuda_bf16 = device_type == "cuda" and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        flags = cpu_flags()
        if measure and cpu_has_fast_bf16(flags):
            speedup = measure_bf16_speedup(n_embd)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        facts = {
            "cpu_bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"}),
            "avx512f": "avx512f" in flags,
            "bf16_matmul_speedup": None if speedup is None else round(speedup, 2),
            "cores": cores,
        }
    autocast = decide_dtype(dtype, device_type, flags, speedup, cuda_bf16)
    chosen = {
        "dtype": autocast,
        "newton_schulz_dtype": decide_newton_schulz_dtype(device_type, flags, speedup, cuda_bf16),
        "sdpa": decide_sdpa(sdpa, device_type, autocast[0]),
        "threads": decide_threads(os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()),
        "compile": decide_compile(compile, device_type, measure),
    }
    values, reasons = (
        {name: value for name, (value, _) in chosen.items()},
        {name: why for name, (_, why) in chosen.items()},
    )
    return TrainingChoices(**values, reasons=reasons, facts=facts)


# compile="auto": what a cold compile of a training step cost with an empty Inductor cache (the
# first graph, which also starts Inductor, and each further window length of seq_warmup_iters) and
# the least its compiled step saved, on 2 CPU cores, the speedrun configs' models
# (docs/performance.md). A warm cache or more cores compile faster: the rule errs towards eager.
COLD_COMPILE_S = 50.0, 20.0  # the first graph, each further one
COMPILE_SPEEDUP = 1.4
AUTO_COMPILE_STEPS = 2, 5  # eager steps first (untimed, timed); then the same for compiled ones


def decide_compile(requested, device_type, measure):
    """(True | False | "auto", why): "auto" stays "auto" where train.py can time steps; ranks
    under torchrun (measure=False) must agree without timing, so decide by the device."""
    if requested != "auto":
        return requested, "set by compile"
    if not measure:
        return device_type == "cuda", "auto under torchrun: compiled on a GPU, eager on a CPU"
    if device_type == "mps":
        return False, "auto on mps: eager"
    untimed, timed = AUTO_COMPILE_STEPS
    return "auto", (
        f"the first {untimed + timed} steps run eager, timed; then compiled if the steps left "
        f"would pay back a cold compile at {COMPILE_SPEEDUP}x, and kept only if measured faster"
    )


def compile_pays(eager_step_s, steps_left, graphs=1):
    """(compile?, why): the eager steps left, made COMPILE_SPEEDUP times faster, save more than a
    cold compile of `graphs` graphs (one per window length still to come) costs."""
    first, further = COLD_COMPILE_S
    cost = first + further * (graphs - 1)
    saved = steps_left * eager_step_s * (1 - 1 / COMPILE_SPEEDUP)
    verdict = "pays back" if saved > cost else "would not pay back"
    return saved > cost, (
        f"{steps_left} steps left at {eager_step_s * 1000:.0f} ms eager: {COMPILE_SPEEDUP}x faster "
        f"saves ~{saved:.0f} s, which {verdict} a cold compile of {graphs} graph(s) (~{cost:.0f} s)"
    )


def precision(dtype, device_type):
    """(autocast context, GradScaler) for a dtype: float16 needs loss scaling to keep small
    gradients; bfloat16 does not."""
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        dtype
    ]
    ctx = (
        nullcontext()
        if dtype == "float32"
        else torch.autocast(device_type=device_type, dtype=ptdtype)
    )
    return ctx, torch.amp.GradScaler(device_type, enabled=dtype == "float16")


@dataclass(frozen=True)
class Hardware:
    """What a script computes on: setup()'s answer."""

    device: str  # "cpu", "cuda", "cuda:1", "mps"
    device_type: str  # "cpu", "cuda" or "mps": kind(device)
    # "float32" | "bfloat16" | "float16": autocast's (or, sampling on a CPU, the packed weights')
    dtype: str
    ctx: object  # the autocast context for forward passes (nullcontext in float32)
    scaler: torch.amp.GradScaler  # loss scaling, enabled for float16 only


def setup(device_name, dtype_name):
    """The Hardware for training or evaluation at --device and --dtype ("auto": pick_dtype).
    Training passes training_choices' dtype instead."""
    device = pick_device(device_name)
    device_type = kind(device)
    return hardware_for(device, pick_dtype(dtype_name, device_type))


def setup_for_sampling(device_name, dtype_name):
    """The Hardware for sampling: on a CPU no autocast, since decoding.prepare_for_decoding packs
    the weights in hw.dtype and autocast would only add casts."""
    device = pick_device(device_name)
    hw = hardware_for(device, pick_sampling_dtype(dtype_name, kind(device)))
    return replace(hw, ctx=nullcontext()) if hw.device_type == "cpu" else hw


def hardware_for(device, dtype):
    """The Hardware for a chosen device and dtype: its autocast context and loss scaler."""
    device_type = kind(device)
    ctx, scaler = precision(dtype, device_type)
    if device_type == "cuda":  # TF32 matmuls for whatever runs in float32 (Ampere and later)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Hardware(device, device_type, dtype, ctx, scaler)


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def flops_per_token(model):
    """Training FLOPs per token of a GPT, forward + backward (PaLM paper, appendix B): 6N + 12 L T
    C. A model without attention (recurrent.py's GRU) has no 12 L T C term: 6N, each weight one
    multiply-add forward and two backward."""
    cfg = model.config
    attention = 12 * cfg.n_layer * cfg.block_size * cfg.n_embd if model.has_attention else 0
    return 6 * model.get_num_params() + attention


def estimate_mfu(model, fwdbwd_per_iter, dt, peak_flops):
    """Model FLOPs utilization: achieved training FLOP/s (fwdbwd_per_iter sequences in dt seconds)
    over peak_flops."""
    return flops_per_token(model) * model.config.block_size * fwdbwd_per_iter / dt / peak_flops


def measure_peak_flops(device, dtype, repeats=5):
    """Achievable matmul FLOP/s on this device and dtype, measured now: the MFU denominator."""
    # a GPU needs 8192 to reach its peak; a small CPU, seconds at 2048
    size = 8192 if str(device).startswith("cuda") else 1024
    # leave the global RNG (dropout) untouched
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    for _ in range(2):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - t0)
