"""Spiking ResNets of both papers.

Two residual styles (blocks in :mod:`multispike.layers`):

- membrane level (MS-ResNet, Hu et al. 2021; MT-SNN ref [31]): the residual stream carries
  real-valued membrane inputs, ``x + BN(Conv(SN(BN(Conv(SN(x))))))``
  (:class:`~multispike.layers.MembraneBlock`); a neuron before global pooling turns the stream
  into spikes. Used by ``resnet20`` (MT-SNN Table 2).
- spike level (tdBN, Zheng et al. 2021; the Ternary Spike code): the stream carries spikes,
  ``SN(BN(Conv(SN(BN(Conv(s))))) + shortcut(s))`` (:class:`~multispike.layers.SpikeBlock`).
  Used by ``resnet19``, ``resnet20m``, ``resnet18``, ``resnet34``.

After the last stage: global average pooling over H, W, then the output layer (A: analog
membrane, B: neurons + voting). Shapes: ``[B, C, H, W]`` or ``[T, B, C, H, W]`` in,
``[T, B, K]`` out.

=========  ================================================  =========  ========================
key        stem → stages (blocks × width)                    params¹    source
=========  ================================================  =========  ========================
resnet20   3×3·64 → 3×64, 3×128, 3×256 (membrane residual)   4.66M      MT-SNN Table 2
resnet19   3×3·128 → 3×128, 3×256, 2×512                     12.57M     tdBN; Ternary Tab 2, 4
resnet20m  3 × 3×3·64, avgpool → 2×64, 2×128, 2×256, 2×512   11.25M     Sengupta 2019; Ternary
resnet18   7×7·64/2, avgpool → 2×64, 2×128, 2×256, 2×512     11.69M     SEW / Ternary Tab 1, 3
resnet34   7×7·64/2, avgpool → 3×64, 4×128, 6×256, 3×512     21.80M     SEW / Ternary Tab 1, 3
=========  ================================================  =========  ========================

¹ at the default number of classes (10; 1000 for resnet18/34); see docs/models.md.

Example::

    >>> import torch
    >>> from multispike.models import create
    >>> model = create("resnet19", num_classes=100, learn_amplitude=True)   # trainable ternary
    >>> model(torch.rand(2, 3, 16, 16)).shape      # [B, C, H, W] -> [T, B, K]; CIFAR is 32×32
    torch.Size([2, 2, 100])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from multispike.errors import ConfigError
from multispike.layers import (
    ConvUnit,
    MembraneBlock,
    SpikeBlock,
    TimeFold,
    build_norm,
    conv3x3,
    describe_sequence,
    get_norm,
)
from multispike.models.base import MT_SNN_DEFAULTS, TERNARY_DEFAULTS, Head, SpikingModel
from multispike.models.registry import register_model


@dataclass(frozen=True)
class ResNetLayout:
    """The layout of one ResNet: stem, stage widths, blocks per stage, strides, block kind and
    the model's defaults.

    ``stem``: ``"ms"`` (conv3x3-BN, no neuron: the stream starts as membrane input),
    ``"cifar"`` (conv3x3-BN-neuron), ``"sengupta"`` (three conv3x3-BN-neuron at the stem
    width, then 2×2 average pooling) or ``"imagenet"`` (conv7x7/2-BN-neuron, 3×3/2 average
    pooling). ``block``: ``"membrane"`` or ``"spike"``. ``avg_down``: downsampling shortcuts
    average-pool then 1×1-convolve (Sengupta) instead of a strided 1×1 convolution.
    """

    name: str
    stem: str
    stem_width: int
    widths: tuple[int, ...]
    blocks: tuple[int, ...]
    strides: tuple[int, ...]
    block: str
    avg_down: bool = False
    input_size: int = 32
    defaults: dict[str, Any] = field(default_factory=dict)


#: options of every ResNet besides the common ones: ``stem_norm`` (None: as ``norm``; the BN of
#: every stem conv: one, or resnet20m's three; the Ternary Spike code normalises resnet20m's
#: stem per time step, ``"step-stats"``), ``init`` (``"default"``: PyTorch's;
#: ``"kaiming-fan-out"``: He normal, fan-out, as the Ternary Spike code initialises its
#: convolutions) and ``zero_init_residual`` (torchvision's name: the last BN of each residual
#: branch starts with weight 0, so each block starts as its shortcut; the Ternary Spike code's
#: resnet20m does so)
RESNET_OPTIONS: dict[str, Any] = {"stem_norm": None, "init": "default",
                                  "zero_init_residual": False}
INITS = ("default", "kaiming-fan-out")


def check_init(init: Any, name: str) -> None:
    """``init`` must be one of :data:`INITS` (one-line :class:`ConfigError` naming them)."""
    if init not in INITS:
        raise ConfigError(f"{name}: unknown init {init!r}; choose one of {', '.join(INITS)}")


def init_weights(model: nn.Module, init: str, name: str) -> None:
    """Initialise ``model``'s convolutions by the scheme ``init`` (see :data:`RESNET_OPTIONS`)."""
    check_init(init, name)
    if init == "kaiming-fan-out":
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def zero_init_residual(blocks: nn.Module) -> None:
    """Set the weight (BN scale ``γ``) of the last BN of every residual branch, ``bn2`` of each
    block in ``blocks``, to 0: per-step BN's every step, tdBN's ``λ``. Each block's branch then
    starts at its BN bias, and the block at its shortcut (torchvision's
    ``zero_init_residual``)."""
    for block in blocks.modules():
        if isinstance(block, (MembraneBlock, SpikeBlock)):
            for name, p in block.bn2.named_parameters():
                if name.rsplit(".", 1)[-1] == "weight":
                    nn.init.zeros_(p)


