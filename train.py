"""
Train a GPT, from scratch, from a checkpoint (exact resume) or from GPT-2's weights; or, with
--model_type=gru, the recurrent baseline of recurrent.py, through the same loop, checkpoints and
data.

    python train.py config/train_shakespeare_char.py --batch_size=32 --device=cpu
    python train.py --init_from=resume --out_dir=out-shakespeare-char   # continue where it stopped
    python train.py --help                                             # every key, its default

On several GPUs (DDP; gloo on CPU), one node or many; --fsdp=True shards the model instead
(gptkit/distributed.py):
    torchrun --standalone --nproc_per_node=4 train.py config/train_gpt2.py
    torchrun --standalone --nproc_per_node=4 train.py config/train_gpt2.py --fsdp=True

Writes to out_dir: ckpt.pt (weights_only-loadable), metrics.jsonl (one line per evaluation),
config.json, meta.json (the dataset's tokenizer, for sample.py), choices.json (the precision,
attention and thread choices made for this machine, with why) and loss.png (from the third
evaluation on). One run at a time: it holds out_dir/.lock while it runs, and a new run never
replaces a checkpoint there unless --overwrite=True. Every check of what the user gave (config,
data, out_dir, the checkpoint to continue) runs before any work: a refused run prints its one line,
nothing else. The keys and their defaults are TrainConfig's, in gptkit/train_config.py; a resume (or
--eval_only) takes the run's own from its checkpoint, and a key given that differs from the run's is
applied and named in one line (gptkit/resume.py). nanoGPT's out_dirs (resume, eval_only), data
folders (--dataset) and config files work here too (gptkit/nanogpt.py).
"""

import functools
import json
import math
import os
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import torch
from tqdm import tqdm

from gptkit import distributed, hardware, tracking
from gptkit.base import UserError, save_json
from gptkit.checkpoint import model_from_checkpoint, rng_state, save_checkpoint, set_rng_state
from gptkit.configurator import parse_overrides, run_cli
from gptkit.decoding import check_quantize, prepare_for_decoding
from gptkit.loader import BatchLoader, data_dir_for
from gptkit.pretrained import crop_block_size, from_pretrained
from gptkit.resume import (
    TOKENS_PER_ITER,
    Progress,
    check_block_size,
    checked_start,
    claim_out_dir,
    describe_changes,
    resume_progress,
    run_settings,
)
from gptkit.train_config import TrainConfig, build_optimizer, new_model, validate


