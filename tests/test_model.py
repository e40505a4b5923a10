"""The GPT of model.py: causality, architecture switches, KV-cache generation, sampling, attention
maps, bad input."""

import math

import pytest
import torch
from conftest import SWITCHES, VOCAB, all_logits, tiny_gpt
from torch.testing import assert_close

from gptkit.hardware import estimate_mfu
from gptkit.pretrained import crop_block_size
from gptkit.train_config import configure_adamw
from model import GPT, GPTConfig, KVCache, sample_next

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("switch", SWITCHES)
def test_switch_shapes_and_parameters(switch):
    model = tiny_gpt(**SWITCHES[switch])
    cfg = model.config
    idx = torch.randint(0, VOCAB, (3, 12))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 12, VOCAB) and loss.shape == () and math.isfinite(loss.item())
    assert model(idx)[0].shape == (3, 1, VOCAB)
    assert (model.transformer.wpe is None) == (cfg.pos == "rope")
    assert (model.lm_head.weight is model.transformer.wte.weight) == cfg.tie_weights
    block = model.transformer.h[0]
    assert (block.attn.q_norm is not None) == cfg.qk_norm
    assert (block.attn.c_attn.bias is not None) == cfg.bias
    assert (block.mlp.c_fc.bias is not None) == cfg.bias
    assert type(block.ln_1).__name__ == {"layernorm": "LayerNorm", "rmsnorm": "RMSNorm"}[cfg.norm]
    assert (block.mlp.act is None) == (cfg.mlp == "relu2")
    gpt2 = tiny_gpt()
    head = 0 if cfg.tie_weights else VOCAB * 16
    assert model.get_num_params() > 0
    if switch == "untied":  # one (vocab, C) head more
        assert model.get_num_params() == gpt2.get_num_params() + head
    if switch == "value_embeds":  # one (vocab, C) table per layer
        assert model.get_num_params() == gpt2.get_num_params() + 2 * VOCAB * 16
    if switch == "unet":  # one weight per skip
        assert model.skip_weights.shape == (1,)


def test_value_embeds_and_unet_at_zero_are_the_plain_gpt_and_change_it_otherwise():
    plain = tiny_gpt(n_layer=4)
    levers = tiny_gpt(n_layer=4, value_embeds=True, unet=True)
    # the shared weights; ve tables and skip weights stay
    levers.load_state_dict(plain.state_dict(), strict=False)
    idx = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        levers.skip_weights.zero_()
        for table in levers.transformer.ve:
            table.weight.zero_()
        assert_close(all_logits(levers, idx), all_logits(plain, idx), rtol=0, atol=1e-5)
        levers.skip_weights[0] = 1.0  # layer 1's output into layer 2 (the inner skip)
        skipped = all_logits(levers, idx)
        assert not torch.allclose(skipped, all_logits(plain, idx))
        levers.transformer.ve[3].weight.normal_()  # the last layer's value embeddings
        assert not torch.allclose(all_logits(levers, idx), skipped)


@pytest.mark.parametrize("switch", SWITCHES)
def test_causality_future_tokens_never_change_past_logits(switch):
    model = tiny_gpt(**SWITCHES[switch])
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, VOCAB, (2, 12), generator=gen)
    logits = all_logits(model, idx)
    for t in (0, 4, 10):
        changed = idx.clone()
        changed[:, t + 1 :] = torch.randint(0, VOCAB, (2, 11 - t), generator=gen)
        new_logits = all_logits(model, changed)
        assert_close(new_logits[:, : t + 1], logits[:, : t + 1], rtol=0, atol=1e-5)
        # the future does matter
        assert not torch.allclose(new_logits[:, t + 1 :], logits[:, t + 1 :])


@pytest.mark.parametrize("switch", SWITCHES)
def test_sdpa_and_explicit_paths_agree_in_the_whole_gpt(switch):
    model = tiny_gpt(**SWITCHES[switch])
    idx = torch.randint(0, VOCAB, (2, 12))
    sdpa = all_logits(model, idx)
    explicit = tiny_gpt(**SWITCHES[switch], sdpa=False)
    explicit.load_state_dict(model.state_dict())  # sdpa changes the kernel, not the weights
    assert_close(all_logits(explicit, idx), sdpa, rtol=0, atol=1e-5)