class ResNet(SpikingModel):
    """Spiking ResNet of a :class:`ResNetLayout`.

    Options (keyword-only, ``None`` = the layout's default) are those of
    :func:`~multispike.models.create`, ``stem_norm``, ``init`` and ``zero_init_residual`` (see
    :data:`RESNET_OPTIONS`); ``resnet20`` also takes ``shortcut_kernel`` (3, the default, gives
    MT-SNN Table 2's 4.66M parameters; 1 gives 4.34M). Remaining keyword arguments are neuron
    options.
    """

    family_options = ("shortcut_kernel", "stem_norm", "init", "zero_init_residual")
    family_defaults = RESNET_OPTIONS

    def __init__(self, layout: ResNetLayout, **kwargs: Any) -> None:
        super().__init__(layout, kwargs)
        o = self.model_args
        neurons, steps = self.neuron_factory, o["timesteps"]

        w = layout.stem_width
        if layout.stem == "imagenet":
            self.stem_conv = nn.Conv2d(self.in_channels, w, 7, stride=2, padding=3, bias=False)
        else:
            self.stem_conv = conv3x3(self.in_channels, w)
        stem_norm = o["stem_norm"] or o["norm"]

        def stem_norm_layer(c: int) -> nn.Module:
            return build_norm(stem_norm, c, timesteps=steps, v_threshold=neurons.v_threshold)

        self.stem_norm = stem_norm_layer(w)
        self.stem_act = nn.Identity() if layout.stem == "ms" else neurons.conv()
        rest: list[nn.Module] = []
        if layout.stem == "sengupta":  # every stem BN is the stem's norm
            rest += [ConvUnit(conv3x3(w, w), stem_norm_layer(w), neurons.conv())
                     for _ in range(2)]
            rest.append(TimeFold(nn.AvgPool2d(2)))
        elif layout.stem == "imagenet":
            rest.append(TimeFold(nn.AvgPool2d(3, 2, 1)))
        self.stem_rest = nn.Sequential(*rest)

        blocks: list[nn.Module] = []
        cin = w
        for width, n, stride in zip(layout.widths, layout.blocks, layout.strides, strict=True):
            for i in range(n):
                s = stride if i == 0 else 1
                if layout.block == "membrane":
                    blk: nn.Module = MembraneBlock(
                        cin,
                        width,
                        stride=s,
                        neuron_factory=neurons,
                        norm=o["norm"],
                        timesteps=steps,
                        shortcut_kernel=o["shortcut_kernel"],
                    )
                else:
                    blk = SpikeBlock(
                        cin,
                        width,
                        stride=s,
                        neuron_factory=neurons,
                        norm=o["norm"],
                        timesteps=steps,
                        avg_down=layout.avg_down,
                    )
                blocks.append(blk)
                cin = width
        self.stages = nn.Sequential(*blocks)
        # membrane residual: one neuron turns the stream into spikes before pooling
        self.final_act = neurons.conv() if layout.block == "membrane" else nn.Identity()
        self.head = Head(
            cin,
            self.num_classes,
            output=o["output"],
            vote_group=o["vote_group"],
            neuron_factory=neurons,
        )
        down = math.prod(layout.strides) * {"imagenet": 4, "sengupta": 2}.get(layout.stem, 1)
        self.min_input_size = down
        init_weights(self, o["init"], layout.name)
        if o["zero_init_residual"]:
            zero_init_residual(self.stages)
        self.input_size = (layout.input_size, layout.input_size)

    @classmethod
    def check_family_options(cls, layout: Any, opts: dict[str, Any]) -> None:
        k = opts.get("shortcut_kernel")
        if layout.block == "membrane" and k not in (1, 3):
            raise ConfigError(f"{layout.name}: shortcut_kernel must be 1 or 3, got {k!r}")
        if opts["stem_norm"] is not None:
            get_norm(opts["stem_norm"])
        check_init(opts["init"], layout.name)

    def describe(self, g: Any, y: Any) -> Any:
        """Stem conv output ``[T, B, w, H, W]`` → ``[T, B, K]`` (see ``SpikingModel.describe``)."""
        y = g.call(self.stem_norm, "stem_norm", y)
        y = g.call(self.stem_act, "stem_act", y)
        y = describe_sequence(g, "stem_rest", self.stem_rest, y)  # [T, B, w, H', W']
        for i, block in enumerate(self.stages):
            y = block.describe(g, f"stages.{i}", y)
        y = g.call(self.final_act, "final_act", y)  # [T, B, C, h, w]
        z = g.gap(y)  # global average pooling: [T, B, C, h, w] -> [T, B, C]
        return self.head.describe(g, "head", z)  # [T, B, K]


