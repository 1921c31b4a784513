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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from multispike.checks import positive_int
from multispike.errors import ConfigError
from multispike.functional.firing import FIRING_RULES, check_rule_options, firing_key
from multispike.neurons import Neuron, get_neuron_class

__all__ = [
    "ANN",
    "FIRINGS",
    "NORMS",
    "BatchNormFold",
    "BatchNormPerStep",
    "BatchNormStepStats",
    "ConvUnit",
    "GraphNode",
    "MembraneBlock",
    "NeuronFactory",
    "RUN",
    "Record",
    "Run",
    "SpikeBlock",
    "TDBatchNorm",
    "TimeDropout",
    "TimeFold",
    "VotingLayer",
    "build_norm",
    "describe_sequence",
    "conv1x1",
    "conv3x3",
    "fold_time",
    "get_norm",
    "neuron_option_names",
    "run_node",
]


# -- time folding ------------------------------------------------------------------------------
def fold_time(module: nn.Module, x: Tensor) -> Tensor:
    """Apply a stateless ``module`` to ``x`` ``[T, B, ...]`` with T folded into the batch."""
    t, b = x.shape[:2]
    y = module(x.flatten(0, 1))  # [T, B, ...] -> [T*B, ...] -> module -> [T*B, ...']
    return y.unflatten(0, (t, b))  # [T*B, ...'] -> [T, B, ...']


# -- graph descriptions ------------------------------------------------------------------------
# A model (and each block) writes its dataflow once, as a method ``describe(g, ...)`` that calls
# ``g.fold`` / ``g.call`` / ``g.add`` / ``g.flatten`` / ``g.gap``. Run with :data:`RUN` it
# computes tensors (that is the forward pass); run with a :class:`Record` it returns the graph
# as :class:`GraphNode` objects, which deployment, profiling and analysis read.
def _flatten(v: Tensor) -> Tensor:
    return v.flatten(2)  # [T, B, C, h, w] -> [T, B, C*h*w]


def _gap(v: Tensor) -> Tensor:
    return v.mean((-2, -1))  # global average pooling: [T, B, C, h, w] -> [T, B, C]


