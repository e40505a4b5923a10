"""
Train a GPT, from scratch, from a checkpoint (exact resume) or from GPT-2's weights.

    python train.py config/train_shakespeare_char.py --batch_size=32 --device=cpu
    python train.py config/train_shakespeare_char.py --init_from=resume   # continue where it stopped
    python train.py --help                                                 # every key with its default

On several GPUs (DDP; gloo on CPU), one node or many:
    torchrun --standalone --nproc_per_node=4 train.py config/train_gpt2.py
    torchrun --nnodes=2 --node_rank=0 --master_addr=10.0.0.1 --master_port=29500 --nproc_per_node=8 train.py ...

Writes to out_dir: ckpt.pt (weights_only-loadable), metrics.jsonl (one line per evaluation),
config.json, meta.json (the dataset's tokenizer, for sample.py) and loss.png.
"""

import json
import math
import os
import random
import signal
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from tqdm import tqdm

from configurator import parse_args, run_cli
from data.common import atomic_path
from data.loader import BatchLoader
from model import GPT, PRETRAINED, QUANTIZE, GPTConfig, prepare_for_decoding

# ----------------------------------------------------------------------------------------------------
# Config: nanoGPT's keys and defaults (GPT-2 124M on OpenWebText), overridden by config files and --key=value


@dataclass(frozen=True)
class TrainConfig:
    # I/O
    out_dir: str = "out"
    eval_interval: int = 2000
    log_interval: int = 1
    eval_iters: int = 200  # batches per split at each evaluation (fixed batches, see data/loader.py)
    eval_only: bool = False  # evaluate the checkpoint on the whole val split and exit
    quantize: str = "none"  # with eval_only: "int8" scores the weights sample.py --quantize=int8 samples with
    always_save_checkpoint: bool = True  # else only when val loss improves
    init_from: str = "scratch"  # "scratch" | "resume" | "gpt2" | "gpt2-medium" | ... | a Hugging Face GPT-2 directory
    keep_last: int = 0  # also keep ckpt_<iter>.pt for the last K checkpoints (0: just ckpt.pt)
    keep_best: bool = False  # also keep ckpt_best.pt, the lowest val loss so far
    progress: bool = True  # tqdm progress bar (only when stdout is a terminal)
    # Weights & Biases
    wandb_log: bool = False
    wandb_project: str = "fineweb"
    wandb_run_name: str = "gpt2"
    # data
    dataset: str = "fineweb"  # data/<dataset>/ or a prepared directory; nanoGPT's openwebtext, here FineWeb-Edu
    gradient_accumulation_steps: int = 5 * 8  # micro-batches per step, summed over all DDP ranks
    batch_size: int = 12  # micro-batch size per rank
    block_size: int = 1024
    # model (see GPTConfig)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False  # nanoGPT trains without biases: a little better and faster
    norm: str = "layernorm"
    pos: str = "learned"
    mlp: str = "gelu"
    qk_norm: bool = False
    tie_weights: bool = True
    # AdamW
    learning_rate: float = 6e-4
    max_iters: int = 600000
    weight_decay: float = 1e-1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # clip gradients at this norm; 0 disables
    # learning rate schedule: linear warmup, then cosine decay to min_lr
    decay_lr: bool = True
    warmup_iters: int = 2000
    lr_decay_iters: int = 600000  # ~= max_iters per Chinchilla
    min_lr: float = 6e-5  # ~= learning_rate / 10 per Chinchilla
    # optimizer: "adamw", or "muon" (Muon on the blocks' weight matrices at muon_lr, AdamW on the rest; muon.py)
    optimizer: str = "adamw"
    muon_lr: float = 0.02  # follows the same warmup/decay schedule as learning_rate
    # system
    backend: str = "nccl"  # DDP backend on GPUs; CPU ranks always use gloo
    device: str = "auto"  # "auto" (cuda > mps > cpu) | "cpu" | "cuda" | "cuda:1" | "mps"
    dtype: str = "auto"  # "auto" | "float32" | "bfloat16" | "float16"
    compile: bool = False  # torch.compile: faster steps on GPU after a slow first one
    sdpa: bool = True  # F.scaled_dot_product_attention; False: the explicit math, faster on CPU for short blocks
    seed: int = 1337


MODEL_KEYS = [f.name for f in fields(GPTConfig) if f.name != "vocab_size"]


