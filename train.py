"""
Train a GPT, from scratch, from a checkpoint (exact resume) or from GPT-2's weights.

    python train.py config/train_shakespeare_char.py --batch_size=32 --device=cpu
    python train.py config/train_shakespeare_char.py --init_from=resume   # continue where it stopped
    python train.py --help                                                 # every key with its default

On several GPUs (DDP; gloo on CPU), one node or many; --fsdp=True shards the model instead (distributed.py):
    torchrun --standalone --nproc_per_node=4 train.py config/train_gpt2.py
    torchrun --standalone --nproc_per_node=4 train.py config/train_gpt2.py --fsdp=True
    torchrun --nnodes=2 --node_rank=0 --master_addr=10.0.0.1 --master_port=29500 --nproc_per_node=8 train.py ...

Writes to out_dir: ckpt.pt (weights_only-loadable), metrics.jsonl (one line per evaluation),
config.json, meta.json (the dataset's tokenizer, for sample.py), choices.json (the precision, attention and
thread choices made for this machine, with why) and loss.png. One run at a time: it holds
out_dir/.lock while it runs, and a new run never replaces a checkpoint there unless --overwrite=True.
The keys and their defaults are TrainConfig's, in train_config.py. nanoGPT's out_dir (resume, eval_only), data folders
(--dataset) and config files work here too (nanogpt.py).
"""

import functools
import json
import math
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

import distributed
import hardware
import nanogpt
from checkpoint import (
    atomic_write,
    load_checkpoint,
    load_pretrained,
    lock_out_dir,
    model_from_checkpoint,
    refuse_to_overwrite,
    remove_previous_run,
    rng_state,
    save_checkpoint,
    save_json,
    set_rng_state,
)
from configurator import UserError, parse_overrides, run_cli
from data.loader import BatchLoader, data_dir_for
from model import GPT, prepare_for_decoding
from train_config import TrainConfig, build_optimizer, model_config, validate

# ----------------------------------------------------------------------------------------------------
# Setup: processes and devices, data, out_dir, the model and its optimizer


def setup_hardware(cfg, dist):
    """
    (device, device_type, choices, autocast ctx, GradScaler). choices (hardware.training_choices): the autocast dtype,
    Muon's Newton-Schulz dtype, the attention kernel and the threads for this machine, each with why; rank 0 prints
    them. Ranks under torchrun (DDP, FSDP) decide bf16 by the CPU's flags alone, untimed: timings could differ
    from rank to rank, and the ranks must agree.
    """
    choices = hardware.training_choices(dist.device, cfg.dtype, cfg.sdpa, cfg.n_embd, measure=not dist.launched)
    device, device_type, _, ctx, scaler = hardware.setup(dist.device, choices.dtype)
    if dist.master:
        for name, why in choices.reasons.items():
            print(f"{name} = {getattr(choices, name)}: {why}")
    return device, device_type, choices, ctx, scaler


