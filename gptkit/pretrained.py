"""
GPT-2's weights in and out, in Hugging Face's format (config.json + model.safetensors), without
importing transformers: the hub's "gpt2" ... "gpt2-xl" (via huggingface_hub; HF_HUB_OFFLINE=1 uses
only its cache) or a local directory, and our GPT saved so that
transformers.GPT2LMHeadModel.from_pretrained loads it.

    model = from_pretrained("gpt2")             # or a directory
    save_pretrained(model, "tiny-gpt2")

Module names follow GPT-2's checkpoint keys (model.py), so a load is a key-for-key copy with shape
checks; only the four Conv1D weights are stored transposed.
"""

import json
import os
from dataclasses import replace

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from gptkit.base import UserError, atomic_write, checked, save_json
from model import GPT, GPTConfig

PRETRAINED = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
# HF stores these (in, out)
CONV1D = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)


def from_pretrained(name_or_dir, override_args=None):
    """
    Load GPT-2 weights: "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl" from the Hugging Face hub (or
    its local cache; HF_HUB_OFFLINE=1 stays off the network), or a local directory in Hugging Face
    GPT-2 format (config.json + model.safetensors). Only dropout and sdpa may be overridden.
    """
    override_args = override_args or {}
    if set(override_args) - {"dropout", "sdpa"}:
        raise UserError(f"only dropout and sdpa can be overridden, got {sorted(override_args)}")
    directory = name_or_dir
    if not os.path.isdir(name_or_dir):
        if name_or_dir not in PRETRAINED:
            raise UserError(
                f"{name_or_dir!r} is neither a directory nor one of {', '.join(PRETRAINED)}"
            )
        from huggingface_hub import snapshot_download

        repo = f"openai-community/{name_or_dir}"
        try:
            directory = snapshot_download(repo, allow_patterns=["config.json", "model.safetensors"])
        except OSError as e:
            # offline without a cached copy, the hub unreachable, ...: say which model
            raise UserError(f"cannot get {repo} from the Hugging Face hub: {e}") from None
    for filename in ("config.json", "model.safetensors"):
        if not os.path.isfile(os.path.join(directory, filename)):
            raise UserError(
                f"{directory} has no {filename} (expected a Hugging Face GPT-2 directory)"
            )
    with open(os.path.join(directory, "config.json")) as f:
        hf = json.load(f)
    missing = [
        k for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head") if k not in hf
    ]
    if missing:
        raise UserError(
            f"{directory}/config.json has no {', '.join(missing)} (expected a GPT-2 config)"
        )
    # GPT-2 variants this model does not compute would otherwise load silently and give
    # wrong logits.
    supported = {
        "activation_function": ("gelu_new", "gelu_pytorch_tanh"),
        "layer_norm_epsilon": (1e-5,),
        "n_inner": (None, 4 * hf["n_embd"]),
        "scale_attn_weights": (True,),
        "scale_attn_by_inverse_layer_idx": (False,),
    }
    for key, allowed in supported.items():
        if hf.get(key, allowed[0]) not in allowed:
            raise UserError(
                f"{directory}/config.json: {key}={hf[key]!r} is not supported "
                f"(this model has {allowed[0]!r})"
            )
    config = checked(
        GPTConfig,
        block_size=hf["n_positions"],
        vocab_size=hf["vocab_size"],
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=hf["n_embd"],
        dropout=override_args.get("dropout", 0.0),
        sdpa=override_args.get("sdpa", True),
        bias=True,
        tie_weights=hf.get("tie_word_embeddings", True),
    )
    model = GPT(config)
    # The hub's own files name keys "h.0...", transformers' save_pretrained "transformer.h.0...";
    # both may hold attn.bias/attn.masked_bias, old causal-mask buffers we do not need.
    hf_state = {
        k.removeprefix("transformer."): v
        for k, v in load_file(os.path.join(directory, "model.safetensors")).items()
    }
    state = model.state_dict()
    for key in state:
        hf_key = key.removeprefix("transformer.")
        if key == "lm_head.weight" and config.tie_weights:
            hf_key = "wte.weight"  # a tied head is stored once, as the token embedding
        if hf_key not in hf_state:
            raise UserError(f"{directory}/model.safetensors has no tensor {hf_key}")
        tensor = hf_state[hf_key].t() if key.endswith(CONV1D) else hf_state[hf_key]
        if tensor.shape != state[key].shape:
            raise UserError(
                f"{hf_key}: shape {tuple(tensor.shape)} does not match "
                f"the model's {tuple(state[key].shape)}"
            )
        state[key] = tensor
    model.load_state_dict(state)
    return model


def save_pretrained(model, directory):
    """Write config.json + model.safetensors that transformers.GPT2LMHeadModel.from_pretrained
    reads."""
    cfg = model.config
    gpt2 = dict(
        norm="layernorm",
        pos="learned",
        mlp="gelu",
        qk_norm=False,
        logit_softcap=0.0,
        value_embeds=False,
        unet=False,
    )
    if any(getattr(cfg, key) != value for key, value in gpt2.items()):
        layout = ", ".join(f"{k}={v}" for k, v in gpt2.items())
        raise UserError(f"only the GPT-2 layout ({layout}) has a Hugging Face GPT-2 format")
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_weights:
            continue  # the same tensor as transformer.wte.weight
        tensors[name] = (tensor.t() if name.endswith(CONV1D) else tensor).contiguous().cpu()
    if not cfg.bias:  # GPT-2 always has biases: zeros compute the same function
        for name, module in model.named_modules():
            if (
                isinstance(module, (nn.Linear, nn.LayerNorm))
                and module.bias is None
                and name != "lm_head"
            ):
                tensors[f"{name}.bias"] = torch.zeros(
                    module.weight.shape[0], dtype=module.weight.dtype
                )
    hf_config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_ctx": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "tie_word_embeddings": cfg.tie_weights,
        "initializer_range": 0.02,
    }
    os.makedirs(directory, exist_ok=True)
    atomic_write(
        os.path.join(directory, "model.safetensors"),
        lambda path: save_file(tensors, path, metadata={"format": "pt"}),
    )
    save_json(os.path.join(directory, "config.json"), hf_config)


def crop_block_size(model, block_size):
    """The same model with a shorter context (GPT-2's 1024 finetuned on short blocks): its position
    table cut to block_size rows; rotary tables and masks are rebuilt for the new length. Returns a
    new GPT."""
    assert block_size <= model.config.block_size, (block_size, model.config.block_size)
    state = model.state_dict()
    if "transformer.wpe.weight" in state:
        state["transformer.wpe.weight"] = state["transformer.wpe.weight"][:block_size]
    cropped = GPT(replace(model.config, block_size=block_size))
    cropped.load_state_dict(state)
    return cropped.to(next(model.parameters()).device).train(model.training)
