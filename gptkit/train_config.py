"""
train.py's configuration: every key with its nanoGPT default (GPT-2 124M on OpenWebText), overridden
by config files and --key=value (gptkit/configurator.py), and what follows from a config alone: the
model's GPTConfig and the optimizer. A module of its own because bench.py trains with the same keys.

    python train.py --help      # every key with its default
"""

import os
from dataclasses import dataclass, fields

import torch

from gptkit import distributed, hardware
from gptkit.base import UserError, checked
from gptkit.decoding import check_quantize
from gptkit.pretrained import PRETRAINED
from model import GPT, GPTConfig
from recurrent import GRULM, GRUConfig

# Where TrainConfig's defaults for the model differ from GPTConfig's
TRAINING_MODEL_DEFAULTS = ("bias", "vocab_size", "sdpa")


@dataclass(frozen=True)
class TrainConfig:
    """
    Every key train.py (and bench.py) takes. The model's keys come first: model.GPTConfig's own,
    under the same names and with the same defaults but three (TRAINING_MODEL_DEFAULTS), which
    model_config() turns into the GPTConfig (or recurrent.py's GRUConfig) of the run, so the model's
    own checks judge every run. A new model switch is a field of GPTConfig and a line here
    (tests/test_train.py checks that the two agree).
    """

    # the model: model.GPTConfig's keys (the GRU takes n_layer, n_embd, dropout, bias, tie_weights)
    model_type: str = "gpt"  # "gpt" | "gru": the recurrent baseline (recurrent.py)
    block_size: int = 1024
    vocab_size: int = 0  # 0: the dataset's (meta.json); larger pads it, e.g. 50304 for GPT-2's
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
    attention: bool = False  # model_type=gru: one attention head over its past states
    # "true": F.scaled_dot_product_attention, "false": the explicit math, "auto": decided for this
    # machine (hardware.decide_sdpa) before the GPTConfig is built
    sdpa: str = "auto"
    logit_softcap: float = 0.0
    zero_init_proj: bool = False
    value_embeds: bool = False
    unet: bool = False
    # I/O
    out_dir: str = "out"
    eval_interval: int = 2000
    log_interval: int = 1
    # batches per split at each evaluation (fixed batches, see gptkit/loader.py)
    eval_iters: int = 200
    # evaluate out_dir's checkpoint (or init_from's GPT-2 weights) on the whole val split and exit
    eval_only: bool = False
    always_save_checkpoint: bool = True  # else only when val loss improves
    # "scratch" | "resume" | "gpt2" | "gpt2-medium" | ... | a Hugging Face GPT-2 directory
    init_from: str = "scratch"
    overwrite: bool = False  # a new run (not resume) may replace the checkpoint already in out_dir
    # with eval_only: "int8" scores the weights sample.py --quantize=int8 samples with
    quantize: str = "none"
    keep_last: int = 0  # also keep ckpt_<iter>.pt for the last K checkpoints (0: just ckpt.pt)
    keep_best: bool = False  # also keep ckpt_best.pt, the lowest val loss so far
    progress: bool = True  # tqdm progress bar (only when stdout is a terminal)
    # Weights & Biases
    wandb_log: bool = False
    wandb_project: str = "fineweb"
    wandb_run_name: str = "gpt2"
    # data
    # data/<dataset>/ or a prepared directory; nanoGPT's openwebtext, here FineWeb-Edu
    dataset: str = "fineweb"
    # micro-batches per step, summed over all ranks (DDP or FSDP)
    gradient_accumulation_steps: int = 5 * 8
    batch_size: int = 12  # micro-batch size per rank
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
    # train on windows block_size / 4, then / 2 long for this many steps (train.seq_len)
    seq_warmup_iters: int = 0
    # optimizer: "adamw", or "muon" (Muon on the blocks' weight matrices at muon_lr, AdamW on the
    # rest; gptkit/muon.py)
    optimizer: str = "adamw"
    muon_lr: float = 0.02  # follows the same warmup/decay schedule as learning_rate
    # muon: the token embedding's own AdamW lr, e.g. with tie_weights=False (0: learning_rate)
    embedding_lr: float = 0.0
    # muon: decoupled weight decay on the blocks' matrices (each step shrinks them by lr x this)
    muon_weight_decay: float = 0.0
    # system
    backend: str = "nccl"  # DDP/FSDP backend on GPUs; CPU ranks always use gloo
    # under torchrun, shard weights, gradients and optimizer state across ranks (FSDP2,
    # gptkit/distributed.py) instead of DDP
    fsdp: bool = False
    device: str = "auto"  # "auto" (cuda > mps > cpu) | "cpu" | "cuda" | "cuda:1" | "mps"
    # "auto" (decided for this machine: hardware.training_choices) | "float32" | "bfloat16" |
    # "float16"
    dtype: str = "auto"
    # torch.compile the training step: True, False, or "auto" (when the run is long enough to pay
    # back a cold compile, and then only if the compiled step measures faster: train.py)
    compile: bool | str = False
    seed: int = 1337


# model_type: (config class, model class). A checkpoint records its model_type in model_args; one
# without it is a GPT's.
MODEL_TYPES = {"gpt": (GPTConfig, GPT), "gru": (GRUConfig, GRULM)}