def check_writable(out_dir):
    """Create out_dir and write a probe file in it: the honest test (os.access says yes to root on a read-only mount)."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise UserError(f"out_dir {out_dir} is not writable ({e.strerror or e}); choose another --out_dir") from None


def claim_out_dir(cfg):
    """Make out_dir this run's (rank 0): writable, locked until the returned file closes, and holding no other run's
    checkpoint unless overwrite. eval_only only reads (its eval.json is written atomically) and takes no lock."""
    check_writable(cfg.out_dir)  # before anything is built: a bad out_dir costs nothing
    if cfg.eval_only:
        return None
    lock = lock_out_dir(cfg.out_dir)
    if not (cfg.init_from == "resume" or cfg.overwrite):
        refuse_to_overwrite(cfg.out_dir)
    return lock


# A checkpoint fixes its model's shape and kind (the weights are those), and its optimizer's kind, weight decay, betas,
# muon_lr and embedding_lr (optimizer.load_state_dict restores them; embedding_lr > 0 is a parameter group of its own).
# Every other key may change on resume: dropout (applied), sdpa (a kernel, decided again for the machine when "auto"), a
# shorter block_size, the learning-rate schedule, max_iters, batch sizes, evaluation, logging, checkpointing, W&B,
# dataset (same tokenizer), seed, device, dtype, compile.
FIXED_OPTIMIZER_KEYS = ("optimizer", "weight_decay", "beta1", "beta2", "muon_lr", "embedding_lr")
CHANGEABLE_MODEL_KEYS = ("dropout", "sdpa")


def resume_overrides(checkpoint, given, path):
    """
    The model settings a resume takes from the command line (dropout; sdpa is build_model's). `given` holds only the keys the user
    set (configurator.parse_overrides): one the checkpoint fixes that differs from it is an error listing every such
    difference, so an explicit setting is never silently ignored.
    """
    saved = checkpoint.get("config", {})
    # a key older checkpoints lack had its default then (embedding_lr did not exist: 0)
    fixed = {**{k: saved.get(k, getattr(TrainConfig, k)) for k in FIXED_OPTIMIZER_KEYS if saved}, **checkpoint["model_args"]}
    differences = [
        f"{key}: checkpoint {fixed[key]!r} vs given {value!r}"
        for key, value in given.items()
        if key in fixed and key not in CHANGEABLE_MODEL_KEYS and value != fixed[key] and not (key == "block_size" and value < fixed[key])
    ]
    if differences:
        raise UserError(
            f"{path} was trained with other settings, which cannot change on resume: {', '.join(differences)}; "
            "drop them to continue it, or start a new run with another --out_dir"
        )
    return {"dropout": given["dropout"]} if "dropout" in given else {}


def with_checkpoint_block_size(given):
    """A resume or --eval_only that sets no block_size keeps the run's own: the default (1024) may not fit its model.
    A nanoGPT run keeps its other settings too, where none is given (nanogpt.resume_settings)."""
    if not (given.get("init_from") == "resume" or (given.get("eval_only") and given.get("init_from", "scratch") == "scratch")):
        return given
    out_dir = given.get("out_dir", TrainConfig.out_dir)
    checkpoint = load_checkpoint(os.path.join(out_dir, "ckpt.pt"), mmap=True)
    given = nanogpt.resume_settings(checkpoint, given, out_dir)
    return given if "block_size" in given else {**given, "block_size": checkpoint["model_args"]["block_size"]}


def build_model(cfg, given, meta, data_dir, device, sdpa):
    """(model on device, checkpoint or None): from scratch, from out_dir's checkpoint (resume; eval_only unless init_from
    names GPT-2's weights, as nanoGPT's config/eval_gpt2.py does) or GPT-2's weights. given: the keys the user set
    explicitly, checked against a checkpoint's. sdpa: the attention kernel chosen for this run (a bool; cfg.sdpa may be
    "auto"), whatever the checkpoint ran with."""
    checkpoint = None
    if cfg.init_from == "resume" or (cfg.eval_only and cfg.init_from == "scratch"):
        path = os.path.join(cfg.out_dir, "ckpt.pt")
        checkpoint = load_checkpoint(path, map_location=device)
        model = model_from_checkpoint(checkpoint, sdpa=sdpa, **resume_overrides(checkpoint, given, path))
        check_tokenizer(meta, os.path.join(cfg.out_dir, "meta.json"))
    elif cfg.init_from == "scratch":
        model = GPT(model_config(cfg, meta["vocab_size"], sdpa))
    else:
        if meta.get("tokenizer") != "gpt2":
            raise UserError(f"init_from={cfg.init_from} needs GPT-2 BPE data, but {data_dir} was prepared with {meta.get('tokenizer')!r}")
        model = load_pretrained(cfg.init_from, dropout=cfg.dropout, sdpa=sdpa)
        if cfg.block_size < model.config.block_size:
            model.crop_block_size(cfg.block_size)
    if cfg.block_size > model.config.block_size:
        raise UserError(f"block_size={cfg.block_size} is larger than the model's {model.config.block_size}")
    if meta["vocab_size"] > model.config.vocab_size:
        raise UserError(f"the data's vocab_size {meta['vocab_size']} is larger than the model's {model.config.vocab_size}")
    return model.to(device), checkpoint


def check_tokenizer(meta, saved_meta_path):
    """The dataset must be tokenized the way the checkpoint was trained."""
    if not os.path.isfile(saved_meta_path):
        return
    with open(saved_meta_path) as f:
        saved = json.load(f)
    for key in ("tokenizer", "vocab_size", "chars", "tokenizer_sha256"):
        if saved.get(key) != meta.get(key):
            raise UserError(
                f"the dataset's tokenizer ({meta.get('tokenizer')}, vocab {meta.get('vocab_size')}) does not match "
                f"the checkpoint's ({saved.get('tokenizer')}, vocab {saved.get('vocab_size')}); check --dataset"
            )


# ----------------------------------------------------------------------------------------------------
# Evaluation


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
    """Loss over every token of a split once (non-overlapping block_size windows), with perplexity and bits."""
    model.eval()
    total_nats, count = 0.0, 0
    for x, y in loader.full_split_batches(split):
        with ctx:
            logits, _ = model(x, y)
        total_nats += torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    model.train()
    loss = total_nats / count
    result = {"split": split, "tokens": count, "loss": loss, "perplexity": math.exp(loss), "bits_per_token": loss / math.log(2)}
    if split == "val" and loader.meta.get("val_bytes"):
        # bits per byte compares models across tokenizers; the split's first token is never predicted
        result["bits_per_byte"] = total_nats / math.log(2) / loader.meta["val_bytes"]
    return result


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


def plot_losses(metrics, path):
    """loss.png: train and val loss against iterations."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    fig = Figure(figsize=(6, 4), layout="tight")
    ax = fig.add_subplot()
    iters = [m["iter"] for m in metrics]
    ax.plot(iters, [m["train_loss"] for m in metrics], label="train")
    ax.plot(iters, [m["val_loss"] for m in metrics], label="val")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


