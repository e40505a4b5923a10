"""A GPT language model, built from the four stages of attention in the order our notes teach them:

  1. SimplifiedSelfAttention  - no weights: scores are dot products of the inputs
  2. SelfAttention            - new: trainable Wq, Wk, Wv and scaling by 1/sqrt(d_k)
  3. CausalAttention          - new: mask the future, dropout on the attention weights
     MultiHeadAttentionWrapper - the bridge: several stage-3 heads side by side, concatenated
  4. MultiHeadAttention       - new: the same heads batched (one matmul), an output projection

"Beyond the notes" adds what the GPT's attention (GPTAttention, a stage-4 subclass) needs: QK-norm,
rotary positions, a KV cache, the fused SDPA kernel; and how the next token is picked (greedy,
temperature, top-k, top-p). Then the GPT: embeddings, pre-norm blocks, a final norm, an LM head tied
to the token embedding, the speedruns' levers (off by default, GPTConfig), and generation with the
KV cache. Module names are GPT-2's checkpoint keys, so its weights load key-for-key
(gptkit/pretrained.py). This file imports torch alone: no files, no formats, no CPU kernels
(gptkit/checkpoint.py, gptkit/decoding.py); a bad setting raises ValueError.

Shapes: B batch, T sequence length (time), C embedding size (n_embd), nh heads, hs head size
(C // nh).

    python -c "import model; print(model.GPT(model.GPTConfig()).get_num_params())"
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

# --------------------------------------------------------------------------------------------------
# Stage 1: simplified self-attention


class SimplifiedSelfAttention(nn.Module):
    """Each output is a weighted sum of all inputs, weighted by softmaxed dot-product similarity."""

    def forward(self, x, return_weights=False):
        attn_scores = x @ x.transpose(-2, -1)  # (..., T, C) @ (..., C, T) -> (..., T, T)
        attn_weights = torch.softmax(attn_scores, dim=-1)  # each row sums to 1
        context = attn_weights @ x  # (..., T, T) @ (..., T, C) -> (..., T, C)
        return (context, attn_weights) if return_weights else context


# --------------------------------------------------------------------------------------------------
# Stage 2: self-attention with trainable weights


class SelfAttention(nn.Module):
    """New: queries, keys and values are learned projections; scores are scaled by 1/sqrt(d_k)."""

    def __init__(self, d_in, d_out, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def attention_weights(self, queries, keys):
        # (..., T, d_out) @ (..., d_out, T) -> (..., T, T)
        attn_scores = queries @ keys.transpose(-2, -1)
        # Without the scaling, large d_k makes the softmax peaky and its gradients vanish
        # ("Attention Is All You Need", section 3.2.1).
        return torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)

    def forward(self, x, return_weights=False):
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)  # (..., T, d_out)
        attn_weights = self.attention_weights(queries, keys)
        context = attn_weights @ values  # (..., T, d_out)
        return (context, attn_weights) if return_weights else context


# --------------------------------------------------------------------------------------------------
# Stage 3: causal attention
# One mask convention everywhere in this file: a boolean (T, T) mask, True above the diagonal, where
# a query must NOT look (the future). F.scaled_dot_product_attention takes the opposite (True =
# attend), so the SDPA path passes ~mask.


def causal_mask(context_length):
    """(context_length, context_length) bool, True = future = masked."""
    return torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1)


def causal_softmax(attn_scores, mask):
    """Softmax over the keys with the masked (future) ones at -inf: each row a distribution over the
    past. -inf before the softmax, not 0 after it, keeps every row summing to 1. Computed in float32
    (scores may be bf16 under autocast), returned in the scores' dtype."""
    attn_scores = attn_scores.masked_fill(mask, float("-inf"))
    return torch.softmax(
        attn_scores, dim=-1, dtype=torch.promote_types(attn_scores.dtype, torch.float32)
    ).type_as(attn_scores)


