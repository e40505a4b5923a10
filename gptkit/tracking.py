"""
The run's record in out_dir and in Weights & Biases: config.json, meta.json, choices.json,
metrics.jsonl (one line per evaluation), loss.png, and the W&B run (offline without a login).
"""

import json
import os
import sys
from dataclasses import asdict

from gptkit.base import atomic_write, save_figure, save_json
from gptkit.checkpoint import remove_previous_run

# --------------------------------------------------------------------------------------------------
# Files in out_dir


def write_run_files(cfg, loader, data_dir, metrics, choices):
    """config.json, meta.json (and the tokenizer file it names, for sample.py), choices.json and
    metrics.jsonl."""
    if cfg.overwrite and cfg.init_from != "resume":
        # only now, when the new run is set up: a bad setting cost nothing
        remove_previous_run(cfg.out_dir)
    save_json(os.path.join(cfg.out_dir, "config.json"), asdict(cfg))
    save_json(os.path.join(cfg.out_dir, "meta.json"), loader.meta)
    save_choices(cfg.out_dir, choices)
    tokenizer_file = loader.meta.get("tokenizer_file")
    if tokenizer_file:
        with open(os.path.join(data_dir, tokenizer_file), "rb") as src:
            payload = src.read()
        atomic_write(
            os.path.join(cfg.out_dir, tokenizer_file), lambda tmp: open(tmp, "wb").write(payload)
        )
    write_metrics(cfg.out_dir, metrics)


def save_choices(out_dir, choices):
    """choices.json: the machine's choices, each with why (again when compile="auto" decides)."""
    save_json(os.path.join(out_dir, "choices.json"), asdict(choices))


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


def show_evaluation(out_dir, metrics, wandb_run):
    """After an evaluation (rank 0): loss.png from the third on (two points are no curve, and a
    speedrun that evaluates twice never imports matplotlib), and the losses to W&B."""
    plotted = len(metrics) >= 3
    path = os.path.join(out_dir, "loss.png")
    if plotted:
        plot_losses(metrics, path)
    if wandb_run is None:
        return
    import wandb

    record = metrics[-1]
    logged = {"iter": record["iter"], "train/loss": record["train_loss"]}
    logged |= {"val/loss": record["val_loss"], "tokens": record["tokens"]}
    if plotted:
        logged["loss_plot"] = wandb.Image(path)
    # no "lr" here: at this step W&B's lr is that of the step just taken, logged after it
    wandb_run.log(logged, step=record["iter"])


# --------------------------------------------------------------------------------------------------
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
