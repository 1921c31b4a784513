"""The contract every model keeps: one keyword schema, input checks, static/event input,
``timesteps``, ``model_args``, and one description of the model's graph.

A model maps static images ``[B, C, H, W]`` or event frames ``[T, B, C, H, W]`` to per-time-step
outputs ``[T, B, num_classes]``; the prediction is their mean over T (``out.mean(0)``).

Static input (direct encoding): the first conv-BN-neuron block is the encoder and sees the
analog image at every step. Its convolution runs **once** on ``[B, C, H, W]`` and its output is
broadcast over T (a view) before BN; BN and everything after see exactly the tensor they would
see had the image been repeated T times (BN statistics over ``B·T`` identical copies, per-step
BN and tdBN included), so the output equals "repeat the image T times and run" while the
encoder convolution costs 1/T.

Options (timm's ``model_args`` style): a builder passes its keyword arguments through
unchanged; :class:`SpikingModel` splits them into model options (:data:`COMMON_OPTIONS` and
the family's ``family_options``) and neuron options, fills in the model's defaults and checks
every value in one place, then keeps the resolved arguments in ``model.model_args``.

The graph: each family writes its dataflow once, as ``describe(g, y)`` (see
:class:`~multispike.layers.Record`). ``forward`` runs it on tensors; :meth:`SpikingModel.graph`
records it as nodes, which deployment, profiling and analysis read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from multispike.checks import boolean, plain, positive_int
from multispike.errors import ConfigError, InputError
from multispike.layers import (
    RUN,
    GraphNode,
    NeuronFactory,
    Record,
    VotingLayer,
    check_neuron_options,
    fold_time,
    get_norm,
    model_firing,
)
from multispike.neurons import NEURONS, Neuron, get_neuron_class

#: output modes of MT-SNN Sec 3.3
OUTPUTS = ("membrane", "vote")

#: options every model takes (keyword-only; ``None`` = the model's default)
COMMON_OPTIONS = (
    "num_classes",
    "timesteps",
    "firing",
    "neuron",
    "norm",
    "output",
    "mt_on_fc",
    "in_channels",
    "vote_group",
)


class Layout(Protocol):
    """A model's layout, as :class:`SpikingModel` reads it: the registry key and the model's
    defaults (one value per option that applies to it). Each family's layout record
    (:class:`~multispike.models.vgg.VGGLayout`, :class:`~multispike.models.resnet.ResNetLayout`,
    :class:`~multispike.models.graph_net.GraphLayout`) adds the architecture's shape."""

    name: str
    defaults: dict[str, Any]


def _neuron_name(neuron: Any) -> Any:
    """A neuron class as its registry name where it has one (JSON-friendly)."""
    if isinstance(neuron, str):
        return neuron.lower()
    cls = get_neuron_class(neuron)
    return cls.dynamics if NEURONS.get(cls.dynamics) is cls else cls