class CausalAttention(SelfAttention):
    """New: a token may only attend to itself and the past; dropout regularizes the weights.
    Returned weights are the ones applied to the values: after dropout."""

    def __init__(self, d_in, d_out, context_length, dropout, qkv_bias=False):
        super().__init__(d_in, d_out, qkv_bias)
        self.dropout = nn.Dropout(dropout)  # new
        # new: the mask. A buffer moves with .to(device) but is not trained (nor saved).
        self.register_buffer("mask", causal_mask(context_length), persistent=False)

    def attention_weights(self, queries, keys):
        T = queries.shape[-2]
        # (..., T, T), scaled as stage 2
        attn_scores = queries @ keys.transpose(-2, -1) / keys.shape[-1] ** 0.5
        attn_weights = causal_softmax(attn_scores, self.mask[:T, :T])  # new: the future masked
        return self.dropout(attn_weights)  # new: dropout


# --------------------------------------------------------------------------------------------------
# From stage 3 to stage 4: several causal heads side by side


def head_size(d_out, num_heads, names=("d_out", "num_heads")):
    """The size hs = d_out / num_heads of each of the heads that split d_out channels."""
    if d_out % num_heads != 0:
        raise ValueError(f"{names[0]}={d_out} must be divisible by {names[1]}={num_heads}")
    return d_out // num_heads


class MultiHeadAttentionWrapper(nn.Module):
    """num_heads stage-3 heads, each of size hs = d_out / num_heads with its own Wq, Wk, Wv, run one
    after the other and concatenated: (B, T, d_out). Each head can attend to different things
    (LLMs-from-scratch, ch. 3). Stage 4 computes exactly this, batched, when its output projection
    is the identity (tests/test_attention_stages.py checks it)."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        hs = head_size(d_out, num_heads)
        self.heads = nn.ModuleList(
            [CausalAttention(d_in, hs, context_length, dropout, qkv_bias) for _ in range(num_heads)]
        )

    def forward(self, x, return_weights=False):
        # num_heads x ((B, T, hs), (B, T, T))
        outputs = [head(x, return_weights=True) for head in self.heads]
        context = torch.cat([out for out, _ in outputs], dim=-1)  # (B, T, nh * hs) = (B, T, d_out)
        # weights (B, nh, T, T)
        return (context, torch.stack([w for _, w in outputs], dim=1)) if return_weights else context


# --------------------------------------------------------------------------------------------------
# Stage 4: multi-head attention


class MultiHeadAttention(nn.Module):
    """The wrapper's math batched over a head axis: the same causal_softmax and dropout, the heads'
    outputs side by side. New: all heads' q, k, v from one matmul, reshapes that split the heads, an
    output projection that mixes them. Returned weights are after dropout, as stage 3's."""

    def __init__(
        self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False, proj_bias=True
    ):
        super().__init__()
        self.d_out, self.num_heads = d_out, num_heads
        self.head_size = head_size(d_out, num_heads)
        # New names, GPT-2's own, so its checkpoints load key-for-key: the notes' W_query, W_key,
        # W_value are fused into c_attn (its rows: every head's q, then k, then v; new: every head
        # in one matmul), and the output projection is c_proj.
        self.c_attn = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
        self.c_proj = nn.Linear(d_out, d_out, bias=proj_bias)  # new: mixes what the heads found
        self.attn_dropout = nn.Dropout(dropout)  # on the weights, as stage 3
        self.resid_dropout = nn.Dropout(dropout)  # on the output, as GPT-2
        self.register_buffer("mask", causal_mask(context_length), persistent=False)

    def qkv(self, x):
        """x (B, T, d_in) -> q, k, v, each (B, nh, T, hs)."""
        B, T, _ = x.shape
        q, k, v = self.c_attn(x).split(self.d_out, dim=2)  # 3 x (B, T, d_out)
        # 3 x (B, nh, T, hs)
        return [t.view(B, T, self.num_heads, self.head_size).transpose(1, 2) for t in (q, k, v)]

    def attend(self, q, k, v, mask):
        """Stage 3's math on every head at once: context (B, nh, T, hs) and the weights
        (B, nh, T, T_k)."""
        # (B, nh, T, hs) @ (B, nh, hs, T_k) -> (B, nh, T, T_k)
        attn_scores = q @ k.transpose(-2, -1) / self.head_size**0.5
        attn_weights = self.attn_dropout(causal_softmax(attn_scores, mask))
        context = attn_weights @ v  # (B, nh, T, T_k) @ (B, nh, T_k, hs) -> (B, nh, T, hs)
        return context, attn_weights

    def project(self, context):
        """(B, nh, T, hs) -> heads side by side again (B, T, d_out), mixed by c_proj."""
        B, _, T, _ = context.shape
        context = context.transpose(1, 2).contiguous().view(B, T, self.d_out)  # (B, T, nh * hs)
        return self.resid_dropout(self.c_proj(context))

    def forward(self, x, return_weights=False):
        T = x.shape[1]
        context, weights = self.attend(*self.qkv(x), self.mask[:T, :T])
        out = self.project(context)
        return (out, weights) if return_weights else out