# ----------------------------------------------------------------------------------------------------
# The run's files in out_dir: config.json, meta.json, metrics.jsonl, loss.png and checkpoints


@dataclass
class Progress:
    """Where the run stands: saved in every checkpoint, restored on resume."""

    iter_num: int = 0
    best_val_loss: float = float("inf")
    elapsed_before: float = 0.0  # seconds trained by the earlier processes of a resumed run
    wandb_run_id: str | None = None  # None: a new W&B run; else the checkpoint's run continues
    metrics: list = field(default_factory=list)  # one record per evaluation, as in metrics.jsonl
    t_start: float = field(default_factory=time.perf_counter)

    def elapsed(self):
        return self.elapsed_before + time.perf_counter() - self.t_start


def resume_progress(checkpoint, model, optimizer, dist, out_dir):
    """(Progress, saved RNG state or None): fresh, or the checkpoint's, whose optimizer state goes into optimizer
    (under FSDP, each rank keeps its shard of it)."""
    if checkpoint is None:
        return Progress(), None
    distributed.load_optimizer(model, optimizer, checkpoint["optimizer"], dist)
    if checkpoint.get("nanogpt") is not None and dist.master:
        print(nanogpt.resume_note(checkpoint, os.path.join(out_dir, "ckpt.pt")))
    iter_num = checkpoint["iter_num"]
    progress = Progress(
        iter_num=iter_num, best_val_loss=checkpoint["best_val_loss"], elapsed_before=checkpoint.get("elapsed_s", 0.0),
        wandb_run_id=checkpoint.get("wandb_run_id"),
        metrics=[m for m in read_metrics(out_dir) if m["iter"] <= iter_num],  # drop evals after the checkpoint
    )  # fmt: skip
    return progress, checkpoint["rng"]


def write_run_files(cfg, meta, data_dir, metrics, choices):
    """config.json, meta.json (and the tokenizer file it names, for sample.py), choices.json and metrics.jsonl."""
    if cfg.overwrite and cfg.init_from != "resume":
        remove_previous_run(cfg.out_dir)  # only now, when the new run is set up: a bad setting cost nothing
    save_json(os.path.join(cfg.out_dir, "config.json"), asdict(cfg))
    save_json(os.path.join(cfg.out_dir, "meta.json"), meta)
    save_json(os.path.join(cfg.out_dir, "choices.json"), asdict(choices))
    tokenizer_file = meta.get("tokenizer_file")
    if tokenizer_file:
        with open(os.path.join(data_dir, tokenizer_file), "rb") as src:
            payload = src.read()
        atomic_write(os.path.join(cfg.out_dir, tokenizer_file), lambda tmp: open(tmp, "wb").write(payload))
    write_metrics(cfg.out_dir, metrics)


