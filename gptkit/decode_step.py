"""
One token's forward pass with almost nothing around the kernels: what sample.py and bench.py's
sample paths run after the prompt. model.py's generate is the notes' loop: each token goes through
the modules as training does (dropout, a mask slice, a growing idx, KVCache.update). DecodeStep
runs the same math over a static KV cache, preallocated once and sized to the sample (prompt + new
tokens, at most the context), with one token's shapes in mind: each layer's key and value written
in place by one copy, the same matmuls and softmax on the cached prefix, no dropout calls, no idx to
grow, and every module's kernel called as a plain function (nn.Module.__call__'s hook checks and
attribute lookups cost more than a layer's small ops: docs/performance.md). Its logits are
model.py's bit for bit, on every decoding path (tests/test_decode_step.py). A Python caller gets
sample.py's speed with one call:

    from gptkit.decode_step import generate
    from gptkit.decoding import prepare_for_decoding

    out = generate(prepare_for_decoding(model.eval(), "int4"), idx, 100, temperature=0)

On a GPU, compile=True (sample.py --compile=True, nanoGPT's key) runs the captured step instead: the
same math at static shapes (the position a tensor, keys written by index_copy_, attention over the
whole cache with a mask), taken whole by torch.compile and replayed as one CUDA graph
(mode="reduce-overhead": gpt-fast's design), where eager decoding is bound by kernel launches. A CPU
keeps the eager step: compiled, the step measured no faster there, after a cold compile that costs
more than a whole context of tokens (docs/performance.md).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from model import apply_rope, causal_softmax, check_sampling, sample_next


def plain_call(module):
    """module(x) as a plain function of x: the same kernel, called without nn.Module.__call__ (its
    hook checks) and without the attribute lookups inside forward. Norms and GELU become their
    functional calls with the module's settings bound; the decoding kernels (gptkit/decoding.py)
    and anything else their bound forward."""
    if isinstance(module, nn.LayerNorm):
        shape, weight, bias, eps = module.normalized_shape, module.weight, module.bias, module.eps
        return lambda x: F.layer_norm(x, shape, weight, bias, eps)
    if isinstance(module, nn.RMSNorm):
        shape, weight, eps = module.normalized_shape, module.weight, module.eps
        return lambda x: F.rms_norm(x, shape, weight, eps)
    if isinstance(module, nn.GELU):
        approximate = module.approximate
        return lambda x: F.gelu(x, approximate=approximate)
    return module.forward


def relu_squared(x):  # model.py's MLP without an act: So et al. 2021 (Primer)
    return F.relu(x).square()


class StaticKVCache:
    """One layer's keys and values in one (2, B, nh, max_length, hs) buffer allocated up front:
    model.py's KVCache interface (length, update), so the prompt runs through the model's own
    forward, and each later token's key and value are written in place with one copy. Zeroed, so
    the captured step's masked attention never multiplies a weight of 0 by an uninitialized NaN."""

    def __init__(self, batch_size, n_head, max_length, head_size, device, dtype):
        shape = (2, batch_size, n_head, max_length, head_size)
        self.kv = torch.zeros(shape, device=device, dtype=dtype)
        self.k, self.v = self.kv  # (B, nh, max_length, hs) views
        self.length, self.max_length = 0, max_length

    def update(self, k, v):
        T = k.shape[2]
        assert self.length + T <= self.max_length, (self.length, T, self.max_length)
        self.k[:, :, self.length : self.length + T] = k
        self.v[:, :, self.length : self.length + T] = v
        self.length += T
        return self.k[:, :, : self.length], self.v[:, :, : self.length]  # (B, nh, length, hs)


class StepBlock:
    """One transformer block as a token's step calls it: each module's plain_call, looked up
    once."""

    def __init__(self, block, cache, value_embedding, rope):
        attn, mlp = block.attn, block.mlp
        self.ln_1, self.ln_2 = plain_call(block.ln_1), plain_call(block.ln_2)
        self.c_attn, self.attn_proj = plain_call(attn.c_attn), plain_call(attn.c_proj)
        self.qk_norm = (
            None if attn.q_norm is None else (plain_call(attn.q_norm), plain_call(attn.k_norm))
        )
        self.c_fc, self.mlp_proj = plain_call(mlp.c_fc), plain_call(mlp.c_proj)
        self.act = relu_squared if mlp.act is None else plain_call(mlp.act)
        self.value_embedding, self.cache, self.rope = value_embedding, cache, rope
        # the key or value changed between c_attn and the cache: written apart, not as one slice
        self.changes_kv = value_embedding is not None or self.qk_norm is not None or rope


