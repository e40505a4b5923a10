"""
How the next token is picked from the model's logits: greedy, or a draw at a temperature from the top-k tokens
and/or the top-p nucleus, one seeded draw per row. model.GPT.generate uses it; sample.py checks its flags here.
"""

import torch

from base import UserError


def check_sampling(temperature, top_k=None, top_p=None, flag=""):
    """The one check of the sampling settings: generate's arguments, and sample.py's flags (flag="--")."""
    if temperature < 0:
        raise UserError(f"{flag}temperature={temperature} must be >= 0")
    if top_k is not None and top_k < 1:
        raise UserError(f"{flag}top_k={top_k} must be at least 1")
    if top_p is not None and not 0 < top_p <= 1:
        raise UserError(f"{flag}top_p={top_p} must be in (0, 1]")


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Pick the next token (B, 1) from logits (B, vocab_size); generator: one, or a list of B (one per row)."""
    if temperature == 0 or top_k == 1:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)  # (B, vocab_size), most likely first
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token once the more likely ones already reach top_p; the most likely one always stays
        drop_sorted = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        drop = torch.empty_like(drop_sorted).scatter(1, sorted_idx, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    # Inverse-CDF sampling: one uniform draw per row against the cumulative probabilities. Same
    # distribution as torch.multinomial, which on CPU costs ~1 ms a token at GPT-2's vocabulary (an
    # exponential draw per entry) - 4% of a KV-cached decoding step.
    cdf = probs.cumsum(dim=-1)  # (B, vocab_size)
    if isinstance(generator, (list, tuple)):  # one draw per row from its own generator, as if sampled alone
        assert len(generator) == probs.shape[0], (len(generator), probs.shape)
        u = torch.cat([torch.rand(1, 1, generator=g, device=probs.device, dtype=cdf.dtype) for g in generator])
    else:
        u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype)
    # right=True: the first index whose cdf exceeds the draw, so zero-probability tokens are never picked
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=probs.shape[-1] - 1)
