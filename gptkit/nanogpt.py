"""
nanoGPT's files, read as this project's where they are read, and nowhere else: its checkpoints
(as_ours), its data folders (data_meta) and meta.pkl (meta_pkl_tokenizer; read_meta_pkl runs
nothing). A checkpoint is translated once, with everything later steps need in fields of our own
layout (gptkit/checkpoint.py), so no other module asks whose it was.

What nanoGPT writes (github.com/karpathy/nanoGPT, its last commit: train.py, model.py, sample.py,
data/*/prepare.py):

- out*/ckpt.pt: torch.save({'model': state dict, 'optimizer': AdamW state dict, 'model_args':
  {n_layer, n_head, n_embd, block_size, bias, vocab_size, dropout}, 'iter_num', 'best_val_loss'
  (a 0-d tensor), 'config': its train.py settings}). The weights are saved after iter_num steps,
  before step iter_num + 1, as ours. No RNG state. Keys start with `_orig_mod.` when the run was
  compiled; a model built without flash attention (PyTorch < 2.0) also saves its causal mask, a
  buffer named `transformer.h.<i>.attn.bias`. lm_head.weight is transformer.wte.weight (tied).
  AdamW has two groups, the >= 2-D parameters (weight decay) then the rest, each in
  named_parameters() order.
- data/<name>/train.bin, val.bin: uint16 token ids. meta.pkl, for a character vocabulary:
  pickle.dump({'vocab_size', 'itos': {id: char}, 'stoi': {char: id}}). No meta.pkl means GPT-2 BPE
  (its models padded to 50304 tokens).
- sample.py reads data/<config['dataset']>/meta.pkl, relative to where it runs: the nanoGPT
  checkout.

The checkpoint loads with weights_only=True as ours does; meta.pkl is read by read_meta_pkl, which
runs nothing. What train.py writes back is this project's format.
"""

import io
import os
import pickle
import pickletools
import re
import sys
from dataclasses import asdict

import numpy as np
import torch

from gptkit.base import DATA_ROOT, UserError, checked
from gptkit.tokenizer import CharTokenizer, GPT2Tokenizer
from gptkit.train_config import configure_adamw
from model import GPT, GPTConfig

NANOGPT_MODEL_ARGS = {"n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout"}
GPT2_VOCAB = 50257
# nanoGPT's train.py settings (the 'config' of its ckpt.pt) that mean the same here, with their
# types: all are TrainConfig keys (tests/test_nanogpt.py checks). Its others, device, dtype, compile
# and backend (its machine's) and out_dir, init_from and eval_only (what one command does), are this
# machine's and this command's to set.
CARRIED = {
    "eval_interval": int,
    "log_interval": int,
    "eval_iters": int,
    "always_save_checkpoint": bool,
    "wandb_log": bool,
    "wandb_project": str,
    "wandb_run_name": str,
    "dataset": str,
    "gradient_accumulation_steps": int,
    "batch_size": int,
    "block_size": int,
    "n_layer": int,
    "n_head": int,
    "n_embd": int,
    "dropout": float,
    "bias": bool,
    "learning_rate": float,
    "max_iters": int,
    "weight_decay": float,
    "beta1": float,
    "beta2": float,
    "grad_clip": float,
    "decay_lr": bool,
    "warmup_iters": int,
    "lr_decay_iters": int,
    "min_lr": float,
}
NOT_CARRIED = ("device", "dtype", "compile", "backend", "out_dir", "init_from", "eval_only")


# --------------------------------------------------------------------------------------------------
# Checkpoints


def as_ours(checkpoint, path):
    """A loaded ckpt.pt in this project's layout: ours as it is, nanoGPT's converted (from_nanogpt).
    Anything else is refused in one line."""
    if (
        isinstance(checkpoint, dict)
        and isinstance(checkpoint.get("model_args"), dict)
        and isinstance(checkpoint.get("model"), dict)
    ):
        # every model_args we wrote has one; nanoGPT's neither
        if {"norm", "model_type"} & set(checkpoint["model_args"]):
            return checkpoint
        if set(checkpoint["model_args"]) == NANOGPT_MODEL_ARGS:
            return from_nanogpt(checkpoint, path)
    keys = (
        ", ".join(map(str, list(checkpoint)[:6]))
        if isinstance(checkpoint, dict)
        else type(checkpoint).__name__
    )
    raise UserError(
        f"{path} is neither this project's checkpoint nor nanoGPT's "
        f"(it holds {keys or 'nothing'}, not model + model_args); "
        "point --out_dir at a folder train.py wrote (here or in nanoGPT)"
    )


