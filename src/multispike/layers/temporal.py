"""Layers over time: stateless layers run once on ``[T·B, ...]``, dropout shared by the steps.

:func:`fold_time` folds T into the batch (one large convolution instead of T small ones; the
SpikingJelly ``SeqToANNContainer`` idea); :class:`TimeFold` is a layer that does it, and
:class:`TimeDropout` drops a neuron for a whole sequence.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from multispike.errors import ConfigError

__all__ = ["TimeDropout", "TimeFold", "fold_time"]


def fold_time(module: nn.Module, x: Tensor) -> Tensor:
    """Apply a stateless ``module`` to ``x`` ``[T, B, ...]`` with T folded into the batch."""
    t, b = x.shape[:2]
    y = module(x.flatten(0, 1))  # [T, B, ...] -> [T*B, ...] -> module -> [T*B, ...']
    return y.unflatten(0, (t, b))  # [T*B, ...'] -> [T, B, ...']


class TimeFold(nn.Module):
    """Wrap a stateless layer (conv, pooling, flatten) to run once over ``[T·B, ...]``.

    ``TimeFold(nn.Conv2d(...))`` maps ``[T, B, C, H, W]`` to ``[T, B, C', H', W']`` with one
    convolution call. The wrapped layer is ``.module``.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return fold_time(self.module, x)

    def describe(self, g: Any, path: str, x: Any) -> Any:
        """One ``fold`` node: the wrapped layer at ``{path}.module``."""
        return g.fold(self.module, f"{path}.module", x)


class TimeDropout(nn.Module):
    """Dropout with one mask per sample shared by all T steps (PLIF paper ``layer.Dropout``).

    A neuron that drops out is silent for the whole sequence instead of flickering from step
    to step. ``[T, B, ...] → [T, B, ...]``; identity in eval mode or with ``p = 0``.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ConfigError(f"dropout must lie in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty_like(x[:1]).bernoulli_(keep) / keep  # [1, B, ...]: shared over T
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
