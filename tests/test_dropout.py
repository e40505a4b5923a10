"""Dropout in the GPT, on both attention paths (sdpa=True: F.scaled_dot_product_attention's
dropout_p; sdpa=False: the explicit math's nn.Dropout on the weights): the attention weights
themselves are dropped in train mode, each dropout of the GPT acts on its own in train mode, and
none acts in eval mode."""

from dataclasses import replace

import pytest
import torch
from conftest import VOCAB, all_logits

from model import GPT, GPTAttention, GPTConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T = 8


def weight_reader(sdpa, p):
    """A GPTAttention whose output is its own attention weights: q = k = 0 (so every query weighs
    the keys it may see equally), v = x and c_proj = the identity, so for one-hot inputs x_j = e_j,
    output[t, j] = weight of query t on key j."""
    attn = GPTAttention(T, T, T, p, num_heads=1, qkv_bias=False, proj_bias=False, sdpa=sdpa)
    with torch.no_grad():
        attn.c_attn.weight.zero_()
        attn.c_attn.weight[2 * T :] = torch.eye(T)  # c_attn's rows: q, then k, then v
        attn.c_proj.weight.copy_(torch.eye(T))
    attn.resid_dropout.p = 0.0  # only the weights' dropout
    return attn


@pytest.mark.parametrize("sdpa", [True, False])
def test_attention_weights_are_dropped_in_train_mode_and_not_in_eval_mode(sdpa):
    p, B = 0.5, 64
    attn = weight_reader(sdpa, p)
    x = torch.eye(T).expand(B, T, T)  # B sequences; token t is e_t
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    uniform = causal / causal.sum(1, keepdim=True)  # (T, T): 1/(t+1) on keys 0..t
    with torch.no_grad():
        torch.testing.assert_close(attn.eval()(x), uniform.expand(B, T, T))
        torch.manual_seed(0)
        dropped = attn.train()(x)  # (B, T, T): the weights after dropout
    kept = dropped != 0
    assert not kept[:, ~causal].any()  # the future stays masked
    # survivors scaled by 1/(1-p)
    torch.testing.assert_close(dropped[kept], (uniform / (1 - p)).expand(B, T, T)[kept])
    # B x 36 weights, each kept with probability 1 - p
    fraction = kept[:, causal].float().mean().item()
    assert 0.4 < fraction < 0.6, fraction
    if not sdpa:  # the explicit path returns the weights it applied: the same dropped ones
        torch.manual_seed(0)
        with torch.no_grad():
            out, weights = attn(x, return_weights=True)
        torch.testing.assert_close(weights[:, 0], dropped)


DROPOUTS = ["attn.attn_dropout", "attn.resid_dropout", "mlp.dropout", "transformer.drop"]


@pytest.mark.parametrize("sdpa", [True, False])
@pytest.mark.parametrize("which", DROPOUTS)
def test_each_gpt_dropout_acts_in_train_mode_only(sdpa, which):
    config = GPTConfig(
        block_size=16, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=16, dropout=0.3, sdpa=sdpa
    )
    torch.manual_seed(0)
    model = GPT(config)
    plain = GPT(replace(config, dropout=0.0))
    plain.load_state_dict(model.state_dict())
    dropouts = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout)}
    # a block's dropouts by their name inside the block
    short = {n.split(".", 3)[-1] if n.startswith("transformer.h.") else n for n in dropouts}
    assert short == set(DROPOUTS)
    for name, m in dropouts.items():
        if not name.endswith(which):
            # only the dropout under test keeps its p (attn_dropout's is SDPA's dropout_p on
            # that path)
            m.p = 0.0
    idx = torch.randint(VOCAB, (4, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = all_logits(plain.eval(), idx)
        assert torch.equal(all_logits(model.eval(), idx), expected)  # eval mode: no dropout at all
        model.train()
        torch.manual_seed(1)
        first = all_logits(model, idx)
        torch.manual_seed(2)
        second = all_logits(model, idx)
        # it drops, a new mask each call
        assert (first - expected).abs().max() > 1e-3 and not torch.equal(first, second)
        torch.manual_seed(1)
        # the masks come from torch's RNG: a resume restores them
        assert torch.equal(all_logits(model, idx), first)
        for m in dropouts.values():
            m.p = 0.0
        # nothing else differs in train mode
        torch.testing.assert_close(all_logits(model, idx), expected, rtol=0, atol=1e-6)
