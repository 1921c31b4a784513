"""Operation counts per layer: MACs of every convolution and linear layer, and neuron counts.

For every ``nn.Conv*d`` and ``nn.Linear`` of a model, :func:`trace_ops` finds its MACs per
time step for one sample (:func:`~multispike.models.profile.layer_macs`, no bias), how many
steps it ran (``runs``: 1 for the stem on a static image, else T) and what feeds it: the
network input (the **encoding layer**), the spikes of neuron layers, or analog values. A zoo
model is read from its graph (:func:`~multispike.models.profile.node_shapes`); any other module
is traced by an adapter that yields the same records. :func:`count_events` counts the exact
synaptic operations of a deployed model from recorded spikes (pooling included). The
definitions, and how the feeders are found, are in ``docs/analysis.md`` § Definitions.

Example::

    >>> from multispike.analysis.ops import trace_ops
    >>> from multispike.models import create
    >>> ops = trace_ops(create("digits_net"), (1, 8, 8), timesteps=2)
    >>> for l in ops.layers:
    ...     print(l.name, l.macs, l.runs, l.encoder, l.sources)
    stem_conv 9216 1 True ()
    features.0.conv 294912 2 False ('stem_act',)
    fc1 32768 2 False ('features.0.act',)
    head.fc 640 2 False ('fc1_act',)
    >>> ops.total_macs, ops.total_neurons
    (337536, 3136)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from multispike.errors import ConfigError
from multispike.layers import run_node, unwrap
from multispike.models.base import SpikingModel
from multispike.models.profile import layer_kind, layer_macs, node_shapes
from multispike.neurons import Neuron

#: tag of the network input in a layer's source set
INPUT = "<input>"
#: prefix of a neuron layer's name in a source set
_NEURON = "neuron:"
_ATTR = "_multispike_sources"


@dataclass
class LayerOps:
    """Operation counts of one convolution or linear layer (one sample).

    Attributes:
        name: path in ``model.named_modules()``.
        kind: ``"conv"`` or ``"linear"``.
        macs: multiply-accumulates of one time step for one sample (no bias).
        runs: time steps the layer ran for in one inference (T, or 1 for an encoder that sees a
            static image once).
        encoder: True for the encoding layer: it reads the network input (analog values).
        sources: names of the neuron layers whose spikes it reads (empty for analog input).
        analog_sources: names of layers feeding it analog values with no neuron in between
            (``"<input>"`` for the network input).
        in_shape, out_shape: shapes of one sample at one time step (batch and time removed).
    """

    name: str
    kind: str
    macs: int
    runs: int
    encoder: bool
    sources: tuple[str, ...]
    analog_sources: tuple[str, ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def spiking(self) -> bool:
        """True when every input of the layer is spikes: its MACs become SOPs."""
        return bool(self.sources) and not self.analog_sources

    @property
    def macs_per_inference(self) -> int:
        """MACs of one inference: ``macs × runs``."""
        return self.macs * self.runs

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spiking"] = self.spiking
        return d


@dataclass
class NeuronLayerOps:
    """One neuron layer: how many neurons it has and how many spikes each can fire per step.

    Attributes:
        name: path in ``model.named_modules()``.
        firing: the firing rule's name (``binary``, ``mt``, ``ternary``, ``ternary-mt``,
            ``integer``, ``signed-integer``).
        neurons: neurons per sample (the elements of one time step's output).
        runs: time steps it ran for.
        planes: binary planes of the rule (MT: n + 1; ternary: 2, one per sign; integer with
            ``levels=D``: D thermometer planes, signed-integer: 2D).
        max_spikes: most spikes one neuron can fire in one step (planes that can fire together:
            1 binary and ternary, n + 1 MT and ternary-MT, D integer and signed-integer).
        signed: True for the signed rules (spikes −1 count as firing).
    """

    name: str
    firing: str
    neurons: int
    runs: int
    planes: int
    max_spikes: int
    signed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelOps:
    """The trace of one model: its layers, its neuron layers, the input it was traced with."""

    layers: list[LayerOps]
    neurons: list[NeuronLayerOps]
    timesteps: int
    input_shape: tuple[int, ...]
    static_input: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def encoder(self) -> list[LayerOps]:
        return [layer for layer in self.layers if layer.encoder]

    @property
    def total_macs(self) -> int:
        """MACs of one time step of every layer (the ANN twin's MACs for one image)."""
        return sum(layer.macs for layer in self.layers)

    @property
    def spiking_macs(self) -> int:
        """``A`` of Ternary Spike: MACs of one time step of every layer fed by spikes."""
        return sum(layer.macs for layer in self.layers if layer.spiking)

    @property
    def total_neurons(self) -> int:
        return sum(n.neurons for n in self.neurons)

    @property
    def max_spikes(self) -> int:
        """The largest rate any neuron layer can reach (spikes per neuron per step)."""
        return max((n.max_spikes for n in self.neurons), default=1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "timesteps": self.timesteps,
            "input_shape": list(self.input_shape),
            "static_input": self.static_input,
            "total_macs": self.total_macs,
            "spiking_macs": self.spiking_macs,
            "total_neurons": self.total_neurons,
            "layers": [layer.to_dict() for layer in self.layers],
            "neurons": [n.to_dict() for n in self.neurons],
        }


# -- records: what a pass over the model finds, turned into ModelOps by one function ---------
@dataclass
class _Record:
    """One conv/linear layer (``kind`` ``"conv"``/``"linear"``) or neuron layer
    (``"neuron"``) as the graph walk or the tracer found it.

    ``runs``: time steps it ran for; ``macs``: of one step of one sample (0 for neurons);
    ``sources``: :data:`INPUT`, conv/linear names and ``"neuron:<name>"`` of what feeds it;
    ``in_shape``/``out_shape``: one sample at one step.
    """

    name: str
    kind: str
    module: nn.Module
    runs: int = 0
    macs: int = 0
    sources: frozenset = frozenset()
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Probe:
    """The checked arguments of :func:`trace_ops`: ``shape`` is one frame ``(C, H, W)``;
    ``time_first``: feed ``[T, 1, ...]`` (the stem runs every step), else ``[1, ...]``."""

    input_shape: tuple[int, ...]
    shape: tuple[int, ...]
    timesteps: int
    event: bool
    time_first: bool


def _probe(model: nn.Module, input_shape: Sequence[int], timesteps: int,
           event: bool | None, time_first: bool | None) -> _Probe:
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise ConfigError(f"timesteps must be an integer >= 1, got {timesteps!r}")
    given = tuple(int(s) for s in input_shape)
    shape = given
    if event is None:
        event = len(shape) == 4
    if len(shape) == 4:
        if shape[0] != timesteps:
            raise ConfigError(
                f"input_shape {shape} has {shape[0]} frames but timesteps={timesteps}"
            )
        shape = shape[1:]
    if any(s < 1 for s in shape) or not shape:
        raise ConfigError(f"input_shape must be positive sizes like (3, 32, 32), got {shape}")
    if time_first is None:
        time_first = event or not hasattr(model, "timesteps")
    return _Probe(given, shape, timesteps, bool(event), bool(time_first))


def _model_ops(model: nn.Module, records: Sequence[_Record], probe: _Probe) -> ModelOps:
    """The one place records become :class:`LayerOps`, :class:`NeuronLayerOps` and
    :class:`ModelOps` (a linear layer's shapes are its feature counts)."""
    layers = []
    for r in records:
        if r.kind == "neuron":
            continue
        linear = r.kind == "linear"
        layers.append(LayerOps(
            name=r.name, kind=r.kind, macs=int(r.macs), runs=int(r.runs),
            encoder=INPUT in r.sources,
            sources=tuple(sorted(s[len(_NEURON):] for s in r.sources if s.startswith(_NEURON))),
            analog_sources=tuple(sorted(s for s in r.sources if not s.startswith(_NEURON))),
            in_shape=(r.module.in_features,) if linear else r.in_shape,
            out_shape=(r.module.out_features,) if linear else r.out_shape,
        ))
    if not layers:
        raise ConfigError(
            f"{type(model).__name__} has no nn.Conv*d or nn.Linear layer to count"
        )
    neurons = [_neuron_info(r.name, r.module, math.prod(r.out_shape), r.runs)  # type: ignore[arg-type]
               for r in records if r.kind == "neuron"]
    return ModelOps(layers=layers, neurons=neurons, timesteps=probe.timesteps,
                    input_shape=probe.input_shape, static_input=not probe.event)


def _neuron_info(name: str, m: Neuron, neurons: int, runs: int) -> NeuronLayerOps:
    rule = m.rule
    thresholds = len(rule.thresholds(m.v_threshold))
    return NeuronLayerOps(
        name=name,
        firing=rule.name,
        neurons=int(neurons),
        runs=int(runs),
        planes=int(rule.n_planes(m.v_threshold)),
        max_spikes=int(thresholds),
        signed=bool(rule.signed),
    )


def _kind(module: nn.Module | None) -> str | None:
    return layer_kind(module) or ("neuron" if isinstance(module, Neuron) else None)


def _wrapped(model: nn.Module) -> bool:
    """``model`` holds a deployed model's wrappers (plane or vote wrappers around a layer),
    whose planes neither the graph nor the tracer sees as convolutions."""
    return any(unwrap(m) is not m for m in model.modules())


# -- the graph walk (zoo models) ------------------------------------------------------------------
def _graph_records(model: SpikingModel, probe: _Probe) -> list[_Record]:
    """Records of a zoo model, read from ``model.graph()`` evaluated once (T = 1; the per-step
    shapes do not depend on T). :meth:`SpikingModel.forward` runs ``stem_conv`` once on a
    static image and broadcasts it over T (``runs`` 1, where the family's ``stem_runs_once``
    says so); every other node runs T times."""
    stem_once = not probe.time_first and model.stem_runs_once
    sources: dict[str, frozenset] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    records = []
    for node, out in node_shapes(model, probe.shape, frames=probe.time_first):
        shapes[node.name] = out
        srcs = frozenset().union(*(sources[i] for i in node.inputs)) if node.inputs \
            else frozenset({INPUT})
        sources[node.name] = srcs  # pass-through: BN, pooling, flatten, GAP, dropout, sums
        kind = _kind(node.module)
        if kind is None:
            continue
        assert node.module is not None
        runs = 1 if stem_once and node.name == "stem_conv" else probe.timesteps
        macs = 0 if kind == "neuron" else layer_macs(node.module, out)
        records.append(_Record(node.name, kind, node.module, runs, macs, srcs,
                               shapes[node.inputs[0]], out))
        sources[node.name] = frozenset({_NEURON + node.name if kind == "neuron" else node.name})
    return records


# -- the tracer (any other module) ----------------------------------------------------------------
def _get_sources(x: Any) -> frozenset:
    return getattr(x, _ATTR, frozenset()) if isinstance(x, Tensor) else frozenset()


def _iter_tensors(obj: Any) -> Iterator[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _iter_tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _iter_tensors(o)


def _tag(obj: Any, sources: frozenset) -> None:
    for t in _iter_tensors(obj):
        if not isinstance(t, nn.Parameter):
            setattr(t, _ATTR, sources)


class _SourceMode(TorchFunctionMode):
    """Pass the union of the input tensors' source sets to the outputs of every torch op."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        sources: frozenset = frozenset()
        for t in _iter_tensors((args, kwargs)):
            sources = sources | _get_sources(t)
        if sources:
            _tag(out, sources)
        return out


def _rows(kind: str, module: Any, inp: Any, out: Tensor) -> tuple[int, tuple, tuple]:
    """``(rows, in_shape, out_shape)`` of one call: the sample-steps it ran over (a linear
    layer: its input rows) and one row's shapes."""
    if kind == "neuron":  # neurons take [T, B, ...]
        return out.shape[0] * out.shape[1], (), tuple(out.shape[2:])
    if kind == "linear":
        return out.numel() // max(module.out_features, 1), (), ()
    batched = out.dim() == module.weight.dim()  # else an unbatched call: one row
    in_shape = tuple(inp.shape[int(batched):]) if isinstance(inp, Tensor) else ()
    return (int(out.shape[0]) if batched else 1), in_shape, tuple(out.shape[int(batched):])


def _hook_records(model: nn.Module, probe: _Probe) -> list[_Record]:
    """Records of any module, from one forward of one zero sample (``[T, 1, C, H, W]``
    time-first, else ``[1, C, H, W]``) with forward hooks on its conv, linear and neuron
    layers and :class:`_SourceMode` carrying the source sets."""
    t = probe.timesteps
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    x = torch.zeros(((t, 1) if probe.time_first else (1,)) + probe.shape, dtype=dtype,
                    device=p.device if p is not None else "cpu")
    _tag(x, frozenset({INPUT}))
    records: dict[str, _Record] = {}

    def hook(name: str, kind: str):
        def fn(module: nn.Module, args: tuple, out: Any) -> None:
            if isinstance(out, Tensor) and (kind != "neuron" or out.dim() >= 2):
                rec = records.setdefault(name, _Record(name, kind, module))
                rec.sources |= _get_sources(args[0]) if args and kind != "neuron" else frozenset()
                rows, in_shape, out_shape = _rows(kind, module, args[0] if args else None, out)
                rec.runs += rows  # summed over calls, divided below
                rec.macs += 0 if kind == "neuron" else layer_macs(module, tuple(out.shape))
                rec.in_shape, rec.out_shape = in_shape or rec.in_shape, out_shape
            _tag(out, frozenset({_NEURON + name if kind == "neuron" else name}))

        return fn

    handles = [m.register_forward_hook(hook(name, kind)) for name, m in model.named_modules()
               if (kind := _kind(m)) is not None]
    was_training, steps = model.training, getattr(model, "timesteps", None)
    try:
        model.eval()
        if steps is not None:
            model.timesteps = t
        with _SourceMode():
            model(x)
    finally:
        for h in handles:
            h.remove()
        if steps is not None:
            model.timesteps = steps
        model.train(was_training)
    for rec in records.values():
        rec.runs = min(max(rec.runs, 1), t)  # T, 1 (a static stem), or T for tokens
        rec.macs //= rec.runs
    return list(records.values())


@torch.no_grad()
def trace_ops(
    model: nn.Module,
    input_shape: Sequence[int],
    timesteps: int,
    *,
    event: bool | None = None,
    time_first: bool | None = None,
) -> ModelOps:
    """Count the operations of every conv/linear layer and neuron layer of ``model`` for one
    sample: a zoo model is read from its graph, any other module traced (module docstring).

    Args:
        model: a :class:`~multispike.models.SpikingModel` or any module; a model with a
            ``timesteps`` attribute gets ``timesteps`` set for the pass and restored afterwards.
        input_shape: one sample without batch: ``(C, H, W)`` of a static image, or
            ``(C, H, W)`` with ``event=True`` for event frames (T frames are fed), or
            ``(T, C, H, W)``.
        timesteps: T (>= 1).
        event: the input is event frames (one different frame per step). Default: True when
            ``input_shape`` has 4 entries.
        time_first: feed ``[T, 1, ...]`` (True) or a static ``[1, ...]`` (False). Default:
            static input for models with a ``timesteps`` attribute, time-first otherwise
            (plain stacks of time-folded layers and neurons, which need ``[T, B, ...]``).

    Returns:
        :class:`ModelOps`. The model's train/eval mode is restored afterwards.
    """
    if _wrapped(model):
        raise ConfigError(
            f"{type(model).__name__} is a deployed model (its layers sit in plane or vote "
            "wrappers); count the operations of the model it was deployed from, and the "
            "deployed model's additions from its spikes (count_events)")
    probe = _probe(model, input_shape, timesteps, event, time_first)
    if isinstance(model, SpikingModel):
        return _model_ops(model, _graph_records(model, probe), probe)
    return _model_ops(model, _hook_records(model, probe), probe)


def count_ops(
    model: nn.Module, input_shape: Sequence[int], timesteps: int, **kwargs: Any
) -> list[LayerOps]:
    """The per-layer counts of :func:`trace_ops` (convolutions and linear layers only)."""
    return trace_ops(model, input_shape, timesteps, **kwargs).layers


# -- exact synaptic operations from recorded spikes ----------------------------------------------
@dataclass
class EventCounts:
    """Synaptic operations counted from spikes, the way the addition-only executor adds them.

    Attributes:
        sops: layer name → additions of one weight into one current, summed over every
            sample and step seen: Σ unit events × fan-out, where an event reaching a layer
            through average pooling counts once per pooled cell it falls in and the fan-out is
            the output currents it reaches (``C_out / groups`` × kernel taps that land on the
            output grid; ``out_features``; one for an identity shortcut ``<neuron>.identity``).
        events: layer name → unit events entering the layer (after max pooling, before
            average pooling).
        dense: layer name → dense multiply-accumulates (identity shortcuts: receiving
            currents) over the same samples and steps.
        rows: sample-steps seen (``T × B`` summed over batches).
        samples: samples seen.
    """

    sops: dict[str, float] = field(default_factory=dict)
    events: dict[str, float] = field(default_factory=dict)
    dense: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    samples: int = 0

    def add(self, other: EventCounts) -> EventCounts:
        for mine, theirs in ((self.sops, other.sops), (self.events, other.events),
                             (self.dense, other.dense)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0.0) + v
        self.rows += other.rows
        self.samples += other.samples
        return self

    @property
    def timesteps(self) -> float:
        return self.rows / self.samples if self.samples else 0.0

    def per_step(self) -> dict[str, float]:
        """Layer name → SOPs of one sample at one step (what ``estimate_energy`` bills)."""
        return {k: v / self.rows for k, v in self.sops.items()} if self.rows else {}

    def rates(self) -> dict[str, float]:
        """Layer name → SOPs per dense MAC: the rate of what the layer actually reads."""
        return {k: v / self.dense[k] if self.dense.get(k) else 0.0 for k, v in self.sops.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"sops_per_step": self.per_step(), "rates": self.rates(), "rows": self.rows,
                "samples": self.samples}


def _ones_conv(counts: Tensor, layer: nn.Module) -> float:
    """Σ over events of the output currents each reaches: a convolution of the event counts
    (summed over channels) with an all-ones kernel, times the output channels per group."""
    per_pos = counts.sum(1, keepdim=True)
    dims = per_pos.dim() - 2
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    ones = per_pos.new_ones(1, 1, *layer.kernel_size)
    reach = conv(per_pos, ones, None, layer.stride, layer.padding, layer.dilation)
    return float(reach.sum()) * (layer.out_channels // layer.groups)


@torch.no_grad()
def count_events(deployed: nn.Module, graph: Any, x: Tensor) -> EventCounts:
    """Exact synaptic operations of one batch ``x`` through a deployed model (see
    :func:`multispike.deploy.event_model`), layer by layer, equal to
    :class:`~multispike.deploy.AdditionOnlyExecutor`'s ``sops`` but computed densely.

    Spikes are read from the dense run of the graph; max pooling keeps its pooled spikes;
    average pooling becomes sum pooling of the event counts (one event per pooled cell whose
    window holds it); global average pooling sums the map; flattening renames. Layers that
    read currents (the encoder, membrane-level sums) are left out.
    """
    deployed.check_input(x)
    steps = deployed.timesteps
    nodes = list(graph)
    counted = ("conv", "linear", "neuron", "sum")
    # a value is kept until the last node that reads it, directly or through pooling
    last: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for src in node.inputs:
            last[src] = i
            if node.op in counted:
                origin, via = graph.producer_chain(src)
                for n in (origin, *via):
                    last[n.name] = max(last.get(n.name, i), i)
    values: dict[str, Tensor] = {}
    t, b = (x.shape[0], x.shape[1]) if x.dim() == 5 else (steps, x.shape[0])
    out = EventCounts(rows=int(t * b), samples=int(b))

    def counts_of(src: str) -> tuple[Tensor | None, float]:
        origin, via = graph.producer_chain(src)
        if origin.op != "neuron":
            return None, 0.0
        y = values[origin.name].flatten(0, 1)
        for v in via:
            if v.op == "maxpool":  # comparisons: the pooled map is still spikes
                y = values[v.name].flatten(0, 1)
        y = y.abs()
        events = float(y.sum())
        for v in via:
            if v.op == "avgpool":  # each event reaches every pooled cell whose window holds it
                p = v.module
                y = F.avg_pool2d(y, p.kernel_size, p.stride, p.padding, p.ceil_mode, True, 1)
            elif v.op == "gap":
                y = y.sum((-2, -1))
            elif v.op == "flatten":
                y = y.flatten(1)
            elif v.op == "merge":
                y = sum(y.chunk(len(v.module.signs), 1))
        return y, events

    for i, node in enumerate(nodes):
        values[node.name] = run_node(node, values, x, steps)
        _count(node, values, counts_of, out)
        for name in [k for k in values if last.get(k, -1) <= i]:
            del values[name]  # the dense run keeps only what is still to be read
    return out


def _count(node: Any, values: dict[str, Tensor], counts_of: Any, out: EventCounts) -> None:
    """Add the synaptic operations of ``node`` (a consumer of spikes) to ``out``."""
    if node.op in ("conv", "linear") and node.inputs != ("input",):
        y, events = counts_of(node.inputs[0])
        if y is not None:
            layer = unwrap(node.module)
            sops = _ones_conv(y, layer) if node.op == "conv" else \
                float(y.sum()) * layer.out_features
            dense = float(layer_macs(layer, tuple(values[node.name].shape)))  # every row
            out.sops[node.name] = out.sops.get(node.name, 0.0) + sops
            out.events[node.name] = out.events.get(node.name, 0.0) + events
            out.dense[node.name] = out.dense.get(node.name, 0.0) + dense
    elif node.op in ("neuron", "sum"):
        for src in node.inputs:
            y, events = counts_of(src)
            if y is None:
                continue
            key = f"{node.name}.identity"
            out.sops[key] = out.sops.get(key, 0.0) + float(y.sum())
            out.events[key] = out.events.get(key, 0.0) + events
            out.dense[key] = out.dense.get(key, 0.0) + float(values[src].numel())