@dataclass(frozen=True)
class GraphNode:
    """One node of a model's dataflow (see :meth:`~multispike.models.SpikingModel.graph`).

    Attributes:
        name: the module path in the model (``"features.0.conv"``), or ``"input"``,
            ``"flatten"``, ``"gap"``, ``"<block>.sum"``, ``"output"`` for nodes without one.
        kind: how the value is computed from the sum of the inputs ``v``: ``"fold"``
            (``fold_time(module, v)``), ``"call"`` (``module(v)``), ``"flatten"``, ``"gap"``,
            ``"sum"``/``"output"`` (``v``), or ``"input"`` (the images, over T).
        inputs: names of the nodes whose values are summed, in the order forward adds them.
        module: the module at ``name`` (``None`` for the nodes without one).
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    module: nn.Module | None = None


class Run:
    """Runs a graph description on tensors ``[T, B, ...]``: the forward pass."""

    def fold(self, module: nn.Module, path: str, x: Tensor) -> Tensor:
        return fold_time(module, x)

    def call(self, module: nn.Module, path: str, x: Tensor) -> Tensor:
        return module(x)

    def add(self, a: Tensor, b: Tensor, name: str | None = None) -> Tensor:
        return a + b

    def flatten(self, x: Tensor) -> Tensor:
        return _flatten(x)

    def gap(self, x: Tensor) -> Tensor:
        return _gap(x)


#: the runner every forward uses (it holds no state)
RUN = Run()


class Record:
    """Records a graph description as :class:`GraphNode` objects (``.nodes``, forward order).

    A value is the tuple of node names whose sum it is: ``add`` without a name concatenates
    them (the next node sums its inputs, as NIR edges do); ``add`` with a name makes a ``sum``
    node. Example::

        >>> g = Record()
        >>> y = g.fold(nn.Conv2d(1, 2, 3), "conv", g.input())
        >>> [(n.name, n.kind, n.inputs) for n in g.nodes]
        [('input', 'input', ()), ('conv', 'fold', ('input',))]
    """

    def __init__(self) -> None:
        self.nodes: list[GraphNode] = []

    def _node(self, name: str, kind: str, inputs: tuple[str, ...],
              module: nn.Module | None = None) -> tuple[str, ...]:
        self.nodes.append(GraphNode(name, kind, tuple(inputs), module))
        return (name,)

    def input(self) -> tuple[str, ...]:
        return self._node("input", "input", ())

    def output(self, x: tuple[str, ...]) -> tuple[str, ...]:
        return self._node("output", "output", x)

    def fold(self, module: nn.Module, path: str, x: tuple[str, ...]) -> tuple[str, ...]:
        return self._node(path, "fold", x, module)

    def call(self, module: nn.Module, path: str, x: tuple[str, ...]) -> tuple[str, ...]:
        return self._node(path, "call", x, module)

    def add(self, a: tuple[str, ...], b: tuple[str, ...], name: str | None = None
            ) -> tuple[str, ...]:
        return a + b if name is None else self._node(name, "sum", a + b)

    def flatten(self, x: tuple[str, ...]) -> tuple[str, ...]:
        return self._node("flatten", "flatten", x)

    def gap(self, x: tuple[str, ...]) -> tuple[str, ...]:
        return self._node("gap", "gap", x)


def run_node(node: Any, values: dict[str, Tensor], x: Tensor, timesteps: int) -> Tensor:
    """The value ``[T, B, ...]`` of one recorded node from the values of its inputs.

    ``node`` has ``kind``, ``inputs`` and ``module`` (a :class:`GraphNode` or a deploy node);
    ``x`` is the model input, ``[B, C, H, W]`` (presented at every step: direct encoding) or
    ``[T, B, C, H, W]``. Inputs are summed in their recorded order, as the forward adds them.
    """
    kind = node.kind
    if kind == "input":
        return x if x.dim() == 5 else x.unsqueeze(0).expand(timesteps, *x.shape)
    v = values[node.inputs[0]]
    for name in node.inputs[1:]:
        v = v + values[name]
    if kind == "fold":
        return fold_time(node.module, v)
    if kind == "call":
        return node.module(v)
    if kind == "flatten":
        return _flatten(v)
    if kind == "gap":
        return _gap(v)
    if kind in ("sum", "output"):
        return v
    raise RuntimeError(f"unknown node kind {kind}")  # pragma: no cover


def describe_sequence(g: Any, path: str, seq: nn.Module, x: Any) -> Any:
    """Describe an ``nn.Sequential`` of layers: each layer's own ``describe`` where it has one
    (:class:`ConvUnit`, :class:`TimeFold`), else one ``call`` node."""
    for i, layer in enumerate(seq):
        p = f"{path}.{i}"
        describe = getattr(layer, "describe", None)
        x = describe(g, p, x) if describe is not None else g.call(layer, p, x)
    return x


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
        positive_int("timesteps", timesteps, where="per-step BN")
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


def unwrap(module: nn.Module) -> nn.Module:
    """The layer a wrapper holds (``module.wrapped``: a deployed model's plane and vote
    wrappers keep the neuron, convolution, linear, pooling or voting layer they wrap), else
    ``module`` itself: what the analysis and the deployment read a layer's numbers from."""
    return getattr(module, "wrapped", module)


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
        positive_int("num_classes", num_classes, where="voting")
        positive_int("group", group, where="voting")
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
#: model-level firing names: the rules' (:data:`~multispike.functional.FIRING_RULES`) and
#: the ANN twin's
FIRINGS: tuple[str, ...] = (*FIRING_RULES, ANN)
#: the firing rules that take ``deltas`` (the MT rules) and ``levels`` (the integer rules),
#: as the rules say
MT_FIRINGS: tuple[str, ...] = tuple(k for k, c in FIRING_RULES.items() if c.accepts("deltas"))
INTEGER_FIRINGS: tuple[str, ...] = tuple(
    k for k, c in FIRING_RULES.items() if c.accepts("levels"))
_MODEL_LEVEL = {"firing", "check_input", "self"}


def model_firing(name: str, where: str = "") -> str:
    """A model's firing name in its one spelling: a rule's, or ``"ann"``."""
    return firing_key(name, extra=(ANN,), where=where)