class DecodeStep:
    """A GPT's forward for one new token per row after a prompt, over StaticKVCaches of max_length
    positions (default: the context). prefill(idx) runs the prompt through the model's own forward;
    each step(token) then runs one token with the model's kernels but only the ops a token needs.
    Logits are model.py's: next_token_logits with its KVCache gives the same numbers.
    static=True makes forward capturable (a tensor position, whole-cache masked attention): see
    captured()."""

    def __init__(self, model, batch_size, max_length=None, static=False):
        assert not model.training, "call model.eval() first: the step runs no dropout"
        self.model, cfg, t = model, model.config, model.transformer
        self.n_head, self.head_size = cfg.n_head, cfg.n_embd // cfg.n_head
        self.scale = self.head_size**0.5
        max_length = max_length or cfg.block_size
        assert max_length <= cfg.block_size, (max_length, cfg.block_size)
        # the keys' dtype, as model.py's KVCache takes it: the weights', or autocast's (a GPU's
        # bf16)
        device = t.wte.weight.device
        autocast = torch.is_autocast_enabled(device.type)
        dtype = torch.get_autocast_dtype(device.type) if autocast else t.wte.weight.dtype
        self.caches = [
            StaticKVCache(batch_size, self.n_head, max_length, self.head_size, device, dtype)
            for _ in range(cfg.n_layer)
        ]
        value_embeddings = t.ve if t.ve is not None else [None] * cfg.n_layer
        rope = cfg.pos == "rope"
        self.blocks = [
            StepBlock(block, cache, ve, rope)
            for block, cache, ve in zip(t.h, self.caches, value_embeddings, strict=True)
        ]
        self.static = static
        # static: (max_length, max_length) bool, True = future: row p masks what p may not see
        self.future = None
        if static:
            ones = torch.ones(max_length, max_length, dtype=torch.bool, device=device)
            self.future = ones.triu(diagonal=1)

    @property
    def length(self):
        return self.caches[0].length

    @property
    def max_length(self):
        return self.caches[0].max_length

    @torch.no_grad()
    def prefill(self, idx):
        """Logits (B, vocab_size) after the prompt idx (B, T), its keys and values cached."""
        return self.model.next_token_logits(idx, self.caches)

    @torch.no_grad()
    def step(self, token, forward=None):
        """Logits (B, vocab_size) after one more token (B, 1) per row, by forward (self.forward, or
        the captured one)."""
        pos = self.length
        if self.static:  # a (1,) tensor: one shape for every position, so one graph
            pos = torch.full((1,), pos, device=token.device)
        logits = (forward or self.forward)(token, pos)
        for cache in self.caches:
            cache.length += 1
        return logits

    def forward(self, token, pos):
        """The GPT at one position: pos an int (read the cache up to pos) or, static, a (1,) long
        tensor (read the whole cache, the future masked)."""
        model, t = self.model, self.model.transformer
        x = t.wte(token)  # (B, 1, C)
        if t.wpe is not None:
            x = x + at(t.wpe.weight, pos)  # (B, 1, C) + (1, C)
        n, outputs = len(self.blocks), []
        for i, block in enumerate(self.blocks):
            if model.skip_weights is not None and i >= n - n // 2:  # U-net, as GPT._run
                x = x + model.skip_weights[n - 1 - i] * outputs[n - 1 - i]
            x = x + self.attend(block, block.ln_1(x), token, pos)
            x = x + block.mlp_proj(block.act(block.c_fc(block.ln_2(x))))
            outputs.append(x)
        return model.head(t.ln_f(x)[:, -1, :]).float()  # (B, vocab_size)

    def attend(self, block, x, token, pos):
        """GPTAttention's forward for one query at position pos, over the cached keys 0 .. pos."""
        B, nh, hs = x.shape[0], self.n_head, self.head_size
        # (B, 1, 3 * C) is q, k and v side by side: with one token, (B, 3, nh, 1, hs)
        qkv = block.c_attn(x).view(B, 3, nh, 1, hs)
        q, new = qkv[:, 0], qkv[:, 1:]  # (B, nh, 1, hs), keys and values (B, 2, nh, 1, hs)
        if block.changes_kv:
            k, v = new.unbind(1)
            if block.value_embedding is not None:
                v = v + block.value_embedding(token).view(B, 1, nh, hs).transpose(1, 2)
            if block.qk_norm is not None:
                q, k = block.qk_norm[0](q), block.qk_norm[1](k)
            if block.rope:
                cos, sin = at(self.model.rope_cos, pos), at(self.model.rope_sin, pos)
                q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            new = torch.stack((k, v), dim=1)
        cache, new = block.cache, new.transpose(0, 1)  # (2, B, nh, 1, hs), the cache's layout
        if self.static:
            cache.kv.index_copy_(3, pos, new.to(cache.kv.dtype))  # copy_ casts; index_copy_ not
            # (B, nh, max_length, hs) each, views taken inside the graph of the one static buffer
            keys, values = cache.kv.unbind(0)
        else:
            cache.kv.narrow(3, pos, 1).copy_(new)
            keys, values = cache.kv.narrow(3, 0, pos + 1).unbind(0)  # (B, nh, pos + 1, hs) each
        # every head of every row in one bmm on 3-d views (model.py's 4-d matmul reshapes to the
        # same bmm, with more ops around it):
        # (B * nh, 1, hs) @ (B * nh, hs, keys) -> (B * nh, 1, keys)
        attn_scores = torch.bmm(q.flatten(0, 1), keys.flatten(0, 1).transpose(1, 2)) / self.scale
        if self.static:  # the positions after pos: zeros, or a longer sample's stale keys
            attn_weights = causal_softmax(attn_scores, self.future[pos])
        else:  # every cached key is in the past: model.py's softmax, nothing to mask
            attn_weights = torch.softmax(
                attn_scores, dim=-1, dtype=torch.promote_types(attn_scores.dtype, torch.float32)
            ).type_as(attn_scores)
        context = torch.bmm(attn_weights, values.flatten(0, 1))  # (B * nh, 1, hs)
        # one query: (B * nh, 1, hs) holds the heads of each row side by side, (B, 1, C)
        return block.attn_proj(context.view(B, 1, nh * hs))


