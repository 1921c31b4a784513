"""VGG-style spiking nets of MT-SNN Table 1 (and the PLIF paper's CIFAR-10 / CIFAR10-DVS nets).

Architecture (MT-SNN Sec 5.1): stages of conv3x3-BN-neuron separated by 2x2 pooling (after
every stage), then two fully-connected layers, the first hidden (followed by a neuron), the
second the output. The first conv-BN-neuron is the encoder. As in the PLIF paper code, the
convolutions have no bias and a dropout whose mask is shared over T sits before each FC::

    [B, C, H, W] ─stem conv (once)─► [T, B, c1, H, W]
      ─► {BN ─ neuron ─ conv}… ─ pool ─► … ─► [T, B, c, H/2^S, W/2^S]
      ─► flatten ─ dropout ─ FC(hidden) ─ neuron ─ dropout ─ FC(K) ─► [T, B, K]   (output A)
                                                  ─ FC(K·G) ─ neuron ─ vote ─► [T, B, K] (B)

=========  ===============  =====================  ======  =========  =====================
key        input            convs per stage        FC      params     source
=========  ===============  =====================  ======  =========  =====================
vgg8       3×32×32          3, 3 (256, 256)        2048    36.72M¹    PLIF paper CIFAR-10 net
vgg9       3×32×32          2, 2, 3 (256,512,512)  1024    19.72M¹    MT-SNN Table 1
vgg12      2×128×128        2,2,3,3,3 (128 each)   512     2.88M²     MT-SNN Table 1 (DVS)
=========  ===============  =====================  ======  =========  =====================

¹ with a 100-wide output layer (``num_classes=100``, or 10 classes voting in groups of 10);
² 10 classes with the voting layer (``output="vote"``, 100 output neurons).

Example::

    >>> import torch
    >>> from multispike.models import create
    >>> model = create("vgg9", num_classes=100, timesteps=2)
    >>> model(torch.rand(2, 3, 32, 32)).shape          # [T, B, K]
    torch.Size([2, 2, 100])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from multispike.errors import ConfigError, InputError
from multispike.layers import (
    ConvUnit,
    TimeDropout,
    TimeFold,
    build_norm,
    conv3x3,
    describe_sequence,
)
from multispike.models.base import MT_SNN_DEFAULTS, Head, SpikingModel
from multispike.models.registry import register_model


@dataclass(frozen=True)
class VGGLayout:
    """The layout of one VGG: output channels of each conv, per stage, the hidden FC width and
    the model's defaults."""

    name: str
    stages: tuple[tuple[int, ...], ...]
    hidden: int
    defaults: dict[str, Any] = field(default_factory=dict)


def vgg_defaults(**overrides: Any) -> dict[str, Any]:
    """MT-SNN defaults plus the VGG options: ``input_size`` 32, ``dropout`` 0.5 (PLIF paper),
    ``pool`` ``"max"`` (PLIF paper)."""
    return {**MT_SNN_DEFAULTS, "input_size": 32, "dropout": 0.5, "pool": "max",
            "fc_norm": False, **overrides}


POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class VGG(SpikingModel):
    """Spiking VGG: stages of conv-BN-neuron and pooling, one hidden FC, an output layer.

    Options (keyword-only, ``None`` = the layout's default) are those of
    :func:`~multispike.models.create` plus:

    - ``input_size``: side of the square input the first FC is sized for;
    - ``dropout``: drop probability before each FC (mask shared over T);
    - ``pool``: ``"max"`` or ``"avg"`` pooling between stages;
    - ``fc_norm``: BN between the hidden FC and its neuron (off in the papers' VGGs; on in
      ``digits_net``, whose hidden FC sees only 512 sparse inputs and would otherwise stay
      below threshold, outside the surrogate window, with no gradient to learn from).

    Remaining keyword arguments are neuron options (``deltas``, ``learn_amplitude``, ...).
    """

    family_options = ("input_size", "dropout", "pool", "fc_norm")

    def __init__(self, layout: VGGLayout, **kwargs: Any) -> None:
        super().__init__(layout, kwargs)
        o = self.model_args
        neurons, steps = self.neuron_factory, o["timesteps"]

        def norm_layer(c: int) -> nn.Module:
            return build_norm(o["norm"], c, timesteps=steps, v_threshold=neurons.v_threshold)

        first = layout.stages[0][0]
        self.stem_conv = conv3x3(self.in_channels, first)  # the encoder: sees the analog image
        self.stem_norm = norm_layer(first)
        self.stem_act = neurons.conv()
        layers: list[nn.Module] = []
        cin = first
        for i, stage in enumerate(layout.stages):
            for j, cout in enumerate(stage):
                if i == j == 0:
                    continue  # the stem
                layers.append(ConvUnit(conv3x3(cin, cout), norm_layer(cout), neurons.conv()))
                cin = cout
            layers.append(TimeFold(POOLS[o["pool"]](2, 2)))
        self.features = nn.Sequential(*layers)
        size = o["input_size"]
        side = size // 2 ** len(layout.stages)
        self.drop1 = TimeDropout(o["dropout"])
        self.fc1 = nn.Linear(cin * side * side, layout.hidden)
        self.fc1_norm = norm_layer(layout.hidden) if o["fc_norm"] else nn.Identity()
        self.fc1_act = neurons.fc()
        self.drop2 = TimeDropout(o["dropout"])
        self.head = Head(
            layout.hidden,
            self.num_classes,
            output=o["output"],
            vote_group=o["vote_group"],
            neuron_factory=neurons,
        )
        self.input_size = (size, size)

    @classmethod
    def check_family_options(cls, layout: Any, opts: dict[str, Any]) -> None:
        size, n_pools = opts["input_size"], len(layout.stages)
        if isinstance(size, bool) or not isinstance(size, int) or size % 2**n_pools or size < 1:
            raise ConfigError(
                f"{layout.name}: input_size must be a positive multiple of {2**n_pools} "
                f"({n_pools} poolings), got {size!r}"
            )
        if opts["pool"] not in POOLS:
            raise ConfigError(f"{layout.name}: pool must be 'max' or 'avg', got {opts['pool']!r}")
        p = opts["dropout"]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ConfigError(f"{layout.name}: dropout must lie in [0, 1), got {p!r}")

    def check_size(self, h: int, w: int) -> None:
        if (h, w) != self.input_size:
            s = self.input_size[0]
            hint = f"create it with input_size={h}" if h == w else "resize to a square image"
            raise InputError(
                f"{self.name} was built for {s}x{s} images (its first FC is sized for them), "
                f"got {h}x{w}; {hint}"
            )

    def describe(self, g: Any, y: Any) -> Any:
        """Stem conv output ``[T, B, c1, H, W]`` → ``[T, B, K]`` (see ``SpikingModel.describe``)."""
        y = g.call(self.stem_norm, "stem_norm", y)
        y = g.call(self.stem_act, "stem_act", y)  # [T, B, c1, H, W]
        y = describe_sequence(g, "features", self.features, y)  # [T, B, c, H/2^S, W/2^S]
        z = g.flatten(y)  # [T, B, c, h, w] -> [T, B, c*h*w]
        z = g.call(self.drop1, "drop1", z)
        z = g.call(self.fc1, "fc1", z)
        z = g.call(self.fc1_norm, "fc1_norm", z)
        z = g.call(self.fc1_act, "fc1_act", z)  # [T, B, hidden]
        z = g.call(self.drop2, "drop2", z)
        return self.head.describe(g, "head", z)  # [T, B, K]


VGG8 = VGGLayout("vgg8", ((256,) * 3, (256,) * 3), 2048, vgg_defaults())
VGG9 = VGGLayout("vgg9", ((256,) * 2, (512,) * 2, (512,) * 3), 1024, vgg_defaults())
VGG12 = VGGLayout(
    "vgg12",
    ((128,) * 2, (128,) * 2, (128,) * 3, (128,) * 3, (128,) * 3),
    512,
    vgg_defaults(in_channels=2, input_size=128, output="vote", timesteps=5),
)


@register_model
def vgg8(**options: Any) -> VGG:
    """VGG-8 of MT-SNN Table 1 = the PLIF paper's CIFAR-10 net (Fang et al. 2021).

    ``{c256-BN-PLIF}×3 - MP - {c256-BN-PLIF}×3 - MP - DP - FC2048 - PLIF - DP - FC``; 92% of its
    parameters sit in the first FC. 36.72M parameters with a 100-wide output layer.
    """
    return VGG(VGG8, **options)


@register_model
def vgg9(**options: Any) -> VGG:
    """VGG-9 of MT-SNN Table 1: stages of 2, 2, 3 convs at 256, 512, 512, FC 1024; 19.72M
    parameters with ``num_classes=100``. The default CIFAR model."""
    return VGG(VGG9, **options)


@register_model
def vgg12(**options: Any) -> VGG:
    """VGG-12 of MT-SNN Table 1 for CIFAR10-DVS (2×128×128 event frames): five stages of
    2, 2, 3, 3, 3 convs at 128, FC 512, voting output (100 neurons for 10 classes); 2.88M."""
    return VGG(VGG12, **options)