def from_nanogpt(checkpoint, path):
    """nanoGPT's checkpoint (path: <out_dir>/ckpt.pt) as ours, once, where it is read: its weights
    under our names, its AdamW state in our parameter order, its settings under our keys with its
    dataset found (carried_settings), and in our checkpoint's optional fields what later steps need:
    the settings it could not carry (config_errors), the line a resume prints (resume_note) and
    where its tokenizer is, as it has no meta.json (tokenizer_source)."""
    args = checkpoint["model_args"]
    state = {
        name.removeprefix("_orig_mod."): tensor for name, tensor in checkpoint["model"].items()
    }
    for name in [n for n in state if re.fullmatch(r"transformer\.h\.\d+\.attn\.bias", n)]:
        # the causal mask of a model without flash attention: a buffer, not a weight
        del state[name]
    wte, head = state.get("transformer.wte.weight"), state.get("lm_head.weight")
    tied = (
        wte is not None
        and head is not None
        and wte.untyped_storage().data_ptr() == head.untyped_storage().data_ptr()
    )
    config = checked(
        GPTConfig, **{k: args[k] for k in NANOGPT_MODEL_ARGS}, mlp="gelu_exact", tie_weights=tied
    )
    with torch.device("meta"):  # shapes and names only: nothing is allocated
        model = GPT(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    if found != expected:
        wrong = sorted(set(found) ^ set(expected)) or [
            n for n in expected if found[n] != expected[n]
        ]
        raise UserError(
            f"{path} has nanoGPT's model_args but not its weights "
            f"({', '.join(wrong[:3])} missing, extra or of another shape); it was left untouched"
        )
    out_dir = os.path.dirname(path)
    saved = checkpoint.get("config") or {}
    settings, errors = carried_settings(saved, out_dir)
    iter_num = int(checkpoint.get("iter_num", 0))
    best = float(checkpoint.get("best_val_loss", float("inf")))  # nanoGPT saves a 0-d tensor
    return {
        "model": state,
        "optimizer": optimizer_state(checkpoint.get("optimizer"), state, tied, model, path),
        "model_args": asdict(config),
        "config": settings,
        "config_errors": errors,
        "iter_num": iter_num,
        "best_val_loss": best,
        "elapsed_s": 0.0,
        "rng": None,  # nanoGPT saves none: a resume starts the RNG fresh
        "wandb_run_id": None,
        "resume_note": (
            f"{path} is nanoGPT's: continuing its run at iter {iter_num} (best val loss "
            f"{best:.4f}) with its config and AdamW state, fresh RNG state (nanoGPT saves none); "
            "checkpoints are written back in this project's format"
        ),
        "tokenizer_source": tokenizer_source(saved.get("dataset"), config.vocab_size, out_dir),
    }


def optimizer_state(saved, state, tied, model, path):
    """nanoGPT's AdamW state dict, numbered for our AdamW of the same model
    (train_config.configure_adamw), by name: parameters are numbered group by group, and
    load_state_dict pairs them with states by that place. nanoGPT's places are its
    named_parameters() (state dict order less the tied lm_head.weight and the masks), split into
    >= 2-D then the rest; ours are whatever our optimizer makes."""
    if saved is None:
        return None
    names = [name for name in state if not (tied and name == "lm_head.weight")]
    theirs = [[n for n in names if state[n].dim() >= 2], [n for n in names if state[n].dim() < 2]]
    groups = saved.get("param_groups", [])
    if [len(g["params"]) for g in groups] != [len(t) for t in theirs]:
        sizes = [len(g["params"]) for g in groups]
        raise UserError(
            f"{path}: its optimizer state has groups of {sizes} parameters, "
            "not nanoGPT's AdamW for these weights"
        )
    label = {
        name: i
        for group, their_names in zip(groups, theirs, strict=True)
        for name, i in zip(their_names, group["params"], strict=True)
    }
    name_of = {id(p): name for name, p in model.named_parameters()}
    ours = [
        [name_of[id(p)] for p in g["params"]]
        for g in configure_adamw(model, 0.1, 1e-3, (0.9, 0.95), "cpu").param_groups
    ]
    assert [set(o) for o in ours] == [set(t) for t in theirs], (
        "our AdamW groups differ from nanoGPT's: decay on >= 2-D only"
    )
    # numbered 0, 1, ... group by group, as AdamW.state_dict() does
    order = [name for names in ours for name in names]
    sizes = [len(names) for names in ours]
    return {
        "state": {
            i: saved["state"][label[name]]
            for i, name in enumerate(order)
            if label[name] in saved.get("state", {})
        },
        "param_groups": [
            {**g, "params": list(range(sum(sizes[:k]), sum(sizes[: k + 1])))}
            for k, g in enumerate(groups)
        ],
    }


def carried_settings(saved, out_dir):
    """(settings, errors): its config's CARRIED settings, which a resumed or evaluated nanoGPT run
    continues with where the user gives none: an int where we take a float, as that float, and its
    dataset found in the nanoGPT checkout beside out_dir when there (find_data_dir). errors: for
    each setting of another type, the one line a resume raises unless the user gives that key."""
    settings = {
        k: float(v) if CARRIED[k] is float and type(v) is int else v
        for k, v in saved.items()
        if k in CARRIED
    }
    errors = {
        k: f"its nanoGPT config has {k}={v!r}, which should be a {CARRIED[k].__name__}: "
        f"give --{k}=..."
        for k, v in settings.items()
        if type(v) is not CARRIED[k]
    }
    if "dataset" in settings and "dataset" not in errors:
        settings["dataset"] = find_data_dir(settings["dataset"], out_dir)
    return settings, errors


def find_data_dir(dataset, out_dir):
    """data/<dataset> of the nanoGPT checkout the run came from (out_dir's parent, or the current
    directory, as nanoGPT's scripts run from there), else the name, for data/<dataset> here."""
    for root in (os.path.dirname(os.path.abspath(out_dir)), os.getcwd()):
        candidate = os.path.join(root, "data", dataset)
        if os.path.isfile(os.path.join(candidate, "train.bin")):
            return candidate
    return dataset


# --------------------------------------------------------------------------------------------------
# The tokenizer of a run


def tokenizer_source(dataset, vocab_size, out_dir):
    """Where a nanoGPT run's tokenizer is, found as nanoGPT's sample.py finds it, for load_model to
    read (unless it is given a meta.pkl): data/<its dataset>/meta.pkl of the nanoGPT checkout
    (beside out_dir, or the current directory) or of this repo, as {"meta_pkl": path}; with none,
    GPT-2 BPE, {"gpt2": the line that says so}, which only a model of at least GPT-2's vocabulary
    can be, else {"missing": the one-line error}."""
    roots = (os.path.dirname(os.path.abspath(out_dir)), os.getcwd(), os.path.dirname(DATA_ROOT))
    candidates = (
        list(dict.fromkeys(os.path.join(root, "data", dataset, "meta.pkl") for root in roots))
        if isinstance(dataset, str) and dataset
        else []
    )
    for path in candidates:
        if os.path.isfile(path):
            return {"meta_pkl": path}
    looked = (
        f" (looked for {', '.join(candidates)})"
        if candidates
        else " (its checkpoint names no dataset)"
    )
    if vocab_size < GPT2_VOCAB:
        return {
            "missing": f"{out_dir} holds a nanoGPT model of {vocab_size} tokens, so its tokenizer "
            f"is its dataset's meta.pkl, which was not found{looked}: name it with --meta_pkl=PATH"
        }
    return {"gpt2": f"no meta.pkl for this nanoGPT run{looked}: GPT-2 BPE, as nanoGPT's sample.py"}


# --------------------------------------------------------------------------------------------------
# meta.pkl

# The pickle opcodes of dicts, strings and ints, in every protocol (0-5). Nothing here looks up or
# calls a Python object: GLOBAL, STACK_GLOBAL, REDUCE, BUILD, INST, OBJ, NEWOBJ, EXT* and PERSID,
# which do, are all refused.
PLAIN_OPCODES = frozenset(
    (
        "PROTO FRAME STOP MARK POP POP_MARK EMPTY_DICT DICT SETITEM SETITEMS "
        "INT BININT BININT1 BININT2 LONG LONG1 LONG4 "
        "UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8 "
        "MEMOIZE PUT BINPUT LONG_BINPUT GET BINGET LONG_BINGET"
    ).split()
)


class _NoObjects(pickle.Unpickler):
    """A second lock: PLAIN_OPCODES already keeps out every opcode that would get here."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not plain data")


def read_meta_pkl(path):
    """nanoGPT's meta.pkl as a dict, read without running anything: only dicts, strings and ints are
    accepted, checked opcode by opcode before the pickle is loaded. Anything else (the objects a
    pickle can build or call) is refused."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    try:
        for opcode, _, pos in pickletools.genops(data):
            if opcode.name not in PLAIN_OPCODES:
                raise UserError(
                    f"{path} holds more than plain dicts, strings and ints "
                    f"(pickle opcode {opcode.name} at byte {pos}, which builds or calls Python "
                    "objects), so it was not loaded; nanoGPT's meta.pkl is "
                    "{'vocab_size': int, 'itos': {int: str}, 'stoi': {str: int}}"
                )
        meta = _NoObjects(io.BytesIO(data)).load()
    except (ValueError, pickle.UnpicklingError, EOFError) as e:  # not a pickle, or cut short
        if isinstance(e, UserError):
            raise
        raise UserError(
            f"{path} is not a readable pickle ({e}); nanoGPT's data/<name>/prepare.py writes it"
        ) from None
    return check_meta(meta, path)


def check_meta(meta, path):
    """The meta dict, if it is nanoGPT's character vocabulary: itos ids 0..vocab_size-1, stoi its
    inverse."""
    ok = (
        isinstance(meta, dict)
        and type(meta.get("vocab_size")) is int
        and isinstance(meta.get("itos"), dict)
        and isinstance(meta.get("stoi"), dict)
    )
    if ok:
        itos, stoi = meta["itos"], meta["stoi"]
        ok = (
            sorted(itos, key=str) == sorted(range(len(itos)), key=str)
            and all(type(i) is int for i in itos)
            and all(type(s) is str for s in itos.values())
            and stoi == {s: i for i, s in itos.items()}
            and meta["vocab_size"] == len(itos)
        )
    if not ok:
        raise UserError(
            f"{path} is not nanoGPT's meta.pkl: it should be "
            "{'vocab_size': N, 'itos': {0..N-1: str}, 'stoi': the inverse of itos}, "
            "as its data/shakespeare_char/prepare.py writes"
        )
    return meta


def meta_pkl_tokenizer(path):
    """The CharTokenizer of a nanoGPT meta.pkl, read without running anything (read_meta_pkl)."""
    return meta_tokenizer(read_meta_pkl(path))


def meta_tokenizer(meta):
    """nanoGPT's meta.pkl as our CharTokenizer: the same ids, encode per character, decode by
    joining."""
    return CharTokenizer([meta["itos"][i] for i in range(meta["vocab_size"])])


# --------------------------------------------------------------------------------------------------
# Data folders


def data_meta(data_dir):
    """meta.json's content for a nanoGPT data folder (train.bin + val.bin, no meta.json): its
    meta.pkl's characters, or, without one, GPT-2 BPE. None when data_dir is not one: no .bin pair,
    or one of this repo's own data/<name> folders without meta.pkl (what an interrupted prepare.py
    leaves). Each .bin must be whole uint16 ids in the vocabulary."""
    bins = [os.path.join(data_dir, f"{split}.bin") for split in ("train", "val")]
    meta_pkl = os.path.join(data_dir, "meta.pkl")
    ours = (
        os.path.isfile(os.path.join(data_dir, "prepare.py"))
        and os.path.dirname(os.path.abspath(data_dir)) == DATA_ROOT
    )
    if not all(map(os.path.isfile, bins)) or (ours and not os.path.isfile(meta_pkl)):
        return None
    if os.path.isfile(meta_pkl):
        meta = meta_tokenizer(read_meta_pkl(meta_pkl)).meta()
        if meta["vocab_size"] > 2**16:
            raise UserError(
                f"{meta_pkl} has {meta['vocab_size']} tokens, "
                "more than nanoGPT's uint16 .bin files can hold"
            )
    else:
        meta = GPT2Tokenizer().meta()
        print(
            f"{data_dir} has no meta.json or meta.pkl: read as nanoGPT's GPT-2 BPE tokens (uint16)",
            file=sys.stderr,
        )
    for path in bins:
        check_bin(path, meta["vocab_size"])
    return {**meta, "dtype": "uint16", "source": f"nanoGPT data folder {data_dir}"}


def check_bin(path, vocab_size, chunks=16, chunk_tokens=1 << 20):
    """A nanoGPT .bin must be whole uint16 tokens, each < vocab_size. The ids are checked in full up
    to 16M tokens, and in 16 spread chunks of 1M beyond, so the check reads at most 16M tokens
    however large the file (OpenWebText's train.bin holds 9B)."""
    size = os.path.getsize(path)
    if size == 0 or size % 2:
        raise UserError(
            f"{path} has {size} bytes, not a whole number of uint16 tokens: "
            "write it again with nanoGPT's prepare.py"
        )
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    starts = (
        [0]
        if len(tokens) <= chunks * chunk_tokens
        else np.linspace(0, len(tokens) - chunk_tokens, chunks).astype(int)
    )
    length = len(tokens) if len(starts) == 1 else chunk_tokens
    for start in starts:
        chunk = np.asarray(tokens[start : start + length])
        if len(chunk) >= 1024 and not chunk[1::2].any():
            raise UserError(
                f"{path} looks like ids wider than 16 bits (every second uint16 is 0): "
                "nanoGPT's .bin files are uint16, np.array(ids, dtype=np.uint16).tofile(path); "
                "write it again that way"
            )
        if chunk.max() >= vocab_size:
            raise UserError(
                f"{path} holds token id {int(chunk.max())}, outside the vocabulary of "
                f"{vocab_size}: it does not belong to this meta.pkl (or is not uint16); "
                "prepare it again"
            )
