"""
Files that matter: the repo's one atomic write, JSON metadata, and checkpoints (tensors and plain
values only, loaded with weights_only=True), with the RNG state that makes a resume exact and the
one way to build a model from a checkpoint, an out_dir or GPT-2's weights; and out_dir's ownership
(one run at a time, holding out_dir/.lock; no new run over an old checkpoint unless told to).

A checkpoint (ckpt.pt) holds: model (state dict), optimizer, model_args (its config's fields;
model_type too for a model that is not a GPT), config (TrainConfig), iter_num, best_val_loss,
tokens, elapsed_s, rng, wandb_run_id. Its tokenizer is in meta.json next to it. nanoGPT's ckpt.pt
loads too, translated into this layout where it is read (gptkit/nanogpt.py); any other file is
refused. A translated checkpoint also holds what later steps need, in optional fields that train.py
never writes and any checkpoint may hold:
- config_errors: {key: one line} for settings of the run that could not be carried (of the wrong
  type); a resume raises that line unless the user gives the key.
- resume_note: one line a resume prints.
- tokenizer_source: where the tokenizer is when out_dir has no meta.json (load_model):
  {"meta_pkl": path}, {"gpt2": the line printed}, or {"missing": the line raised}.
"""

import json
import math
import os
import random
import sys
from dataclasses import fields
from pickle import UnpicklingError

import numpy as np
import torch

from gptkit import nanogpt
from gptkit.base import UserError, atomic_write, checked
from gptkit.pretrained import PRETRAINED, from_pretrained
from gptkit.tokenizer import GPT2Tokenizer, load_tokenizer
from gptkit.train_config import MODEL_TYPES


def save_checkpoint(state, paths):
    """torch.save(state) atomically to each path; a failed write (disk full, ...) is a UserError
    naming the path."""

    def write(tmp):
        # a Python file, so a failed write keeps its OSError (torch wraps it)
        with open(tmp, "wb") as f:
            torch.save(state, f)

    for path in paths:
        try:
            atomic_write(path, write)
        except (OSError, RuntimeError) as e:
            cause = e if isinstance(e, OSError) else e.__context__
            if not isinstance(cause, OSError):
                raise  # not the disk: a bug, keep the traceback
            reason = cause.strerror or str(e).strip().splitlines()[-1][:200]
            raise UserError(
                f"could not write {path} ({reason}); the previous checkpoint is kept"
            ) from None


# what torch.load(weights_only=True) raises for a file that is not a safe checkpoint (measured: an
# empty file EOFError, a cut zip RuntimeError, code or random bytes UnpicklingError, text KeyError,
# a directory IsADirectoryError)
NOT_A_CHECKPOINT = (UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, OSError)


def load_checkpoint(path, map_location="cpu", mmap=False):
    """Load a checkpoint with weights_only=True: never unpickle code. Refuses, with a reason,
    anything else. nanoGPT's checkpoints come back in our layout; a file that is neither ours nor
    nanoGPT's is refused too."""
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}: train first, or check out_dir")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except NOT_A_CHECKPOINT as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path} is corrupt, truncated or unsafe to load ({reason[:200]}); "
            "it was left untouched"
        ) from None
    return nanogpt.as_ours(checkpoint, path)


# --------------------------------------------------------------------------------------------------
# out_dir belongs to one run at a time