# --------------------------------------------------------------------------------------------------
# Beyond the notes: what the GPT's attention adds to stage 4. SDPA and the KV cache compute the same
# thing faster; QK-norm and rotary positions are model switches (GPTConfig qk_norm, pos), off for
# GPT-2.


def rope_cache(head_size, length, base=10000.0):
    """cos/sin tables for rotary position embeddings (Su et al. 2021, RoFormer), each
    (length, hs/2)."""
    angles = torch.outer(
        torch.arange(length).float(),
        1.0 / base ** (torch.arange(0, head_size, 2).float() / head_size),
    )
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate pairs of channels of x (B, nh, T, hs) by position-dependent angles (T, hs/2)."""
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, nh, T, hs/2) each
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class KVCache:
    """Keys and values of the tokens seen so far, for one layer, so a new token costs O(T), not
    O(T^2)."""

    def __init__(self, max_length):
        self.max_length, self.length = max_length, 0
        self.k = self.v = None  # (B, nh, max_length, hs), allocated once on first use

    def update(self, k, v):
        B, nh, T, hs = k.shape
        if self.k is None:
            self.k = k.new_empty(B, nh, self.max_length, hs)
            self.v = v.new_empty(B, nh, self.max_length, hs)
        assert self.length + T <= self.max_length, (self.length, T, self.max_length)
        new = slice(self.length, self.length + T)  # the positions of the T new tokens
        self.k[:, :, new], self.v[:, :, new] = k, v
        self.length += T
        return self.k[:, :, : self.length], self.v[:, :, : self.length]  # (B, nh, length, hs)


class GPTAttention(MultiHeadAttention):
    """Stage 4 plus QK-norm (Dehghani et al. 2023: normalized q and k bound the logits), rotary
    positions, a KV cache, and F.scaled_dot_product_attention (sdpa=True): attend() in one fused
    kernel. Asking for the weights takes stage 4's explicit attend(), as does sdpa=False."""

    def __init__(
        self,
        d_in,
        d_out,
        context_length,
        dropout,
        num_heads,
        qkv_bias=False,
        proj_bias=True,
        qk_norm=False,
        sdpa=True,
    ):
        super().__init__(d_in, d_out, context_length, dropout, num_heads, qkv_bias, proj_bias)
        self.sdpa = sdpa
        self.q_norm = nn.RMSNorm(self.head_size, eps=1e-5) if qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_size, eps=1e-5) if qk_norm else None

    def forward(self, x, rope=None, kv_cache=None, return_weights=False, ve=None):
        """x (B, T, d_in) -> (B, T, d_out). rope: (cos, sin) tables; kv_cache: this layer's KVCache;
        ve: value embeddings (B, T, d_out)."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x)  # (B, nh, T, hs) each
        # (B, nh, T, hs): + the token's identity
        v = v if ve is None else v + ve.view(B, T, self.num_heads, self.head_size).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        past = kv_cache.length if kv_cache is not None else 0
        if rope is not None:
            cos, sin = rope[0][past : past + T], rope[1][past : past + T]  # (T, hs/2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # (B, nh, past + T, hs)
        # query i sits at absolute position past + i and may see keys 0 .. past + i
        mask = self.mask[past : past + T, : past + T]  # (T, past + T), True = masked
        if self.sdpa and not return_weights and past == 0:
            dropout_p = self.attn_dropout.p if self.training else 0.0
            context = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
            weights = None
        else:
            # decoding (past > 0) takes the math too: for one query it is a few tiny matmuls, while
            # SDPA's kernels cost more per call, or build a plan per new key length (cuDNN)
            context, weights = self.attend(q, k, v, mask)  # stage 4's math
        out = self.project(context)
        return (out, weights) if return_weights else out


# --------------------------------------------------------------------------------------------------
# Picking the next token: greedy, or a draw at a temperature from the top-k tokens and/or the top-p
# nucleus


def check_sampling(temperature, top_k=None, top_p=None, flag=""):
    """The one check of the sampling settings: generate's arguments, and sample.py's flags
    (flag="--")."""
    if temperature < 0:
        raise ValueError(f"{flag}temperature={temperature} must be >= 0")
    if top_k is not None and top_k < 1:
        raise ValueError(f"{flag}top_k={top_k} must be at least 1")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"{flag}top_p={top_p} must be in (0, 1]")


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Pick the next token (B, 1) from logits (B, vocab_size); generator: one, or a list of B (one
    per row)."""
    if temperature == 0 or top_k == 1:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
    if top_p is not None and top_p < 1:
        # (B, vocab_size), most likely first
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token once the more likely ones already reach top_p; the most likely one always
        # stays
        drop_sorted = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        # back to vocabulary order
        drop = torch.empty_like(drop_sorted).scatter(1, sorted_idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    # Inverse-CDF sampling: one uniform draw per row against the cumulative probabilities. Same
    # distribution as torch.multinomial, which on CPU draws an exponential per vocabulary entry: a
    # cost a KV-cached decoding step notices at GPT-2's vocabulary.
    cdf = probs.cumsum(dim=-1)  # (B, vocab_size)
    if isinstance(generator, (list, tuple)):  # one draw per row from its own generator
        assert len(generator) == probs.shape[0], (len(generator), probs.shape)
        u = torch.cat(
            [torch.rand(1, 1, generator=g, device=probs.device, dtype=cdf.dtype) for g in generator]
        )
    else:
        u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype)
    # right=True: the first index whose cdf exceeds the draw, so zero-probability tokens are never
    # picked
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=probs.shape[-1] - 1)