def save_run_checkpoint(cfg, raw_model, optimizer, progress, dist, best=False):
    """ckpt.pt (plus ckpt_best.pt when best and keep_best, ckpt_<iter>.pt when keep_last), then prune old ones.
    Every rank calls it (under FSDP the full state is gathered from all of them); rank 0 alone writes."""
    model_state, optimizer_state = distributed.full_state(raw_model, optimizer, dist)
    if not dist.master:
        return
    state = {
        "model": model_state,
        "optimizer": optimizer_state,
        "model_args": asdict(raw_model.config),
        "config": asdict(cfg),
        "iter_num": progress.iter_num,
        "best_val_loss": progress.best_val_loss,
        "elapsed_s": progress.elapsed(),
        "rng": rng_state(),
        "wandb_run_id": progress.wandb_run_id,
    }
    paths = [os.path.join(cfg.out_dir, "ckpt.pt")]
    if best:
        paths.append(os.path.join(cfg.out_dir, "ckpt_best.pt"))
    if cfg.keep_last:
        paths.append(os.path.join(cfg.out_dir, f"ckpt_{progress.iter_num:06d}.pt"))
    save_checkpoint(state, paths)
    if cfg.keep_last:
        kept = sorted(f for f in os.listdir(cfg.out_dir) if f.startswith("ckpt_0") and f.endswith(".pt"))
        for f in kept[: -cfg.keep_last]:
            os.remove(os.path.join(cfg.out_dir, f))


def read_metrics(out_dir):
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_metrics(out_dir, metrics):
    def write(tmp):
        with open(tmp, "w") as f:
            f.writelines(json.dumps(m) + "\n" for m in metrics)

    atomic_write(os.path.join(out_dir, "metrics.jsonl"), write)


def start_logging(cfg, meta, data_dir, progress, choices):
    """Rank 0: the run's files in out_dir, and the W&B run (None unless wandb_log), continuing the checkpoint's."""
    write_run_files(cfg, meta, data_dir, progress.metrics, choices)
    if not cfg.wandb_log:
        return None
    run = start_wandb(cfg, progress.wandb_run_id)
    progress.wandb_run_id = run.id
    return run


# ----------------------------------------------------------------------------------------------------
# Weights & Biases


