"""``nir_graph``: a model whose architecture is data, the family of imported NIR graphs.

The zoo's families (VGG, ResNet) write their dataflow in code; a graph brought in from NIR
(:func:`multispike.deploy.nir_import.from_nir`) has its own. :class:`GraphNet` builds one from
a JSON-serialisable description held in ``model_args["graph"]``, so a checkpoint of it
rebuilds like any other (``create(**model.model_args)``, weights from the state dict), and
describes its graph once (:meth:`GraphNet.graph`), which its forward, deployment, operation
counts and energy read.

The description (``{"input": [C, H, W], "nodes": [...]}``, every value plain JSON; nodes
in an order where every input comes first, several inputs summed as NIR edges are) and its ops
are in ``docs/models.md`` § "The nir_graph family". Neuron nodes hold their dynamics; the
firing rule and its options are model options applied to every neuron node, which is the
upgrade to multi-bit spikes.

Example (a two-layer graph written by hand)::

    >>> import torch
    >>> from multispike.models import create
    >>> g = {"input": [4], "nodes": [
    ...     {"name": "input", "op": "input", "shape": [4]},
    ...     {"name": "fc", "op": "linear", "inputs": ["input"], "shape": [3],
    ...      "in_features": 4, "out_features": 3, "bias": True},
    ...     {"name": "act", "op": "neuron", "inputs": ["fc"], "shape": [3], "dynamics": "lif",
    ...      "decay": 0.5, "v_threshold": 1.0, "v_reset": 0.0},
    ...     {"name": "output", "op": "output", "inputs": ["act"], "shape": [3]}]}
    >>> model = create("nir_graph", graph=g, timesteps=2)
    >>> model(torch.rand(5, 4)).shape                       # static input, repeated over T
    torch.Size([2, 5, 3])
    >>> create("nir_graph", graph=g, firing="mt").act.rule.name    # the upgrade
    'mt'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multispike.errors import ConfigError, InputError
from multispike.layers import GraphNode, VotingLayer, run_node
from multispike.models.base import SpikingModel
from multispike.models.registry import register_data_model
from multispike.neurons import get_neuron_class

#: the ops of a graph description and the GraphNode kind each runs as
KINDS = {"input": "input", "conv": "fold", "linear": "call", "scale": "call", "avgpool": "fold",
         "sumpool": "fold", "maxpool": "fold", "flatten": "flatten", "threshold": "call",
         "neuron": "call", "vote": "call", "output": "output"}
#: neuron options that a graph's neuron nodes carry themselves (not model options)
NODE_DYNAMICS = ("v_threshold", "v_reset", "init_tau", "decay")
_SEGMENT = re.compile(r"^\w+$")


@dataclass(frozen=True)
class GraphLayout:
    """A graph model's layout as :class:`~multispike.models.base.SpikingModel` reads it: the
    registry key and the defaults (the graph itself comes as ``graph=``)."""

    name: str
    defaults: dict[str, Any] = field(default_factory=dict)


class Scale(nn.Module):
    """NIR ``Scale``: ``x · s`` elementwise, ``s`` of one sample's shape (learnable)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(shape))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class SumPool2d(nn.Module):
    """NIR ``SumPool2d``: the sum over each window (zero padding), ``[N, C, H, W]``."""

    def __init__(self, kernel: Any, stride: Any, padding: Any) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = tuple(kernel), tuple(stride), tuple(padding)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding, divisor_override=1)


