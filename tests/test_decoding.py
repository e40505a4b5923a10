"""gptkit/decoding.py: the CPU decoding kernels (packed fp32/bf16, int8, int4) keep the model's
logits and greedy tokens, and the quantized ones its loss on held-out text (a small model trained
here, in seconds)."""

import copy
import os

import pytest
import torch
from conftest import SHAKESPEARE, SWITCHES, VOCAB, all_logits, run_script, tiny_gpt
from torch.testing import assert_close

from gptkit.base import UserError
from gptkit.decoding import (
    Int4Linear,
    Int8Linear,
    PackedLinear,
    check_quantize,
    prepare_for_decoding,
)
from model import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("switch", ["gpt2", "all"])
def test_fp32_decoding_keeps_the_logits_and_the_greedy_tokens(switch):
    model = tiny_gpt(**SWITCHES[switch])
    prompt = torch.randint(0, VOCAB, (2, 4), generator=torch.Generator().manual_seed(1))
    greedy, logits = model.generate(prompt, 12, temperature=0), all_logits(model, prompt)
    prepare_for_decoding(model)
    assert isinstance(model.lm_head, PackedLinear)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert model.transformer.h[0].mlp.c_fc.weight.is_mkldnn  # oneDNN's blocked layout, not torch's
    assert_close(all_logits(model, prompt), logits, rtol=0, atol=1e-5)
    assert torch.equal(model.generate(prompt, 12, temperature=0), greedy)


@pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="bf16 is refused here: see below"
)
def test_bf16_decoding_packs_every_linear_and_keeps_the_greedy_tokens():
    model = tiny_gpt()
    prompt = torch.randint(0, VOCAB, (2, 4), generator=torch.Generator().manual_seed(1))
    greedy, logits = model.generate(prompt, 12, temperature=0), all_logits(model, prompt)
    prepare_for_decoding(model, dtype=torch.bfloat16)
    # oneDNN's layout
    assert isinstance(model.lm_head, PackedLinear)
    assert model.transformer.h[0].mlp.c_fc.weight.is_mkldnn
    assert ((all_logits(model, prompt) - logits).norm() / logits.norm()) < 0.02
    assert torch.equal(model.generate(prompt, 12, temperature=0), greedy)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 48), (3, 48), (2, 5, 48)])
def test_packed_linear_computes_the_linear_at_every_batch_shape(bias, shape):
    torch.manual_seed(0)
    linear, x = torch.nn.Linear(48, 80, bias=bias), torch.randn(*shape)
    with torch.no_grad():
        assert_close(PackedLinear(linear)(x), linear(x), rtol=0, atol=1e-5)
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():  # else bf16 is refused: see the test below
            out = PackedLinear(linear, torch.bfloat16)(x)
            assert out.dtype == torch.float32
            assert ((out - linear(x)).norm() / linear(x).norm()) < 0.02


def test_cpu_decoding_refuses_a_dtype_it_cannot_pack():
    with pytest.raises(
        UserError, match="sampling on a CPU runs in float32 or bfloat16, not torch.float16"
    ):
        prepare_for_decoding(tiny_gpt(), dtype=torch.float16)


@pytest.mark.parametrize("switch", ["gpt2", "all"])
def test_int8_logits_stay_close_to_fp32_and_greedy_picks_mostly_agree(switch):
    model = tiny_gpt(**SWITCHES[switch])
    idx = torch.randint(0, VOCAB, (4, 12), generator=torch.Generator().manual_seed(2))
    logits = all_logits(model, idx)
    int8 = prepare_for_decoding(tiny_gpt(**SWITCHES[switch]), "int8")
    assert isinstance(int8.lm_head, Int8Linear)
    assert isinstance(int8.transformer.h[1].attn.c_attn, Int8Linear)
    assert not any(isinstance(m, torch.nn.Linear) for m in int8.modules())
    int8_logits = all_logits(int8, idx)
    relative_error = ((int8_logits - logits).norm() / logits.norm()).item()
    assert 0 < relative_error < 0.03, relative_error  # quantized (not a copy), and close
    agree = (int8_logits.argmax(-1) == logits.argmax(-1)).float().mean().item()
    assert agree >= 0.9, agree  # teacher-forced greedy picks at 48 positions


def test_int8_linear_matches_its_dequantized_weights():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 40)
    quantized = Int8Linear(linear)
    dequantized = quantized.weight_t.t().float() * quantized.scale[:, None]  # (out, in)
    # round to nearest
    assert (dequantized - linear.weight).abs().max() <= quantized.scale.max() / 2 + 1e-7
    x = torch.randn(3, 5, 64)
    assert_close(
        quantized(x), torch.nn.functional.linear(x, dequantized, linear.bias), rtol=0.02, atol=0.02
    )


def test_prepare_for_decoding_rejects_an_unknown_quantization():
    with pytest.raises(UserError, match="quantize=int3 must be one of none, int8, int4"):
        prepare_for_decoding(tiny_gpt(), "int3")


