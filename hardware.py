"""
Device, dtype and autocast: the one choice every script (train, sample, attention, bench) makes the same way.

    device, device_type, dtype, ctx, scaler = hardware.setup("auto", "auto")
"""

import time
from contextlib import nullcontext

import torch

from configurator import UserError

DTYPES = ("auto", "float32", "bfloat16", "float16")  # the --dtype choices


def pick_device(name):
    if name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device={name} but CUDA is not available; use --device=cpu or --device=auto")
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_has_fast_bf16():
    """bf16 matmuls beat fp32 on CPUs with AVX512-BF16 or AMX (about 2x and more); elsewhere they are slower."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def pick_dtype(name, device_type):
    if name != "auto":
        return name
    if device_type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device_type == "cpu" and cpu_has_fast_bf16():
        return "bfloat16"
    return "float32"


def precision(dtype, device_type):
    """(autocast context, GradScaler) for a dtype: float16 needs loss scaling to keep small gradients; bfloat16 does not."""
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    ctx = nullcontext() if dtype == "float32" else torch.autocast(device_type=device_type, dtype=ptdtype)
    return ctx, torch.amp.GradScaler(device_type, enabled=dtype == "float16")


def setup(device_name, dtype_name):
    """(device, device_type, dtype, autocast ctx, GradScaler) from the --device and --dtype settings."""
    device = pick_device(device_name)
    device_type = "cuda" if device.startswith("cuda") else device
    dtype = pick_dtype(dtype_name, device_type)
    ctx, scaler = precision(dtype, device_type)
    if device_type == "cuda":  # TF32 matmuls for whatever runs in float32: ~free speed on Ampere and later
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device, device_type, dtype, ctx, scaler


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def measure_peak_flops(device, dtype, repeats=5):
    """Achievable matmul FLOP/s on this device and dtype, measured now: the MFU denominator."""
    size = 2048 if str(device).startswith("cuda") else 1024  # a 2048 matmul takes seconds on a small CPU
    generator = torch.Generator(device=device).manual_seed(0)  # leave the global RNG (dropout) untouched
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