def wandb_mode():
    """'offline' when there is no API key (or WANDB_MODE says so): a run never hangs waiting for a login."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    import netrc

    try:
        hosts = netrc.netrc().hosts
    except (OSError, netrc.NetrcParseError):
        return "offline"
    return "online" if any("wandb" in host for host in hosts) else "offline"


def start_wandb(cfg, run_id):
    import wandb

    kwargs = dict(project=cfg.wandb_project, name=cfg.wandb_run_name, config=asdict(cfg), id=run_id, resume="allow", dir=cfg.out_dir)
    mode = wandb_mode()
    try:
        return wandb.init(mode=mode, settings=wandb.Settings(init_timeout=60), **kwargs)
    except wandb.Error as e:
        if mode == "offline":
            raise
        print(f"wandb could not reach its server ({e}); logging offline instead", file=sys.stderr)
        return wandb.init(mode="offline", **kwargs)


# ----------------------------------------------------------------------------------------------------
# The training loop: evaluate-and-save, then a step, until max_iters or a signal


def evaluate_and_save(cfg, model, raw_model, optimizer, eval_batches, ctx, progress, lr, tokens_per_iter, dist, run):
    """Losses on the fixed eval batches; rank 0 records them, checkpoints (every rank joins), plots and logs to W&B."""
    losses = estimate_loss(model, eval_batches, ctx)
    check_finite(losses["train"] + losses["val"], progress.iter_num, cfg.out_dir)  # never save diverged weights
    iter_num = progress.iter_num
    improved = losses["val"] < progress.best_val_loss
    progress.best_val_loss = min(progress.best_val_loss, losses["val"])
    if dist.master:
        record = {"iter": iter_num, "train_loss": losses["train"], "val_loss": losses["val"], "lr": lr,
                  "tokens": iter_num * tokens_per_iter, "elapsed_s": round(progress.elapsed(), 3)}  # fmt: skip
        progress.metrics.append(record)
        write_metrics(cfg.out_dir, progress.metrics)
        tqdm.write(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
    # rank 0's decision on every rank: under FSDP the save is a gather that all ranks must join, or none
    if distributed.rank0_decides((improved or cfg.always_save_checkpoint) and iter_num > 0, dist):
        save_run_checkpoint(cfg, raw_model, optimizer, progress, dist, best=improved and cfg.keep_best)
    if not dist.master:
        return
    plot_losses(progress.metrics, os.path.join(cfg.out_dir, "loss.png"))
    if run is not None:
        import wandb

        # no "lr" here: at this step W&B's lr is that of the step just taken, logged after it
        run.log({"iter": iter_num, "train/loss": losses["train"], "val/loss": losses["val"],
                 "tokens": record["tokens"], "loss_plot": wandb.Image(os.path.join(cfg.out_dir, "loss.png"))}, step=iter_num)  # fmt: skip


def train_step(model, optimizer, scaler, ctx, X, Y, next_batch, grad_accum, grad_clip, dist):
    """Forward, backward and update over grad_accum micro-batches, fetching each next batch while the current
    one computes. (loss, grad norm, the next step's first batch X, Y)."""
    for micro_step in range(grad_accum):
        distributed.set_grad_sync(model, micro_step == grad_accum - 1, dist)  # ranks communicate only at the last one
        with ctx:
            _, loss = model(X, Y)
            loss = loss / grad_accum
        X, Y = next_batch(micro_step + 1)
        scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # true gradients for the norm and the clip (a no-op unless float16)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf).item()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss.item() * grad_accum, grad_norm, X, Y


def check_finite(loss, iter_num, out_dir):
    if not math.isfinite(loss):
        raise UserError(
            f"loss is {loss} at iter {iter_num}: training diverged. The last good checkpoint in {out_dir} "
            "is kept; lower learning_rate or use dtype=bfloat16/float32"
        )


def log_step(iter_num, stats, run):
    """One line of the step's loss, lr, grad norm, speed and MFU; the same numbers to W&B."""
    tqdm.write(
        f"iter {iter_num}: loss {stats['loss']:.4f}, lr {stats['lr']:.2e}, grad norm {stats['grad_norm']:.4f}, "
        f"{stats['dt'] * 1000:.1f} ms/iter, {stats['tok_s']:,.0f} tok/s, mfu {stats['mfu'] * 100:.1f}%"
    )
    if run is not None:
        run.log({"train/loss_step": stats["loss"], "lr": stats["lr"], "grad_norm": stats["grad_norm"],
                 "tok_per_s": stats["tok_s"], "mfu": stats["mfu"]}, step=iter_num)  # fmt: skip


def evaluate_checkpoint(cfg, model, loader, ctx, iter_num, master):
    """--eval_only: the loss over the whole val split, printed and written to eval.json."""
    if cfg.quantize != "none":
        model = prepare_for_decoding(model.eval(), cfg.quantize)
    result = evaluate_split(model, loader, "val", ctx)
    result["iter"], result["quantize"] = iter_num, cfg.quantize
    if master:
        save_json(os.path.join(cfg.out_dir, "eval.json"), result)
        print(json.dumps(result))


def catch_stop_signals():
    """SIGINT / SIGTERM only append to the returned list: the loop finishes its step, saves a checkpoint and exits."""
    stop_signal = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop_signal.append(signum))
    return stop_signal


