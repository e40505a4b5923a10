"""The four attention stages of model.py and how each one relates to the one before it."""

import math

import pytest
import torch
from torch.testing import assert_close

from model import (
    CausalAttention,
    GPTAttention,
    KVCache,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttention,
    SimplifiedSelfAttention,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# "Your journey starts with one step": the 3-d toy embeddings of LLMs-from-scratch, chapter 3
TOY = [
    [0.43, 0.15, 0.89],  # Your
    [0.55, 0.87, 0.66],  # journey
    [0.57, 0.85, 0.64],  # starts
    [0.22, 0.58, 0.33],  # with
    [0.77, 0.25, 0.10],  # one
    [0.05, 0.80, 0.55],  # step
]


def hand_attention(x):
    """Stage 1 with plain Python floats: dot products, softmax per row, weighted sums."""
    weights = []
    for query in x:
        scores = [sum(q * k for q, k in zip(query, key, strict=True)) for key in x]
        exps = [math.exp(s) for s in scores]
        weights.append([e / sum(exps) for e in exps])
    context = [
        [sum(w * row[c] for w, row in zip(ws, x, strict=True)) for c in range(len(x[0]))]
        for ws in weights
    ]
    return context, weights


def test_stage1_matches_hand_computation_on_the_notes_example():
    context, weights = SimplifiedSelfAttention()(
        torch.tensor(TOY, dtype=torch.float64), return_weights=True
    )
    hand_context, hand_weights = hand_attention(TOY)
    assert_close(context, torch.tensor(hand_context, dtype=torch.float64), rtol=0, atol=1e-12)
    assert_close(weights, torch.tensor(hand_weights, dtype=torch.float64), rtol=0, atol=1e-12)
    assert_close(weights.sum(dim=-1), torch.ones(6, dtype=torch.float64))
    # the numbers printed in the notes for the query "journey"
    assert_close(
        weights[1],
        torch.tensor([0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581], dtype=torch.float64),
        rtol=0,
        atol=5e-5,
    )
    assert_close(
        context[1], torch.tensor([0.4419, 0.6515, 0.5683], dtype=torch.float64), rtol=0, atol=5e-5
    )


def test_stage1_works_on_batches_and_rows_sum_to_one():
    x = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    context, weights = SimplifiedSelfAttention()(x, return_weights=True)
    assert context.shape == (2, 5, 7) and weights.shape == (2, 5, 5)
    assert_close(weights.sum(dim=-1), torch.ones(2, 5))
    assert_close(context[1], SimplifiedSelfAttention()(x[1]))


def test_stage2_is_scaled_dot_product_of_projections():
    torch.manual_seed(0)
    attn = SelfAttention(3, 2)
    x = torch.tensor(TOY)
    context, weights = attn(x, return_weights=True)
    q, k, v = x @ attn.W_query.weight.T, x @ attn.W_key.weight.T, x @ attn.W_value.weight.T
    expected = torch.softmax(q @ k.T / math.sqrt(2), dim=-1)
    assert_close(weights, expected)
    assert_close(context, expected @ v)
    assert context.shape == (6, 2)


def test_stage3_without_mask_and_dropout_equals_stage2():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8)
    stage2 = SelfAttention(8, 4, qkv_bias=True)
    stage3 = CausalAttention(8, 4, context_length=10, dropout=0.0, qkv_bias=True)
    stage3.load_state_dict(stage2.state_dict())
    masked, masked_weights = stage3(x, return_weights=True)
    assert torch.all(masked_weights.triu(diagonal=1) == 0)  # the mask does hide the future
    assert not torch.allclose(masked, stage2(x))
    stage3.mask.zero_()  # remove the mask: nothing is "future" any more
    context, weights = stage3(x, return_weights=True)
    expected_context, expected_weights = stage2(x, return_weights=True)
    assert_close(context, expected_context)
    assert_close(weights, expected_weights)


def test_stage3_dropout_acts_on_weights_in_training_only():
    torch.manual_seed(0)
    attn = CausalAttention(8, 4, context_length=6, dropout=0.5)
    x = torch.randn(1, 6, 8)
    _, weights = attn(x, return_weights=True)
    # dropped entries besides the mask
    assert (weights == 0).sum() > (torch.ones(6, 6).triu(1) == 1).sum()
    attn.eval()
    _, weights = attn(x, return_weights=True)
    assert_close(weights.sum(dim=-1), torch.ones(1, 6))


def mha_from_causal_heads(heads, d_in, context_length, use_sdpa=False):
    """A stage-4 module whose head i carries the weights of stage-3 module heads[i], with an
    identity c_proj: MultiHeadAttention (the notes' math), or with use_sdpa the GPT's GPTAttention
    on its SDPA path."""
    hs = heads[0].W_query.weight.shape[0]
    d_out = hs * len(heads)
    if use_sdpa:
        mha = GPTAttention(
            d_in, d_out, context_length, dropout=0.0, num_heads=len(heads), qkv_bias=True, sdpa=True
        )
    else:
        mha = MultiHeadAttention(
            d_in, d_out, context_length, dropout=0.0, num_heads=len(heads), qkv_bias=True
        )
    with torch.no_grad():
        for i, head in enumerate(heads):
            # c_attn's rows are [all heads' q | all heads' k | all heads' v];
            # head i owns rows i*hs:(i+1)*hs of each
            for j, linear in enumerate((head.W_query, head.W_key, head.W_value)):
                rows = slice(j * d_out + i * hs, j * d_out + (i + 1) * hs)
                mha.c_attn.weight[rows] = linear.weight
                mha.c_attn.bias[rows] = linear.bias
        mha.c_proj.weight.copy_(torch.eye(d_out))
        mha.c_proj.bias.zero_()
    return mha


