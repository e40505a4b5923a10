"""
Fast token-by-token sampling on a CPU: the model's Linears swapped for decoding kernels (sample.py,
bench.py and train.py --eval_only --quantize call prepare_for_decoding). One token at a time is a
chain of matrix-vector products, so its limit is the memory's read bandwidth over the bytes of
weights a token reads (docs/performance.md measures both); fewer bytes (bf16, int8, int4) or a
layout that streams better (oneDNN's packed one) is what makes it faster. A Python caller gets
sample.py's speed the same way:

    python sample.py --out_dir=out-speedrun-90s --quantize=int8
    python sample.py --out_dir=out-speedrun-90s --quantize=int4

    model = prepare_for_decoding(model.eval(), "int4")  # sample.py's path, in Python
    model.generate(idx, 100)
"""

import torch
import torch.nn as nn

from gptkit.base import UserError

# --------------------------------------------------------------------------------------------------
# CPU kernels: one token at a time is a chain of matrix-vector products, so its speed is the rate
# at which the weights stream from memory.


class PackedLinear(nn.Module):
    """
    A Linear whose weight oneDNN has re-laid out in its blocked format (what torch.compile's CPU
    freezing does), computed by oneDNN's own kernel in `dtype`: at batch 1 it streams the weight
    faster than F.linear does (measured: docs/performance.md). The packed weight is an opaque
    tensor: it cannot be saved, copied or moved, so pack last, for sampling only.
    """

    def __init__(self, linear, dtype=torch.float32):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.dtype = dtype
        weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().to(dtype), 1)
        self.register_buffer("weight", weight, persistent=False)
        bias = None if linear.bias is None else linear.bias.detach().to(dtype)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x):
        y = torch.ops.mkldnn._linear_pointwise(
            x.to(self.dtype), self.weight, self.bias, "none", [], ""
        )
        return y.to(x.dtype)


class Int8Linear(nn.Module):
    """
    A Linear with int8 weights and one fp32 scale per output channel (absmax / 127): 4x fewer bytes
    to stream per token. Each input row is quantized to int8 on the fly (its own absmax scale) so
    that the product runs in torch's int8 x int8 -> int32 kernel (torch._int_mm); a weight-only
    kernel that keeps the activations in fp32 (torch._weight_int8pack_mm) measured slower than this
    one at batch 1 on CPU (docs/performance.md).
    """

    def __init__(self, linear):
        super().__init__()
        weight = linear.weight.detach().float()  # (out, in)
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127  # (out,)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # (in, out) as a transposed view of (out, in): the layout _int_mm streams fastest (measured)
        self.register_buffer("weight_t", (weight / scale[:, None]).round().to(torch.int8).t())
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())

    def forward(self, x):
        rows = x.reshape(-1, self.in_features).float()  # (B*T, in)
        # one kernel for abs().amax(), the rest in place on fresh tensors: a token runs this 49
        # times in GPT-2 small, so each op saved is ~49 dispatches, and the numbers are the same
        x_scale = torch.linalg.vector_norm(rows, float("inf"), dim=1, keepdim=True)  # (B*T, 1)
        x_scale = x_scale.clamp_(min=1e-12).div_(127)
        x_int8 = (rows / x_scale).round_().to(torch.int8)
        # (B*T, out), exact int32 sums rescaled
        y = torch._int_mm(x_int8, self.weight_t) * (x_scale * self.scale)
        if self.bias is not None:
            y.add_(self.bias)
        return y.view(*x.shape[:-1], self.out_features).type_as(x)