def validate(cfg):
    """Reject settings that cannot work, before any work starts."""
    if cfg.quantize not in QUANTIZE or (cfg.quantize != "none" and not cfg.eval_only):
        raise ValueError(f"--quantize={cfg.quantize} must be one of {', '.join(QUANTIZE)}, and is for --eval_only=True")
    for key in ("batch_size", "block_size", "gradient_accumulation_steps", "eval_interval", "eval_iters", "log_interval"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key}={getattr(cfg, key)} must be at least 1")
    if cfg.max_iters < 0 or cfg.keep_last < 0:
        raise ValueError("max_iters and keep_last must be >= 0")
    if cfg.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ValueError(f"dtype={cfg.dtype!r} must be one of auto, float32, bfloat16, float16")
    if not 0 <= cfg.dropout < 1:
        raise ValueError(f"dropout={cfg.dropout} must be in [0, 1)")
    if cfg.optimizer not in ("adamw", "muon"):
        raise ValueError(f"optimizer={cfg.optimizer!r} must be adamw or muon")
    if cfg.learning_rate <= 0 or cfg.min_lr < 0:
        raise ValueError("learning_rate must be > 0 and min_lr >= 0")
    if cfg.init_from not in ("scratch", "resume", *PRETRAINED) and not os.path.isdir(cfg.init_from):
        raise ValueError(f"init_from={cfg.init_from!r} must be scratch, resume, one of {', '.join(PRETRAINED)}, or a directory")
    GPTConfig(**{k: getattr(cfg, k) for k in MODEL_KEYS})  # raises on e.g. n_embd % n_head != 0


# ----------------------------------------------------------------------------------------------------
# Setup helpers


def pick_device(name):
    if name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={name} but CUDA is not available; use --device=cpu or --device=auto")
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_has_fast_bf16():
    """bf16 matmuls beat fp32 on CPUs with AVX512-BF16 or AMX (about 2x and more); elsewhere they are slower."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def pick_dtype(name, device_type):
    if name != "auto":
        return name
    if device_type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device_type == "cpu" and cpu_has_fast_bf16():
        return "bfloat16"
    return "float32"


def precision(dtype, device_type):
    """(autocast context, GradScaler) for a dtype: float16 needs loss scaling to keep small gradients; bfloat16 does not."""
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    ctx = nullcontext() if dtype == "float32" else torch.autocast(device_type=device_type, dtype=ptdtype)
    return ctx, torch.amp.GradScaler(device_type, enabled=dtype == "float16")


def data_dir_for(dataset):
    if os.path.isdir(dataset):
        return dataset
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", dataset)


def measure_peak_flops(device, dtype, repeats=5):
    """Achievable matmul FLOP/s on this device and dtype, measured now: the MFU denominator."""
    size = 2048 if str(device).startswith("cuda") else 1024  # a 2048 matmul takes seconds on a small CPU
    generator = torch.Generator(device=device).manual_seed(0)  # leave the global RNG (dropout) untouched
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    for _ in range(2):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - t0)


def build_optimizer(model, cfg, device_type):
    """AdamW (nanoGPT's), or Muon for the blocks' matrices + AdamW for the rest (muon.py)."""
    if cfg.optimizer == "muon":
        from muon import configure_muon

        return configure_muon(model, cfg.learning_rate, cfg.muon_lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    return model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device_type)


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------------
# Checkpoints: tensors and plain values only, written atomically


def check_writable(out_dir):
    """Create out_dir and write a probe file in it: the honest test (os.access says yes to root on a read-only mount)."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise ValueError(f"out_dir {out_dir} is not writable ({e.strerror or e}); choose another --out_dir") from None


def atomic_write(path, write):
    """write(tmp_path), fsync, rename over path: a crash leaves either the old file or the new one."""
    with atomic_path(path) as tmp:
        write(tmp)


def save_json(path, obj):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)

    atomic_write(path, write)


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint with weights_only=True: never unpickle code. Refuses, with a reason, anything else."""
    if not os.path.isfile(path):
        raise ValueError(f"no checkpoint at {path}: train first, or check out_dir")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError... for bad files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} is corrupt, truncated or unsafe to load ({reason[:200]}); it was left untouched") from None


def clean_state_dict(state_dict):
    """Drop torch.compile's `_orig_mod.` prefix, so old compiled checkpoints load into a plain model."""
    return {k.removeprefix("_orig_mod."): v for k, v in state_dict.items()}


