"""The graph-description protocol: a dataflow written once, run on tensors or recorded.

A model (and each block) writes its dataflow once, as a method ``describe(g, ...)`` that calls
``g.fold`` / ``g.call`` / ``g.add`` / ``g.flatten`` / ``g.gap``. Run with :data:`RUN` it
computes tensors (that is the forward pass); run with a :class:`Record` it returns the graph
as :class:`GraphNode` objects, which deployment, profiling and analysis read
(:func:`run_node` evaluates one; :func:`unwrap` finds the layer a deploy wrapper holds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from multispike.layers.temporal import fold_time

__all__ = ["RUN", "GraphNode", "Record", "Run", "describe_sequence", "run_node", "unwrap"]


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
    (:class:`~multispike.layers.ConvUnit`, :class:`~multispike.layers.TimeFold`), else one
    ``call`` node."""
    for i, layer in enumerate(seq):
        p = f"{path}.{i}"
        describe = getattr(layer, "describe", None)
        x = describe(g, p, x) if describe is not None else g.call(layer, p, x)
    return x


def unwrap(module: nn.Module) -> nn.Module:
    """The layer a wrapper holds (``module.wrapped``: a deployed model's plane and vote
    wrappers keep the neuron, convolution, linear, pooling or voting layer they wrap), else
    ``module`` itself: what the analysis and the deployment read a layer's numbers from."""
    return getattr(module, "wrapped", module)