def at(table, pos):
    """Row pos of a position table (learned embeddings, rotary cos/sin) as (1, width), for an int
    or a (1,) tensor position."""
    return table[pos : pos + 1] if isinstance(pos, int) else table[pos]


def captured(decoder, backend="inductor"):
    """decoder.forward (a static DecodeStep's) compiled whole: one graph for every position, on a
    GPU replayed as a CUDA graph (mode="reduce-overhead"). The caches are marked static, so the
    graph writes them in place instead of copying them in and out every call. backend:
    torch.compile's (the tests trace with "eager": the same graph, nothing generated)."""
    assert decoder.static, "capture a DecodeStep(..., static=True)"
    for cache in decoder.caches:
        torch._dynamo.mark_static_address(cache.kv)
    cuda = decoder.caches[0].kv.device.type == "cuda"
    mode = "reduce-overhead" if cuda and backend == "inductor" else None
    compiled = torch.compile(
        decoder.forward, backend=backend, mode=mode, fullgraph=True, dynamic=False
    )
    if mode is None:
        return compiled

    def replay(token, pos):
        # the last token's logits are consumed (sampled): the graph may reuse their memory
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(token, pos)

    return replay


@torch.no_grad()
def generate_stream(
    model,
    idx,
    max_new_tokens,
    temperature=1.0,
    top_k=None,
    top_p=None,
    generator=None,
    compile=False,
):
    """model.generate_stream's tokens (same arguments, the same (B, 1) tensors yielded one by one)
    from a DecodeStep whose cache holds this sample (prompt + max_new_tokens, at most the context).
    compile=True on a GPU runs the captured step (CUDA graphs); elsewhere the eager one (on a CPU
    a compiled step measured no faster, and oneDNN's packed weights do not compile). Past the
    context (block_size) it recomputes the last block_size tokens each step, as model.py does."""
    check_sampling(temperature, top_k, top_p)
    block_size = model.config.block_size
    decoder, forward = None, None
    if idx.shape[1] <= block_size:
        capture = compile and idx.device.type == "cuda"
        # eager: a cache as long as the sample; captured: the whole context, so that every prompt
        # length replays the same graph (a GPU reads the unused positions in microseconds)
        max_length = block_size if capture else min(block_size, idx.shape[1] + max_new_tokens)
        decoder = DecodeStep(model, idx.shape[0], max_length, static=capture)
        forward = captured(decoder) if capture else None
    new = []
    for _ in range(max_new_tokens):
        if decoder is not None and not new:
            logits = decoder.prefill(idx)
        elif decoder is not None and decoder.length < decoder.max_length:
            logits = decoder.step(new[-1], forward)
        else:  # the context is full: no cached key is reusable
            decoder = None
            logits = model.next_token_logits(torch.cat([idx, *new], dim=1)[:, -block_size:])
        new.append(sample_next(logits, temperature, top_k, top_p, generator))  # (B, 1)
        yield new[-1]


@torch.no_grad()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, **kwargs):
    """model.generate's result from the decode step: idx (B, T) continued by max_new_tokens."""
    new = list(generate_stream(model, idx, max_new_tokens, temperature, top_k, **kwargs))
    return torch.cat([idx, *new], dim=1)
