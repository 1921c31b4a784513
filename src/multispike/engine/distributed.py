"""Distributed set-up for ``torchrun``: NCCL on GPUs, gloo on CPU, rank 0 logs and writes.

``torchrun --nproc_per_node N -m multispike train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` reads them. Without them (a plain run) nothing is initialised.

The device decides the backend: ``--device cpu`` runs every process on the CPU with gloo, even
on a machine with GPUs; ``cuda`` (or ``cuda:N``: under torchrun each process takes the GPU of
its ``LOCAL_RANK`` whatever ``N`` says) runs process ``LOCAL_RANK`` on that GPU with NCCL;
``auto`` means ``cuda`` when a GPU is visible, else ``cpu``.

Evaluation is sharded as in the torchvision references (each rank evaluates its part of the
test set, then the correct/seen/loss sums are all-reduced), but without padding:
:class:`ShardSampler` gives rank ``r`` the images ``r, r + W, r + 2W, ...`` (``W`` ranks), so
every image counts exactly once and the accuracy equals a one-process evaluation's.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Iterator, Sequence
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
        atexit.register(_end_group)
    return DistContext(True, rank, world, local, dev)


def cleanup(ctx: DistContext) -> None:
    """Wait for every rank at the end of a run. The process group stays up for the next run
    of this process (``reproduce`` trains several): ending it and starting it again raced
    (rank 0 re-opens its store while another rank already connects: "Connection refused");
    it ends when the process exits."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()


def _end_group() -> None:
    """End the process group at exit, after a last barrier.

    After the barrier, gloo's worker thread still frees the barrier's work, which needs the
    GIL; if the group is destroyed meanwhile (here, or when the DDP wrapper that holds it is
    freed), its destructor waits for that thread while holding the GIL, and both wait for ever.
    A short sleep releases the GIL so that the worker finishes first.
    """
    if dist.is_initialized():
        dist.barrier()
        time.sleep(0.2)
        dist.destroy_process_group()


class ShardSampler(torch.utils.data.Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of a dataset of ``length`` items, in order.

    The shards of all ranks together hold every index exactly once: no padding (a
    ``DistributedSampler`` repeats images to even out the shards) and none dropped. Ranks may
    get one item more than others, which evaluation (no collective per batch) allows.
    """

    def __init__(self, length: int, world_size: int, rank: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.length, self.world_size, self.rank = int(length), int(world_size), int(rank)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def all_reduce_sums(values: Sequence[float], device: torch.device) -> list[float]:
    """``values`` summed over the ranks (float64; unchanged without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_min(value: int, device: torch.device) -> int:
    """The smallest ``value`` of all ranks (``value`` itself without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def broadcast_buffers(module: torch.nn.Module, ctx: DistContext) -> None:
    """Rank 0's buffers (BN running statistics) on every rank, so that all ranks evaluate the
    model rank 0 checkpoints (each rank's last training steps updated its own copy). Only the
    buffers a checkpoint holds: non-persistent ones (a neuron layer's non-finite-input flag)
    stay each rank's own."""
    if not (ctx.enabled and dist.is_initialized()):
        return
    for sub in module.modules():
        for name, buf in sub._buffers.items():
            if buf is not None and name not in sub._non_persistent_buffers_set:
                dist.broadcast(buf.data, src=0)