def stepwise_logits(model, prompt, tokens, use_cache):
    """Per-step next-token logits while feeding `tokens` after `prompt`, the way generate_stream
    does."""
    caches = model.new_kv_caches() if use_cache else None
    idx, steps = prompt, []
    for token in tokens.unbind(dim=1):
        steps.append(model.next_token_logits(idx, caches))
        if use_cache and idx.shape[1] <= model.config.block_size:
            assert caches[0].length == idx.shape[1]  # the cache holds exactly the sequence so far
        idx = torch.cat([idx, token[:, None]], dim=1)
    return torch.stack(steps, dim=1)  # (B, steps, vocab_size)


def assert_kv_cache_matches_recompute(model, prompt_len, new):
    prompt = torch.randint(0, VOCAB, (2, prompt_len), generator=torch.Generator().manual_seed(2))
    greedy = model.generate(prompt, new, temperature=0)
    assert greedy.shape == (2, prompt_len + new)
    assert torch.equal(model.generate(prompt, new, temperature=0, use_cache=False), greedy)
    assert torch.equal(model.generate(prompt, new, top_k=1), greedy)  # top_k=1 is greedy too
    # sampled tokens vary more than a random model's greedy ones, which soon repeat one token
    sampled = model.generate(prompt, new, generator=torch.Generator().manual_seed(3))
    assert torch.equal(
        model.generate(prompt, new, generator=torch.Generator().manual_seed(3), use_cache=False),
        sampled,
    )
    tokens = sampled[:, prompt_len:]
    with_cache = stepwise_logits(model, prompt, tokens, use_cache=True)
    assert_close(
        with_cache, stepwise_logits(model, prompt, tokens, use_cache=False), rtol=0, atol=1e-4
    )
    # and both are the plain forward pass over the last block_size tokens
    for step in range(new):
        context = torch.cat([prompt, tokens[:, :step]], dim=1)[:, -model.config.block_size :]
        assert_close(with_cache[:, step], model(context)[0][:, -1], rtol=0, atol=1e-4)


@pytest.mark.parametrize("switch", SWITCHES)
def test_kv_cache_greedy_tokens_and_logits_equal_recompute(switch):
    # 16 tokens: outgrows block_size=12
    assert_kv_cache_matches_recompute(tiny_gpt(**SWITCHES[switch]), prompt_len=4, new=12)


@pytest.mark.parametrize("switch", ["gpt2", "rope"])
# fills the cache exactly; starts full
@pytest.mark.parametrize("prompt_len,new", [(1, 11), (12, 3)])
def test_kv_cache_at_the_block_size_edges(switch, prompt_len, new):
    assert_kv_cache_matches_recompute(tiny_gpt(**SWITCHES[switch]), prompt_len, new)


def test_logit_softcap_bounds_the_logits_and_is_tanh_of_the_uncapped_ones():
    plain, capped = tiny_gpt(), tiny_gpt(logit_softcap=0.5)
    capped.load_state_dict(plain.state_dict())  # same weights: the cap is the only difference
    idx = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(4))
    uncapped = all_logits(plain, idx)
    assert uncapped.abs().max() > 0.5  # the cap has something to do
    assert all_logits(capped, idx).abs().max() < 0.5
    assert_close(all_logits(capped, idx), 0.5 * torch.tanh(uncapped / 0.5))
    # sampling sees the cap too
    assert_close(capped.next_token_logits(idx), 0.5 * torch.tanh(uncapped[:, -1] / 0.5))
    with pytest.raises(ValueError, match="logit_softcap=-1.0 must be >= 0"):
        GPTConfig(logit_softcap=-1.0)


def test_zero_init_proj_zeroes_only_the_output_projections():
    torch.manual_seed(0)
    default = GPT(GPTConfig(block_size=12, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=16))
    torch.manual_seed(0)
    zeroed = GPT(
        GPTConfig(
            block_size=12, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=16, zero_init_proj=True
        )
    )
    for (name, p), q in zip(default.named_parameters(), zeroed.parameters(), strict=True):
        if name.endswith("c_proj.weight"):
            assert not q.any() and p.any(), name
        else:
            assert torch.equal(p, q), name  # every other weight is what the default draws
    # every block starts as the identity: a position's logits depend on its own token only (and
    # its position)
    idx = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(5))
    changed = idx.clone()
    changed[:, :6] = (idx[:, :6] + 1) % VOCAB
    assert torch.equal(all_logits(zeroed.eval(), idx)[:, 6:], all_logits(zeroed, changed)[:, 6:])