# --------------------------------------------------------------------------------------------------
# The GPT


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 1024  # longest context; GPT-2 used 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for faster matmuls
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0  # 0 for pretraining, 0.1+ for finetuning small data
    bias: bool = True  # biases in Linears and norms, as GPT-2; False is a little better and faster
    norm: str = "layernorm"  # "layernorm" (GPT-2) | "rmsnorm"
    pos: str = "learned"  # "learned" absolute embeddings (GPT-2) | "rope" rotary embeddings
    # "gelu" (GPT-2's tanh approximation) | "gelu_exact" (erf: nanoGPT's nn.GELU()) | "relu2"
    # (squared ReLU, Primer)
    mlp: str = "gelu"
    qk_norm: bool = False  # normalize queries and keys per head
    tie_weights: bool = True  # LM head shares the token embedding matrix (Press & Wolf 2017)
    # F.scaled_dot_product_attention (flash kernels on GPU); False: the explicit math, same numbers
    sdpa: bool = True
    # Beyond the notes: levers from the modded-nanogpt speedruns. The defaults leave GPT-2's model
    # as it was.
    # > 0: logits = cap * tanh(logits / cap), bounded (Gemma 2; modded-nanogpt uses 15-30)
    logit_softcap: float = 0.0
    # attn/MLP output projections start at 0, so every block starts as the identity
    zero_init_proj: bool = False
    # each layer adds its own embedding of the token to the attention values
    value_embeds: bool = False
    # U-net skips: layer i's output also feeds layer n_layer - 1 - i, with a learned weight
    unet: bool = False

    def __post_init__(self):
        head_size(self.n_embd, self.n_head, names=("n_embd", "n_head"))
        for key, allowed in (
            ("norm", ("layernorm", "rmsnorm")),
            ("pos", ("learned", "rope")),
            ("mlp", ("gelu", "gelu_exact", "relu2")),
        ):
            if getattr(self, key) not in allowed:
                raise ValueError(
                    f"{key}={getattr(self, key)!r} must be one of {', '.join(allowed)}"
                )
        if self.pos == "rope" and (self.n_embd // self.n_head) % 2:
            hs = self.n_embd // self.n_head
            raise ValueError(f"pos='rope' rotates pairs of channels: head size {hs} must be even")
        if min(self.block_size, self.vocab_size, self.n_layer, self.n_head) < 1:
            raise ValueError("block_size, vocab_size, n_layer and n_head must all be at least 1")
        if self.logit_softcap < 0:
            raise ValueError(f"logit_softcap={self.logit_softcap} must be >= 0 (0: no cap)")


def make_norm(config):
    """LayerNorm (GPT-2), or RMSNorm (Zhang & Sennrich 2019: without centering or bias, a little
    cheaper)."""
    return (
        nn.RMSNorm(config.n_embd, eps=1e-5)
        if config.norm == "rmsnorm"
        else nn.LayerNorm(config.n_embd, bias=config.bias)
    )


def value_embeddings(config):
    """One token-embedding table per layer, added to that layer's attention values
    (modded-nanogpt)."""
    return nn.ModuleList(
        [nn.Embedding(config.vocab_size, config.n_embd) for _ in range(config.n_layer)]
    )


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # GPT-2's GELU is the tanh approximation (HF logits parity needs it); nanoGPT's nn.GELU()
        # the exact erf form
        approximate = "tanh" if config.mlp == "gelu" else "none"
        self.act = None if config.mlp == "relu2" else nn.GELU(approximate=approximate)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        x = self.c_fc(x)
        # relu2: So et al. 2021 (Primer)
        x = self.act(x) if self.act is not None else F.relu(x).square()
        return self.dropout(self.c_proj(x))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)) (GPT-2's layout)."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = GPTAttention(
            config.n_embd,
            config.n_embd,
            config.block_size,
            config.dropout,
            config.n_head,
            qkv_bias=config.bias,
            proj_bias=config.bias,
            qk_norm=config.qk_norm,
            sdpa=config.sdpa,
        )
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x, rope=None, kv_cache=None, ve=None):
        x = x + self.attn(self.ln_1(x), rope, kv_cache, ve=ve)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    has_attention = True  # attention_maps() shows its heads (recurrent.py's GRU says False)

    def __init__(self, config):
        super().__init__()
        self.config = config
        C, V = config.n_embd, config.vocab_size
        learned_positions = config.pos == "learned"  # else rotary, applied inside attention
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(V, C),  # token embeddings
                wpe=nn.Embedding(config.block_size, C) if learned_positions else None,
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=make_norm(config),
                ve=value_embeddings(config) if config.value_embeds else None,  # beyond the notes
            )
        )
        # one per U-net skip
        self.skip_weights = nn.Parameter(torch.ones(config.n_layer // 2)) if config.unet else None
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.transformer.wte.weight = self.lm_head.weight
        if config.pos == "rope":
            cos, sin = rope_cache(config.n_embd // config.n_head, config.block_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # Scale residual projections by 1/sqrt(2 * n_layer) so the residual stream's variance does
        # not grow with depth (GPT-2 paper, section 2.3).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
                # beyond the notes (modded-nanogpt); drawn first, so other weights are as without it
                if config.zero_init_proj:
                    nn.init.zeros_(p)

    def _init_weights(self, module):  # GPT-2's: N(0, 0.02) weights, zero biases
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def get_num_params(self, non_embedding=True):
        """Parameter count; non_embedding leaves out the position table (the token embedding is the
        tied head)."""
        n_params = sum(p.numel() for p in self.parameters())
        wpe = self.transformer.wpe
        return n_params - (wpe.weight.numel() if non_embedding and wpe is not None else 0)

    def _embed(self, idx, past=0):
        """Token (+ learned position) embeddings of idx (B, T) at positions past.., and the rope
        tables or None."""
        B, T = idx.shape
        if past + T > self.config.block_size:
            raise ValueError(
                f"sequence of length {past + T} is longer than block_size={self.config.block_size}"
            )
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.config.pos == "learned":
            pos = torch.arange(past, past + T, dtype=torch.long, device=idx.device)  # (T,)
            x = x + self.transformer.wpe(pos)  # (B, T, C) + (T, C)
        else:
            rope = (self.rope_cos, self.rope_sin)
        return self.transformer.drop(x), rope

    def _run(self, idx, kv_caches=None, maps=None):
        """Hidden states after ln_f (B, T, C). maps: a list that collects each layer's attention
        weights (B, nh, T, T)."""
        x, rope = self._embed(idx, kv_caches[0].length if kv_caches else 0)
        n, outputs = len(self.transformer.h), []
        for i, block in enumerate(self.transformer.h):
            if (
                self.skip_weights is not None and i >= n - n // 2
            ):  # U-net: the first half's outputs, mirrored
                x = x + self.skip_weights[n - 1 - i] * outputs[n - 1 - i]
            # (B, T, C)
            ve = self.transformer.ve[i](idx) if self.transformer.ve is not None else None
            if (
                maps is not None
            ):  # a diagnostic, not a hot path: the layer's attention once more, for its weights
                maps.append(block.attn(block.ln_1(x), rope, return_weights=True, ve=ve)[1])
            x = block(x, rope, kv_caches[i] if kv_caches else None, ve)
            outputs.append(x)
        return self.transformer.ln_f(x)

    def head(self, x):
        """Logits from hidden states: the LM head, soft-capped if the config says so (beyond the
        notes)."""
        logits, cap = self.lm_head(x), self.config.logit_softcap
        return cap * torch.tanh(logits / cap) if cap else logits

    def forward(self, idx, targets=None):
        """idx (B, T) token ids -> (logits, loss). Without targets only the last position's
        logits."""
        x = self._run(idx)
        if targets is not None:
            logits = self.head(x)  # (B, T, vocab_size)
            loss = F.cross_entropy(
                logits.flatten(0, 1).float(), targets.reshape(-1), ignore_index=-1
            )
            return logits, loss
        # Inference: computing the head only at the last position saves a (T, vocab) matmul.
        return self.head(x[:, [-1], :]), None  # (B, 1, vocab_size)

    @torch.no_grad()
    def attention_maps(self, idx):
        """Every layer's and head's attention weights for one sequence: (n_layer, n_head, T, T).
        Call eval() first: in training mode dropout would change what later layers see."""
        idx = idx.view(1, -1) if idx.dim() == 1 else idx
        if idx.shape[0] != 1:
            raise ValueError(f"attention_maps takes one sequence, got a batch of {idx.shape[0]}")
        maps = []
        self._run(idx, maps=maps)  # n_layer x (1, nh, T, T): the weights the forward itself uses
        return torch.cat(maps).float()  # (n_layer, n_head, T, T)

    # -- generation
    # ------------------------------------------------------------------------------------

    def new_kv_caches(self):
        """One empty KVCache per layer, for next_token_logits."""
        return [KVCache(self.config.block_size) for _ in self.transformer.h]

    @torch.no_grad()
    def next_token_logits(self, idx, kv_caches=None):
        """Logits (B, vocab_size) for the token after idx (B, T). With kv_caches (new_kv_caches,
        holding a prefix of idx) only the tokens they have not seen are run and cached. Once idx
        outgrows block_size, its last block_size tokens are recomputed without them: every position
        (learned or rotary) shifts by one each step, so no key is reusable."""
        if kv_caches is not None and idx.shape[1] <= self.config.block_size:
            # prefill, then one token per step
            x = self._run(idx[:, kv_caches[0].length :], kv_caches=kv_caches)
        else:
            x = self._run(idx[:, -self.config.block_size :])
        return self.head(x[:, -1, :]).float()  # (B, vocab_size)

    @torch.no_grad()
    def generate_stream(
        self,
        idx,
        max_new_tokens,
        temperature=1.0,
        top_k=None,
        top_p=None,
        generator=None,
        use_cache=True,
    ):
        """Yield (B, 1) next-token tensors one by one, continuing idx (B, T); stop iterating to stop
        early. temperature=0 or top_k=1 is greedy; top_p keeps the fewest tokens whose probability
        reaches top_p (Holtzman et al. 2019); generator (a torch.Generator, or a list of B: one per
        row, so a row's draws do not depend on its batch mates) makes it reproducible;
        use_cache=False recomputes the whole context every step instead of the KV cache."""
        check_sampling(temperature, top_k, top_p)
        kv_caches = self.new_kv_caches() if use_cache else None
        for _ in range(max_new_tokens):
            logits = self.next_token_logits(idx, kv_caches)
            idx_next = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)
            yield idx_next

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, **kwargs):
        """Continue idx (B, T) by up to max_new_tokens tokens; same options as generate_stream."""
        new = list(self.generate_stream(idx, max_new_tokens, temperature, top_k, **kwargs))
        return torch.cat([idx, *new], dim=1)