def main():
    # settings: TrainConfig's defaults, config files, --key=value; a resume continues the run's own
    given = parse_overrides(TrainConfig(), sys.argv[1:])  # what the user set, not the defaults
    cfg, changes = run_settings(given)
    validate(cfg)
    dist = distributed.setup(cfg)
    check_quantize(cfg.quantize, hardware.kind(dist.device))

    # every check of the data, out_dir and the checkpoint to continue, before any work is timed
    data_dir = data_dir_for(cfg.dataset)
    loader = BatchLoader(data_dir, cfg.block_size, cfg.batch_size, dist.device, cfg.seed)
    out_dir_lock = claim_out_dir(cfg) if dist.master else None  # noqa: F841 (held until main ends)
    checkpoint, overrides = checked_start(cfg, given, loader.meta, data_dir)
    if dist.master:  # every check passed: say what differs from the run being continued
        for line in describe_changes(changes, resume=cfg.init_from == "resume"):
            print(line)

    # the machine's choices (precision, attention kernel, threads), then the model
    hw, choices = decide_hardware(cfg, dist)
    # each rank its own dropout masks; DDP and FSDP copy rank 0's initial weights
    torch.manual_seed(cfg.seed + dist.rank)
    model = build_model(cfg, checkpoint, overrides, loader.meta, choices.sdpa).to(hw.device)
    if dist.master:
        params = model.get_num_params() / 1e6
        print(
            f"model: {params:.2f}M parameters, device {hw.device}, dtype {choices.dtype}, "
            f"{dist.world_size} rank(s)"
        )
    if cfg.eval_only:
        iter_num = checkpoint["iter_num"] if checkpoint else 0
        return evaluate_checkpoint(cfg, model, loader, hw.ctx, iter_num, dist.master)

    # the optimizer, and where the run stands
    distributed.shard(model, dist)  # FSDP: before the optimizer, which must hold the shards
    optimizer = build_optimizer(model, cfg, hw.device_type, choices.newton_schulz_dtype)
    progress, saved_rng = resume_progress(checkpoint, model, optimizer, dist, cfg.out_dir)
    checkpoint = None  # free its memory
    step_model = step_model_for(model, choices.compile is True, dist)
    run = Run(cfg, dist, hw, loader, model, step_model, optimizer, progress, choices)
    if choices.compile == "auto":
        run.auto_compile = CompileWhenItPays()
    if dist.master:
        tracking.write_run_files(cfg, loader, data_dir, progress.metrics, choices)
        run.wandb = tracking.start_wandb(cfg, progress)
        run.peak_flops = hardware.measure_peak_flops(hw.device, getattr(torch, choices.dtype))
    catch_stop_signals(run.stop_signal)
    if saved_rng is not None and dist.master:
        # dropout masks continue exactly where the checkpoint left them (it holds rank 0's RNG;
        # other ranks keep their own seed: a resumed multi-rank run is reproducible, not identical)
        set_rng_state(saved_rng)

    stopped_by = train_loop(run)
    if run.wandb is not None:
        run.wandb.finish(exit_code=stopped_by or 0)
    distributed.teardown(dist)
    if dist.launched:
        distributed.exit_rank(stopped_by or 0)
    if stopped_by:
        raise SystemExit(stopped_by)


def train_loop(run):
    """Evaluate (every eval_interval and at the last step) and step until max_iters, or until a stop
    signal on any rank: then save and return the exit status (128 + the signal), else None."""
    cfg, progress = run.cfg, run.progress
    eval_batches = {
        split: run.loader.eval_batches(split, cfg.eval_iters) for split in ("train", "val")
    }
    start_iter, progress.t_start = progress.iter_num, time.perf_counter()
    show = cfg.progress and run.dist.master and sys.stdout.isatty()
    pbar = tqdm(total=cfg.max_iters, initial=start_iter, disable=not show, dynamic_ncols=True)
    X, Y = run.batch(start_iter, 0)
    while True:
        it = progress.iter_num
        lr = set_lr(run.optimizer, get_lr(it, cfg))
        # so a run never ends without its final weights evaluated (and saved if they are the best);
        # a resume does not re-evaluate the step it starts from
        resumed_here = start_iter > 0 and it == start_iter
        if (it % cfg.eval_interval == 0 or it == cfg.max_iters) and not resumed_here:
            evaluate_and_save(run, eval_batches, lr)
        if it >= cfg.max_iters:
            pbar.close()
            return None
        # SIGINT/SIGTERM on any rank stops them all
        if distributed.any_rank(bool(run.stop_signal), run.dist):
            save_run_checkpoint(run)
            if run.dist.master:
                path = os.path.join(cfg.out_dir, "ckpt.pt")
                tqdm.write(f"stopped by signal at iter {it}; checkpoint saved to {path}")
            pbar.close()
            return 128 + (run.stop_signal[0] if run.stop_signal else signal.SIGTERM)
        t0 = time.perf_counter()
        lossf, grad_norm, X, Y = train_step(run, X, Y, functools.partial(run.batch, it))
        check_finite(lossf, it, cfg.out_dir)
        dt = time.perf_counter() - t0
        if run.auto_compile is not None:
            run.auto_compile.observe(run, dt)
        progress.iter_num += 1
        progress.tokens += run.tokens_per_iter
        pbar.update(1)
        pbar.set_postfix(loss=f"{lossf:.4f}", tok_s=f"{run.tokens_per_iter / dt:,.0f}")
        if progress.iter_num % cfg.log_interval == 0 and run.dist.master:
            log_step(run, lossf, lr, grad_norm, dt)