def test_kv_cache_prefills_once_then_feeds_one_token_per_step():
    model = tiny_gpt(pos="rope")
    caches = model.new_kv_caches()
    idx = torch.randint(0, VOCAB, (1, 6))
    model.next_token_logits(idx, caches)
    assert [c.length for c in caches] == [6, 6]
    model.next_token_logits(torch.cat([idx, idx[:, :1]], dim=1), caches)
    assert [c.length for c in caches] == [7, 7]
    assert isinstance(caches[0], KVCache)
    assert caches[0].k.shape == (1, 2, 12, 8)  # (B, nh, block_size, hs)


def test_sampling_is_reproducible_with_a_generator():
    model = tiny_gpt()
    prompt = torch.zeros(3, 1, dtype=torch.long)

    def sample(seed, **kw):
        return model.generate(
            prompt, 12, temperature=1.5, generator=torch.Generator().manual_seed(seed), **kw
        )

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))
    assert torch.equal(sample(1), sample(1, use_cache=False))  # same logits, same random draws
    assert torch.equal(sample(3, top_k=5, top_p=0.9), sample(3, top_k=5, top_p=0.9))


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.5, None, None), (0.8, 5, 0.9)])
def test_a_batch_with_one_generator_per_row_samples_what_each_row_samples_alone(
    temperature, top_k, top_p
):
    model = tiny_gpt()
    prompt = torch.randint(0, VOCAB, (1, 3), generator=torch.Generator().manual_seed(0))
    kwargs = dict(temperature=temperature, top_k=top_k, top_p=top_p)
    batch = model.generate(
        prompt.expand(4, -1),
        10,
        generator=[torch.Generator().manual_seed(7 + i) for i in range(4)],
        **kwargs,
    )
    alone = [
        model.generate(prompt, 10, generator=torch.Generator().manual_seed(7 + i), **kwargs)
        for i in range(4)
    ]
    assert torch.equal(batch, torch.cat(alone))
    assert len({tuple(row.tolist()) for row in batch}) > 1  # the rows really are different draws


def test_generate_stream_yields_the_tokens_generate_returns():
    model = tiny_gpt()
    prompt = torch.randint(0, VOCAB, (2, 3))
    streamed = list(model.generate_stream(prompt, 10, generator=torch.Generator().manual_seed(5)))
    assert len(streamed) == 10 and all(t.shape == (2, 1) for t in streamed)
    full = model.generate(prompt, 10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.cat([prompt, *streamed], dim=1), full)


def test_top_k_and_top_p_never_sample_outside_the_allowed_set():
    # two rows, different orders
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3], [0.3, 0.05, 0.15, 0.5]])
    logits = probs.log().repeat(2000, 1)  # (4000, 4)
    gen = torch.Generator().manual_seed(0)
    # nucleus 0.7: 0.5 alone is not enough, 0.5 + 0.3 is -> the tokens with 0.5 and 0.3 only
    nucleus = sample_next(logits, top_p=0.7, generator=gen).view(2000, 2)
    assert set(nucleus[:, 0].tolist()) == {1, 3} and set(nucleus[:, 1].tolist()) == {3, 0}
    share = (nucleus[:, 0] == 1).float().mean().item()
    assert abs(share - 0.5 / 0.8) < 0.04  # renormalized within the nucleus
    top2 = sample_next(logits, top_k=2, generator=gen).view(2000, 2)
    assert set(top2[:, 0].tolist()) == {1, 3} and set(top2[:, 1].tolist()) == {3, 0}
    # top token always kept
    assert set(sample_next(logits, top_p=0.45, generator=gen).view(2000, 2)[:, 0].tolist()) == {1}
    wide = sample_next(logits, top_p=0.99, generator=gen).view(2000, 2)
    assert set(wide[:, 0].tolist()) == {0, 1, 2, 3}
    # top_p=1 is no filter at all: the same draws as without top_p
    a = sample_next(logits, top_p=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, sample_next(logits, generator=torch.Generator().manual_seed(3)))