def model_config(cfg, vocab_size, sdpa):
    """The GPTConfig (GRUConfig for model_type="gru") of cfg's model keys, for a dataset of
    vocab_size tokens (unless cfg pads it), with sdpa the bool that cfg.sdpa ("auto" too) was
    decided to be (hardware.training_choices)."""
    config_class, _ = MODEL_TYPES[cfg.model_type]
    keys = {f.name: getattr(cfg, f.name) for f in fields(config_class)}
    keys["vocab_size"] = cfg.vocab_size or vocab_size
    if "sdpa" in keys:  # an attention kernel: the GRU has none
        keys["sdpa"] = sdpa
    return checked(config_class, **keys)


def new_model(cfg, vocab_size, sdpa):
    """A freshly initialized model of cfg's model_type and model keys (model_config's arguments)."""
    return MODEL_TYPES[cfg.model_type][1](model_config(cfg, vocab_size, sdpa))


def validate(cfg):
    """Reject settings that cannot work, before any work starts."""
    for key in (
        "batch_size",
        "block_size",
        "gradient_accumulation_steps",
        "eval_interval",
        "eval_iters",
        "log_interval",
    ):
        if getattr(cfg, key) < 1:
            raise UserError(f"{key}={getattr(cfg, key)} must be at least 1")
    if cfg.max_iters < 0 or cfg.keep_last < 0 or cfg.vocab_size < 0:
        raise UserError("max_iters, keep_last and vocab_size must be >= 0")
    check_quantize(cfg.quantize)
    if cfg.quantize != "none" and not cfg.eval_only:
        raise UserError(
            f"--quantize={cfg.quantize} is for --eval_only=True (sample.py takes it too)"
        )
    if cfg.dtype not in hardware.DTYPES:
        raise UserError(f"dtype={cfg.dtype!r} must be one of {', '.join(hardware.DTYPES)}")
    if str(cfg.sdpa).lower() not in ("auto", "true", "false"):
        raise UserError(f"sdpa={cfg.sdpa!r} must be auto, true or false")
    if cfg.compile not in (True, False, "auto"):
        raise UserError(f"compile={cfg.compile!r} must be True, False or auto")
    if not 0 <= cfg.dropout < 1:
        raise UserError(f"dropout={cfg.dropout} must be in [0, 1)")
    if cfg.optimizer not in ("adamw", "muon"):
        raise UserError(f"optimizer={cfg.optimizer!r} must be adamw or muon")
    if cfg.model_type not in MODEL_TYPES:
        raise UserError(f"model_type={cfg.model_type!r} must be one of {', '.join(MODEL_TYPES)}")
    if cfg.model_type == "gru" and (
        cfg.optimizer != "adamw" or cfg.fsdp or cfg.init_from not in ("scratch", "resume")
    ):
        raise UserError(
            "model_type=gru trains with optimizer=adamw, from scratch or resume, without fsdp "
            "(those are the GPT's)"
        )
    for key in ("embedding_lr", "muon_weight_decay"):
        value = getattr(cfg, key)
        if value < 0 or (value and cfg.optimizer != "muon"):
            raise UserError(f"{key}={value} must be >= 0, and is for optimizer=muon")
    if cfg.fsdp and cfg.optimizer == "muon":
        raise UserError(
            "optimizer=muon needs whole weight matrices, which fsdp=True shards: use "
            "optimizer=adamw, or DDP (fsdp=False)"
        )
    if cfg.fsdp and not distributed.launched():
        raise UserError(
            "fsdp=True shards the model across processes: launch with torchrun --nproc_per_node=N "
            "train.py ..."
        )
    if cfg.seq_warmup_iters < 0 or (cfg.seq_warmup_iters and cfg.block_size % 4):
        raise UserError(
            f"seq_warmup_iters={cfg.seq_warmup_iters} must be >= 0, and > 0 needs a block_size "
            "divisible by 4"
        )
    if cfg.learning_rate <= 0 or cfg.min_lr < 0:
        raise UserError("learning_rate must be > 0 and min_lr >= 0")
    if cfg.init_from not in ("scratch", "resume", *PRETRAINED) and not os.path.isdir(cfg.init_from):
        raise UserError(
            f"init_from={cfg.init_from!r} must be scratch, resume, one of {', '.join(PRETRAINED)}, "
            "or a directory"
        )
    model_config(cfg, vocab_size=1, sdpa=True)  # raises on e.g. n_embd % n_head != 0


def build_optimizer(model, cfg, device_type, newton_schulz_dtype="bfloat16"):
    """AdamW (nanoGPT's), or Muon for the blocks' matrices + AdamW for the rest (gptkit/muon.py),
    its Newton-Schulz iteration in newton_schulz_dtype (hardware.training_choices decides it for the
    machine)."""
    if cfg.optimizer == "muon":
        from gptkit.muon import configure_muon

        betas, ns_dtype = (cfg.beta1, cfg.beta2), getattr(torch, newton_schulz_dtype)
        return configure_muon(
            model,
            cfg.learning_rate,
            cfg.muon_lr,
            cfg.weight_decay,
            betas,
            ns_dtype,
            cfg.embedding_lr,
            cfg.muon_weight_decay,
        )
    return configure_adamw(
        model, cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device_type
    )


def configure_adamw(model, weight_decay, learning_rate, betas, device_type):
    """nanoGPT's AdamW: weight decay on matrices and embeddings (>= 2-D) only, not on biases and
    norm gains; two parameter groups in that order (nanoGPT's checkpoints hold their state so)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optim_groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        optim_groups, lr=learning_rate, betas=betas, fused=device_type == "cuda"
    )