def train_step(run, X, Y, next_batch):
    """Forward, backward and update over the micro-batches, fetching each next batch while the
    current one computes. (loss, grad norm, the next step's first batch X, Y)."""
    model, optimizer, scaler = run.model, run.optimizer, run.hw.scaler
    for micro_step in range(run.grad_accum):
        # ranks communicate only at the last one
        distributed.set_grad_sync(model, micro_step == run.grad_accum - 1, run.dist)
        with run.hw.ctx:
            _, loss = model(X, Y)
            loss = loss / run.grad_accum
        X, Y = next_batch(micro_step + 1)
        scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # true gradients for the norm and the clip (a no-op unless float16)
    grad_clip = run.cfg.grad_clip if run.cfg.grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip).item()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss.item() * run.grad_accum, grad_norm, X, Y


def evaluate_and_save(run, eval_batches, lr):
    """Losses on the fixed eval batches; rank 0 records them, checkpoints (every rank joins), plots
    and logs to W&B."""
    cfg, progress = run.cfg, run.progress
    losses = estimate_loss(run.eval_model, eval_batches, run.hw.ctx)
    # never save diverged weights
    check_finite(losses["train"] + losses["val"], progress.iter_num, cfg.out_dir)
    improved = losses["val"] < progress.best_val_loss
    progress.best_val_loss = min(progress.best_val_loss, losses["val"])
    record = {
        "iter": progress.iter_num,
        "train_loss": losses["train"],
        "val_loss": losses["val"],
        "lr": lr,
        "tokens": progress.tokens,
        "elapsed_s": round(progress.elapsed(), 3),
    }
    if run.dist.master:
        progress.metrics.append(record)
        tracking.write_metrics(cfg.out_dir, progress.metrics)
        tqdm.write(
            f"step {record['iter']}: train loss {record['train_loss']:.4f}, "
            f"val loss {record['val_loss']:.4f}"
        )
    # rank 0's decision on every rank: under FSDP the save is a gather all ranks join, or none
    save = (improved or cfg.always_save_checkpoint) and progress.iter_num > 0
    if distributed.rank0_decides(save, run.dist):
        save_run_checkpoint(run, best=improved and cfg.keep_best)
    if run.dist.master:
        tracking.show_evaluation(cfg.out_dir, progress.metrics, run.wandb)  # loss.png, W&B


# --------------------------------------------------------------------------------------------------
# The run's state, in one object


@dataclass
class Run:
    """Everything the loop reads and changes. model: what steps call (compiled, DDP-wrapped);
    raw_model: the plain model (the GPT, or recurrent.py's GRU) that checkpoints save and MFU
    counts."""

    cfg: TrainConfig
    dist: distributed.Distributed
    hw: hardware.Hardware
    loader: BatchLoader
    raw_model: torch.nn.Module
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    progress: Progress
    choices: hardware.TrainingChoices
    auto_compile: "CompileWhenItPays | None" = None  # compile="auto" until it has decided
    wandb: object = None  # the W&B run, or None
    peak_flops: float | None = None  # the MFU denominator (rank 0)
    # SIGINT / SIGTERM received, appended by their handlers
    stop_signal: list = field(default_factory=list)

    @property
    def eval_model(self):
        """What evaluations call: on a GPU the compiled model (nanoGPT's), on a CPU the eager one,
        since compiling its no-grad graph costs more than a CPU run's few evaluations save."""
        return self.model if self.hw.device_type == "cuda" else self.raw_model

    @property
    def grad_accum(self):  # micro-steps per step on this rank
        return self.cfg.gradient_accumulation_steps // self.dist.world_size

    @property
    def tokens_per_iter(self):  # over all ranks
        return math.prod(getattr(self.cfg, k) for k in TOKENS_PER_ITER)

    def batch(self, it, micro_step):
        """Ranks split the global micro-steps; micro_step == grad_accum is the next step's first."""
        it, micro_step = it + micro_step // self.grad_accum, micro_step % self.grad_accum
        # (B, block_size) each
        x, y = self.loader.get_batch("train", it, self.dist.rank * self.grad_accum + micro_step)
        T = seq_len(it, self.cfg)
        # (B * block_size / T, T): the same tokens, cut into shorter windows
        return x.view(-1, T), y.view(-1, T)