def rng_state():
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state):
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def main():
    cfg = parse_args(TrainConfig(), sys.argv[1:])
    validate(cfg)

    # -- setup: DDP, device, precision ---------------------------------------------------------------
    ddp = int(os.environ.get("RANK", -1)) != -1
    if ddp:
        rank, local_rank, world_size = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
        device = f"cuda:{local_rank}" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else pick_device(cfg.device)
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=cfg.backend if device.startswith("cuda") else "gloo")
    else:
        rank, world_size, device = 0, 1, pick_device(cfg.device)
    master = rank == 0
    if cfg.gradient_accumulation_steps % world_size:
        raise ValueError(f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} must be divisible by the {world_size} ranks")
    grad_accum = cfg.gradient_accumulation_steps // world_size
    device_type = "cuda" if device.startswith("cuda") else device
    dtype = pick_dtype(cfg.dtype, device_type)
    ctx, scaler = precision(dtype, device_type)
    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size
    # Each rank its own dropout masks; DDP copies rank 0's initial weights to the others at construction.
    torch.manual_seed(cfg.seed + rank)
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # -- data ----------------------------------------------------------------------------------------
    data_dir = data_dir_for(cfg.dataset)
    loader = BatchLoader(data_dir, cfg.block_size, cfg.batch_size, device, cfg.seed)
    meta = loader.meta

    # -- out_dir: writable, never clobbered by a bad start -------------------------------------------
    ckpt_path = os.path.join(cfg.out_dir, "ckpt.pt")
    if master:
        check_writable(cfg.out_dir)

    # -- model ---------------------------------------------------------------------------------------
    checkpoint = None
    if cfg.init_from == "resume" or cfg.eval_only:
        checkpoint = load_checkpoint(ckpt_path, map_location=device)
        model_config = GPTConfig(**checkpoint["model_args"])
        model = GPT(model_config)
        model.load_state_dict(clean_state_dict(checkpoint["model"]))
        check_tokenizer(meta, os.path.join(cfg.out_dir, "meta.json"))
    elif cfg.init_from == "scratch":
        model_config = GPTConfig(vocab_size=meta["vocab_size"], **{k: getattr(cfg, k) for k in MODEL_KEYS})
        model = GPT(model_config)
    else:
        if meta.get("tokenizer") != "gpt2":
            raise ValueError(f"init_from={cfg.init_from} needs GPT-2 BPE data, but {data_dir} was prepared with {meta.get('tokenizer')!r}")
        model = GPT.from_pretrained(cfg.init_from, dict(dropout=cfg.dropout))
        if cfg.block_size < model.config.block_size:
            model.crop_block_size(cfg.block_size)
        model_config = model.config
    if cfg.block_size > model_config.block_size:
        raise ValueError(f"block_size={cfg.block_size} is larger than the model's {model_config.block_size}")
    if meta["vocab_size"] > model_config.vocab_size:
        raise ValueError(f"the data's vocab_size {meta['vocab_size']} is larger than the model's {model_config.vocab_size}")
    model.to(device)
    for block in model.transformer.h:
        block.attn.use_sdpa = cfg.sdpa
    if master:
        print(f"model: {model.get_num_params() / 1e6:.2f}M parameters, device {device}, dtype {dtype}, {world_size} rank(s)")

    if cfg.eval_only:
        if cfg.quantize != "none":
            model = prepare_for_decoding(model.eval(), cfg.quantize)
        result = evaluate_split(model, loader, "val", ctx)
        result["iter"], result["quantize"] = checkpoint["iter_num"], cfg.quantize
        if master:
            save_json(os.path.join(cfg.out_dir, "eval.json"), result)
            print(json.dumps(result))
        return

    # -- optimizer -----------------------------------------------------------------------------------
    optimizer = build_optimizer(model, cfg, device_type)
    iter_num, best_val_loss, elapsed_before, wandb_run_id, saved_rng = 0, float("inf"), 0.0, None, None
    metrics = []
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        iter_num, best_val_loss = checkpoint["iter_num"], checkpoint["best_val_loss"]
        elapsed_before, wandb_run_id = checkpoint.get("elapsed_s", 0.0), checkpoint.get("wandb_run_id")
        saved_rng = checkpoint["rng"]  # restored just before the loop, after everything else that draws
        metrics = [m for m in read_metrics(cfg.out_dir) if m["iter"] <= iter_num]  # drop evals after the checkpoint
        checkpoint = None  # free memory
    raw_model = model
    if cfg.compile:
        model = torch.compile(model)
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[int(device.split(":")[1])] if device_type == "cuda" else None)

    # -- logging -------------------------------------------------------------------------------------
    if master:
        save_json(os.path.join(cfg.out_dir, "config.json"), asdict(cfg))
        save_json(os.path.join(cfg.out_dir, "meta.json"), meta)
        tokenizer_file = meta.get("tokenizer_file")
        if tokenizer_file:
            with open(os.path.join(data_dir, tokenizer_file), "rb") as src:
                payload = src.read()
            atomic_write(os.path.join(cfg.out_dir, tokenizer_file), lambda tmp: open(tmp, "wb").write(payload))
        write_metrics(cfg.out_dir, metrics)
    run = None
    if cfg.wandb_log and master:
        run = start_wandb(cfg, wandb_run_id)  # None: a new run; else the checkpoint's run continues
        wandb_run_id = run.id
    peak_flops = measure_peak_flops(device, getattr(torch, dtype)) if master else None

    # -- stop cleanly on SIGINT / SIGTERM: finish the step, save, exit -------------------------------
    stop_signal = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop_signal.append(signum))

    def save_checkpoint(path_iter, best=False):
        state = {
            "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "model_args": asdict(model_config),
            "config": asdict(cfg),
            "iter_num": path_iter,
            "best_val_loss": best_val_loss,
            "elapsed_s": elapsed(),
            "rng": rng_state(),
            "wandb_run_id": wandb_run_id,
        }
        paths = [ckpt_path]
        if best:
            paths.append(os.path.join(cfg.out_dir, "ckpt_best.pt"))
        if cfg.keep_last:
            paths.append(os.path.join(cfg.out_dir, f"ckpt_{path_iter:06d}.pt"))

        def write(tmp):
            with open(tmp, "wb") as f:  # a Python file, so a failed write keeps its OSError (torch wraps it)
                torch.save(state, f)

        for path in paths:
            try:
                atomic_write(path, write)
            except (OSError, RuntimeError) as e:
                cause = e if isinstance(e, OSError) else e.__context__
                reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(e).strip().splitlines()[-1][:200]
                raise OSError(f"could not write {path} ({reason}); the previous checkpoint is kept") from None
        if cfg.keep_last:
            kept = sorted(f for f in os.listdir(cfg.out_dir) if f.startswith("ckpt_0") and f.endswith(".pt"))
            for f in kept[: -cfg.keep_last]:
                os.remove(os.path.join(cfg.out_dir, f))

    eval_batches = {split: loader.eval_batches(split, cfg.eval_iters) for split in ("train", "val")}
    t_start = time.perf_counter()

    def elapsed():
        return elapsed_before + time.perf_counter() - t_start

    def batch(it, micro_step):
        return loader.get_batch("train", it, rank * grad_accum + micro_step)  # ranks split the global micro-steps

    # -- the training loop ---------------------------------------------------------------------------
    if saved_rng is not None and master:
        # dropout masks continue exactly where the checkpoint left them (the checkpoint holds rank 0's RNG;
        # other ranks keep their own seed, so a resumed multi-rank run is reproducible but not bit-identical)
        set_rng_state(saved_rng)
    start_iter = iter_num
    resumed = start_iter > 0
    pbar = tqdm(total=cfg.max_iters, initial=iter_num, disable=not (cfg.progress and master and sys.stdout.isatty()), dynamic_ncols=True)
    X, Y = batch(iter_num, 0)
    while True:
        lr = get_lr(iter_num, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # Muon's groups run at muon_lr / learning_rate times lr

        if iter_num % cfg.eval_interval == 0 and not (resumed and iter_num == start_iter):
            losses = estimate_loss(model, eval_batches, ctx)
            check_finite(losses["train"] + losses["val"], iter_num, cfg.out_dir)  # never save diverged weights
            if master:
                record = {"iter": iter_num, "train_loss": losses["train"], "val_loss": losses["val"], "lr": lr,
                          "tokens": iter_num * tokens_per_iter, "elapsed_s": round(elapsed(), 3)}  # fmt: skip
                metrics.append(record)
                write_metrics(cfg.out_dir, metrics)
                tqdm.write(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                improved = losses["val"] < best_val_loss
                best_val_loss = min(best_val_loss, losses["val"])
                if (improved or cfg.always_save_checkpoint) and iter_num > 0:
                    save_checkpoint(iter_num, best=improved and cfg.keep_best)
                plot_losses(metrics, os.path.join(cfg.out_dir, "loss.png"))
                if run is not None:
                    import wandb

                    # no "lr" here: at this step W&B's lr is that of the step just taken, logged below
                    run.log({"iter": iter_num, "train/loss": losses["train"], "val/loss": losses["val"],
                             "tokens": record["tokens"], "loss_plot": wandb.Image(os.path.join(cfg.out_dir, "loss.png"))}, step=iter_num)  # fmt: skip
        if iter_num >= cfg.max_iters:
            break
        if stop_any(stop_signal, ddp, device):
            if master:
                save_checkpoint(iter_num)
                tqdm.write(f"stopped by signal at iter {iter_num}; checkpoint saved to {ckpt_path}")
            raise SystemExit(128 + (stop_signal[0] if stop_signal else signal.SIGTERM))

        # forward, backward, update; the next batch is fetched while the current one computes
        t0 = time.perf_counter()
        for micro_step in range(grad_accum):
            if ddp:
                model.require_backward_grad_sync = micro_step == grad_accum - 1  # all-reduce only at the last one
            with ctx:
                _, loss = model(X, Y)
                loss = loss / grad_accum
            X, Y = batch(iter_num + (micro_step + 1) // grad_accum, (micro_step + 1) % grad_accum)
            scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # true gradients for the norm and the clip (a no-op unless float16)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf).item()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

        lossf = loss.item() * grad_accum
        check_finite(lossf, iter_num, cfg.out_dir)
        dt = time.perf_counter() - t0
        iter_num += 1
        pbar.update(1)
        tok_s = tokens_per_iter / dt
        pbar.set_postfix(loss=f"{lossf:.4f}", tok_s=f"{tok_s:,.0f}")
        if iter_num % cfg.log_interval == 0 and master:
            mfu = raw_model.estimate_mfu(cfg.batch_size * cfg.gradient_accumulation_steps, dt, peak_flops * world_size)
            tqdm.write(
                f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.2e}, grad norm {grad_norm:.4f}, "
                f"{dt * 1000:.1f} ms/iter, {tok_s:,.0f} tok/s, mfu {mfu * 100:.1f}%"
            )
            if run is not None:
                run.log({"train/loss_step": lossf, "lr": lr, "grad_norm": grad_norm, "tok_per_s": tok_s, "mfu": mfu}, step=iter_num)
    pbar.close()
    if run is not None:
        run.finish()
    if ddp:
        torch.distributed.destroy_process_group()


def check_finite(loss, iter_num, out_dir):
    if not math.isfinite(loss):
        raise ValueError(
            f"loss is {loss} at iter {iter_num}: training diverged. The last good checkpoint in {out_dir} "
            "is kept; lower learning_rate or use dtype=bfloat16/float32"
        )


def stop_any(stop_signal, ddp, device):
    """True once any rank got SIGINT/SIGTERM; all ranks agree, so none waits forever in an all-reduce."""
    if not ddp:
        return bool(stop_signal)
    flag = torch.tensor([float(bool(stop_signal))], device=device)
    torch.distributed.all_reduce(flag)
    return flag.item() > 0


def check_tokenizer(meta, saved_meta_path):
    """The dataset must be tokenized the way the checkpoint was trained."""
    if not os.path.isfile(saved_meta_path):
        return
    with open(saved_meta_path) as f:
        saved = json.load(f)
    for key in ("tokenizer", "vocab_size", "chars", "tokenizer_sha256"):
        if saved.get(key) != meta.get(key):
            raise ValueError(
                f"the dataset's tokenizer ({meta.get('tokenizer')}, vocab {meta.get('vocab_size')}) does not match "
                f"the checkpoint's ({saved.get('tokenizer')}, vocab {saved.get('vocab_size')}); check --dataset"
            )


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


if __name__ == "__main__":
    run_cli(main)
