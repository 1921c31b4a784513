"""Parameter and MAC counts of a model, read from its graph (:meth:`SpikingModel.graph`).

MACs are counted per image and per time step on the convolution and linear layers (the
synaptic operations; BN, pooling and neurons are not counted): a ``k×k`` convolution with
``C_in`` inputs per group costs ``C_in·k²`` MACs per output element, a linear layer
``in_features`` per output. For an SNN, the first (encoder) layer's MACs are real
multiply-accumulates; after it, inputs are spikes and a MAC becomes an addition (a SOP) when
its input spike fires.

The graph is evaluated once, by :func:`node_shapes`, which
:func:`~multispike.analysis.ops.trace_ops` reads too; :func:`layer_macs` is the one MAC count
of a layer from its output shape.

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

from multispike.layers import GraphNode, run_node

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


def layer_kind(module: nn.Module | None) -> str | None:
    """``"conv"`` for an ``nn.Conv*d`` (not transposed), ``"linear"`` for an ``nn.Linear``,
    else None: the layers whose MACs are counted."""
    conv = nn.modules.conv
    if isinstance(module, conv._ConvNd) and not isinstance(module, conv._ConvTransposeNd):
        return "conv"
    return "linear" if isinstance(module, nn.Linear) else None


def layer_macs(module: nn.Module, out_shape: Sequence[int]) -> int:
    """MACs of a convolution or linear layer from the shape of its output (no bias).

    ``out_shape``: one sample's output at one step, ``(C_out, H', W')`` or ``(…, out_features)``
    (any leading rows, e.g. tokens, are counted), or a batch's with the batch in front.
    Example::

        >>> layer_macs(nn.Conv2d(4, 8, 3, groups=2), (8, 5, 5)), layer_macs(nn.Linear(3, 2), (2,))
        (3600, 6)
    """
    if layer_kind(module) == "conv":
        return conv_macs(module, out_shape)  # type: ignore[arg-type]
    return linear_macs(module, math.prod(out_shape) // module.out_features)  # type: ignore[arg-type]


@torch.no_grad()
def node_shapes(model: SpikingModel, input_shape: Sequence[int], *, frames: bool = False
                ) -> list[tuple[GraphNode, tuple[int, ...]]]:
    """Every node of ``model.graph()`` with the shape of its value for one sample at one step.

    Evaluates the nodes once (:func:`~multispike.layers.run_node`) on one zero sample of
    ``input_shape`` at T = 1, in eval mode; the model's mode and ``timesteps`` are restored.
    ``frames=True`` feeds one event frame ``[1, 1, ...]`` instead of a static image ``[1, ...]``.

        >>> from multispike.models import create
        >>> [(n.name, s) for n, s in node_shapes(create("digits_net"), (1, 8, 8))][:2]
        [('input', (1, 8, 8)), ('stem_conv', (16, 8, 8))]
    """
    p = next(model.parameters(), None)
    floating = p is not None and p.is_floating_point()
    x = torch.zeros((1,) * (2 if frames else 1) + tuple(int(s) for s in input_shape),
                    dtype=p.dtype if floating else torch.float32,  # type: ignore[union-attr]
                    device=p.device if p is not None else "cpu")
    was_training, steps = model.training, model.timesteps
    values: dict[str, Tensor] = {}
    out = []
    try:
        model.eval()
        model.timesteps = 1
        model.check_input(x)
        for node in model.graph():
            values[node.name] = run_node(node, values, x, 1)
            out.append((node, tuple(values[node.name].shape[2:])))
    finally:
        model.timesteps = steps
        model.train(was_training)
    return out


def count_macs(
    model: SpikingModel, input_shape: Sequence[int], *, per_layer: bool = False
) -> int | dict[str, int]:
    """MACs of one image ``input_shape = (C, H, W)`` for one time step.

    Evaluates the model's graph (:meth:`~multispike.models.SpikingModel.graph`) at T = 1 on a
    zero image in eval mode (training mode is restored; :func:`node_shapes`) and counts every
    convolution and linear node from its output shape (:func:`layer_macs`). ``per_layer=True``
    returns ``{layer path: MACs}`` in forward order.
    """
    counts: dict[str, int] = {}
    for node, shape in node_shapes(model, input_shape):
        if layer_kind(node.module):
            counts[node.name] = counts.get(node.name, 0) + layer_macs(node.module, shape)
    return counts if per_layer else sum(counts.values())