def step_model_for(model, compiled, dist):
    """What training steps call: the model, compiled or not, DDP-wrapped under torchrun. Static
    shapes: each window length (seq_warmup_iters) compiles once, to its own fixed-size code."""
    step_model = torch.compile(model, dynamic=False) if compiled else model
    return distributed.wrap(step_model, dist)  # DDP (FSDP was applied in place by shard)


class CompileWhenItPays:
    """compile="auto" (one process): the first steps run eager and are timed; if the steps left
    would pay back a cold compile (hardware.compile_pays), the model is compiled, its next steps
    timed, and the compiled step kept only if it is the faster. Each decision is printed and
    written to choices.json."""

    def __init__(self):
        self.eager, self.compiled = [], None  # step times (s); compiled: None until it compiles
        self.eager_s, self.pays = None, ""  # the eager step's median, and compile_pays' why

    def observe(self, run, dt):
        untimed, timed = hardware.AUTO_COMPILE_STEPS
        if self.compiled is None:
            self.eager.append(dt)
            if len(self.eager) < untimed + timed:
                return
            it, cfg = run.progress.iter_num + 1, run.cfg
            # one graph per window length still to come: where seq_warmup_iters changes it
            changes = (it, cfg.seq_warmup_iters // 2, cfg.seq_warmup_iters)
            windows = {seq_len(i, cfg) for i in changes if it <= i < cfg.max_iters}
            self.eager_s = statistics.median(self.eager[untimed:])
            pays, why = hardware.compile_pays(self.eager_s, cfg.max_iters - it, len(windows))
            if not pays:
                return self.decide(run, False, why)
            self.compiled, self.pays = [], why
            run.model = step_model_for(run.raw_model, True, run.dist)  # the next step compiles
            return
        self.compiled.append(dt)
        if len(self.compiled) < 1 + timed:
            return
        eager_s, compiled_s = self.eager_s, statistics.median(self.compiled[1:])
        keep = compiled_s < eager_s
        if not keep:
            run.model = step_model_for(run.raw_model, False, run.dist)
        self.decide(
            run,
            keep,
            f"{self.pays}; compiled in {self.compiled[0]:.1f} s (its first step), "
            f"{compiled_s * 1000:.0f} ms a step against {eager_s * 1000:.0f} ms eager "
            f"({eager_s / compiled_s:.2f}x): " + ("kept" if keep else "back to eager"),
        )

    def decide(self, run, compiled, why):
        run.auto_compile = None
        run.choices = replace(
            run.choices, compile=compiled, reasons=run.choices.reasons | {"compile": why}
        )
        if run.dist.master:
            tqdm.write(f"compile = {compiled}: {why}")
            tracking.save_choices(run.cfg.out_dir, run.choices)


# --------------------------------------------------------------------------------------------------
# Evaluation and the learning-rate schedule


@torch.no_grad()
def estimate_loss(model, batches, ctx):
    """Mean loss over fixed batches per split: comparable from one evaluation to the next."""
    model.eval()
    out = {}
    for split, split_batches in batches.items():
        losses = []
        for x, y in split_batches:
            with ctx:
                losses.append(model(x, y)[1].item())
        out[split] = sum(losses) / len(losses)
    model.train()
    return out


@torch.no_grad()
def evaluate_split(model, loader, split, ctx):
    """Loss over every token of a split once (non-overlapping block_size windows), with perplexity
    and bits."""
    model.eval()
    total_nats, count = 0.0, 0
    for x, y in loader.full_split_batches(split):
        with ctx:
            logits, _ = model(x, y)
        total_nats += torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), y.flatten(), reduction="sum"
        ).item()
        count += y.numel()
    model.train()
    loss = total_nats / count
    result = {
        "split": split,
        "tokens": count,
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_token": loss / math.log(2),
    }
    if split == "val" and loader.meta.get("val_bytes"):
        # bits per byte compares models across tokenizers; the split's first token is never
        # predicted
        result["bits_per_byte"] = total_nats / math.log(2) / loader.meta["val_bytes"]
    return result