RESNET20 = ResNetLayout(
    "resnet20",
    "ms",
    64,
    (64, 128, 256),
    (3, 3, 3),
    (1, 2, 2),
    "membrane",
    defaults={**MT_SNN_DEFAULTS, "shortcut_kernel": 3},
)
RESNET19 = ResNetLayout(
    "resnet19",
    "cifar",
    128,
    (128, 256, 512),
    (3, 3, 2),
    (1, 2, 2),
    "spike",
    defaults=dict(TERNARY_DEFAULTS),
)
RESNET20M = ResNetLayout(
    "resnet20m",
    "sengupta",
    64,
    (64, 128, 256, 512),
    (2, 2, 2, 2),
    (1, 2, 2, 2),
    "spike",
    avg_down=True,
    defaults=dict(TERNARY_DEFAULTS),
)
_IMAGENET = {**TERNARY_DEFAULTS, "num_classes": 1000, "timesteps": 4}
RESNET18 = ResNetLayout(
    "resnet18",
    "imagenet",
    64,
    (64, 128, 256, 512),
    (2, 2, 2, 2),
    (1, 2, 2, 2),
    "spike",
    input_size=224,
    defaults=_IMAGENET,
)
RESNET34 = ResNetLayout(
    "resnet34",
    "imagenet",
    64,
    (64, 128, 256, 512),
    (3, 4, 6, 3),
    (1, 2, 2, 2),
    "spike",
    input_size=224,
    defaults=_IMAGENET,
)


@register_model
def resnet20(**options: Any) -> ResNet:
    """ResNet-20 of MT-SNN Table 2: membrane-level residuals (MS-ResNet), 3 stages of 3 blocks
    at 64, 128, 256 filters; 4.66M parameters with 3×3 downsampling shortcuts."""
    return ResNet(RESNET20, **options)


@register_model
def resnet19(**options: Any) -> ResNet:
    """ResNet-19 of tdBN (Zheng et al. 2021) as in the Ternary Spike code: stem 3→128, stages
    of 3, 3, 2 basic blocks at 128, 256, 512, one FC (tdBN adds a hidden FC 256)."""
    return ResNet(RESNET19, **options)


@register_model
def resnet20m(**options: Any) -> ResNet:
    """ResNet-20 of Sengupta et al. 2019 used by Ternary Spike (CIFAR, DVS, Table 5 energy):
    three 3×3 stem convs at 64, 2×2 average pooling, four stages of two blocks at 64, 128,
    256, 512 with average-pool + 1×1 conv shortcuts. 1.77M + 214M MACs on 32×32."""
    return ResNet(RESNET20M, **options)


@register_model
def resnet18(**options: Any) -> ResNet:
    """Spiking ResNet-18 for ImageNet (Ternary Spike Tables 1, 3): 7×7/2 stem, 3×3/2 average
    pooling, 2, 2, 2, 2 blocks at 64…512, spike-level residuals; T = 4."""
    return ResNet(RESNET18, **options)


@register_model
def resnet34(**options: Any) -> ResNet:
    """Spiking ResNet-34 for ImageNet (Ternary Spike Tables 1, 3): as resnet18 with 3, 4, 6, 3
    blocks; T = 4."""
    return ResNet(RESNET34, **options)
