"""
Muon for the hidden weight matrices, AdamW for everything else, in one torch.optim.Optimizer.

Muon (Keller Jordan, 2024; the optimizer of the modded-nanogpt speedruns) takes SGD-momentum's
update for a 2-D weight and replaces it by the nearest semi-orthogonal matrix, computed with a few
Newton-Schulz iterations. Every direction of the update then moves by the same amount, instead of a
few dominant ones, which trains transformers in noticeably fewer steps than AdamW. Embeddings, the
LM head, norm gains and biases are not hidden matrices and stay on AdamW, as in modded-nanogpt.

    python train.py config/train_shakespeare_char_fast.py      # optimizer = "muon"
"""

import torch


def zeropower_via_newtonschulz5(G, steps=5, dtype=torch.bfloat16):
    """
    An approximately orthogonal matrix with G's singular vectors (U V^T of G = U S V^T), by a
    quintic Newton-Schulz iteration whose coefficients (Jordan 2024) push every singular value into
    about [0.7, 1.2] in 5 steps; exactness does not matter for the update. Runs in `dtype`: bf16 is
    stable here and fast where the hardware has it; on a CPU that emulates bf16, float32 is several
    times faster. G is one matrix (rows, cols) or a stack of same-shaped ones (n, rows, cols), done
    in one batch.
    """
    assert G.ndim in (2, 3), G.shape
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.to(dtype)
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT  # iterate on the wide side: X @ X.T is then the smaller (rows, rows) matrix
    # spectral norm <= Frobenius norm <= 1: inside the basin
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT  # (..., rows, rows)
        B = b * A + c * A @ A
        X = a * X + B @ X  # (..., rows, cols)
    return (X.mT if tall else X).to(G.dtype)


class MuonAdamW(torch.optim.Optimizer):
    """
    Param groups with use_muon=True get Muon (lr, momentum, weight_decay); the others get AdamW
    (lr, betas, eps, weight_decay). Muon's lr is in units of "RMS change per step"-ish: 0.02-0.05 is
    typical, much larger than AdamW's.
    """

    # torch.optim.Optimizer marks these four "never compile me" by importing torch._dynamo at their
    # first call: start-up time a short CPU speedrun feels (docs/performance.md), for a compiler
    # nothing here runs (train.py compiles the model, never the optimizer). So the class takes them
    # unmarked (functools.wraps keeps the original as __wrapped__).
    add_param_group = torch.optim.Optimizer.add_param_group.__wrapped__
    zero_grad = torch.optim.Optimizer.zero_grad.__wrapped__
    state_dict = torch.optim.Optimizer.state_dict.__wrapped__
    load_state_dict = torch.optim.Optimizer.load_state_dict.__wrapped__

    def __init__(
        self,
        param_groups,
        lr=1e-3,
        betas=(0.9, 0.95),
        eps=1e-8,
        weight_decay=0.0,
        momentum=0.95,
        ns_dtype=torch.bfloat16,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            use_muon=False,
        )
        super().__init__(param_groups, defaults)
        # Newton-Schulz's compute dtype (hardware.decide_newton_schulz_dtype)
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            if group["use_muon"]:
                bad = [tuple(p.shape) for p in group["params"] if p.ndim != 2]
                if bad:
                    raise ValueError(f"Muon takes 2-D weight matrices only, got shapes {bad}")

    @torch.no_grad()
    def step(self, closure=None):
        assert closure is None, "closures are not supported"
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            if group["use_muon"]:
                self._muon_step(group)
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                p.mul_(1 - lr * wd)  # decoupled weight decay (Loshchilov & Hutter)
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                beta1, beta2 = group["betas"]
                state["step"] += 1
                state["exp_avg"].lerp_(p.grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                bias1, bias2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
                denom = (state["exp_avg_sq"] / bias2).sqrt_().add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denom, value=-lr / bias1)

    def _muon_step(self, group):
        lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
        # same-shaped matrices (e.g. every layer's c_fc) are orthogonalized in one batch
        by_shape = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
            buf.lerp_(p.grad, 1 - momentum)
            update = p.grad.lerp(buf, momentum)  # Nesterov: look ahead along the momentum
            by_shape.setdefault(tuple(p.shape), []).append((p, update))
        for (rows, cols), pairs in by_shape.items():
            orthogonal = zeropower_via_newtonschulz5(
                torch.stack([update for _, update in pairs]), dtype=self.ns_dtype
            )
            # an orthogonal (rows, cols) matrix has RMS 1/sqrt(max dim): rescale tall ones to
            # match wide ones
            scale = -lr * max(1.0, rows / cols) ** 0.5
            for (p, _), step in zip(pairs, orthogonal, strict=True):
                p.mul_(1 - lr * wd)  # decoupled weight decay (Loshchilov & Hutter)
                p.add_(step, alpha=scale)


def configure_muon(
    model,
    learning_rate,
    muon_lr,
    weight_decay,
    betas,
    ns_dtype=torch.bfloat16,
    embedding_lr=0.0,
    muon_weight_decay=0.0,
):
    """
    MuonAdamW for a GPT: the blocks' 2-D weights on Muon, the rest on AdamW. Each group's lr_scale
    is its lr relative to learning_rate, so one schedule (train.get_lr) drives both.
    embedding_lr > 0 gives the token embedding (and the value embeddings, GPTConfig.value_embeds)
    their own AdamW group at that lr (modded-nanogpt's high embedding lr; with an untied head it
    let the fast config train in fewer steps, docs/performance.md). muon_weight_decay shrinks the
    blocks' matrices by lr x it each step (the rest decay by weight_decay, as AdamW's).
    """
    hidden = [p for name, p in model.named_parameters() if p.ndim == 2 and ".h." in f".{name}"]
    # the token embedding, and the value embeddings if any
    tables = ("transformer.wte.", "transformer.ve.")
    embedding = (
        [p for name, p in model.named_parameters() if name.startswith(tables)]
        if embedding_lr > 0
        else []
    )
    own_group = {id(p) for p in hidden + embedding}
    rest = [p for p in model.parameters() if id(p) not in own_group]
    groups = [
        dict(
            params=hidden,
            use_muon=True,
            lr=muon_lr,
            lr_scale=muon_lr / learning_rate,
            weight_decay=muon_weight_decay,
        ),
        dict(
            params=embedding,
            lr=embedding_lr,
            lr_scale=embedding_lr / learning_rate,
            weight_decay=weight_decay,
        ),
        dict(
            params=[p for p in rest if p.ndim >= 2],
            lr=learning_rate,
            lr_scale=1.0,
            weight_decay=weight_decay,
        ),
        dict(
            params=[p for p in rest if p.ndim < 2], lr=learning_rate, lr_scale=1.0, weight_decay=0.0
        ),
    ]
    return MuonAdamW([g for g in groups if g["params"]], betas=betas, ns_dtype=ns_dtype)