class Threshold(nn.Module):
    """NIR ``Threshold``: ``1`` where ``x > θ``, else ``0`` (stateless; no gradient)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.zeros(shape))

    def forward(self, x: Tensor) -> Tensor:
        return (x > self.threshold).to(x.dtype)


def _layer(node: dict[str, Any]) -> nn.Module:
    """The module of one non-neuron node with a module."""
    op = node["op"]
    if op == "conv":
        conv = nn.Conv1d if len(node["kernel"]) == 1 else nn.Conv2d
        padding = node["padding"]
        return conv(node["in_channels"], node["out_channels"], tuple(node["kernel"]),
                    stride=tuple(node["stride"]),
                    padding=padding if isinstance(padding, str) else tuple(padding),
                    dilation=tuple(node["dilation"]), groups=node["groups"], bias=node["bias"])
    if op == "linear":
        return nn.Linear(node["in_features"], node["out_features"], bias=node["bias"])
    if op == "scale":
        return Scale(tuple(node["shape"]))
    if op == "threshold":
        return Threshold(tuple(node["shape"]))
    if op == "avgpool":
        return nn.AvgPool2d(tuple(node["kernel"]), tuple(node["stride"]), tuple(node["padding"]),
                            count_include_pad=True)
    if op == "sumpool":
        return SumPool2d(node["kernel"], node["stride"], node["padding"])
    if op == "maxpool":
        return nn.MaxPool2d(tuple(node["kernel"]), tuple(node["stride"]))
    return VotingLayer(node["num_classes"], node["group"])  # "vote"


def check_graph(graph: Any, reserved: set[str]) -> dict[str, Any]:
    """``graph`` if it is a well-formed description (see the module docstring), else a
    one-line :class:`ConfigError` naming the first problem."""
    where = "nir_graph: model_args['graph']"
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        raise ConfigError(f"{where} must be a graph description (a dict with 'input' and "
                          "'nodes'); build one with multispike.deploy.nir_import.from_nir")
    seen: set[str] = set()
    for node in graph["nodes"]:
        name, op = node.get("name"), node.get("op")
        if op not in KINDS:
            raise ConfigError(f"{where}: node {name!r} has unknown op {op!r}; ops: "
                              f"{', '.join(KINDS)}")
        if not isinstance(name, str) or name in seen or not all(
                _SEGMENT.match(s) for s in name.split(".")):
            raise ConfigError(f"{where}: node name {name!r} is not a unique module path")
        if op not in ("input", "output", "flatten") and name.split(".")[0] in reserved:
            raise ConfigError(f"{where}: node name {name!r} is an attribute of the model")
        missing = [i for i in node.get("inputs", []) if i not in seen]
        if missing or (op != "input" and not node.get("inputs")):
            raise ConfigError(f"{where}: node {name!r} reads {missing or 'nothing'}, which no "
                              "earlier node provides")
        seen.add(name)
    ends = [(n["op"], n["name"]) for n in graph["nodes"] if n["op"] in ("input", "output")]
    if sorted(ends) != [("input", "input"), ("output", "output")]:
        raise ConfigError(f"{where} needs one node 'input' (op input) and one node 'output' "
                          f"(op output), got {ends}")
    return graph


class GraphNet(SpikingModel):
    """A spiking network built from a graph description (see the module docstring).

    Input: ``[B, *input]`` (static, presented at every step) or ``[T, B, *input]``; output
    ``[T, B, K]``, ``K`` the size of the ``output`` node. Options: ``graph`` plus the common
    ones (``timesteps``, ``firing``, ``mt_on_fc``, ...) and the firing options of the neurons;
    ``num_classes`` and ``in_channels`` follow from the graph.
    """

    family_options = ("graph",)
    stem_runs_once = False  # its forward runs every node at every step

    def __init__(self, layout: GraphLayout, **options: Any) -> None:
        given = sorted(k for k in NODE_DYNAMICS if options.get(k) is not None)
        if given:
            raise ConfigError(f"nir_graph: {', '.join(given)} belong to each neuron node of the "
                              "graph, not to the model; edit the graph (or re-import) instead")
        super().__init__(layout, options)
        self._graph = check_graph(self.model_args["graph"], reserved_names())
        self.input_shape = tuple(int(s) for s in self._graph["input"])
        self.input_size = tuple(self.input_shape[1:])  # type: ignore[assignment]
        for node in sorted(self._graph["nodes"], key=lambda n: n["name"].count(".")):
            if node["op"] in ("input", "output", "flatten"):
                continue
            module = self._neuron(node) if node["op"] == "neuron" else _layer(node)
            _place(self, node["name"], module)

    @classmethod
    def check_family_options(cls, layout: Any, opts: dict[str, Any]) -> None:
        out = [n for n in (opts["graph"] or {}).get("nodes", []) if n.get("op") == "output"]
        size = math.prod(out[0].get("shape", [0])) if out else 0
        if out and opts["num_classes"] != size:
            raise ConfigError(f"nir_graph: num_classes={opts['num_classes']}, but the graph's "
                              f"output has {size} values; drop num_classes")

    def _neuron(self, node: dict[str, Any]) -> nn.Module:
        """A neuron layer: the node's dynamics, the model's firing rule and its options."""
        factory = self.neuron_factory
        if factory.is_ann:
            return nn.ReLU()
        fed_by_linear = any(self._op(i) == "linear" for i in node["inputs"])
        firing = factory.fc_firing() if fed_by_linear else factory.firing
        opts = factory.options_for(firing)
        dyn = {k: node[k] for k in ("init_tau", "decay") if k in node}
        cls = get_neuron_class(node["dynamics"])
        return cls(firing=firing, check_input=False, v_threshold=float(node["v_threshold"]),
                   v_reset=float(node.get("v_reset", 0.0)), **dyn, **opts)

    def _op(self, name: str) -> str:
        return next(n["op"] for n in self._graph["nodes"] if n["name"] == name)

    # -- the graph ---------------------------------------------------------------------------
    def graph(self) -> list[GraphNode]:
        """The nodes of the description as :class:`~multispike.layers.GraphNode` objects, in
        order; a node's module is the one now in its slot (deployment may replace it)."""
        out = []
        for node in self._graph["nodes"]:
            kind = KINDS[node["op"]]
            module = None if kind in ("input", "output", "flatten") else \
                self.get_submodule(node["name"])
            out.append(GraphNode(node["name"], kind, tuple(node.get("inputs", ())), module))
        return out

    def forward(self, x: Tensor) -> Tensor:
        """``[B, *input]`` or ``[T, B, *input]`` → ``[T, B, K]``."""
        self.check_input(x)
        values: dict[str, Tensor] = {}
        for node in self.graph():
            values[node.name] = run_node(node, values, x, self.timesteps)
        return values["output"]

    def check_input(self, x: Any) -> None:
        """One-line :class:`InputError` unless ``x`` is ``[B, *input]`` or ``[T, B, *input]``
        in the weights' dtype."""
        want = self.input_shape
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise InputError(f"{self.name} expects a floating-point torch.Tensor [B, "
                             f"{', '.join(map(str, want))}], got {getattr(x, 'dtype', type(x))}")
        static = x.dim() == len(want) + 1 and tuple(x.shape[1:]) == want
        events = x.dim() == len(want) + 2 and tuple(x.shape[2:]) == want
        if not (static or events):
            raise InputError(
                f"{self.name} takes [B, {', '.join(map(str, want))}] (or with T first), got "
                f"{tuple(x.shape)}; import with input_shape= (--input-shape) to read other data")
        if events and x.shape[0] != self.timesteps:
            raise InputError(f"{self.name}: event input has T={x.shape[0]} frames but "
                             f"model.timesteps={self.timesteps}")
        weight = next((p.dtype for p in self.parameters() if p.is_floating_point()), x.dtype)
        if x.dtype != weight and not torch.is_autocast_enabled(x.device.type):
            raise InputError(f"{self.name} got a {x.dtype} input but its weights are {weight}; "
                             "convert one of them")
        if not self.training and x.device.type != "meta" and not torch.compiler.is_compiling() \
                and not bool(torch.isfinite(x).all()):  # as SpikingModel.check_input
            raise InputError(f"{self.name} got input with NaN or inf; check the data")

    def extra_repr(self) -> str:
        return (f"name={self.name}, timesteps={self.timesteps}, firing={self.firing}, "
                f"nodes={len(self._graph['nodes'])}")