def test_temperature_zero_is_argmax_and_bad_sampling_options_are_rejected():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    assert sample_next(logits, temperature=0).tolist() == [[1], [0]]
    model, prompt = tiny_gpt(), torch.zeros(1, 1, dtype=torch.long)
    for bad in (dict(temperature=-1), dict(top_k=0), dict(top_p=0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            model.generate(prompt, 2, **bad)


def attention_weights_of_forward(model, idx):
    """Each layer's attention weights during the forward pass itself, from hooks on every block's
    attention."""
    weights = []

    def hook(attn, args, kwargs, output):
        # forward: not the hook again
        weights.append(attn.forward(*args, **{**kwargs, "return_weights": True})[1])

    handles = [
        block.attn.register_forward_hook(hook, with_kwargs=True) for block in model.transformer.h
    ]
    with torch.no_grad():
        model(idx)
    for handle in handles:
        handle.remove()
    return torch.cat(weights).float()


@pytest.mark.parametrize("switch", ["gpt2", "rope", "qk_norm", "value_embeds", "unet"])
def test_attention_maps(switch):
    model = tiny_gpt(**SWITCHES[switch])
    idx = torch.randint(0, VOCAB, (9,))
    maps = model.attention_maps(idx)
    n_layer = model.config.n_layer
    assert maps.shape == (n_layer, 2, 9, 9)  # (n_layer, n_head, T, T)
    # the weights the model really used
    assert_close(maps, attention_weights_of_forward(model, idx[None]))
    assert_close(maps.sum(dim=-1), torch.ones(n_layer, 2, 9))
    assert torch.all(maps.triu(diagonal=1) == 0)
    assert maps[0, 0, 0, 0] == 1  # the first token can only look at itself
    assert not torch.allclose(maps[0], maps[1])  # each layer has its own pattern
    assert torch.equal(model.attention_maps(idx[None]), maps)
    with pytest.raises(ValueError, match="one sequence"):
        model.attention_maps(idx.view(1, -1).repeat(2, 1))


def test_forward_longer_than_block_size_is_a_value_error():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="longer than block_size=12"):
        model(torch.zeros(1, 13, dtype=torch.long))
    model(torch.zeros(1, 12, dtype=torch.long))


@pytest.mark.parametrize(
    "bad,message",
    [
        (dict(n_embd=30, n_head=4), "divisible"),
        (dict(norm="batchnorm"), "norm="),
        (dict(pos="alibi"), "pos="),
        (dict(mlp="swiglu"), "mlp="),
        (dict(n_embd=12, n_head=4, pos="rope"), "even"),  # head size 3 cannot be rotated in pairs
        (dict(n_layer=0), "at least 1"),
    ],
)
def test_bad_config_is_rejected_at_construction(bad, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**bad)


@pytest.mark.parametrize("switch", ["gpt2", "rope"])
def test_crop_block_size_keeps_the_function_on_short_inputs(switch):
    model = tiny_gpt(**SWITCHES[switch])
    idx = torch.randint(0, VOCAB, (2, 6))
    before = all_logits(model, idx)
    model = crop_block_size(model, 6)
    assert model.config.block_size == 6
    assert_close(all_logits(model, idx), before)
    with pytest.raises(ValueError, match="block_size=6"):
        model(torch.zeros(1, 7, dtype=torch.long))
    assert torch.equal(
        model.generate(idx, 4, temperature=0),
        model.generate(idx, 4, temperature=0, use_cache=False),
    )


def test_optimizer_decays_matrices_only_and_covers_every_parameter_once():
    model = tiny_gpt(tie_weights=False)
    optimizer = configure_adamw(model, 0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_estimate_mfu_follows_the_palm_formula():
    model = tiny_gpt()
    n, cfg = model.get_num_params(), model.config
    flops_per_iter = (6 * n + 12 * cfg.n_layer * cfg.block_size * cfg.n_embd) * cfg.block_size * 4
    expected = flops_per_iter / 0.5 / 1e9
    assert estimate_mfu(model, 4, dt=0.5, peak_flops=1e9) == pytest.approx(expected)
