"""
Training on several processes launched by torchrun: DDP or FSDP2, everything train.py does
differently there.

    torchrun --standalone --nproc_per_node=2 train.py config/train_shakespeare_char.py
    torchrun --standalone --nproc_per_node=2 train.py config/train_shakespeare_char.py --fsdp=True

DDP (the first) keeps a full copy of the weights, gradients and AdamW state on every rank and
all-reduces gradients. FSDP2 (the second; torch.distributed.fsdp.fully_shard) keeps 1/world_size of
each on every rank: a block's weights are all-gathered just before its forward and backward and
freed after, and gradients are reduce-scattered.

Checkpoints stay one file in the single-process format either way: full state dicts are gathered on
rank 0 (every rank joins the gather) and the optimizer's state is keyed by parameter index, exactly
like torch.optim.AdamW.state_dict() of an unwrapped model. So sample.py, --eval_only and a
single-process --init_from=resume read an FSDP checkpoint, and an FSDP run resumes from any
checkpoint.

Without torchrun every function here is a no-op (or the plain single-process call).
"""

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed

from gptkit import hardware
from gptkit.base import UserError


def launched():
    """True under torchrun, which sets RANK (and LOCAL_RANK, WORLD_SIZE) in each process it
    starts."""
    return "RANK" in os.environ


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: launched by torchrun or not, its rank and device, and whether the
    model is sharded."""

    launched: bool = False  # one process (rank) per device, in torchrun's process group
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    fsdp: bool = False  # FSDP2 shards the model across the ranks; else DDP replicates it

    @property
    def master(self):
        return self.rank == 0  # rank 0 alone writes files, logs and prints


def setup(cfg):
    """This process's Distributed: under torchrun it also joins the process group (nccl on GPUs,
    gloo on CPUs) and takes its local rank's GPU."""
    if not launched():
        return Distributed(device=hardware.pick_device(cfg.device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    device = (
        f"cuda:{local_rank}"
        if cfg.device in ("auto", "cuda") and torch.cuda.is_available()
        else hardware.pick_device(cfg.device)
    )
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    backend = cfg.backend if device.startswith("cuda") else "gloo"
    torch.distributed.init_process_group(backend=backend)
    if cfg.gradient_accumulation_steps % world_size:
        raise UserError(
            f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} "
            f"must be divisible by the {world_size} ranks"
        )
    return Distributed(True, rank, local_rank, world_size, device, cfg.fsdp)


def teardown(dist):
    """Leave the process group together, at the end of the run or after a stop signal.

    The barrier returns once every rank has finished all its collectives, so no rank exits while
    gloo's worker threads still handle one. A rank that left early once aborted at exit after a
    complete run (SIGABRT, "terminate called without an active exception"). destroy_process_group
    does not stop those threads by itself: DDP and FSDP still hold the group, so it lives until the
    interpreter exits.
    """
    if dist.launched:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def exit_rank(code):
    """End a torchrun rank right after teardown: flush what it printed, then leave without the
    interpreter's shutdown. DDP and FSDP still hold the process group, so gloo's worker threads live
    until the interpreter's last destructors, and one still joinable there aborts the rank
    (SIGABRT, "terminate called without an active exception") after a complete run: once in four
    suite runs of one session on the Xeon, after the teardown barrier. By then every file the
    run wrote is closed (checkpoints and metrics are written whole, W&B is finished), and the OS
    releases out_dir's lock."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def shard(model, dist):
    """FSDP2, in place, before the optimizer is built (it must hold the sharded parameters); a no-op
    otherwise.

    Each block is its own unit (all-gathered for its forward/backward, freed after: the memory
    saving), and the root holds the rest (embeddings, tied lm_head, ln_f). Mixed precision stays
    train.py's autocast over fp32 parameters, as in one process and DDP: the same numerics, so
    checkpoints move between the three freely. MixedPrecisionPolicy(param_dtype=bfloat16) would
    halve the all-gather traffic but also run LayerNorm and the loss in bf16, which autocast keeps
    in fp32.
    """
    if not dist.fsdp:
        return
    from torch.distributed.fsdp import fully_shard

    # every rank starts from rank 0's weights, as DDP does at construction (each rank seeded its
    # own RNG)
    for tensor in [*model.parameters(), *model.buffers()]:
        torch.distributed.broadcast(tensor.data, src=0)
    for block in model.transformer.h:
        fully_shard(block)
    fully_shard(model)


def wrap(model, dist):
    """DDP around the (possibly compiled) model; FSDP models were sharded in place by shard(), so
    returned as is."""
    if not dist.launched or dist.fsdp:
        return model
    device_ids = [int(dist.device.split(":")[1])] if dist.device.startswith("cuda") else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def grad_scaler(scaler, dist):
    """float16's loss scaler; under FSDP the sharded one, so all ranks agree on skipping a step with
    inf gradients."""
    if not (dist.fsdp and scaler.is_enabled()):
        return scaler
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    return ShardedGradScaler("cuda" if dist.device.startswith("cuda") else dist.device)


def set_grad_sync(model, sync, dist):
    """Communicate gradients only at the last micro-step; the others accumulate locally (no
    all-reduce / reduce-scatter).

    Under FSDP that keeps each block's unsharded gradient until the last micro-step: less
    communication, but full-size gradients in memory during accumulation (reduce-scattering every
    micro-step would keep only shards).
    """
    if dist.fsdp:
        # the FSDP module's (torch.compile's wrapper forwards the call)
        model.set_requires_gradient_sync(sync)
    elif dist.launched:
        model.require_backward_grad_sync = sync


def any_rank(flag, dist):
    """True on every rank once any rank's flag is: all ranks agree, so none waits forever in a
    collective."""
    if not dist.launched:
        return flag
    tensor = torch.tensor([float(flag)], device=dist.device)
    torch.distributed.all_reduce(tensor)
    return tensor.item() > 0


def rank0_decides(flag, dist):
    """Rank 0's flag on every rank: a collective (the FSDP gather of a checkpoint) must be joined by
    all ranks or none."""
    if not dist.launched:
        return flag
    tensor = torch.tensor([float(flag)], device=dist.device)
    torch.distributed.broadcast(tensor, src=0)
    return bool(tensor.item())


# --------------------------------------------------------------------------------------------------
# Full state dicts in the single-process format


def _param_names(model, optimizer):
    """Parameter names in the order AdamW.state_dict() numbers them (group by group): index i <->
    names[i]."""
    name_of = {param: name for name, param in model.named_parameters()}
    return [name_of[param] for group in optimizer.param_groups for param in group["params"]]


def full_state(model, optimizer, dist):
    """(model, optimizer) state dicts of the whole model on rank 0, as one process would have them
    (CPU tensors under FSDP). A collective under FSDP: every rank must call it; the other ranks get
    empty dicts."""
    if not dist.fsdp:
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    # cpu_offload: only rank 0 gets tensors
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    optim_state = get_optimizer_state_dict(model, optimizer, options=options)
    if not dist.master:
        return {}, {}
    # get_optimizer_state_dict keys state and param_groups by parameter name,
    # AdamW.state_dict() by index
    index = {name: i for i, name in enumerate(_param_names(model, optimizer))}
    groups = [
        {**group, "params": [index[name] for name in group["params"]]}
        for group in optim_state["param_groups"]
    ]
    return model_state, {
        "state": {index[name]: s for name, s in optim_state["state"].items()},
        "param_groups": groups,
    }


def load_optimizer(model, optimizer, state, dist):
    """Load a single-process AdamW state dict (from any checkpoint) into the optimizer; under FSDP
    every rank passes the full state and keeps its shard (broadcast_from_rank0 fails with gloo on
    CPU in torch 2.13)."""
    if not dist.fsdp:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _param_names(model, optimizer)
    by_name = {
        "state": {names[i]: s for i, s in state["state"].items()},
        "param_groups": [
            {**group, "params": [names[i] for i in group["params"]]}
            for group in state["param_groups"]
        ],
    }
    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(model, optimizer, by_name, options=options)
