"""Where and how a model runs: the device (:func:`pick_device`, :func:`device_label`), whether a
batch fits its memory (:func:`check_memory`), the precision (:func:`amp_mode`,
:func:`autocast_for`) and compilation (:func:`compile_model`).
Training, evaluation and every workflow take their device from here.

    >>> pick_device("cpu"), device_label(pick_device("cpu"))
    (device(type='cpu'), 'cpu')
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from multispike.engine.config import TrainConfig, check_compile_mode
from multispike.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """The ``torch.device`` of a device name: ``auto`` (a GPU when one is visible, else the CPU),
    ``cpu``, ``cuda`` or ``cuda:N``; anything else is one :class:`ConfigError` line."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda asked for but no CUDA GPU is visible; use --device cpu")
    if device.type not in ("cpu", "cuda"):  # multispike's kernels exist for these two
        raise ConfigError(f"device {name!r} is not supported: multispike runs on the CPU and on "
                          "CUDA GPUs; use --device cpu, cuda or cuda:N")
    return device


def amp_mode(cfg: TrainConfig, device: torch.device) -> str:
    """``off``, ``bf16`` or ``fp16``: ``cfg.amp`` with ``auto`` resolved for ``device``."""
    if cfg.amp != "auto":
        return cfg.amp
    if device.type != "cuda":
        return "off"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast_for(cfg: TrainConfig, device: torch.device) -> tuple[Any, torch.dtype | None]:
    """``(context factory, dtype)``: bf16 (or fp16) autocast on GPUs, full precision on CPU.

    With ``cfg.cuda_graphs`` autocast keeps no cache of cast weights (a CUDA graph must not
    hold one across its capture).
    """
    mode = amp_mode(cfg, device)
    if mode == "off":
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    cache = not cfg.cuda_graphs
    return (lambda: torch.autocast(device.type, dtype=dtype, cache_enabled=cache)), dtype


def device_label(device: torch.device) -> str:
    """``"cpu"``, or a GPU with its index (``"cuda:0"``, also for a plain ``cuda``)."""
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


_warned_cuda_graphs = False


def compile_model(module: nn.Module, mode: str, device: torch.device) -> nn.Module:
    """``module`` itself for ``mode="off"``, else ``torch.compile(module, mode=mode)``.

    The compiled wrapper shares the parameters and buffers of ``module``; keep ``module`` for
    ``state_dict`` and checkpoints. ``reduce-overhead`` adds CUDA graphs to ``default``, so on
    another device it warns (once per process) and compiles with ``default``. Compiling is lazy:
    the first call of each input shape, ``timesteps`` and train/eval mode pays for it.
    """
    global _warned_cuda_graphs
    mode = check_compile_mode(mode)
    if mode == "off":
        return module
    if mode == "reduce-overhead" and device.type != "cuda":
        if not _warned_cuda_graphs:
            _warned_cuda_graphs = True
            warnings.warn(
                f"compile mode reduce-overhead uses CUDA graphs, which do nothing on "
                f"{device.type}; compiling with mode default", RuntimeWarning, stacklevel=2)
        mode = "default"
    return torch.compile(module, mode=mode)


# -- memory -------------------------------------------------------------------------------------
def machine_memory(device: torch.device) -> int:
    """Bytes of memory on ``device``: the GPU's total memory, else the machine's RAM."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 1 << 62


@torch.no_grad()
def activation_elements(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, int]:
    """``(sum, largest)`` of the output elements of the model's layers for one sample at one
    time step, from one forward pass at T = 1 on the CPU (the model is left as it was)."""
    probe = copy.deepcopy(model).cpu().float().eval()
    if hasattr(probe, "timesteps"):
        probe.timesteps = 1
    sizes: list[int] = []

    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel())

    handles = [m.register_forward_hook(hook) for m in probe.modules()
               if not list(m.children())]
    try:
        probe(torch.zeros(1, *[int(s) for s in input_shape]))
    finally:
        for h in handles:
            h.remove()
    return sum(sizes), max(sizes, default=0)


#: bytes per activation element kept for the backward pass (every layer's output and, for
#: neurons, the membrane, in float32: a rough estimate)
TRAIN_BYTES = 8
#: without gradients only a few layers are alive at once: input, output and membrane in float32
EVAL_BYTES = 12


def check_memory(model: nn.Module, input_shape: Sequence[int], timesteps: int, batch_size: int,
                 device: torch.device, *, training: bool, flag: str = "--timesteps") -> None:
    """Refuse (one :class:`ConfigError` line) a run whose one batch cannot fit in memory.

    Estimate: T × batch × the model's activations per sample and step (all layers' outputs
    when training, the largest layer's when evaluating) × bytes per element; compared with
    the device's total memory. Cheap runs (T × batch < 4096) are not traced.
    """
    if timesteps * batch_size < 4096:
        return
    total, largest = activation_elements(model, input_shape)
    need = timesteps * batch_size * (total * TRAIN_BYTES if training else largest * EVAL_BYTES)
    have = machine_memory(device)
    if need > have:
        raise ConfigError(
            f"one batch at T = {timesteps} and batch size {batch_size} needs about "
            f"{_gib(need)} of activations, more than the {_gib(have)} of {device.type} "
            f"memory; lower {flag} or --batch-size"
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:,.0f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def allocation_failure(e: BaseException) -> bool:
    """``e`` is a failed memory allocation (CPU or GPU)."""
    if isinstance(e, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(s in text for s in (
        "out of memory", "can't allocate memory", "not enough memory", "Failed to allocate",
        "DefaultCPUAllocator"))