def reserved_names() -> set[str]:
    """Names a top-level node may not take: attributes of the model."""
    return set(dir(GraphNet)) | set(vars(nn.Module())) | {
        "name", "neuron_factory", "model_args", "num_classes", "in_channels", "firing", "output",
        "input_size", "input_shape", "deployment", "_graph", "_timesteps"}


def _place(model: nn.Module, path: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted ``path``, making plain containers for missing parents."""
    parent = model
    *heads, last = path.split(".")
    for head in heads:
        child = parent._modules.get(head)
        if child is None:
            child = nn.Module()
            parent.add_module(head, child)
        parent = child
    parent.add_module(last, module)


@register_data_model
def nir_graph(*, graph: Any = None, **options: Any) -> GraphNet:
    """An imported graph (``multispike import``, :func:`~multispike.deploy.nir_import.from_nir`):
    the architecture is ``graph``, a description of its nodes (see :mod:`.graph_net`)."""
    desc = check_graph(graph, reserved_names())
    nodes = desc["nodes"]
    out = next(n for n in nodes if n["op"] == "output")
    first = next((n for n in nodes if n["op"] == "neuron"), {"dynamics": "if"})
    defaults = {"num_classes": int(math.prod(out.get("shape", [1]))), "timesteps": 4,
                "firing": "binary", "neuron": first["dynamics"], "norm": "fold",
                "output": "membrane", "mt_on_fc": True, "in_channels": int(desc["input"][0]),
                "vote_group": 10, "graph": None}
    return GraphNet(GraphLayout("nir_graph", defaults), graph=desc, **options)