@pytest.mark.parametrize("use_sdpa", [True, False])
@pytest.mark.parametrize("d_in,d_out", [(3, 2), (8, 8), (5, 12)])
def test_stage4_with_one_head_equals_stage3(d_in, d_out, use_sdpa):
    torch.manual_seed(d_in)
    stage3 = CausalAttention(d_in, d_out, context_length=7, dropout=0.0, qkv_bias=True)
    mha = mha_from_causal_heads([stage3], d_in, context_length=7, use_sdpa=use_sdpa)
    x = torch.randn(3, 7, d_in)
    assert_close(mha(x), stage3(x))
    _, weights = mha(x, return_weights=True)
    assert_close(weights[:, 0], stage3(x, return_weights=True)[1])


@pytest.mark.parametrize("use_sdpa", [True, False])
@pytest.mark.parametrize("num_heads,hs", [(2, 4), (3, 5), (4, 2)])
def test_stage4_with_h_heads_equals_h_stage3_modules_concatenated(num_heads, hs, use_sdpa):
    torch.manual_seed(num_heads)
    d_in, T = 6, 9
    heads = [
        CausalAttention(d_in, hs, context_length=T, dropout=0.0, qkv_bias=True)
        for _ in range(num_heads)
    ]
    mha = mha_from_causal_heads(heads, d_in, context_length=T, use_sdpa=use_sdpa)
    x = torch.randn(2, T, d_in)
    assert_close(mha(x), torch.cat([head(x) for head in heads], dim=-1))
    assert mha(x).shape == (2, T, num_heads * hs)
    # the bridge between stages 3 and 4 computes the same: the heads side by side, concatenated
    wrapper = MultiHeadAttentionWrapper(
        d_in, num_heads * hs, context_length=T, dropout=0.0, num_heads=num_heads, qkv_bias=True
    )
    for head, own in zip(heads, wrapper.heads, strict=True):
        own.load_state_dict(head.state_dict())
    context, weights = wrapper(x, return_weights=True)
    assert_close(mha(x), context)
    assert_close(mha(x, return_weights=True)[1], weights)


def random_mha(seed, d, num_heads, context_length, qk_norm=False, sdpa=True):
    torch.manual_seed(seed)
    mha = GPTAttention(
        d,
        d,
        context_length,
        dropout=0.0,
        num_heads=num_heads,
        qkv_bias=True,
        qk_norm=qk_norm,
        sdpa=sdpa,
    )
    if qk_norm:  # non-trivial norm gains, so a mistake in using them shows
        torch.nn.init.uniform_(mha.q_norm.weight, 0.5, 1.5)
        torch.nn.init.uniform_(mha.k_norm.weight, 0.5, 1.5)
    return mha


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "seed,B,T,d,num_heads,qk_norm",
    [
        (0, 1, 1, 8, 2, False),
        (1, 2, 7, 12, 3, False),
        (2, 3, 16, 32, 4, True),
        (3, 2, 5, 6, 1, False),
    ],
)
def test_sdpa_path_equals_explicit_path(seed, B, T, d, num_heads, qk_norm, training):
    mha = random_mha(seed, d, num_heads, context_length=16, qk_norm=qk_norm).train(training)
    x = torch.randn(B, T, d)
    sdpa = mha(x)
    # asking for the weights takes the explicit path
    explicit, weights = mha(x, return_weights=True)
    mha.sdpa = False
    assert_close(sdpa, explicit, rtol=0, atol=1e-5)
    assert_close(mha(x), explicit, rtol=0, atol=1e-5)
    assert weights.shape == (B, num_heads, T, T)


@pytest.mark.parametrize("use_sdpa", [True, False])
@pytest.mark.parametrize("seed,chunks", [(0, [5, 1, 1, 1]), (1, [1, 1, 1]), (2, [3, 4, 2])])
def test_kv_cache_equals_full_attention(seed, chunks, use_sdpa):
    """Feeding the sequence in chunks through a KV cache gives what the full sequence gives, on both
    paths."""
    mha = random_mha(seed, 12, 3, context_length=sum(chunks), sdpa=use_sdpa).eval()
    x = torch.randn(2, sum(chunks), 12)
    cache, outputs, start = KVCache(sum(chunks)), [], 0
    for n in chunks:
        outputs.append(mha(x[:, start : start + n], kv_cache=cache))
        start += n
        assert cache.length == start
    full = mha(x)
    mha.sdpa = not use_sdpa  # the other path, on the full sequence
    assert_close(torch.cat(outputs, dim=1), full, rtol=0, atol=1e-5)
    assert_close(mha(x), full, rtol=0, atol=1e-5)


@pytest.mark.parametrize("cls", [MultiHeadAttentionWrapper, MultiHeadAttention, GPTAttention])
def test_mha_rejects_heads_that_do_not_divide_the_width(cls):
    with pytest.raises(ValueError, match="divisible"):
        cls(8, 10, context_length=4, dropout=0.0, num_heads=3)