def evaluate_checkpoint(cfg, model, loader, ctx, iter_num, master):
    """--eval_only: the loss over the whole val split, printed and written to eval.json."""
    if cfg.quantize != "none":
        model = prepare_for_decoding(model.eval(), cfg.quantize)
    result = evaluate_split(model, loader, "val", ctx)
    result["iter"], result["quantize"] = iter_num, cfg.quantize
    if master:
        save_json(os.path.join(cfg.out_dir, "eval.json"), result)
        print(json.dumps(result))


def get_lr(it, cfg):
    """Linear warmup for warmup_iters, cosine decay to min_lr at lr_decay_iters, then min_lr."""
    if not cfg.decay_lr:
        return cfg.learning_rate
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it > cfg.lr_decay_iters:
        return cfg.min_lr
    decay_ratio = (it - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # 1 -> 0
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


def set_lr(optimizer, lr):
    """lr for every parameter group; Muon's groups run at muon_lr / learning_rate times it. Returns
    lr."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr


def seq_len(it, cfg):
    """The window length of step it: block_size / 4 for the first half of seq_warmup_iters,
    block_size / 2 for the second half, then block_size. Short windows first cost less (attention's
    work grows with the length) and, on Tiny Shakespeare, also trained better per step
    (docs/training.md)."""
    if it >= cfg.seq_warmup_iters:
        return cfg.block_size
    return cfg.block_size // (4 if it < cfg.seq_warmup_iters // 2 else 2)


def check_finite(loss, iter_num, out_dir):
    if not math.isfinite(loss):
        raise UserError(
            f"loss is {loss} at iter {iter_num}: training diverged. The last good checkpoint in "
            f"{out_dir} "
            "is kept; lower learning_rate or use dtype=bfloat16/float32"
        )


# --------------------------------------------------------------------------------------------------
# Setup: the machine's choices, the model, checkpoints, logging


def decide_hardware(cfg, dist):
    """(Hardware, TrainingChoices): the autocast dtype, Muon's Newton-Schulz dtype, the attention
    kernel and the threads for this machine, each with why (rank 0 prints them). Ranks under
    torchrun decide bf16 by the CPU's flags alone, untimed: timings could differ from rank to rank,
    and the ranks must agree."""
    choices = hardware.training_choices(
        dist.device, cfg.dtype, cfg.sdpa, cfg.n_embd, measure=not dist.launched, compile=cfg.compile
    )
    hw = hardware.setup(dist.device, choices.dtype)
    hw = hardware.Hardware(
        hw.device, hw.device_type, hw.dtype, hw.ctx, distributed.grad_scaler(hw.scaler, dist)
    )
    if dist.master:
        for name, why in choices.reasons.items():
            print(f"{name} = {getattr(choices, name)}: {why}")
    return hw, choices


def build_model(cfg, checkpoint, overrides, meta, sdpa):
    """The model the run trains (on the CPU): the checkpoint's (with checked_start's overrides), a
    new one, or GPT-2's weights. sdpa: the attention kernel chosen for this run (a bool; cfg.sdpa
    may be "auto"), whatever the checkpoint ran with."""
    if checkpoint is not None:
        model = model_from_checkpoint(checkpoint, sdpa=sdpa, **overrides)
    elif cfg.init_from == "scratch":
        model = new_model(cfg, meta["vocab_size"], sdpa)
    else:
        model = from_pretrained(cfg.init_from, dict(dropout=cfg.dropout, sdpa=sdpa))
        check_block_size(cfg.block_size, model.config.block_size)
        if cfg.block_size < model.config.block_size:
            model = crop_block_size(model, cfg.block_size)
    if meta["vocab_size"] > model.config.vocab_size:
        raise UserError(
            f"the data's vocab_size {meta['vocab_size']} is larger than the model's "
            f"{model.config.vocab_size}"
        )
    return model


def save_run_checkpoint(run, best=False):
    """ckpt.pt (plus ckpt_best.pt when best and keep_best, ckpt_<iter>.pt when keep_last), then
    prune old ones. Every rank calls it (under FSDP the full state is gathered from all of them);
    rank 0 alone writes."""
    cfg, progress = run.cfg, run.progress
    model_state, optimizer_state = distributed.full_state(run.raw_model, run.optimizer, run.dist)
    if not run.dist.master:
        return
    # a GPT's model_args stay GPTConfig's fields (GPT(GPTConfig(**model_args)) rebuilds it); another
    # kind names itself
    model_args = asdict(run.raw_model.config) | (
        {} if cfg.model_type == "gpt" else {"model_type": cfg.model_type}
    )
    state = {
        "model": model_state,
        "optimizer": optimizer_state,
        "model_args": model_args,
        "config": asdict(cfg),
        "iter_num": progress.iter_num,
        "best_val_loss": progress.best_val_loss,
        "elapsed_s": progress.elapsed(),
        "rng": rng_state(),
        "wandb_run_id": progress.wandb_run_id,
        "tokens": progress.tokens,
    }
    paths = [os.path.join(cfg.out_dir, "ckpt.pt")]
    if best:
        paths.append(os.path.join(cfg.out_dir, "ckpt_best.pt"))
    if cfg.keep_last:
        paths.append(os.path.join(cfg.out_dir, f"ckpt_{progress.iter_num:06d}.pt"))
    save_checkpoint(state, paths)
    if cfg.keep_last:
        kept = sorted(
            f for f in os.listdir(cfg.out_dir) if f.startswith("ckpt_0") and f.endswith(".pt")
        )
        for f in kept[: -cfg.keep_last]:
            os.remove(os.path.join(cfg.out_dir, f))


def log_step(run, lossf, lr, grad_norm, dt):
    """One line of the step's loss, lr, grad norm, speed and MFU; the same numbers to W&B."""
    sequences = run.cfg.batch_size * run.cfg.gradient_accumulation_steps
    peak_flops = run.peak_flops * run.dist.world_size
    mfu = hardware.estimate_mfu(run.raw_model, sequences, dt, peak_flops)
    tok_s = run.tokens_per_iter / dt
    tqdm.write(
        f"iter {run.progress.iter_num}: loss {lossf:.4f}, lr {lr:.2e}, grad norm {grad_norm:.4f}, "
        f"{dt * 1000:.1f} ms/iter, {tok_s:,.0f} tok/s, mfu {mfu * 100:.1f}%"
    )
    if run.wandb is not None:
        step = {"train/loss_step": lossf, "lr": lr, "grad_norm": grad_norm, "tok_per_s": tok_s}
        run.wandb.log(step | {"mfu": mfu}, step=run.progress.iter_num)


def catch_stop_signals(stop_signal):
    """SIGINT / SIGTERM only append to stop_signal: the loop finishes its step, saves a checkpoint
    and exits."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop_signal.append(signum))


if __name__ == "__main__":
    run_cli(main)