@pytest.mark.parametrize("switch", ["gpt2", "all"])
def test_cached_packed_fp32_greedy_tokens_equal_the_uncached_reference(switch):
    model = tiny_gpt(**SWITCHES[switch])
    prompt = torch.randint(0, VOCAB, (2, 3), generator=torch.Generator().manual_seed(3))
    # the whole context recomputed, plain Linears
    reference = model.generate(prompt, 9, temperature=0, use_cache=False)
    prepare_for_decoding(model)
    assert torch.equal(model.generate(prompt, 9, temperature=0), reference)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    "in_features, out_features, group_size", [(16, 37, 32), (256, 80, 128), (96, 48, 32)]
)
def test_int4_linear_is_its_dequantized_weights_group_by_group(
    bias, in_features, out_features, group_size
):
    torch.manual_seed(0)
    linear = torch.nn.Linear(in_features, out_features, bias=bias)
    quantized = Int4Linear(linear)
    # 128, or the largest of 64 and 32 that divides the inputs (16 is padded to 32)
    assert quantized.group_size == group_size
    with torch.no_grad():
        # the kernel applied to the identity reads out its dequantized weights, (in, out)
        bias = 0 if linear.bias is None else linear.bias[:, None]
        dequantized = quantized(torch.eye(in_features)).t() - bias
        # (out, groups, group)
        groups = linear.weight.view(out_features, -1, min(group_size, in_features))
        # one 4-bit step per group
        step = (groups.amax(-1, keepdim=True) - groups.amin(-1, keepdim=True)) / 15
        error = (dequantized.view_as(groups) - groups).abs()
        # nearest level, bf16 scales
        assert (error <= step / 2 + 0.01 * groups.abs().amax(-1, keepdim=True)).all()
        x = torch.randn(3, 5, in_features)
        expected = torch.nn.functional.linear(x.bfloat16().float(), dequantized, linear.bias)
        assert_close(quantized(x), expected, rtol=0.02, atol=0.02)
    assert quantized.weight.dtype == torch.uint8
    assert quantized.weight.numel() == -(-out_features // 16) * 16 * max(in_features, 32) // 2


@pytest.fixture(scope="module")
def trained():
    """A 2-layer, 64-wide character GPT trained here for 150 steps on Tiny Shakespeare's first 90%
    (seconds on one thread), and a fixed held-out batch from the last 10%: 64 windows of 32
    characters."""
    text = SHAKESPEARE.read_text(encoding="utf-8")
    stoi = {c: i for i, c in enumerate(sorted(set(text)))}
    data = torch.tensor([stoi[c] for c in text])
    train, val = data[: int(0.9 * len(data))], data[int(0.9 * len(data)) :]
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(block_size=32, vocab_size=len(stoi), n_layer=2, n_head=2, n_embd=64, dropout=0.0)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        starts = torch.randint(len(train) - 33, (16,), generator=generator)
        x = torch.stack([train[i : i + 32] for i in starts])
        y = torch.stack([train[i + 1 : i + 33] for i in starts])
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval(), val[: 64 * 32].view(64, 32), val[1 : 64 * 32 + 1].view(64, 32)


# issue 20's loss budgets, nats/token
@pytest.mark.parametrize("quantize, tolerance", [("int8", 0.01), ("int4", 0.05)])
def test_quantized_loss_stays_within_its_budget_of_fp32(trained, quantize, tolerance):
    model, x, y = trained
    with torch.no_grad():
        fp32_logits, fp32_loss = model(x, y)
        # learned: a uniform guess over 65 characters is 4.17, the unigram counts ~3.3
        assert fp32_loss < 2.8
        quantized = prepare_for_decoding(copy.deepcopy(model), quantize)
        logits, loss = quantized(x, y)
    assert not torch.equal(logits, fp32_logits)  # it ran the quantized kernels
    assert abs(loss.item() - fp32_loss.item()) < tolerance, (loss.item(), fp32_loss.item())


def test_int4_is_one_line_on_a_gpu_and_on_a_cpu_without_its_vectorized_kernel(char_checkpoint):
    with pytest.raises(
        UserError, match="^--quantize=int4 is for sampling on a CPU; on cuda sample without it$"
    ):
        check_quantize("int4", "cuda")
    # this CPU with ATen's dispatch held to its scalar code, where the int4 kernel is a slow
    # loop: sample.py says so
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    result = run_script(
        "sample.py",
        f"--out_dir={char_checkpoint}",
        "--quantize=int4",
        "--max_new_tokens=2",
        env=env,
        check=False,
    )
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: --quantize=int4 needs torch's AVX2/AVX-512 int4 kernel "
        "(this CPU and torch build: DEFAULT); use --quantize=int8"
    ]


def int8_forward_before_hoisting(m, x):
    """Int8Linear.forward as it was before its ops were folded (d580eb3): the reference."""
    rows = x.reshape(-1, m.in_features).float()
    x_scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
    y = torch._int_mm((rows / x_scale).round().to(torch.int8), m.weight_t) * (x_scale * m.scale)
    y = y if m.bias is None else y + m.bias
    return y.view(*x.shape[:-1], m.out_features).type_as(x)


def int4_forward_before_hoisting(m, x):
    """Int4Linear.forward as it was before its ops were folded (d580eb3): the reference."""
    rows = x.reshape(-1, m.in_features).to(torch.bfloat16)
    rows = torch.nn.functional.pad(rows, (0, m.padded_in - m.in_features))
    y = torch._weight_int4pack_mm_for_cpu(rows, m.weight, m.group_size, m.scale_zero)
    y = y[:, : m.out_features].float()
    y = y if m.bias is None else y + m.bias
    return y.view(*x.shape[:-1], m.out_features).type_as(x)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("in_out", [(48, 80), (768, 2304), (64, 65)])
@pytest.mark.parametrize(
    "kernel, reference",
    [(Int8Linear, int8_forward_before_hoisting), (Int4Linear, int4_forward_before_hoisting)],
)
def test_the_quantized_kernels_keep_their_numbers_bit_for_bit(kernel, reference, in_out, bias):
    if kernel is Int4Linear:
        check_quantize("int4")
    torch.manual_seed(0)
    module = kernel(torch.nn.Linear(*in_out, bias=bias))
    for shape in [(1, 1, in_out[0]), (3, in_out[0]), (2, 5, in_out[0])]:
        x = torch.randn(*shape)
        assert torch.equal(module(x), reference(module, x)), shape
