"""Building blocks of the zoo: time folding, BN variants, voting, neuron slots, residual blocks.

Every layer here takes time-first tensors ``[T, B, ...]``. Stateless layers (convolution, BN,
pooling) fold T into the batch dimension and run once on ``[T·B, ...]`` (one large
convolution instead of T small ones; the SpikingJelly ``SeqToANNContainer`` idea). Neurons
keep the time dimension: their membrane runs over T.

===========================  ==============================================================
layer                        what it does
===========================  ==============================================================
:class:`TimeFold`            ``[T, B, ...] → [T·B, ...] → module → [T, B, ...]``
:class:`BatchNormFold`       BN with statistics over ``B·T`` (the Ternary Spike code's way;
                             default, ``norm="fold"``)
:class:`BatchNormPerStep`    one BN per time step (``norm="per-step"``)
:class:`BatchNormStepStats`  one BN, batch statistics taken at each time step apart (the
                             Ternary Spike code's ``SpikeConv`` around ``BatchNorm2d``;
                             ``norm="step-stats"``)
:class:`TDBatchNorm`         tdBN of Zheng et al. 2021: statistics over ``(T, B, H, W)``,
                             normalised value scaled by ``α·V_th`` (``norm="tdbn"``)
:class:`TimeDropout`         dropout whose mask is shared by all time steps (PLIF paper)
:class:`VotingLayer`         PLIF paper voting: mean over groups of ``group`` output neurons
:class:`NeuronFactory`       the one place that builds every neuron slot of a model
:class:`MembraneBlock`       MS-ResNet block, residual stream of membrane inputs
:class:`SpikeBlock`          tdBN / Ternary Spike block, residual stream of spikes
===========================  ==============================================================

Example::

    >>> conv = TimeFold(nn.Conv2d(3, 8, 3, padding=1))
    >>> x = torch.rand(4, 2, 3, 16, 16)          # [T, B, C, H, W]
    >>> y = BatchNormFold(8)(conv(x))            # [T, B, 8, 16, 16]
    >>> VotingLayer(10, group=10)(torch.rand(4, 2, 100)).shape
    torch.Size([4, 2, 10])
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import Tensor, nn

from multispike.errors import ConfigError
from multispike.neurons import Neuron, get_neuron_class

__all__ = [
    "ANN",
    "FIRINGS",
    "NORMS",
    "BatchNormFold",
    "BatchNormPerStep",
    "BatchNormStepStats",
    "ConvUnit",
    "MembraneBlock",
    "NeuronFactory",
    "SpikeBlock",
    "TDBatchNorm",
    "TimeDropout",
    "TimeFold",
    "VotingLayer",
    "build_norm",
    "conv1x1",
    "conv3x3",
    "fold_time",
    "get_norm",
    "neuron_option_names",
]


# -- time folding ------------------------------------------------------------------------------
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


# -- batch normalisation -----------------------------------------------------------------------
def _as_4d(x: Tensor) -> Tensor:
    """``[N, C]`` → ``[N, C, 1, 1]`` so one BatchNorm2d serves conv and FC layers alike."""
    return x[:, :, None, None] if x.dim() == 2 else x  # [N, C] -> [N, C, 1, 1]


def _from_4d(y: Tensor, dim: int) -> Tensor:
    return y.flatten(1) if dim == 2 else y  # [N, C, 1, 1] -> [N, C]


class BatchNormFold(nn.Module):
    """BN over ``B·T`` (default): a plain ``BatchNorm2d`` on the folded tensor.

    Statistics (and running averages) are shared by all time steps, as in the Ternary Spike
    code and SpikingJelly. ``[T, B, C, H, W]`` or ``[T, B, C]`` in, same shape out.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)

    def forward(self, x: Tensor) -> Tensor:
        t, b = x.shape[:2]
        y = x.flatten(0, 1)  # [T, B, C, ...] -> [T*B, C, ...]
        y = _from_4d(self.bn(_as_4d(y)), y.dim())
        return y.unflatten(0, (t, b))  # [T*B, C, ...] -> [T, B, C, ...]


