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

from torch import Tensor, nn

from multispike.errors import ConfigError, InputError
from multispike.layers import ConvUnit, TimeDropout, TimeFold, build_norm, conv3x3
from multispike.models.base import MT_SNN_DEFAULTS, Head, SpikingModel
from multispike.models.registry import register_model


@dataclass(frozen=True)
class VGGSpec:
    """One VGG configuration: output channels of each conv, per stage, and the hidden FC width."""

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

    Options (keyword-only, ``None`` = the spec's default) are those of
    :func:`~multispike.models.create` plus:

    - ``input_size``: side of the square input the first FC is sized for;
    - ``dropout``: drop probability before each FC (mask shared over T);
    - ``pool``: ``"max"`` or ``"avg"`` pooling between stages;
    - ``fc_norm``: BN between the hidden FC and its neuron (off in the papers' VGGs; on in
      ``digits_net``, whose hidden FC sees only 512 sparse inputs and would otherwise stay
      below threshold, outside the surrogate window, with no gradient to learn from).

    Remaining keyword arguments are neuron options (``deltas``, ``learn_amplitude``, ...).
    """

    def __init__(
        self,
        spec: VGGSpec,
        *,
        num_classes: int | None = None,
        timesteps: int | None = None,
        firing: str | None = None,
        neuron: Any = None,
        norm: str | None = None,
        output: str | None = None,
        mt_on_fc: bool | None = None,
        in_channels: int | None = None,
        vote_group: int | None = None,
        input_size: int | None = None,
        dropout: float | None = None,
        pool: str | None = None,
        fc_norm: bool | None = None,
        **neuron_options: Any,
    ) -> None:
        options = {
            "num_classes": num_classes,
            "timesteps": timesteps,
            "firing": firing,
            "neuron": neuron,
            "norm": norm,
            "output": output,
            "mt_on_fc": mt_on_fc,
            "in_channels": in_channels,
            "vote_group": vote_group,
            "input_size": input_size,
            "dropout": dropout,
            "pool": pool,
            "fc_norm": fc_norm,
        }
        super().__init__(spec.name, spec.defaults, options, neuron_options)
        o = self.options
        size, n_pools = o["input_size"], len(spec.stages)
        if isinstance(size, bool) or not isinstance(size, int) or size % 2**n_pools or size < 1:
            raise ConfigError(
                f"{spec.name}: input_size must be a positive multiple of {2**n_pools} "
                f"({n_pools} poolings), got {size!r}"
            )
        if o["pool"] not in POOLS:
            raise ConfigError(f"{spec.name}: pool must be 'max' or 'avg', got {o['pool']!r}")
        neurons, steps = self.neurons, o["timesteps"]

        def norm_layer(c: int) -> nn.Module:
            return build_norm(o["norm"], c, timesteps=steps, v_threshold=neurons.v_threshold)

        first = spec.stages[0][0]
        self.stem_conv = conv3x3(self.in_channels, first)  # the encoder: sees the analog image
        self.stem_norm = norm_layer(first)
        self.stem_act = neurons.conv()
        layers: list[nn.Module] = []
        cin = first
        for i, stage in enumerate(spec.stages):
            for j, cout in enumerate(stage):
                if i == j == 0:
                    continue  # the stem
                layers.append(ConvUnit(conv3x3(cin, cout), norm_layer(cout), neurons.conv()))
                cin = cout
            layers.append(TimeFold(POOLS[o["pool"]](2, 2)))
        self.features = nn.Sequential(*layers)
        side = size // 2**n_pools
        self.drop1 = TimeDropout(o["dropout"])
        self.fc1 = nn.Linear(cin * side * side, spec.hidden)
        self.fc1_norm = norm_layer(spec.hidden) if o["fc_norm"] else nn.Identity()
        self.fc1_act = neurons.fc()
        self.drop2 = TimeDropout(o["dropout"])
        self.head = Head(
            spec.hidden,
            self.num_classes,
            output=o["output"],
            vote_group=o["vote_group"],
            neurons=neurons,
        )
        self.input_size = (size, size)

    def check_size(self, h: int, w: int) -> None:
        if (h, w) != self.input_size:
            s = self.input_size[0]
            hint = f"create it with input_size={h}" if h == w else "resize to a square image"
            raise InputError(
                f"{self.name} was built for {s}x{s} images (its first FC is sized for them), "
                f"got {h}x{w}; {hint}"
            )

    def forward_features(self, y: Tensor) -> Tensor:
        y = self.stem_act(self.stem_norm(y))  # [T, B, c1, H, W]
        y = self.features(y)  # [T, B, c, H/2^S, W/2^S]
        z = y.flatten(2)  # [T, B, c, h, w] -> [T, B, c*h*w]
        z = self.fc1_act(self.fc1_norm(self.fc1(self.drop1(z))))  # [T, B, hidden]
        return self.head(self.drop2(z))  # [T, B, K]


VGG8 = VGGSpec("vgg8", ((256,) * 3, (256,) * 3), 2048, vgg_defaults())
VGG9 = VGGSpec("vgg9", ((256,) * 2, (512,) * 2, (512,) * 3), 1024, vgg_defaults())
VGG12 = VGGSpec(
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