class Head(nn.Module):
    """The output layer: ``[T, B, F] → [T, B, num_classes]``.

    - ``output="membrane"`` (MT-SNN Sec 3.3 A): the last FC's analog output, no firing;
    - ``output="vote"`` (B, PLIF paper): the FC feeds ``num_classes·group`` neurons whose spikes
      a :class:`~multispike.layers.VotingLayer` averages per class.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        output: str,
        vote_group: int,
        neuron_factory: NeuronFactory,
    ) -> None:
        super().__init__()
        vote = output == "vote"
        self.fc = nn.Linear(in_features, num_classes * (vote_group if vote else 1))
        self.act = neuron_factory.out() if vote else None
        self.vote = VotingLayer(num_classes, vote_group) if vote else None

    def forward(self, z: Tensor) -> Tensor:
        return self.describe(RUN, "", z)

    def describe(self, g: Any, path: str, z: Any) -> Any:
        """``fc`` (``[T, B, F] → [T, B, K]`` or ``[T, B, K·G]``), then for voting the output
        neurons and the vote (``→ spikes → [T, B, K]``)."""
        y = g.call(self.fc, f"{path}.fc", z)
        if self.vote is not None:
            y = g.call(self.act, f"{path}.act", y)
            y = g.call(self.vote, f"{path}.vote", y)
        return y


class SpikingModel(nn.Module):
    """Base of every model in the zoo.

    A family (``VGG``, ``ResNet``) calls ``super().__init__(layout, kwargs)`` with its builder's
    keyword arguments, builds ``self.stem_conv`` (the encoder's convolution, the model's first
    layer) and writes its dataflow after the stem convolution once, in :meth:`describe`.

    Attributes:
        name: registry key.
        model_args: the resolved :func:`~multispike.models.create` arguments as a plain dict;
            ``create(**model.model_args)`` rebuilds the model (checkpoints store it).
        neuron_factory: the :class:`~multispike.layers.NeuronFactory` that built every neuron
            slot (the neuron layers themselves are modules of the model).
        num_classes, in_channels, firing, output: resolved options.
        input_size: ``(H, W)`` the architecture was built for (the paper's input size).
        timesteps: T; may be changed after construction (evaluate at T = 1, 2, 4, ...).
    """

    #: smallest H and W the architecture accepts (its total downsampling)
    min_input_size: int = 1
    #: the family's keyword options beyond :data:`COMMON_OPTIONS`
    family_options: tuple[str, ...] = ()
    #: defaults of family options that every model of the family takes
    family_defaults: Mapping[str, Any] = {}
    #: a static image passes ``stem_conv`` once, broadcast over T (:meth:`forward`); a family
    #: whose forward runs every node at every step says False (operation counts read it)
    stem_runs_once: bool = True

    def __init__(self, layout: Layout, kwargs: Mapping[str, Any]) -> None:
        super().__init__()
        name = layout.name
        opts, neuron_options, cls = self.resolve_options(layout, kwargs)
        self.name = name
        self.neuron_factory = NeuronFactory(
            cls, opts["firing"], mt_on_fc=opts["mt_on_fc"], options=neuron_options
        )
        self.model_args: dict[str, Any] = {"name": name, **plain(opts), **plain(neuron_options)}
        self.num_classes: int = opts["num_classes"]
        self.in_channels: int = opts["in_channels"]
        self.firing: str = opts["firing"]
        self.output: str = opts["output"]
        self.input_size: tuple[int, int] = (0, 0)
        self._timesteps: int = opts["timesteps"]
        self.stem_conv: nn.Module

    # -- options -----------------------------------------------------------------------------
    @classmethod
    def resolve_options(
        cls, layout: Layout, kwargs: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], type[Neuron]]:
        """The one validation point of a model's keyword arguments.

        Splits ``kwargs`` into model options (:data:`COMMON_OPTIONS` + ``family_options``;
        ``None`` = the model's default) and neuron options (everything else), fills in the
        defaults and checks every value. Returns ``(options, neuron_options, neuron_class)``;
        raises a one-line :class:`ConfigError` naming the option and the fix.
        """
        name = layout.name
        defaults = {**cls.family_defaults, **layout.defaults}
        schema = COMMON_OPTIONS + cls.family_options
        options = {k: v for k, v in kwargs.items() if k in schema}
        neuron_options = {k: v for k, v in kwargs.items() if k not in schema}
        unknown = sorted(k for k, v in options.items() if k not in defaults and v is not None)
        if unknown:
            raise ConfigError(
                f"{name}: option(s) {', '.join(unknown)} do not apply to this model; "
                f"its options: {', '.join(defaults)}"
            )
        opts = {k: (v if options.get(k) is None else options[k]) for k, v in defaults.items()}
        firing = opts["firing"] = model_firing(opts["firing"], where=name)
        if firing == "ann" and options.get("timesteps") is None:
            opts["timesteps"] = 1  # the ANN twin has no dynamics: one step is enough
        for key in ("num_classes", "timesteps", "in_channels", "vote_group"):
            positive_int(key, opts[key], where=name)
        if opts["output"] not in OUTPUTS:
            raise ConfigError(
                f"{name}: unknown output {opts['output']!r}; choose one of {', '.join(OUTPUTS)}"
            )
        get_norm(opts["norm"])  # "unknown norm ...; choose one of ..."
        for key, default in defaults.items():  # yes/no options: real booleans only
            if isinstance(default, bool):
                opts[key] = boolean(key, opts[key], where=name)
        opts["neuron"] = _neuron_name(opts["neuron"])
        neuron_cls: type[Neuron] = get_neuron_class(opts["neuron"])
        check_neuron_options(neuron_cls, neuron_options, where=name, model_options=list(defaults))
        cls.check_family_options(layout, opts)
        return opts, neuron_options, neuron_cls

    @classmethod
    def check_family_options(cls, layout: Layout, opts: dict[str, Any]) -> None:
        """Check the family's own options (``opts`` resolved); families override it."""

    # -- time steps --------------------------------------------------------------------------
    @property
    def timesteps(self) -> int:
        """T: the number of time steps a static image is repeated for (event input must match)."""
        return self._timesteps

    @timesteps.setter
    def timesteps(self, value: int) -> None:
        self._timesteps = positive_int("timesteps", value, where=self.name)

    # -- running -----------------------------------------------------------------------------
    def check_input(self, x: Any) -> None:
        """Raise a one-line :class:`InputError` unless ``x`` is input this model can run.

        Besides rank, channels, T and size: the dtype must be the weights' (any floating dtype
        under ``torch.autocast`` for the input's device), and in eval mode every value must be
        finite (one ``torch.isfinite(x).all()`` per batch, skipped while ``torch.compile``
        traces). Training mode skips the finiteness check, so that a training step never waits
        on the device; ``multispike train`` stops on the non-finite loss instead.
        """
        c = self.in_channels
        expected = f"static images [B, {c}, H, W] or event frames [T, B, {c}, H, W]"
        if not isinstance(x, Tensor):
            raise InputError(f"{self.name} expects a torch.Tensor ({expected}), got {type(x)}")
        if x.is_complex():
            raise InputError(f"{self.name} got a complex tensor ({x.dtype}); pass real images, "
                             "e.g. x.real or x.abs()")
        if not x.is_floating_point():
            kind = "a boolean" if x.dtype == torch.bool else "an integer"
            raise InputError(f"{self.name} got {kind} tensor ({x.dtype}); use x.float()")
        weight = next((p.dtype for p in self.parameters() if p.is_floating_point()), x.dtype)
        if x.dtype != weight and not torch.is_autocast_enabled(x.device.type):
            to = {torch.float32: "float()", torch.float64: "double()", torch.float16: "half()",
                  torch.bfloat16: "bfloat16()"}
            raise InputError(
                f"{self.name} got a {x.dtype} input but its weights are {weight}; convert the "
                f"input with x.{to.get(weight, f'to({weight})')} or the model with "
                f"model.{to.get(x.dtype, f'to({x.dtype})')}, or run under torch.autocast"
            )
        if x.dim() not in (4, 5):
            raise InputError(
                f"{self.name} expects {expected}, got rank {x.dim()} shape {tuple(x.shape)}"
            )
        if x.shape[-3] != c:
            raise InputError(
                f"{self.name} expects {c} input channels ({expected}), got {x.shape[-3]} "
                f"in shape {tuple(x.shape)}"
            )
        if x.dim() == 5 and x.shape[0] != self.timesteps:
            raise InputError(
                f"{self.name}: event input has T={x.shape[0]} frames but model.timesteps="
                f"{self.timesteps}; set model.timesteps = {x.shape[0]} or re-frame the events"
            )
        self.check_size(int(x.shape[-2]), int(x.shape[-1]))
        if not self.training and x.device.type != "meta" and not torch.compiler.is_compiling() \
                and not bool(torch.isfinite(x).all()):  # meta tensors hold no values
            n = int((~torch.isfinite(x)).sum())
            raise InputError(
                f"{self.name} got input with NaN or inf ({n} of {x.numel()} values); its "
                "predictions would mean nothing: check the data and the transform before it"
            )

    def check_size(self, h: int, w: int) -> None:
        """Spatial size check; VGG-style nets with a fixed FC input size override it."""
        m = self.min_input_size
        if h < m or w < m:
            raise InputError(
                f"{self.name} needs images of at least {m}x{m} (it downsamples {m}x), got {h}x{w}"
            )

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` (static) or ``[T, B, C, H, W]`` (events) → ``[T, B, num_classes]``."""
        self.check_input(x)
        if x.dim() == 4:
            y = self.stem_conv(x)  # [B, C, H, W] -> [B, C', H', W']: once for all T steps
            y = y.unsqueeze(0).expand(self.timesteps, *y.shape)  # -> [T, B, C', H', W'] (view)
        else:
            y = fold_time(self.stem_conv, x)  # [T, B, C, H, W] -> [T, B, C', H', W']
        return self.forward_features(y)

    def forward_features(self, y: Tensor) -> Tensor:
        """Everything after the stem convolution: ``[T, B, C', H', W'] → [T, B, K]``."""
        return self.describe(RUN, y)

    def describe(self, g: Any, y: Any) -> Any:
        """The model's dataflow after the stem convolution, written once per family.

        ``g`` is :data:`~multispike.layers.RUN` (``y`` a tensor: this is the forward) or a
        :class:`~multispike.layers.Record` (``y`` node names: this records :meth:`graph`).
        """
        raise NotImplementedError  # pragma: no cover - abstract

    def graph(self) -> list[GraphNode]:
        """The model's dataflow as nodes in forward order, read from :meth:`describe`.

        ``"input"`` (the images over T), ``"stem_conv"``, every module slot after it (named by
        its path in the model; identity slots and dropout included, as ``call`` nodes), the
        module-less ``"flatten"`` / ``"gap"`` / ``"<block>.sum"`` nodes, and ``"output"``. A
        node's value is computed from the sum of its inputs
        (:func:`~multispike.layers.run_node`); evaluating the nodes in order equals
        ``model(x)``. The graph follows modules replaced after construction (deployment).

        Example::

            >>> from multispike.models import create
            >>> [(n.name, n.kind, n.inputs) for n in create("digits_net").graph()][:4]
            ... # doctest: +NORMALIZE_WHITESPACE
            [('input', 'input', ()), ('stem_conv', 'fold', ('input',)),
             ('stem_norm', 'call', ('stem_conv',)), ('stem_act', 'call', ('stem_norm',))]
        """
        g = Record()
        y = g.fold(self.stem_conv, "stem_conv", g.input())
        g.output(self.describe(g, y))
        return g.nodes

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """The prediction: the mean over T of the per-step outputs, ``[B, num_classes]``."""
        return self(x).mean(0)

    def extra_repr(self) -> str:
        o = self.model_args
        return (
            f"name={self.name}, timesteps={self.timesteps}, firing={self.firing}, "
            f"neuron={o['neuron']}, norm={o['norm']}, output={self.output}"
        )


#: defaults of the MT-SNN models (Wang et al. 2023): PLIF neurons (Sec 3.1), MT firing with
#: deltas (−0.5, +0.5)·V_th, MT on convolutions only, membrane output (A, used for every CIFAR
#: result of Sec 5.2), BN over B·T, T = 4 (Fig 3 spans T = 1…5)
MT_SNN_DEFAULTS: dict[str, Any] = {
    "num_classes": 10,
    "timesteps": 4,
    "firing": "mt",
    "neuron": "plif",
    "norm": "fold",
    "output": "membrane",
    "mt_on_fc": False,
    "in_channels": 3,
    "vote_group": 10,
}

#: defaults of the Ternary Spike models (Guo et al. 2024): LIF with decay 0.25 and V_th 0.5,
#: ternary firing, membrane output, BN over B·T (their code), T = 2 (CIFAR, Table 2)
TERNARY_DEFAULTS: dict[str, Any] = {
    **MT_SNN_DEFAULTS,
    "timesteps": 2,
    "firing": "ternary",
    "neuron": "lif",
}