class BatchNormStepStats(BatchNormFold):
    """One BN whose training statistics are taken at each time step apart.

    The Ternary Spike code wraps its stem's ``Conv2d`` + ``BatchNorm2d`` in ``SpikeConv``,
    which calls them once per time step: the affine parameters and running averages are
    shared, but each step is normalised with its own batch mean and variance (the running
    averages take T updates per batch). For static images every step is the same, so this
    equals :class:`BatchNormFold`; for event frames it does not. In eval mode it is exactly a
    :class:`BatchNormFold` (the running averages serve every step), which is how deployment
    folds it.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        outs = [_from_4d(self.bn(_as_4d(x[t])), x.dim() - 1) for t in range(x.shape[0])]
        return torch.stack(outs)  # T x [B, C, ...] -> [T, B, C, ...]


class BatchNormPerStep(nn.Module):
    """One BN per time step: step ``t`` uses its own statistics and affine parameters.

    Built with ``timesteps`` BNs. When a model runs with more steps than that (``model.timesteps``
    raised after training), steps ``t >= timesteps`` reuse the **last** step's BN: the last
    trained step is the closest to a converged membrane. Fewer steps use the first ones.
    """

    def __init__(
        self, num_features: int, timesteps: int, eps: float = 1e-5, momentum: float = 0.1
    ) -> None:
        super().__init__()
        if timesteps < 1:
            raise ConfigError(f"per-step BN needs timesteps >= 1, got {timesteps}")
        self.bns = nn.ModuleList(
            nn.BatchNorm2d(num_features, eps=eps, momentum=momentum) for _ in range(timesteps)
        )

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.bns) - 1
        outs = [
            _from_4d(self.bns[min(t, last)](_as_4d(x[t])), x.dim() - 1) for t in range(x.shape[0])
        ]
        return torch.stack(outs)  # T x [B, C, ...] -> [T, B, C, ...]


class TDBatchNorm(nn.Module):
    """tdBN (Zheng et al. 2021, Eq 6-7): ``y = λ·α·V_th·(x − E[x])/√(Var[x] + ε) + β``.

    Mean and variance per channel are taken over ``(T, B, H, W)`` (the same statistics as
    :class:`BatchNormFold`); the normalised value is scaled by ``α·V_th`` before the learnable
    affine ``λ, β``. tdBN uses ``α = 1`` except before a residual addition, where
    ``α = 1/√2``. The effective BN scale is ``λ·α·V_th`` (what a BN-folding step must use).
    """

    def __init__(
        self,
        num_features: int,
        *,
        v_threshold: float = 1.0,
        alpha: float = 1.0,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum, affine=False)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.v_threshold = float(v_threshold)
        self.alpha = float(alpha)

    def forward(self, x: Tensor) -> Tensor:
        t, b = x.shape[:2]
        y = _as_4d(x.flatten(0, 1))  # [T, B, C, ...] -> [T*B, C, H, W] (or [T*B, C, 1, 1])
        scale = (self.weight * (self.alpha * self.v_threshold))[:, None, None]  # [C, 1, 1]
        y = self.bn(y) * scale + self.bias[:, None, None]
        y = _from_4d(y, x.dim() - 1)
        return y.unflatten(0, (t, b))  # [T*B, C, ...] -> [T, B, C, ...]

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, alpha={self.alpha:g}, v_threshold={self.v_threshold:g}"


NORMS: dict[str, type[nn.Module]] = {
    "fold": BatchNormFold,
    "per-step": BatchNormPerStep,
    "tdbn": TDBatchNorm,
    "step-stats": BatchNormStepStats,
}


def _norm_key(name: str) -> str:
    key = str(name).lower().replace("_", "-")
    if key not in NORMS:
        raise ConfigError(f"unknown norm {name!r}; choose one of {', '.join(NORMS)}")
    return key


def get_norm(name: str) -> type[nn.Module]:
    """The BN class of a name: ``"fold"`` (default), ``"per-step"``, ``"tdbn"`` or
    ``"step-stats"``."""
    return NORMS[_norm_key(name)]


def build_norm(
    name: str,
    num_features: int,
    *,
    timesteps: int = 1,
    v_threshold: float = 1.0,
    alpha: float = 1.0,
) -> nn.Module:
    """Build a BN layer by name, passing each variant only the options it uses.

    ``timesteps`` sizes per-step BN; ``v_threshold`` and ``alpha`` scale tdBN.
    """
    key = _norm_key(name)
    if key == "per-step":
        return BatchNormPerStep(num_features, timesteps)
    if key == "tdbn":
        return TDBatchNorm(num_features, v_threshold=v_threshold, alpha=alpha)
    if key == "step-stats":
        return BatchNormStepStats(num_features)
    return BatchNormFold(num_features)


# -- output -------------------------------------------------------------------------------------
class VotingLayer(nn.Module):
    """PLIF paper voting layer: ``[..., num_classes·group] → [..., num_classes]``.

    Output neuron ``k·group + j`` (``j < group``) votes for class ``k``; a class's score is the
    mean of its group's spikes (SpikingJelly ``AvgPool1d(group, group)``).
    """

    def __init__(self, num_classes: int, group: int = 10) -> None:
        super().__init__()
        if num_classes < 1 or group < 1:
            raise ConfigError(f"voting needs num_classes, group >= 1, got {num_classes}, {group}")
        self.num_classes = int(num_classes)
        self.group = int(group)

    def forward(self, x: Tensor) -> Tensor:
        y = x.unflatten(-1, (self.num_classes, self.group))  # [..., K*G] -> [..., K, G]
        return y.mean(-1)  # [..., K, G] -> [..., K]

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, group={self.group}"


# -- neuron slots ------------------------------------------------------------------------------
#: the ANN twin's firing name: ReLU in every neuron slot, no spikes
ANN = "ann"
#: model-level firing names
FIRINGS: tuple[str, ...] = ("binary", "mt", "ternary", "ternary-mt", ANN)
_NOT_MT = {"mt": "binary", "ternary-mt": "ternary"}
_MODEL_LEVEL = {"firing", "check_input", "self"}


def neuron_option_names(cls: type[Neuron]) -> set[str]:
    """Keyword options a neuron class takes (its own and the base :class:`Neuron` ones)."""
    names: set[str] = set()
    for klass in (cls, Neuron):
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                names.add(p.name)
    return names - _MODEL_LEVEL


class NeuronFactory:
    """Builds every neuron slot of a model, so the per-layer choice lives in one place.

    Three kinds of slot:

    - ``conv()``: after each conv-BN (the MT-SNN "convolution layers");
    - ``fc()``: after the hidden fully-connected layer; with ``mt_on_fc=False`` the MT rules
      fall back to their single-threshold form there (``mt → binary``, ``ternary-mt →
      ternary``; MT-SNN Fig 5a/b ablation);
    - ``out()``: the output neuron before the voting layer (output mode B); an FC slot.

    With ``firing="ann"`` every hidden slot is ``nn.ReLU`` (the ANN twin), the output slot is
    the identity (logits stay signed), and neuron options are ignored. Neurons are built with
    ``check_input=False``: the model checks its input once.
    """

    def __init__(
        self,
        neuron: str | type[Neuron] = "plif",
        firing: str = "binary",
        *,
        mt_on_fc: bool = False,
        options: dict[str, Any] | None = None,
    ) -> None:
        key = str(firing).lower().replace("_", "-")
        if key not in FIRINGS:
            raise ConfigError(f"unknown firing {firing!r}; choose one of {', '.join(FIRINGS)}")
        self.cls = get_neuron_class(neuron)
        self.firing = key
        self.mt_on_fc = bool(mt_on_fc)
        self.options = dict(options or {})
        allowed = neuron_option_names(self.cls)
        unknown = sorted(set(self.options) - allowed)
        if unknown:
            raise ConfigError(
                f"unknown neuron option(s) {', '.join(unknown)} for {self.cls.__name__}; "
                f"choose from {', '.join(sorted(allowed))}"
            )
        if self.options.get("deltas") is not None and key not in ("mt", "ternary-mt", ANN):
            raise ConfigError(f"deltas apply to firing 'mt' and 'ternary-mt', not to {key!r}")
        #: firing threshold of the neurons (1.0 for the ANN twin); tdBN scales by it
        self.v_threshold = 1.0
        if not self.is_ann:
            self.v_threshold = self._make(self.firing).v_threshold  # validates the options

    @property
    def is_ann(self) -> bool:
        return self.firing == ANN

    def fc_firing(self) -> str:
        """The firing rule of FC slots: MT rules lose their extra thresholds unless mt_on_fc."""
        if self.mt_on_fc or self.is_ann:
            return self.firing
        return _NOT_MT.get(self.firing, self.firing)

    def _make(self, firing: str) -> Neuron:
        opts = dict(self.options)
        if firing not in ("mt", "ternary-mt"):
            opts.pop("deltas", None)
        return self.cls(firing=firing, check_input=False, **opts)

    def conv(self) -> nn.Module:
        """A neuron after a conv-BN (ReLU for the ANN twin)."""
        return nn.ReLU() if self.is_ann else self._make(self.firing)

    def fc(self) -> nn.Module:
        """A neuron after the hidden FC layer (ReLU for the ANN twin)."""
        return nn.ReLU() if self.is_ann else self._make(self.fc_firing())

    def out(self) -> nn.Module:
        """The output neuron before voting (identity for the ANN twin)."""
        return nn.Identity() if self.is_ann else self._make(self.fc_firing())


# -- residual blocks ---------------------------------------------------------------------------
def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


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
        return self.act(self.norm(fold_time(self.conv, x)))


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
        neurons: NeuronFactory,
        norm: str,
        timesteps: int,
        shortcut_kernel: int = 1,
    ) -> None:
        super().__init__()
        vth = neurons.v_threshold
        self.sn1 = neurons.conv()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = build_norm(norm, cout, timesteps=timesteps, v_threshold=vth)
        self.sn2 = neurons.conv()
        self.conv2 = conv3x3(cout, cout)
        half = 1 / math.sqrt(2)  # tdBN: α = 1/√2 before a residual addition
        self.bn2 = build_norm(norm, cout, timesteps=timesteps, v_threshold=vth, alpha=half)
        self.shortcut: nn.Module | None = None
        self.shortcut_bn: nn.Module | None = None
        if stride != 1 or cin != cout:
            if shortcut_kernel not in (1, 3):
                raise ConfigError(f"shortcut_kernel must be 1 or 3, got {shortcut_kernel}")
            pad = shortcut_kernel // 2
            self.shortcut = nn.Conv2d(
                cin, cout, shortcut_kernel, stride=stride, padding=pad, bias=False
            )
            self.shortcut_bn = build_norm(
                norm, cout, timesteps=timesteps, v_threshold=vth, alpha=half
            )

    def forward(self, x: Tensor) -> Tensor:
        s = self.sn1(x)
        y = self.sn2(self.bn1(fold_time(self.conv1, s)))
        y = self.bn2(fold_time(self.conv2, y))
        if self.shortcut is not None:
            assert self.shortcut_bn is not None
            x = self.shortcut_bn(fold_time(self.shortcut, s))
        return x + y


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
        neurons: NeuronFactory,
        norm: str,
        timesteps: int,
        avg_down: bool = False,
    ) -> None:
        super().__init__()
        vth = neurons.v_threshold
        half = 1 / math.sqrt(2)
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = build_norm(norm, cout, timesteps=timesteps, v_threshold=vth)
        self.sn1 = neurons.conv()
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = build_norm(norm, cout, timesteps=timesteps, v_threshold=vth, alpha=half)
        self.sn2 = neurons.conv()
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
            self.shortcut_bn = build_norm(
                norm, cout, timesteps=timesteps, v_threshold=vth, alpha=half
            )

    def forward(self, s: Tensor) -> Tensor:
        y = self.sn1(self.bn1(fold_time(self.conv1, s)))
        y = self.bn2(fold_time(self.conv2, y))
        if self.shortcut is not None:
            assert self.shortcut_bn is not None
            s = self.shortcut_bn(fold_time(self.shortcut, s))
        return self.sn2(y + s)