class Int4Linear(nn.Module):
    """
    A Linear with 4-bit weights in groups of `group_size` inputs, each group with its own scale and
    offset (gpt-fast's and torchao's layout: w ~ (q - 8) * scale + zero, q in 0..15): ~7x fewer
    bytes than fp32. Weight-only: the product runs in ATen's _weight_int4pack_mm_for_cpu, whose AVX2
    and AVX-512 code takes bf16 activations only (fed fp32 it runs a scalar loop), so each input is
    cast to bf16 and the output back. The kernel wants out_features a multiple of 16 and in_features
    one of the group size (32 at least), so the weight is padded with zero rows and columns (the LM
    head's 65 or 50257 rows, a 16-wide toy's inputs) and the extra outputs cut off.
    """

    def __init__(self, linear, group_size=128):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # e.g. GPT-2 XL's 1600 inputs: groups of 64
        while linear.in_features % group_size and group_size > 32:
            group_size //= 2
        self.group_size = group_size
        self.padded_in = -(-linear.in_features // group_size) * group_size
        padded_out = -(-linear.out_features // 16) * 16
        weight = torch.zeros(padded_out, self.padded_in)
        weight[: self.out_features, : self.in_features] = linear.weight.detach().float()
        groups = weight.view(-1, group_size)  # (out * in / group_size, group_size)
        low, high = groups.amin(dim=1, keepdim=True), groups.amax(dim=1, keepdim=True)
        scale = (high - low).clamp(min=1e-6) / 15
        # in place after the first op: a single fp32 temporary as large as the weight (GPT-2 XL's
        # LM head: 322 MB)
        q = (groups - low).div_(scale).round_().clamp_(0, 15).to(torch.int32)
        q = q.view(padded_out, self.padded_in)
        zero = low + 8 * scale  # the kernel computes (q - 8) * scale + zero
        # (in / group_size, out, 2): each group's scale and offset side by side, the kernel's layout
        scale_zero = (
            torch.cat([scale, zero], dim=1).view(padded_out, -1, 2).transpose(0, 1).contiguous()
        )
        # (out, in / 2) uint8
        self.register_buffer("weight", torch._convert_weight_to_int4pack_for_cpu(q, 1))
        self.register_buffer("scale_zero", scale_zero.to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())

    def forward(self, x):
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)  # (B*T, in)
        if self.padded_in != self.in_features:
            rows = nn.functional.pad(rows, (0, self.padded_in - self.in_features))
        # (B*T, padded out)
        y = torch._weight_int4pack_mm_for_cpu(rows, self.weight, self.group_size, self.scale_zero)
        if y.shape[1] != self.out_features:
            y = y[:, : self.out_features]
        # bf16 + fp32 bias is computed in fp32: the cast and the add in one op
        y = y.float() if self.bias is None else torch.add(self.bias, y)
        return y.view(*x.shape[:-1], self.out_features).type_as(x)


QUANTIZE = ("none", "int8", "int4")


def check_quantize(quantize, device_type="cpu"):
    """The one check of a --quantize setting (sample.py, train.py --eval_only, bench.py): known, on
    a CPU, and for int4 on a CPU and torch build with the vectorized kernel."""
    if quantize not in QUANTIZE:
        raise UserError(f"--quantize={quantize} must be one of {', '.join(QUANTIZE)}")
    # CUDA's _int_mm needs > 16 rows; the int4 kernel here is CPU-only
    if quantize != "none" and device_type != "cpu":
        raise UserError(
            f"--quantize={quantize} is for sampling on a CPU; on {device_type} sample without it"
        )
    if quantize == "int4":
        capability = torch.backends.cpu.get_cpu_capability()
        has_kernel = hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")
        if not has_kernel or capability not in ("AVX2", "AVX512"):
            raise UserError(
                "--quantize=int4 needs torch's AVX2/AVX-512 int4 kernel "
                f"(this CPU and torch build: {capability}); use --quantize=int8"
            )


def prepare_for_decoding(model, quantize="none", dtype=torch.float32):
    """
    The model, changed in place for fast token-by-token sampling; only for a model you sample from.
    On CPU every Linear, the LM head included, becomes a PackedLinear in `dtype` (float32 or
    bfloat16), an Int8Linear with quantize="int8", or an Int4Linear with quantize="int4"; the token
    embedding keeps its fp32 rows (a lookup reads one row). On a GPU the model is left as it is
    (decoding there is bound by kernel launches, not bytes).
    """
    device_type = next(model.parameters()).device.type
    check_quantize(quantize, device_type)
    if device_type != "cpu" or (quantize == "none" and not torch.backends.mkldnn.is_available()):
        return model
    if quantize == "none" and dtype not in (torch.float32, torch.bfloat16):
        raise UserError(f"sampling on a CPU runs in float32 or bfloat16, not {dtype}")
    # (parent, name) only, no reference to the Linear itself: each fp32 weight is freed as soon as
    # its kernel replaces it, so GPT-2 XL in int4 never holds its fp32 and int4 weights whole at
    # once (peak RSS: docs/performance.md)
    linears = [
        (parent, name)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear)
    ]
    for parent, name in linears:
        child = getattr(parent, name)
        try:
            kernel = {"int8": Int8Linear, "int4": Int4Linear}.get(quantize)
            setattr(parent, name, kernel(child) if kernel else PackedLinear(child, dtype))
        except RuntimeError as e:  # e.g. bf16 on a CPU whose oneDNN has no bf16 kernels
            raise UserError(
                f"this CPU cannot sample in {dtype} ({e}); use --dtype=float32"
            ) from None
    return model
