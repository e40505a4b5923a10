"""
One token's forward pass with almost nothing around the kernels: what sample.py and bench.py's
sample paths run after the prompt. model.py's generate is the notes' loop: each token goes through
the modules as training does (dropout, a mask slice, a growing idx, KVCache.update), a few dozen
small eager ops per layer on top of the Linears. DecodeStep runs the same math over a static KV
cache, preallocated once, with one token's shapes in mind: keys and values written in place at
their position, the same matmuls and softmax on the cached prefix, no dropout calls, no idx to
grow. Its logits are model.py's bit for bit, on every decoding path (tests/test_decode_step.py).
A Python caller gets sample.py's speed with one call:

    from gptkit.decode_step import generate
    from gptkit.decoding import prepare_for_decoding

    out = generate(prepare_for_decoding(model.eval(), "int4"), idx, 100, temperature=0)

The step is eager: no torch.compile of it is built yet (the issue's prototype, Inductor freezing
with plain F.linear, ran slower than eager on a CPU: docs/sampling.md).
"""

import torch

from model import apply_rope, check_sampling, sample_next


class StaticKVCache:
    """One layer's keys and values in (B, nh, max_length, hs) buffers allocated up front: model.py's
    KVCache interface (length, update), so the prompt runs through the model's own forward, and
    DecodeStep writes each later token's key and value in place."""

    def __init__(self, k, v):
        self.k, self.v, self.length = k, v, 0  # (B, nh, max_length, hs) each, views of one buffer
        self.max_length = k.shape[2]

    def update(self, k, v):
        T = k.shape[2]
        assert self.length + T <= self.max_length, (self.length, T, self.max_length)
        self.k[:, :, self.length : self.length + T] = k
        self.v[:, :, self.length : self.length + T] = v
        self.length += T
        return self.k[:, :, : self.length], self.v[:, :, : self.length]  # (B, nh, length, hs)


class DecodeStep:
    """A GPT's forward for one new token per row after a prompt, over StaticKVCaches. prefill(idx)
    runs the prompt through the model's own forward; each step(token) then runs one token with the
    model's modules and kernels but only the ops a token needs. Logits are model.py's:
    next_token_logits with its KVCache gives the same numbers."""

    def __init__(self, model, batch_size):
        assert not model.training, "call model.eval() first: the step runs no dropout"
        self.model, cfg = model, model.config
        self.n_head, self.head_size = cfg.n_head, cfg.n_embd // cfg.n_head
        # (2, n_layer, B, nh, block_size, hs): every key and value the context can hold, allocated
        # once, so no token allocates any; empty, not zeroed (GPT-2 small's is 75 MB): a step reads
        # only the positions written before it
        device = model.transformer.wte.weight.device
        shape = (2, cfg.n_layer, batch_size, self.n_head, cfg.block_size, self.head_size)
        kv = torch.empty(shape, device=device, dtype=model.transformer.wte.weight.dtype)
        self.caches = [StaticKVCache(kv[0, i], kv[1, i]) for i in range(cfg.n_layer)]
        self.scale = self.head_size**0.5

    @property
    def length(self):
        return self.caches[0].length

    @torch.no_grad()
    def prefill(self, idx):
        """Logits (B, vocab_size) after the prompt idx (B, T), its keys and values cached."""
        return self.model.next_token_logits(idx, self.caches)

    @torch.no_grad()
    def step(self, token):
        """Logits (B, vocab_size) after one more token (B, 1) per row."""
        model, pos = self.model, self.length
        t = model.transformer
        x = t.wte(token)  # (B, 1, C)
        if t.wpe is not None:
            x = x + t.wpe.weight[pos]  # (B, 1, C) + (C,)
        n, outputs = len(t.h), []
        for i, block in enumerate(t.h):
            if model.skip_weights is not None and i >= n - n // 2:  # U-net, as GPT._run
                x = x + model.skip_weights[n - 1 - i] * outputs[n - 1 - i]
            ve = t.ve[i](token) if t.ve is not None else None
            x = x + self.attend(block.attn, block.ln_1(x), self.caches[i], pos, ve)
            mlp = block.mlp
            h = mlp.c_fc(block.ln_2(x))
            h = mlp.act(h) if mlp.act is not None else torch.relu(h).square()
            x = x + mlp.c_proj(h)
            outputs.append(x)
        for cache in self.caches:
            cache.length += 1
        return model.head(t.ln_f(x)[:, -1, :]).float()  # (B, vocab_size)

    def attend(self, attn, x, cache, pos, ve):
        """GPTAttention's forward for one query at position pos, over the cached keys 0 .. pos."""
        B, nh, hs = x.shape[0], self.n_head, self.head_size
        q, k, v = attn.c_attn(x).view(B, 1, 3, nh, hs).permute(2, 0, 3, 1, 4)  # (B, nh, 1, hs)
        if ve is not None:
            v = v + ve.view(B, 1, nh, hs).transpose(1, 2)
        if attn.q_norm is not None:
            q, k = attn.q_norm(q), attn.k_norm(k)
        if self.model.config.pos == "rope":
            cos, sin = self.model.rope_cos[pos : pos + 1], self.model.rope_sin[pos : pos + 1]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        cache.k[:, :, pos : pos + 1] = k
        cache.v[:, :, pos : pos + 1] = v
        keys, values = cache.k[:, :, : pos + 1], cache.v[:, :, : pos + 1]  # (B, nh, pos + 1, hs)
        # (B, nh, 1, hs) @ (B, nh, hs, pos + 1): every cached key is in the past, so no mask
        attn_scores = q @ keys.transpose(-2, -1) / self.scale
        context = torch.softmax(attn_scores, dim=-1) @ values  # (B, nh, 1, hs)
        return attn.c_proj(context.transpose(1, 2).reshape(B, 1, nh * hs))  # (B, 1, C)


@torch.no_grad()
def generate_stream(
    model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None
):
    """model.generate_stream's tokens (same arguments, the same (B, 1) tensors yielded one by one)
    from a DecodeStep. Past the context (block_size) it recomputes the last block_size tokens each
    step, as model.py does."""
    check_sampling(temperature, top_k, top_p)
    block_size = model.config.block_size
    decoder = DecodeStep(model, idx.shape[0]) if idx.shape[1] <= block_size else None
    new = []
    for _ in range(max_new_tokens):
        if decoder is not None and not new:
            logits = decoder.prefill(idx)
        elif decoder is not None and decoder.length < block_size:
            logits = decoder.step(new[-1])
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
