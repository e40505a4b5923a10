"""
Train a GPT, from scratch, from a checkpoint (exact resume) or from GPT-2's weights; or, with
--model_type=gru, the recurrent baseline of recurrent.py, through the same loop, checkpoints and
data.

    python train.py config/train_shakespeare_char.py --batch_size=32 --device=cpu
    python train.py --init_from=resume --out_dir=out-shakespeare-char       # continue the run as it was, where it stopped
    python train.py --help                                                 # every key with its default

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
applied and named in one line (run_settings). nanoGPT's out_dirs (resume, eval_only), data folders
(--dataset) and config files work here too (gptkit/nanogpt.py, gptkit/nanogpt.py).
"""

import functools
import json
import math
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields

import torch
from tqdm import tqdm

from gptkit import distributed, hardware, nanogpt
from gptkit.base import UserError, atomic_write, save_figure, save_json
from gptkit.checkpoint import (
    load_checkpoint,
    lock_out_dir,
    model_from_checkpoint,
    refuse_to_overwrite,
    remove_previous_run,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from gptkit.configurator import parse_overrides, run_cli
from gptkit.decoding import check_quantize, prepare_for_decoding
from gptkit.loader import BatchLoader, data_dir_for
from gptkit.pretrained import crop_block_size, from_pretrained
from gptkit.train_config import TrainConfig, build_optimizer, new_model, validate

# ----------------------------------------------------------------------------------------------------
# Checks before any work: out_dir, and the checkpoint a resume continues


def check_writable(out_dir):
    """Create out_dir and write a probe file in it: the honest test (os.access says yes to root on a
    read-only mount)."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise UserError(
            f"out_dir {out_dir} is not writable ({e.strerror or e}); choose another --out_dir"
        ) from None


def claim_out_dir(cfg):
    """Make out_dir this run's (rank 0): writable, locked until the returned file closes, and
    holding no other run's checkpoint unless overwrite. eval_only only reads (its eval.json is
    written atomically) and takes no lock."""
    check_writable(cfg.out_dir)
    if cfg.eval_only:
        return None
    lock = lock_out_dir(cfg.out_dir)
    if not (cfg.init_from == "resume" or cfg.overwrite):
        refuse_to_overwrite(cfg.out_dir)
    return lock


# A checkpoint fixes its model's shape and kind (the weights are those), and its optimizer's kind,
# weight decay, betas, muon_lr and embedding_lr (optimizer.load_state_dict restores them;
# embedding_lr > 0 is a parameter group of its own). Every other key may change on resume: dropout
# (applied), sdpa (a kernel, decided again for the machine when "auto"), a shorter block_size, the
# learning-rate schedule, max_iters, batch sizes, evaluation, logging, checkpointing, W&B, dataset
# (same tokenizer), seed, device, dtype, compile. Each change is printed (describe_changes).
FIXED_OPTIMIZER_KEYS = ("optimizer", "weight_decay", "beta1", "beta2", "muon_lr", "embedding_lr")
CHANGEABLE_MODEL_KEYS = ("dropout", "sdpa")


def resume_overrides(checkpoint, given, path):
    """
    The model settings a resume takes from the command line (dropout; sdpa is build_model's).
    `given` holds only the keys the user set (configurator.parse_overrides): one the checkpoint
    fixes that differs from it is an error listing every such difference, so an explicit setting is
    never silently ignored.
    """
    saved = checkpoint.get("config", {})
    # a key older checkpoints lack had its default then (embedding_lr did not exist: 0; model_type:
    # every model was a GPT)
    fixed = {
        **{k: saved.get(k, getattr(TrainConfig, k)) for k in FIXED_OPTIMIZER_KEYS if saved},
        "model_type": "gpt",
    }
    fixed.update(checkpoint["model_args"])
    differences = [
        f"{key}: checkpoint {fixed[key]!r} vs given {value!r}"
        for key, value in given.items()
        if key in fixed
        and key not in CHANGEABLE_MODEL_KEYS
        and value != fixed[key]
        and not (key == "block_size" and value < fixed[key])
    ]
    if differences:
        raise UserError(
            f"{path} was trained with other settings, which cannot change on resume: {', '.join(differences)}; "
            "drop them to continue it, or start a new run with another --out_dir"
        )
    return {"dropout": given["dropout"]} if "dropout" in given else {}


def continues_checkpoint(given):
    """A resume, or --eval_only of out_dir's checkpoint (not of GPT-2's weights, as nanoGPT's
    config/eval_gpt2.py asks)."""
    return given.get("init_from") == "resume" or (
        given.get("eval_only") and given.get("init_from", "scratch") == "scratch"
    )


# Keys that belong to one invocation, not to the run: a resume or --eval_only never takes them from
# the checkpoint.
PER_INVOCATION_KEYS = ("init_from", "out_dir", "eval_only", "overwrite", "quantize")
# Keys that change only what is evaluated, logged or kept, never the weights (evaluations use fixed
# batches and draw no random numbers): changing one on resume keeps the run bit for bit the
# uninterrupted one. Any other change does not.
BOOKKEEPING_KEYS = (
    "max_iters",
    "eval_interval",
    "log_interval",
    "eval_iters",
    "always_save_checkpoint",
    "keep_last",
    "keep_best",
    "progress",
    "wandb_log",
    "wandb_project",
    "wandb_run_name",
)


def run_settings(given):
    """
    (cfg, changes): the settings this invocation runs with. A new run: TrainConfig's defaults and
    what the user gave (config files, --key=value). A resume or --eval_only continues the run in
    out_dir as it was: the settings saved in its checkpoint (its "config"; the model keys of its
    model_args where an older checkpoint has no config; today's default for a key it lacks), then
    what the user gave. changes: [(key, the run's value, the value used)] for each key the
    checkpoint records that differs from it, for the lines describe_changes prints once every check
    passed.
    """
    if not continues_checkpoint(given):
        return TrainConfig(**given), []
    out_dir = given.get("out_dir", TrainConfig.out_dir)
    # mmap: only the small header is read here
    checkpoint = load_checkpoint(os.path.join(out_dir, "ckpt.pt"), mmap=True)
    keys = {f.name for f in fields(TrainConfig)} - set(PER_INVOCATION_KEYS)
    # sdpa and vocab_size in model_args are what was built (a bool; the padded vocabulary), not what
    # was asked for
    model_keys = {
        k: v
        for k, v in checkpoint["model_args"].items()
        if k in keys and k not in ("sdpa", "vocab_size")
    }
    saved = checkpoint.get("config", {})
    if (
        checkpoint.get("nanogpt") is not None
    ):  # the keys its config shares with ours, type-checked, its dataset found
        saved = {
            k: v
            for k, v in nanogpt.resume_settings(checkpoint, given, out_dir).items()
            if k not in given
        }
    saved = {k: v for k, v in saved.items() if k in keys}
    recorded = {**model_keys, **saved}
    settings = {**{k: getattr(TrainConfig, k) for k in keys}, **recorded, **given}
    if settings["fsdp"] and not distributed.launched() and "fsdp" not in given:
        settings["fsdp"] = (
            False  # a sharded run continued in one process: unsharded (the checkpoint is whole)
        )
    # a key the checkpoint does not record (nanoGPT's device, say) has no value of the run's to
    # differ from
    changes = [
        (key, recorded[key], settings[key])
        for key in sorted(recorded)
        if settings[key] != recorded[key]
    ]
    return TrainConfig(**settings), changes


def describe_changes(changes, resume):
    """One line per setting that differs from the run's; on resume, whether the run still matches an
    uninterrupted one."""
    lines = []
    for key, was, now in changes:
        diverges = resume and key not in BOOKKEEPING_KEYS
        lines.append(
            f"{key}: {was!r} -> {now!r}"
            + ("; the run no longer matches an uninterrupted one" if diverges else "")
        )
    return lines


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


def checked_start(cfg, given, meta, data_dir):
    """What the run starts from, checked before any work: (out_dir's checkpoint, loaded to the CPU,
    or None; its model overrides). A resume or --eval_only reads it and checks it against the
    settings given and the dataset."""
    if continues_checkpoint(asdict(cfg)):
        path = os.path.join(cfg.out_dir, "ckpt.pt")
        checkpoint = load_checkpoint(path)
        overrides = resume_overrides(checkpoint, given, path)
        check_tokenizer(meta, os.path.join(cfg.out_dir, "meta.json"))
        if cfg.block_size > checkpoint["model_args"]["block_size"]:
            raise UserError(
                f"block_size={cfg.block_size} is larger than the model's {checkpoint['model_args']['block_size']}"
            )
        return checkpoint, overrides
    if cfg.init_from != "scratch" and meta.get("tokenizer") != "gpt2":
        raise UserError(
            f"init_from={cfg.init_from} needs GPT-2 BPE data, but {data_dir} was prepared with {meta.get('tokenizer')!r}"
        )
    return None, {}


# ----------------------------------------------------------------------------------------------------
# The model: from scratch, from the checkpoint, or from GPT-2's weights


def build_model(cfg, start, meta, sdpa):
    """The model the run trains (on the CPU): start is checked_start's (checkpoint, overrides).
    sdpa: the attention kernel chosen for this run (a bool; cfg.sdpa may be "auto"), whatever the
    checkpoint ran with."""
    checkpoint, overrides = start
    if checkpoint is not None:
        model = model_from_checkpoint(checkpoint, sdpa=sdpa, **overrides)
    elif cfg.init_from == "scratch":
        model = new_model(cfg, meta["vocab_size"], sdpa)
    else:
        model = from_pretrained(cfg.init_from, dict(dropout=cfg.dropout, sdpa=sdpa))
        if cfg.block_size > model.config.block_size:
            raise UserError(
                f"block_size={cfg.block_size} is larger than the model's {model.config.block_size}"
            )
        model = (
            crop_block_size(model, cfg.block_size)
            if cfg.block_size < model.config.block_size
            else model
        )
    if meta["vocab_size"] > model.config.vocab_size:
        raise UserError(
            f"the data's vocab_size {meta['vocab_size']} is larger than the model's {model.config.vocab_size}"
        )
    return model


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
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------
# The run's files in out_dir: config.json, meta.json, metrics.jsonl, loss.png and checkpoints


# their product, over all ranks
TOKENS_PER_ITER = (
    "gradient_accumulation_steps",
    "batch_size",
    "block_size",
)


@dataclass
class Progress:
    """Where the run stands: saved in every checkpoint, restored on resume."""

    iter_num: int = 0
    best_val_loss: float = float("inf")
    tokens: int = (
        0  # trained on so far, over all ranks: counted, since batch_size may change on resume
    )
    elapsed_before: float = 0.0  # seconds trained by the earlier processes of a resumed run
    wandb_run_id: str | None = None  # None: a new W&B run; else the checkpoint's run continues
    metrics: list = field(default_factory=list)  # one record per evaluation, as in metrics.jsonl
    t_start: float = field(default_factory=time.perf_counter)

    def elapsed(self):
        return self.elapsed_before + time.perf_counter() - self.t_start


def resume_progress(checkpoint, model, optimizer, dist, out_dir):
    """(Progress, saved RNG state or None): fresh, or the checkpoint's, whose optimizer state goes
    into optimizer (under FSDP, each rank keeps its shard of it)."""
    if checkpoint is None:
        return Progress(), None
    distributed.load_optimizer(model, optimizer, checkpoint["optimizer"], dist)
    if checkpoint.get("nanogpt") is not None and dist.master:
        print(nanogpt.resume_note(checkpoint, os.path.join(out_dir, "ckpt.pt")))
    iter_num = checkpoint["iter_num"]
    progress = Progress(
        iter_num=iter_num,
        best_val_loss=checkpoint["best_val_loss"],
        elapsed_before=checkpoint.get("elapsed_s", 0.0),
        tokens=checkpoint.get(
            "tokens", iter_num * math.prod(checkpoint["config"].get(k, 1) for k in TOKENS_PER_ITER)
        ),
        wandb_run_id=checkpoint.get("wandb_run_id"),
        metrics=[
            m for m in read_metrics(out_dir) if m["iter"] <= iter_num
        ],  # drop evals after the checkpoint
    )
    return progress, checkpoint["rng"]


def write_run_files(cfg, loader, data_dir, metrics, choices):
    """config.json, meta.json (and the tokenizer file it names, for sample.py), choices.json and
    metrics.jsonl."""
    if cfg.overwrite and cfg.init_from != "resume":
        # only now, when the new run is set up: a bad setting cost nothing
        remove_previous_run(cfg.out_dir)
    save_json(os.path.join(cfg.out_dir, "config.json"), asdict(cfg))
    save_json(os.path.join(cfg.out_dir, "meta.json"), loader.meta)
    save_json(os.path.join(cfg.out_dir, "choices.json"), asdict(choices))
    tokenizer_file = loader.meta.get("tokenizer_file")
    if tokenizer_file:
        with open(os.path.join(data_dir, tokenizer_file), "rb") as src:
            payload = src.read()
        atomic_write(
            os.path.join(cfg.out_dir, tokenizer_file), lambda tmp: open(tmp, "wb").write(payload)
        )
    write_metrics(cfg.out_dir, metrics)


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


# ----------------------------------------------------------------------------------------------------
# Weights & Biases


def wandb_mode():
    """'offline' when there is no API key (or WANDB_MODE says so): a run never hangs waiting for a
    login."""
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


def start_wandb(cfg, progress):
    """The W&B run (None unless wandb_log), continuing the checkpoint's; rank 0 only."""
    if not cfg.wandb_log:
        return None
    import wandb

    kwargs = dict(
        project=cfg.wandb_project,
        name=cfg.wandb_run_name,
        config=asdict(cfg),
        id=progress.wandb_run_id,
        resume="allow",
        dir=cfg.out_dir,
    )
    mode = wandb_mode()
    try:
        run = wandb.init(mode=mode, settings=wandb.Settings(init_timeout=60), **kwargs)
    except wandb.Error as e:
        if mode == "offline":
            raise
        print(f"wandb could not reach its server ({e}); logging offline instead", file=sys.stderr)
        run = wandb.init(mode="offline", **kwargs)
    progress.wandb_run_id = run.id
    return run


# ----------------------------------------------------------------------------------------------------
# The run: its state in one object, and the loop (evaluate-and-save, then a step, until max_iters or
# a signal)


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
    wandb: object = None  # the W&B run, or None
    peak_flops: float | None = None  # the MFU denominator (rank 0)
    # SIGINT / SIGTERM received, appended by their handlers
    stop_signal: list = field(default_factory=list)

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


def evaluate_and_save(run, eval_batches, lr):
    """Losses on the fixed eval batches; rank 0 records them, checkpoints (every rank joins), plots
    and logs to W&B."""
    cfg, progress = run.cfg, run.progress
    losses = estimate_loss(run.model, eval_batches, run.hw.ctx)
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
        write_metrics(cfg.out_dir, progress.metrics)
        tqdm.write(
            f"step {progress.iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
        )
    # rank 0's decision on every rank: under FSDP the save is a gather that all ranks must join, or
    # none
    if distributed.rank0_decides(
        (improved or cfg.always_save_checkpoint) and progress.iter_num > 0, run.dist
    ):
        save_run_checkpoint(run, best=improved and cfg.keep_best)
    if not run.dist.master:
        return
    # two points are no curve, and a speedrun with two evaluations saves 0.6 s of matplotlib
    plotted = len(progress.metrics) >= 3
    if plotted:
        plot_losses(progress.metrics, os.path.join(cfg.out_dir, "loss.png"))
    if run.wandb is not None:
        import wandb

        plot = {"loss_plot": wandb.Image(os.path.join(cfg.out_dir, "loss.png"))} if plotted else {}
        # no "lr" here: at this step W&B's lr is that of the step just taken, logged after it
        run.wandb.log(
            {
                "iter": record["iter"],
                "train/loss": losses["train"],
                "val/loss": losses["val"],
                "tokens": record["tokens"],
                **plot,
            },
            step=record["iter"],
        )


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


def check_finite(loss, iter_num, out_dir):
    if not math.isfinite(loss):
        raise UserError(
            f"loss is {loss} at iter {iter_num}: training diverged. The last good checkpoint in {out_dir} "
            "is kept; lower learning_rate or use dtype=bfloat16/float32"
        )


def log_step(run, lossf, lr, grad_norm, dt):
    """One line of the step's loss, lr, grad norm, speed and MFU; the same numbers to W&B."""
    cfg = run.cfg
    tok_s = run.tokens_per_iter / dt
    mfu = hardware.estimate_mfu(
        run.raw_model,
        cfg.batch_size * cfg.gradient_accumulation_steps,
        dt,
        run.peak_flops * run.dist.world_size,
    )
    tqdm.write(
        f"iter {run.progress.iter_num}: loss {lossf:.4f}, lr {lr:.2e}, grad norm {grad_norm:.4f}, "
        f"{dt * 1000:.1f} ms/iter, {tok_s:,.0f} tok/s, mfu {mfu * 100:.1f}%"
    )
    if run.wandb is not None:
        run.wandb.log(
            {
                "train/loss_step": lossf,
                "lr": lr,
                "grad_norm": grad_norm,
                "tok_per_s": tok_s,
                "mfu": mfu,
            },
            step=run.progress.iter_num,
        )


def catch_stop_signals(stop_signal):
    """SIGINT / SIGTERM only append to stop_signal: the loop finishes its step, saves a checkpoint
    and exits."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop_signal.append(signum))


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
        if (it % cfg.eval_interval == 0 or it == cfg.max_iters) and not (
            start_iter > 0 and it == start_iter
        ):
            evaluate_and_save(run, eval_batches, lr)
        if it >= cfg.max_iters:
            pbar.close()
            return None
        if distributed.any_rank(
            bool(run.stop_signal), run.dist
        ):  # SIGINT/SIGTERM on any rank stops them all
            save_run_checkpoint(run)
            if run.dist.master:
                tqdm.write(
                    f"stopped by signal at iter {it}; checkpoint saved to {os.path.join(cfg.out_dir, 'ckpt.pt')}"
                )
            pbar.close()
            return 128 + (run.stop_signal[0] if run.stop_signal else signal.SIGTERM)
        t0 = time.perf_counter()
        lossf, grad_norm, X, Y = train_step(run, X, Y, functools.partial(run.batch, it))
        check_finite(lossf, it, cfg.out_dir)
        dt = time.perf_counter() - t0
        progress.iter_num += 1
        progress.tokens += run.tokens_per_iter
        pbar.update(1)
        pbar.set_postfix(loss=f"{lossf:.4f}", tok_s=f"{run.tokens_per_iter / dt:,.0f}")
        if progress.iter_num % cfg.log_interval == 0 and run.dist.master:
            log_step(run, lossf, lr, grad_norm, dt)


# ----------------------------------------------------------------------------------------------------


def decide_hardware(cfg, dist):
    """(Hardware, TrainingChoices): the autocast dtype, Muon's Newton-Schulz dtype, the attention
    kernel and the threads for this machine, each with why (rank 0 prints them). Ranks under
    torchrun decide bf16 by the CPU's flags alone, untimed: timings could differ from rank to rank,
    and the ranks must agree."""
    choices = hardware.training_choices(
        dist.device, cfg.dtype, cfg.sdpa, cfg.n_embd, measure=not dist.launched
    )
    hw = hardware.setup(dist.device, choices.dtype)
    hw = hardware.Hardware(
        hw.device, hw.device_type, hw.dtype, hw.ctx, distributed.grad_scaler(hw.scaler, dist)
    )
    if dist.master:
        for name, why in choices.reasons.items():
            print(f"{name} = {getattr(choices, name)}: {why}")
    return hw, choices


def main():
    given = parse_overrides(TrainConfig(), sys.argv[1:])  # what the user set, not the defaults
    cfg, changes = run_settings(given)
    validate(cfg)
    dist = distributed.setup(cfg)
    check_quantize(cfg.quantize, hardware.kind(dist.device))
    # every check of the data, out_dir and the checkpoint to continue, before any timing or printing
    data_dir = data_dir_for(cfg.dataset)
    loader = BatchLoader(data_dir, cfg.block_size, cfg.batch_size, dist.device, cfg.seed)
    out_dir_lock = claim_out_dir(cfg) if dist.master else None  # noqa: F841 (held until main returns)
    start = checked_start(cfg, given, loader.meta, data_dir)
    if dist.master:  # every check passed: say what differs from the run being continued
        for line in describe_changes(changes, resume=cfg.init_from == "resume"):
            print(line)

    hw, choices = decide_hardware(cfg, dist)
    # each rank its own dropout masks; DDP and FSDP copy rank 0's initial weights
    torch.manual_seed(cfg.seed + dist.rank)
    model = build_model(cfg, start, loader.meta, choices.sdpa).to(hw.device)
    if dist.master:
        print(
            f"model: {model.get_num_params() / 1e6:.2f}M parameters, device {hw.device}, dtype {choices.dtype}, {dist.world_size} rank(s)"
        )
    checkpoint = start[0]
    if cfg.eval_only:
        return evaluate_checkpoint(
            cfg, model, loader, hw.ctx, checkpoint["iter_num"] if checkpoint else 0, dist.master
        )
    # FSDP: before the optimizer, which must hold the sharded parameters
    distributed.shard(model, dist)
    optimizer = build_optimizer(model, cfg, hw.device_type, choices.newton_schulz_dtype)
    progress, saved_rng = resume_progress(checkpoint, model, optimizer, dist, cfg.out_dir)
    start = checkpoint = None  # free memory
    # DDP (FSDP was applied in place by shard)
    step_model = distributed.wrap(torch.compile(model) if cfg.compile else model, dist)
    run = Run(cfg, dist, hw, loader, model, step_model, optimizer, progress)
    if dist.master:
        write_run_files(cfg, loader, data_dir, progress.metrics, choices)
        run.wandb = start_wandb(cfg, progress)
        run.peak_flops = hardware.measure_peak_flops(hw.device, getattr(torch, choices.dtype))
    catch_stop_signals(run.stop_signal)
    if saved_rng is not None and dist.master:
        # dropout masks continue exactly where the checkpoint left them (the checkpoint holds rank
        # 0's RNG; other ranks keep their own seed, so a resumed multi-rank run is reproducible but
        # not bit-identical)
        set_rng_state(saved_rng)
    stopped_by = train_loop(run)
    if run.wandb is not None:
        run.wandb.finish(exit_code=stopped_by or 0)
    distributed.teardown(dist)
    if stopped_by:
        raise SystemExit(stopped_by)


if __name__ == "__main__":
    run_cli(main)
