"""
Fast token-by-token sampling on a CPU: the model's Linears swapped for decoding kernels (sample.py, bench.py and
train.py --eval_only --quantize call prepare_for_decoding). One token at a time is a chain of matrix-vector
products, so its speed is the rate at which the weights stream from memory (docs/performance.md has the
roofline numbers); fewer bytes (bf16, int8) or a better layout (oneDNN's packed one) is what makes it faster.

    python sample.py --out_dir=out-shakespeare-char-cpu --quantize=int8
"""

import torch
import torch.nn as nn

from base import UserError

# ----------------------------------------------------------------------------------------------------
# CPU kernels: one token at a time is a chain of matrix-vector products, so its speed is the rate at which
# the weights stream from memory.


class PackedLinear(nn.Module):
    """
    A Linear whose weight oneDNN has re-laid out in its blocked format (what torch.compile's CPU freezing
    does), computed by oneDNN's own kernel in `dtype`. At batch 1 it streams the weight at ~25-29 GB/s where
    F.linear reaches ~14-16 on the same Zen 4 CPU (measured, docs/performance.md). The packed weight is an
    opaque tensor: it cannot be saved, copied or moved, so pack last, for sampling only.
    """

    def __init__(self, linear, dtype=torch.float32):
        super().__init__()
        self.in_features, self.out_features, self.dtype = linear.in_features, linear.out_features, dtype
        self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().to(dtype), 1), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(dtype), persistent=False)

    def forward(self, x):
        y = torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.weight, self.bias, "none", [], "")
        return y.to(x.dtype)


class Int8Linear(nn.Module):
    """
    A Linear with int8 weights and one fp32 scale per output channel (absmax / 127): 4x fewer bytes to
    stream per token. Each input row is quantized to int8 on the fly (its own absmax scale) so that the
    product runs in torch's int8 x int8 -> int32 kernel (torch._int_mm); a weight-only kernel that keeps
    the activations in fp32 (torch._weight_int8pack_mm) measured ~7x slower than this one at batch 1 on CPU.
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
        x_scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127  # (B*T, 1)
        x_int8 = (rows / x_scale).round().to(torch.int8)
        y = torch._int_mm(x_int8, self.weight_t) * (x_scale * self.scale)  # (B*T, out), exact int32 sums rescaled
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features).type_as(x)


QUANTIZE = ("none", "int8")


def check_quantize(quantize, device_type="cpu"):
    """The one check of a --quantize setting (sample.py, train.py --eval_only, bench.py): known, and on a CPU."""
    if quantize not in QUANTIZE:
        raise UserError(f"--quantize={quantize} must be one of {', '.join(QUANTIZE)}")
    if quantize != "none" and device_type != "cpu":  # CUDA's _int_mm needs > 16 rows
        raise UserError(f"--quantize={quantize} is for sampling on a CPU; on {device_type} sample without it")


def prepare_for_decoding(model, quantize="none", dtype=torch.float32):
    """
    The model, changed in place for fast token-by-token sampling; only for a model you sample from.
    On CPU every Linear, the LM head included, becomes a PackedLinear in `dtype` (float32 or bfloat16),
    or an Int8Linear with quantize="int8"; the token embedding keeps its fp32 rows (a lookup reads one
    row). On a GPU the model is left as it is (decoding there is bound by kernel launches, not bytes).
    """
    device_type = next(model.parameters()).device.type
    check_quantize(quantize, device_type)
    if device_type != "cpu" or (quantize == "none" and not torch.backends.mkldnn.is_available()):
        return model
    if quantize == "none" and dtype not in (torch.float32, torch.bfloat16):
        raise UserError(f"sampling on a CPU runs in float32 or bfloat16, not {dtype}")
    parents = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()]
    for parent, name, child in parents:
        if not isinstance(child, nn.Linear):
            continue
        try:
            setattr(parent, name, Int8Linear(child) if quantize == "int8" else PackedLinear(child, dtype))
        except RuntimeError as e:  # e.g. bf16 on a CPU whose oneDNN has no bf16 kernels
            raise UserError(f"this CPU cannot sample in {dtype} ({e}); use --dtype=float32") from None
    return model
