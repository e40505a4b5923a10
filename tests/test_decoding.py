"""decoding.py: the CPU decoding kernels (packed fp32/bf16, int8) keep the model's logits and greedy tokens."""

import pytest
import torch
from conftest import SWITCHES, VOCAB, all_logits, tiny_gpt
from torch.testing import assert_close

from base import UserError
from decoding import Int8Linear, PackedLinear, prepare_for_decoding

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("switch", ["gpt2", "all"])
def test_packed_decoding_keeps_the_logits_and_the_greedy_tokens(switch):
    model = tiny_gpt(**SWITCHES[switch])
    prompt = torch.randint(0, VOCAB, (2, 4), generator=torch.Generator().manual_seed(1))
    greedy, logits = model.generate(prompt, 12, temperature=0), all_logits(model, prompt)
    prepare_for_decoding(model)
    assert isinstance(model.lm_head, PackedLinear) and not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert model.transformer.h[0].mlp.c_fc.weight.is_mkldnn  # oneDNN's blocked layout, not torch's
    assert_close(all_logits(model, prompt), logits, rtol=0, atol=1e-5)
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
            assert out.dtype == torch.float32 and ((out - linear(x)).norm() / linear(x).norm()) < 0.02


def test_cpu_decoding_refuses_a_dtype_it_cannot_pack():
    with pytest.raises(UserError, match="sampling on a CPU runs in float32 or bfloat16, not torch.float16"):
        prepare_for_decoding(tiny_gpt(), dtype=torch.float16)


@pytest.mark.parametrize("switch", ["gpt2", "all"])
def test_int8_logits_stay_close_to_fp32_and_greedy_picks_mostly_agree(switch):
    model = tiny_gpt(**SWITCHES[switch])
    idx = torch.randint(0, VOCAB, (4, 12), generator=torch.Generator().manual_seed(2))
    logits = all_logits(model, idx)
    int8 = prepare_for_decoding(tiny_gpt(**SWITCHES[switch]), "int8")
    assert isinstance(int8.lm_head, Int8Linear) and isinstance(int8.transformer.h[1].attn.c_attn, Int8Linear)
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
    assert (dequantized - linear.weight).abs().max() <= quantized.scale.max() / 2 + 1e-7  # round to nearest
    x = torch.randn(3, 5, 64)
    assert_close(quantized(x), torch.nn.functional.linear(x, dequantized, linear.bias), rtol=0.02, atol=0.02)


def test_prepare_for_decoding_rejects_an_unknown_quantization():
    with pytest.raises(UserError, match="quantize=int3 must be one of none, int8"):
        prepare_for_decoding(tiny_gpt(), "int3")
