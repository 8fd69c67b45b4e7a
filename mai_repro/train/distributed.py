"""torch.distributed in one page: process-group set-up from torchrun's environment, wrapping
the model in DDP or FSDP2, and the few collectives the training loop needs.

One process (no ``WORLD_SIZE`` in the environment) is the default and needs nothing here:
every helper is a no-op when ``Dist.world_size == 1``. Under
``torchrun --nproc_per_node N``, :func:`init` starts the process group (``nccl`` on CUDA,
``gloo`` on CPU) and gives each rank its device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init(device: str) -> tuple[Dist, str]:
    """The process group of a torchrun launch (or a single process) and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(rank, world, local), device


def shutdown(dist: Dist) -> None:
    if dist.active and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(dist: Dist) -> None:
    if dist.active:
        tdist.barrier()


def mean(value: torch.Tensor, dist: Dist) -> torch.Tensor:
    """The mean of a tensor over ranks (a copy; the input is unchanged)."""
    if not dist.active:
        return value
    out = value.detach().clone()
    tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
    return out / dist.world_size


def sum_(tensor: torch.Tensor, dist: Dist) -> None:
    """Sum a tensor over ranks, in place."""
    if dist.active:
        tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)


def wrap(model: torch.nn.Module, dist: Dist, kind: str) -> torch.nn.Module:
    """The model for training: itself (one process), DDP, or FSDP2 (each block, then the root)."""
    if not dist.active:
        return model
    if kind == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [dist.local_rank] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(model, device_ids=ids)
    if kind == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in getattr(model, "blocks", []):
            fully_shard(block)
        fully_shard(model)
        return model
    raise ValueError(f"parallel must be 'ddp' or 'fsdp', got {kind!r}")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, kind: str,
               dist: Dist) -> tuple[dict, dict | None]:
    """Unsharded (model, optimizer) state dicts, the same on every rank, for a checkpoint."""
    model = unwrap(model)
    if not (dist.active and kind == "fsdp"):
        return model.state_dict(), optimizer.state_dict() if optimizer is not None else None
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if optimizer is None:
        return get_model_state_dict(model, options=opts), None
    return get_state_dict(model, optimizer, options=opts)


def load_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    model_state: dict, optim_state: dict | None, kind: str, dist: Dist) -> None:
    """Put unsharded state dicts back (each rank keeps its own shard under FSDP2)."""
    model = unwrap(model)
    if not (dist.active and kind == "fsdp"):
        model.load_state_dict(model_state)
        if optimizer is not None and optim_state is not None:
            optimizer.load_state_dict(optim_state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, optimizer, model_state_dict=model_state,
                   optim_state_dict=optim_state or {},
                   options=StateDictOptions(full_state_dict=True))