def check_neuron_options(cls: type[Neuron], options: Mapping[str, Any], *,
                         where: str = "", model_options: Sequence[str] = ()) -> None:
    """Refuse keyword options ``cls`` does not take, in one line listing the ones it does
    (and the model's, where a model passes them along)."""
    allowed = neuron_option_names(cls)
    bad = sorted(set(options) - allowed)
    if not bad:
        return
    if model_options:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(bad)}; model options: "
                          f"{', '.join(model_options)}; {cls.__name__} options: "
                          f"{', '.join(sorted(allowed))}")
    raise ConfigError(f"unknown neuron option(s) {', '.join(bad)} for {cls.__name__}; "
                      f"choose from {', '.join(sorted(allowed))}")


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
      ternary``; MT-SNN Fig 5a/b ablation). The integer rules (``integer``,
      ``signed-integer``) have no single-threshold form to fall back to: they keep their rule
      and ``levels`` on every slot, as SpikeYOLO's I-LIF does;
    - ``out()``: the output neuron before the voting layer (output mode B); an FC slot.

    With ``firing="ann"`` every hidden slot is ``nn.ReLU`` (the ANN twin), the output slot is
    the identity (logits stay signed), and neuron options are ignored. Neurons are built with
    ``check_input=False``: the model checks its input once.

    ``options`` are the neuron class's keyword arguments (``deltas``, ``levels``,
    ``learn_thresholds``, ``reset``, ``learn_amplitude``, ``surrogate``, ``surrogate_width``,
    ``surrogate_alpha``, ``v_threshold``, ...: whatever its ``__init__`` and
    :class:`~multispike.neurons.Neuron`'s take, see :func:`neuron_option_names`), passed to
    every slot unchanged, except ``deltas`` (MT slots only) and ``levels`` (integer slots
    only). ``deltas`` with a rule other than the MT ones, or ``levels`` with a rule other
    than the integer ones, is a one-line :class:`ConfigError`.

    >>> f = NeuronFactory("lif", "integer", options={"levels": 3, "learn_thresholds": True})
    >>> node = f.fc()
    >>> node.rule, node.reset, node.learn_thresholds
    (Integer(levels=3), 'soft', True)
    """

    def __init__(
        self,
        neuron: str | type[Neuron] = "plif",
        firing: str = "binary",
        *,
        mt_on_fc: bool = False,
        options: dict[str, Any] | None = None,
    ) -> None:
        key = model_firing(firing)
        self.cls = get_neuron_class(neuron)
        self.firing = key
        self.mt_on_fc = bool(mt_on_fc)
        #: the neuron keyword options every slot receives (``deltas`` only where MT applies)
        self.neuron_args = dict(options or {})
        check_neuron_options(self.cls, self.neuron_args)
        if key != ANN:
            check_rule_options(key, deltas=self.neuron_args.get("deltas"),
                               levels=self.neuron_args.get("levels"))
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
        return FIRING_RULES[self.firing].single_threshold or self.firing

    def options_for(self, firing: str) -> dict[str, Any]:
        """The neuron options of a slot with ``firing``: the rule options (``deltas``,
        ``levels``) only where the rule takes them."""
        rule = FIRING_RULES[firing]
        return {k: v for k, v in self.neuron_args.items()
                if k not in ("deltas", "levels") or rule.accepts(k)}

    def _make(self, firing: str) -> Neuron:
        return self.cls(firing=firing, check_input=False, **self.options_for(firing))

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
        vth = neuron_factory.v_threshold
        self.sn1 = neuron_factory.conv()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = build_norm(norm, cout, timesteps=timesteps, v_threshold=vth)
        self.sn2 = neuron_factory.conv()
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
        vth = neuron_factory.v_threshold
        half = 1 / math.sqrt(2)
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = build_norm(norm, cout, timesteps=timesteps, v_threshold=vth)
        self.sn1 = neuron_factory.conv()
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = build_norm(norm, cout, timesteps=timesteps, v_threshold=vth, alpha=half)
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
            self.shortcut_bn = build_norm(
                norm, cout, timesteps=timesteps, v_threshold=vth, alpha=half
            )

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