def lock_out_dir(out_dir):
    """
    Hold out_dir for this run: an exclusive flock on out_dir/.lock, kept while the returned file is
    open. The OS drops it when the process ends, however it ends (kill -9 leaves no stale lock). A
    second run gets an error naming the holder's pid, and writes nothing.
    """
    try:
        import fcntl  # Linux and macOS
    except ImportError:  # Windows has no flock: there, keeping to one run per out_dir is up to you
        return None
    # "a+": creates it if needed, changes nothing in it
    f = open(os.path.join(out_dir, ".lock"), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        pid = f" (pid {holder})" if holder else ""
        raise UserError(
            f"out_dir {out_dir} is in use by another training run{pid}; "
            "wait for it to end, or choose another --out_dir"
        ) from None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")  # for the message above, in the next run that tries
    f.flush()
    return f


def refuse_to_overwrite(out_dir):
    """A new run (from scratch or pretrained weights) never replaces a checkpoint without
    --overwrite=True."""
    path = os.path.join(out_dir, "ckpt.pt")
    if not os.path.exists(path):
        return
    try:
        # mmap: only the small pickled header is read, the tensors stay on disk, so this is instant
        # at any size; and the checkpoint is the truth (metrics.jsonl may be missing or run past it)
        checkpoint = load_checkpoint(path, mmap=True)
        what = f"iter {checkpoint.get('iter_num')}"
        if math.isfinite(checkpoint.get("best_val_loss", math.inf)):
            what += f", best val loss {checkpoint['best_val_loss']:.4f}"
    except UserError:
        what = "unreadable"
    raise UserError(
        f"{out_dir} already holds a checkpoint ({what}): continue it with --init_from=resume, "
        "start elsewhere with another --out_dir, or replace it with --overwrite=True"
    )


def remove_previous_run(out_dir):
    """--overwrite=True: delete the old run's checkpoints and eval.json, so none is mistaken for
    (or, with keep_last, mixed with) the new run's. Called once the new run is set up, so a bad
    setting costs nothing."""
    for name in os.listdir(out_dir):
        if (name.startswith("ckpt") and name.endswith(".pt")) or name == "eval.json":
            os.remove(os.path.join(out_dir, name))


# --------------------------------------------------------------------------------------------------


def clean_state_dict(state_dict):
    """Drop torch.compile's `_orig_mod.` prefix, so old compiled checkpoints load into a plain
    model."""
    return {k.removeprefix("_orig_mod."): v for k, v in state_dict.items()}


def model_from_checkpoint(checkpoint, **overrides):
    """The model a checkpoint describes, with its weights. overrides: config fields that do not
    change the weights (e.g. sdpa; the GRU has none, so it ignores sdpa). model_args from before a
    field existed take that field's default; from before model_type existed, they are a GPT's."""
    args = dict(checkpoint["model_args"])
    config_class, model_class = MODEL_TYPES[args.pop("model_type", "gpt")]
    known = {f.name for f in fields(config_class)}
    kept = {k: v for k, v in overrides.items() if k in known}
    model = model_class(checked(config_class, **{**args, **kept}))
    model.load_state_dict(clean_state_dict(checkpoint["model"]))
    return model


def load_model(init_from, out_dir, device, meta_pkl=""):
    """(model in eval mode on device, tokenizer): out_dir's checkpoint (init_from="resume") or GPT-2
    weights. The tokenizer is out_dir's meta.json; without one, where the checkpoint says
    (tokenizer_source: a nanoGPT run's meta.pkl, or GPT-2 BPE) or the meta.pkl meta_pkl names,
    and none for a checkpoint that says nothing."""
    if init_from == "resume":
        checkpoint = load_checkpoint(os.path.join(out_dir, "ckpt.pt"), map_location=device)
        model = model_from_checkpoint(checkpoint)
        meta_path = os.path.join(out_dir, "meta.json")
        if os.path.isfile(meta_path):
            with open(meta_path) as f:
                tokenizer = load_tokenizer(json.load(f), out_dir)
        elif checkpoint.get("tokenizer_source") is not None:
            vocab_size = checkpoint["model_args"]["vocab_size"]
            source = checkpoint["tokenizer_source"]
            tokenizer = source_tokenizer(source, vocab_size, out_dir, meta_pkl)
        else:
            raise UserError(
                f"{out_dir} has no meta.json, so its tokenizer is unknown; "
                "it is written by train.py"
            )
    elif init_from in PRETRAINED or os.path.isdir(init_from):
        model, tokenizer = from_pretrained(init_from), GPT2Tokenizer()
    else:
        raise UserError(
            f"--init_from={init_from} must be resume, one of {', '.join(PRETRAINED)}, "
            "or a directory"
        )
    return model.eval().to(device), tokenizer


def source_tokenizer(source, vocab_size, out_dir, meta_pkl=""):
    """The tokenizer a checkpoint's tokenizer_source names, or the meta.pkl meta_pkl names, which
    must hold the model's vocab_size tokens."""
    if meta_pkl:
        if not os.path.isfile(meta_pkl):
            raise UserError(f"--meta_pkl={meta_pkl} does not exist")
        source = {"meta_pkl": meta_pkl}
    if "missing" in source:
        raise UserError(source["missing"])
    if "gpt2" in source:
        print(source["gpt2"], file=sys.stderr)
        return GPT2Tokenizer()
    tokenizer = nanogpt.meta_pkl_tokenizer(source["meta_pkl"])
    if tokenizer.vocab_size != vocab_size:
        raise UserError(
            f"{source['meta_pkl']} has {tokenizer.vocab_size} tokens but the model in {out_dir} "
            f"has {vocab_size}: give its own with --meta_pkl=PATH"
        )
    return tokenizer


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
    np.random.set_state((np_state[0], np_state[1].cpu().numpy().astype(np.uint32), *np_state[2:]))
    # generator states are CPU byte tensors, wherever the checkpoint was mapped
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
