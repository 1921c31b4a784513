"""Where and how a model runs: the device (:func:`pick_device`, :func:`device_label`), its
precision (:func:`amp_mode`, :func:`autocast_for`) and compilation (:func:`compile_model`).
Training, evaluation and every workflow take their device from here.

    >>> pick_device("cpu"), device_label(pick_device("cpu"))
    (device(type='cpu'), 'cpu')
"""

from __future__ import annotations

import contextlib
import warnings
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