def set_lr(optimizer, lr):
    """lr for every parameter group; Muon's groups run at muon_lr / learning_rate times it. Returns lr."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr


def main():
    given = with_checkpoint_block_size(parse_overrides(TrainConfig(), sys.argv[1:]))  # what the user set, not the defaults
    cfg = TrainConfig(**given)
    validate(cfg)

    # -- setup: processes, device, precision, data, model ----------------------------------------------
    dist = distributed.setup(cfg)
    device, device_type, choices, ctx, scaler = setup_hardware(cfg, dist)
    scaler = distributed.grad_scaler(scaler, dist)
    grad_accum = cfg.gradient_accumulation_steps // dist.world_size
    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size
    # Each rank its own dropout masks; DDP and FSDP copy rank 0's initial weights to the others.
    torch.manual_seed(cfg.seed + dist.rank)
    data_dir = data_dir_for(cfg.dataset)
    loader = BatchLoader(data_dir, cfg.block_size, cfg.batch_size, device, cfg.seed)
    out_dir_lock = claim_out_dir(cfg) if dist.master else None  # noqa: F841 (held until main returns)
    model, checkpoint = build_model(cfg, given, loader.meta, data_dir, device, choices.sdpa)
    if dist.master:
        print(f"model: {model.get_num_params() / 1e6:.2f}M parameters, device {device}, dtype {choices.dtype}, {dist.world_size} rank(s)")
    if cfg.eval_only:
        return evaluate_checkpoint(cfg, model, loader, ctx, checkpoint["iter_num"] if checkpoint else 0, dist.master)
    distributed.shard(model, dist)  # FSDP: before the optimizer, which must hold the sharded parameters
    optimizer = build_optimizer(model, cfg, device_type, choices.newton_schulz_dtype)
    progress, saved_rng = resume_progress(checkpoint, model, optimizer, dist, cfg.out_dir)
    checkpoint = None  # free memory
    raw_model = model  # the plain module: what checkpoints save and MFU counts
    if cfg.compile:
        model = torch.compile(model)
    model = distributed.wrap(model, dist)  # DDP (FSDP was applied in place by shard)

    # -- logging; stop cleanly on SIGINT / SIGTERM: finish the step, save, exit --------------------------
    run = start_logging(cfg, loader.meta, data_dir, progress, choices) if dist.master else None
    peak_flops = hardware.measure_peak_flops(device, getattr(torch, choices.dtype)) if dist.master else None
    stop_signal = catch_stop_signals()
    eval_batches = {split: loader.eval_batches(split, cfg.eval_iters) for split in ("train", "val")}

    # -- the training loop ---------------------------------------------------------------------------
    if saved_rng is not None and dist.master:
        # dropout masks continue exactly where the checkpoint left them (the checkpoint holds rank 0's RNG;
        # other ranks keep their own seed, so a resumed multi-rank run is reproducible but not bit-identical)
        set_rng_state(saved_rng)
    start_iter, progress.t_start = progress.iter_num, time.perf_counter()
    pbar = tqdm(
        total=cfg.max_iters, initial=start_iter, disable=not (cfg.progress and dist.master and sys.stdout.isatty()), dynamic_ncols=True
    )

    def batch(it, micro_step):  # ranks split the global micro-steps; micro_step == grad_accum is the next step's first
        it, micro_step = it + micro_step // grad_accum, micro_step % grad_accum
        return loader.get_batch("train", it, dist.rank * grad_accum + micro_step)

    X, Y = batch(start_iter, 0)
    stopped_by = None  # the exit status once SIGINT / SIGTERM stopped the run
    while True:
        it = progress.iter_num
        lr = set_lr(optimizer, get_lr(it, cfg))
        # every eval_interval and at the last step, so a run never ends without its final weights evaluated (and
        # saved if they are the best); a resume does not re-evaluate the step it starts from
        if (it % cfg.eval_interval == 0 or it == cfg.max_iters) and not (start_iter > 0 and it == start_iter):
            evaluate_and_save(cfg, model, raw_model, optimizer, eval_batches, ctx, progress, lr, tokens_per_iter, dist, run)
        if it >= cfg.max_iters:
            break
        if distributed.any_rank(bool(stop_signal), dist):  # SIGINT/SIGTERM on any rank stops them all
            save_run_checkpoint(cfg, raw_model, optimizer, progress, dist)
            if dist.master:
                tqdm.write(f"stopped by signal at iter {it}; checkpoint saved to {os.path.join(cfg.out_dir, 'ckpt.pt')}")
            stopped_by = 128 + (stop_signal[0] if stop_signal else signal.SIGTERM)
            break
        t0 = time.perf_counter()
        lossf, grad_norm, X, Y = train_step(
            model, optimizer, scaler, ctx, X, Y, functools.partial(batch, it), grad_accum, cfg.grad_clip, dist
        )
        check_finite(lossf, it, cfg.out_dir)
        dt = time.perf_counter() - t0
        progress.iter_num += 1
        tok_s = tokens_per_iter / dt
        pbar.update(1)
        pbar.set_postfix(loss=f"{lossf:.4f}", tok_s=f"{tok_s:,.0f}")
        if progress.iter_num % cfg.log_interval == 0 and dist.master:
            mfu = raw_model.estimate_mfu(cfg.batch_size * cfg.gradient_accumulation_steps, dt, peak_flops * dist.world_size)
            log_step(progress.iter_num, dict(loss=lossf, lr=lr, grad_norm=grad_norm, dt=dt, tok_s=tok_s, mfu=mfu), run)
    pbar.close()
    if run is not None:
        run.finish(exit_code=stopped_by or 0)
    distributed.teardown(dist)
    if stopped_by:
        raise SystemExit(stopped_by)


if __name__ == "__main__":
    run_cli(main)
