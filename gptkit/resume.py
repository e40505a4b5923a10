"""
How a run starts or continues: the settings a resume (or --eval_only) runs with, out_dir made this
run's alone, the checkpoint it starts from, checked against what the user gave, and where its
progress stands. train.py calls these before any work; the policy is here so the script reads as a
loop.

A checkpoint fixes its model (shape and kind) and its optimizer's kind and hyperparameters; every
other key may change on resume and each change is printed in one line, with whether the run still
matches an uninterrupted one (docs/training.md).
"""

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields

from gptkit import distributed
from gptkit.base import UserError
from gptkit.checkpoint import load_checkpoint, lock_out_dir, refuse_to_overwrite
from gptkit.tracking import read_metrics
from gptkit.train_config import TrainConfig

# --------------------------------------------------------------------------------------------------
# The settings: the run's own, then what the user gave


# A checkpoint fixes its model's shape and kind (the weights are those), and its optimizer's kind,
# weight decay, betas, muon_lr and embedding_lr (optimizer.load_state_dict restores them;
# embedding_lr > 0 is a parameter group of its own). Every other key may change on resume: dropout
# (applied), sdpa (a kernel, decided again for the machine when "auto"), a shorter block_size, the
# learning-rate schedule, max_iters, batch sizes, evaluation, logging, checkpointing, W&B, dataset
# (same tokenizer), seed, device, dtype, compile. Each change is printed (describe_changes).
FIXED_OPTIMIZER_KEYS = (
    "optimizer",
    "weight_decay",
    "beta1",
    "beta2",
    "muon_lr",
    "embedding_lr",
    "muon_weight_decay",
)
CHANGEABLE_MODEL_KEYS = ("dropout", "sdpa")

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


def continues_checkpoint(given):
    """A resume, or --eval_only of out_dir's checkpoint (not of GPT-2's weights, as nanoGPT's
    config/eval_gpt2.py asks)."""
    return given.get("init_from") == "resume" or (
        given.get("eval_only") and given.get("init_from", "scratch") == "scratch"
    )


def run_settings(given):
    """
    (cfg, changes): the settings this invocation runs with. A new run: TrainConfig's defaults and
    what the user gave (config files, --key=value). A resume or --eval_only continues the run in
    out_dir as it was: the settings saved in its checkpoint (its "config"; the model keys of its
    model_args where an older checkpoint has no config; today's default for a key it lacks), then
    what the user gave. A setting the checkpoint could not carry (its config_errors: a nanoGPT
    run's of the wrong type) must be given. changes: [(key, the run's value, the value used)] for
    each key the checkpoint records that differs from it, for the lines describe_changes prints
    once every check passed.
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
    errors = checkpoint.get("config_errors", {})
    for key, message in errors.items():
        if key not in given:
            raise UserError(message)
    saved = {k: v for k, v in checkpoint.get("config", {}).items() if k in keys and k not in errors}
    recorded = {**model_keys, **saved}
    settings = {**{k: getattr(TrainConfig, k) for k in keys}, **recorded, **given}
    if settings["fsdp"] and not distributed.launched() and "fsdp" not in given:
        settings["fsdp"] = False  # a sharded run continued in one process (the checkpoint is whole)
    # a key the checkpoint does not record (nanoGPT's device, say) has no value of the run's to
    # differ from
    changes = [
        (k, recorded[k], settings[k]) for k in sorted(recorded) if settings[k] != recorded[k]
    ]
    return TrainConfig(**settings), changes


def describe_changes(changes, resume):
    """One line per setting that differs from the run's; on resume, whether the run still matches an
    uninterrupted one."""
    lines = []
    for key, was, now in changes:
        diverges = resume and key not in BOOKKEEPING_KEYS
        note = "; the run no longer matches an uninterrupted one" if diverges else ""
        lines.append(f"{key}: {was!r} -> {now!r}{note}")
    return lines


# --------------------------------------------------------------------------------------------------
# out_dir: this run's alone


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


# --------------------------------------------------------------------------------------------------
# The checkpoint a resume continues, checked before any work


def checked_start(cfg, given, meta, data_dir):
    """What the run starts from, checked before any work: (out_dir's checkpoint, loaded to the CPU,
    or None; its model overrides). A resume or --eval_only reads it and checks it against the
    settings given and the dataset."""
    if continues_checkpoint(asdict(cfg)):
        path = os.path.join(cfg.out_dir, "ckpt.pt")
        checkpoint = load_checkpoint(path)
        overrides = resume_overrides(checkpoint, given, path)
        check_tokenizer(meta, os.path.join(cfg.out_dir, "meta.json"))
        check_block_size(cfg.block_size, checkpoint["model_args"]["block_size"])
        return checkpoint, overrides
    if cfg.init_from != "scratch" and meta.get("tokenizer") != "gpt2":
        raise UserError(
            f"init_from={cfg.init_from} needs GPT-2 BPE data, but {data_dir} was prepared with "
            f"{meta.get('tokenizer')!r}"
        )
    return None, {}


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
            f"{path} was trained with other settings, which cannot change on resume: "
            f"{', '.join(differences)}; "
            "drop them to continue it, or start a new run with another --out_dir"
        )
    return {"dropout": given["dropout"]} if "dropout" in given else {}


def check_tokenizer(meta, saved_meta_path):
    """The dataset must be tokenized the way the checkpoint was trained."""
    if not os.path.isfile(saved_meta_path):
        return
    with open(saved_meta_path) as f:
        saved = json.load(f)
    for key in ("tokenizer", "vocab_size", "chars", "tokenizer_sha256"):
        if saved.get(key) != meta.get(key):
            raise UserError(
                f"the dataset's tokenizer ({meta.get('tokenizer')}, "
                f"vocab {meta.get('vocab_size')}) does not match the checkpoint's "
                f"({saved.get('tokenizer')}, vocab {saved.get('vocab_size')}); check --dataset"
            )


def check_block_size(block_size, model_block_size):
    """A run may train a model on shorter windows than it was built for, never on longer ones."""
    if block_size > model_block_size:
        raise UserError(f"block_size={block_size} is larger than the model's {model_block_size}")


# --------------------------------------------------------------------------------------------------
# Progress: where the run stands, saved in every checkpoint


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
    if checkpoint.get("resume_note") and dist.master:
        print(checkpoint["resume_note"])
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
