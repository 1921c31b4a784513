"""Parameter and MAC counts of a model, read from its graph (:meth:`SpikingModel.graph`).

MACs are counted per image and per time step on the convolution and linear layers (the
synaptic operations; BN, pooling and neurons are not counted): a ``k×k`` convolution with
``C_in`` inputs per group costs ``C_in·k²`` MACs per output element, a linear layer
``in_features`` per output. For an SNN, the first (encoder) layer's MACs are real
multiply-accumulates; after it, inputs are spikes and a MAC becomes an addition (a SOP) when
its input spike fires.

Example::

    >>> from multispike.models import count_macs, create
    >>> model = create("resnet20m")
    >>> macs = count_macs(model, (3, 32, 32), per_layer=True)
    >>> macs["stem_conv"], sum(macs.values())
    (1769472, 215684096)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from multispike.layers import run_node

if TYPE_CHECKING:  # pragma: no cover - typing only
    from multispike.models.base import SpikingModel


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def conv_macs(module: nn.modules.conv._ConvNd, out_shape: Sequence[int]) -> int:
    """MACs of a convolution: ``out_elems × (in_ch / groups) × prod(kernel)``.

    ``out_shape`` is the output's shape: one sample's ``(C_out, H', W')`` gives the MACs of one
    sample, a batch's ``(B, C_out, H', W')`` those of the batch (no bias).
    """
    per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
    return int(math.prod(out_shape)) * per_output


def linear_macs(module: nn.Linear, rows: int = 1) -> int:
    """MACs of a linear layer over ``rows`` input rows: ``rows × out_features × in_features``."""
    return int(rows) * module.out_features * module.in_features


def _macs(module: nn.Module, out: Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        return conv_macs(module, out.shape)
    assert isinstance(module, nn.Linear)
    return linear_macs(module, out.numel() // module.out_features)


@torch.no_grad()
def count_macs(
    model: SpikingModel, input_shape: Sequence[int], *, per_layer: bool = False
) -> int | dict[str, int]:
    """MACs of one image ``input_shape = (C, H, W)`` for one time step.

    Evaluates the model's graph (:meth:`~multispike.models.SpikingModel.graph`) at T = 1 on a
    zero image in eval mode (training mode is restored) and counts every convolution and
    linear node from its output shape. ``per_layer=True`` returns ``{layer path: MACs}`` in
    forward order.
    """
    p = next(model.parameters())
    x = torch.zeros(1, *input_shape, dtype=p.dtype, device=p.device)
    model.check_input(x)
    counts: dict[str, int] = {}
    values: dict[str, Tensor] = {}
    was_training = model.training
    try:
        model.eval()
        for node in model.graph():
            values[node.name] = run_node(node, values, x, 1)
            if isinstance(node.module, (nn.Conv2d, nn.Linear)):
                counts[node.name] = counts.get(node.name, 0) + _macs(node.module,
                                                                     values[node.name])
    finally:
        model.train(was_training)
    return counts if per_layer else sum(counts.values())
