"""Distributed set-up for ``torchrun``: NCCL on GPUs, gloo on CPU, rank 0 logs and writes.

``torchrun --nproc_per_node N -m multispike train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` reads them. Without them (a plain run) nothing is initialised.

The device decides the backend: ``--device cpu`` runs every process on the CPU with gloo, even
on a machine with GPUs; ``cuda`` (or ``cuda:N``: under torchrun each process takes the GPU of
its ``LOCAL_RANK`` whatever ``N`` says) runs process ``LOCAL_RANK`` on that GPU with NCCL;
``auto`` means ``cuda`` when a GPU is visible, else ``cpu``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from multispike.errors import ConfigError


@dataclass
class DistContext:
    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")


def device_type(device: str | torch.device | None) -> str:
    """``"cuda"`` or ``"cpu"``: the kind of device ``--device`` asks for under torchrun."""
    name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(name).type
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r} is not supported under torchrun; use cpu or cuda")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda asked for but no CUDA GPU is visible; use --device cpu")
    return kind


def setup(device: str | torch.device | None = "auto") -> DistContext:
    """Initialise the process group when launched by torchrun; a no-op context otherwise.

    ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (see the module docstring). CPU
    processes use gloo, GPU processes NCCL on the GPU of their ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_type(device) == "cuda"
    if use_cuda:
        count = torch.cuda.device_count()
        if local >= count:
            raise ConfigError(
                f"LOCAL_RANK {local} has no GPU of its own ({count} visible); start at most "
                f"{count} processes per node, or pass --device cpu"
            )
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(True, rank, world, local, dev)


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_min(value: int, device: torch.device) -> int:
    """The smallest ``value`` of all ranks (``value`` itself without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())
