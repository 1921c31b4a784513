"""The convolutional units and residual blocks of the zoo, each describing its own dataflow.

:class:`ConvUnit` (conv → BN → neuron) builds the VGG nets; :class:`MembraneBlock` (MS-ResNet,
a residual stream of membrane inputs) and :class:`SpikeBlock` (tdBN / Ternary Spike, a residual
stream of spikes) build the ResNets. Each has ``describe(g, path, x)`` (see
:mod:`multispike.layers.graph`); its ``forward`` runs that on tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from multispike.errors import ConfigError
from multispike.layers.graph import RUN
from multispike.layers.neuron_slots import NeuronFactory
from multispike.layers.norm import build_norm

__all__ = ["ConvUnit", "MembraneBlock", "SpikeBlock", "conv1x1", "conv3x3"]

#: tdBN's α on the BNs before a residual addition (the second BN of a block and the shortcut's)
_RESIDUAL_ALPHA = 1 / math.sqrt(2)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def _block_norms(norm: str, channels: int, timesteps: int,
                 v_threshold: float) -> Callable[..., nn.Module]:
    """The BN maker of a residual block: ``bn()`` before a neuron, ``bn(residual=True)`` before
    the residual addition (tdBN scales that one by α = 1/√2)."""
    def bn(residual: bool = False) -> nn.Module:
        return build_norm(norm, channels, timesteps=timesteps, v_threshold=v_threshold,
                          alpha=_RESIDUAL_ALPHA if residual else 1.0)
    return bn


class ConvUnit(nn.Module):
    """conv → BN → neuron, the unit of the VGG nets: ``[T, B, C, H, W] → [T, B, C', H', W']``.

    The convolution runs once over ``[T·B, C, H, W]``; the neuron runs over T.
    """

    def __init__(self, conv: nn.Module, norm: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        return self.describe(RUN, "", x)

    def describe(self, g: Any, path: str, x: Any) -> Any:
        """The dataflow (see :class:`Record`): ``act(norm(fold_time(conv, x)))``."""
        y = g.fold(self.conv, f"{path}.conv", x)
        y = g.call(self.norm, f"{path}.norm", y)
        return g.call(self.act, f"{path}.act", y)


class MembraneBlock(nn.Module):
    """MS-ResNet basic block (Hu et al. 2021, MT-SNN ref [31]): a residual at membrane level.

    The residual stream carries real values (the input currents of the next neurons)::

        s = SN1(x)
        y = x' + BN2(Conv2(SN2(BN1(Conv1(s)))))

    with ``x' = x``, or ``x' = BN_s(Conv_s(s))`` where the block downsamples or widens. The
    shortcut convolution reads the spikes ``s`` of the block's first neuron (the MS-ResNet code
    feeds it the membrane ``x``): every convolution after the encoder then sees spikes, as
    MT-SNN Eq 12 and the addition-only deployment need. ``shortcut_kernel`` is 1 (MS-ResNet) or
    3 (the size MT-SNN Table 2's 4.66M parameters imply).

    ``[T, B, C, H, W] → [T, B, C', H/stride, W/stride]``. For the ANN twin (ReLU neurons) this
    is the pre-activation ResNet block.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        *,
        stride: int,
        neuron_factory: NeuronFactory,
        norm: str,
        timesteps: int,
        shortcut_kernel: int = 1,
    ) -> None:
        super().__init__()
        bn = _block_norms(norm, cout, timesteps, neuron_factory.v_threshold)
        self.sn1 = neuron_factory.conv()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = bn()
        self.sn2 = neuron_factory.conv()
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = bn(residual=True)
        self.shortcut: nn.Module | None = None
        self.shortcut_bn: nn.Module | None = None
        if stride != 1 or cin != cout:
            if shortcut_kernel not in (1, 3):
                raise ConfigError(f"shortcut_kernel must be 1 or 3, got {shortcut_kernel}")
            pad = shortcut_kernel // 2
            self.shortcut = nn.Conv2d(
                cin, cout, shortcut_kernel, stride=stride, padding=pad, bias=False
            )
            self.shortcut_bn = bn(residual=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.describe(RUN, "", x)

    def describe(self, g: Any, path: str, x: Any) -> Any:
        """The dataflow (see :class:`Record`); the residual sum is the node ``{path}.sum``."""
        s = g.call(self.sn1, f"{path}.sn1", x)
        y = g.fold(self.conv1, f"{path}.conv1", s)
        y = g.call(self.bn1, f"{path}.bn1", y)
        y = g.call(self.sn2, f"{path}.sn2", y)
        y = g.fold(self.conv2, f"{path}.conv2", y)
        y = g.call(self.bn2, f"{path}.bn2", y)
        sc = _describe_shortcut(self, g, path, s) if self.shortcut is not None else x
        return g.add(sc, y, f"{path}.sum")


class SpikeBlock(nn.Module):
    """Spiking basic block of tdBN (Zheng et al. 2021) and the Ternary Spike code.

    The residual stream carries spikes; the addition happens before the second neuron::

        y = SN2(BN2(Conv2(SN1(BN1(Conv1(s))))) + s')

    with ``s' = s`` or, where the block downsamples or widens, ``s' = BN(Conv1x1(s))``
    (``avg_down=False``, tdBN/ResNet-18) or ``s' = BN(Conv1x1(AvgPool(s)))`` (``avg_down=True``,
    the Sengupta ResNet-20 of Ternary Spike). For the ANN twin this is the ResNet v1 block.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        *,
        stride: int,
        neuron_factory: NeuronFactory,
        norm: str,
        timesteps: int,
        avg_down: bool = False,
    ) -> None:
        super().__init__()
        bn = _block_norms(norm, cout, timesteps, neuron_factory.v_threshold)
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = bn()
        self.sn1 = neuron_factory.conv()
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = bn(residual=True)
        self.sn2 = neuron_factory.conv()
        self.shortcut: nn.Module | None = None
        self.shortcut_bn: nn.Module | None = None
        if stride != 1 or cin != cout:
            if avg_down and stride != 1:
                self.shortcut = nn.Sequential(
                    nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
                    conv1x1(cin, cout),
                )
            else:
                self.shortcut = conv1x1(cin, cout, stride)
            self.shortcut_bn = bn(residual=True)

    def forward(self, s: Tensor) -> Tensor:
        return self.describe(RUN, "", s)

    def merge_identity(self, receiver: str, merge: nn.Module) -> bool:
        """Put ``merge`` on the identity shortcut that feeds the neuron ``receiver`` (its name
        in this block), if that is this block's merging neuron and its shortcut is the
        identity; True where it did. Deployment splits a multi-plane neuron's spikes and
        merges the planes this way (:func:`multispike.deploy.split_planes`), without
        knowing the block's attribute names."""
        if receiver != "sn2" or self.shortcut is not None:
            return False
        self.shortcut, self.shortcut_bn = merge, nn.Identity()
        return True

    def describe(self, g: Any, path: str, s: Any) -> Any:
        """The dataflow (see :class:`Record`); ``sn2`` sums its two inputs (no sum node)."""
        y = g.fold(self.conv1, f"{path}.conv1", s)
        y = g.call(self.bn1, f"{path}.bn1", y)
        y = g.call(self.sn1, f"{path}.sn1", y)
        y = g.fold(self.conv2, f"{path}.conv2", y)
        y = g.call(self.bn2, f"{path}.bn2", y)
        sc = _describe_shortcut(self, g, path, s) if self.shortcut is not None else s
        return g.call(self.sn2, f"{path}.sn2", g.add(y, sc))


def _describe_shortcut(block: nn.Module, g: Any, path: str, s: Any) -> Any:
    """A block's shortcut branch reading ``s``: its layer(s), then its BN if it has one.

    A sequential shortcut (average pooling, then a 1×1 convolution) is one ``fold`` node per
    layer, ``{path}.shortcut.{i}``; any other shortcut module (a convolution, a deploy plane
    merge) is one ``fold`` node ``{path}.shortcut``.
    """
    sc = block.shortcut
    if isinstance(sc, nn.Sequential):
        for i, layer in enumerate(sc):
            s = g.fold(layer, f"{path}.shortcut.{i}", s)
    else:
        s = g.fold(sc, f"{path}.shortcut", s)
    if block.shortcut_bn is not None:
        s = g.call(block.shortcut_bn, f"{path}.shortcut_bn", s)
    return s
