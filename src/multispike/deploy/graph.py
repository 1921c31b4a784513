"""The deployment graph of a zoo model: where every neuron's spikes go.

:func:`trace` reads the model's own description of its dataflow,
:meth:`~multispike.models.SpikingModel.graph` (the one its forward runs), into a
:class:`DeployGraph`: which convolution or linear layer consumes a neuron's output, which
pooling or flattening lies in between, which BN follows which convolution, and where a spike
stream enters another neuron's membrane (identity shortcut). Nodes are named by module path
(``"features.0.conv"``) or synthetically (``"input"``, ``"gap"``, ``"stages.1.sum"``), stored in
forward order, and a node with several inputs sums them; dropout and identity slots are left
out. :meth:`DeployGraph.run` executes it densely and equals ``model(x)``. The ops and what each
computes: ``docs/deploy.md`` § The deployment graph.

Example::

    >>> from multispike.models import create
    >>> graph = trace(create("digits_net"))
    >>> [(n.name, n.op) for n in graph][-6:]     # dropout and the identity slots are left out
    ... # doctest: +NORMALIZE_WHITESPACE
    [('flatten', 'flatten'), ('fc1', 'linear'), ('fc1_norm', 'norm'), ('fc1_act', 'neuron'),
     ('head.fc', 'linear'), ('output', 'output')]
    >>> [t.name for t, via in graph.spike_targets("features.0.act")]   # through the pooling
    ['fc1']
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from multispike.deploy.wrappers import (
    PlaneConv,
    PlaneLinear,
    PlaneMaxPool,
    PlaneMerge,
    PlaneNeuron,
    PlaneVote,
)
from multispike.errors import ConfigError
from multispike.layers import (
    BatchNormFold,
    BatchNormPerStep,
    TDBatchNorm,
    TimeDropout,
    VotingLayer,
    run_node,
)
from multispike.models import SpikingModel
from multispike.neurons import Neuron

#: ops whose value is a linear function of one spike stream, passed on to a consumer
PASS_THROUGH = ("maxpool", "avgpool", "gap", "flatten", "merge")


@dataclass
class Node:
    """One node of a :class:`DeployGraph`.

    Attributes:
        name: the module path in the model, or a synthetic name for module-less nodes.
        op: one of the ops of ``docs/deploy.md`` § The deployment graph (``conv``, ``neuron``, ...).
        inputs: names of the nodes whose values are summed into this node's input.
        module: the module at ``name`` (``None`` for module-less nodes).
        kind: how the value is computed (the model's :class:`~multispike.layers.GraphNode`
            kind: ``"fold"``, ``"call"``, or the op itself for module-less nodes).
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    module: nn.Module | None = None
    kind: str = "call"


def _op_of(module: nn.Module, path: str) -> str | None:
    """The graph op of a module, ``None`` for an identity slot or dropout (skipped: the graph
    describes the model in eval mode)."""
    if isinstance(module, (nn.Identity, TimeDropout)):
        return None
    if isinstance(module, (Neuron, PlaneNeuron)):
        return "neuron"
    if isinstance(module, (nn.Conv2d, PlaneConv)):
        return "conv"
    if isinstance(module, (nn.Linear, PlaneLinear)):
        return "linear"
    if isinstance(module, (BatchNormFold, BatchNormPerStep, TDBatchNorm)):
        return "norm"
    if isinstance(module, (nn.MaxPool2d, PlaneMaxPool)):
        return "maxpool"
    if isinstance(module, nn.AvgPool2d):
        return "avgpool"
    if isinstance(module, (VotingLayer, PlaneVote)):
        return "vote"
    if isinstance(module, PlaneMerge):
        return "merge"
    if isinstance(module, nn.ReLU):
        raise ConfigError(
            f"{path} is a ReLU: this is the ANN twin (firing='ann'), which has no spikes to "
            "deploy; deploy a spiking model"
        )
    raise ConfigError(
        f"deploy does not know the layer {path} ({type(module).__name__}); it handles the "
        "zoo's conv, BN, neuron, pooling, linear and voting layers"
    )


class DeployGraph:
    """Nodes in forward order; a node's value is computed from the sum of its inputs."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.nodes: dict[str, Node] = {}

    # -- building --------------------------------------------------------------------------
    def add(self, name: str, op: str, inputs: tuple[str, ...], module: nn.Module | None = None,
            kind: str | None = None) -> str:
        if name in self.nodes:  # pragma: no cover - a tracing bug
            raise RuntimeError(f"node {name} traced twice")
        self.nodes[name] = Node(name, op, tuple(inputs), module, kind or op)
        return name

    # -- queries ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def consumers(self, name: str) -> list[Node]:
        """The nodes that read ``name`` (in forward order)."""
        return [n for n in self.nodes.values() if name in n.inputs]

    def of_op(self, *ops: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.op in ops]

    def spike_targets(self, name: str) -> list[tuple[Node, tuple[Node, ...]]]:
        """Where the output of node ``name`` ends up, looking through pass-through ops.

        Returns ``(target, via)`` pairs: ``target`` is the first node that is not pooling,
        flattening or plane merging (a conv, linear, neuron, sum, vote, norm or output node),
        ``via`` the pass-through nodes crossed on the way, in order.
        """
        out: list[tuple[Node, tuple[Node, ...]]] = []

        def walk(src: str, via: tuple[Node, ...]) -> None:
            for c in self.consumers(src):
                if c.op in PASS_THROUGH:
                    walk(c.name, via + (c,))
                else:
                    out.append((c, via))

        walk(name, ())
        return out

    def producer_chain(self, name: str) -> tuple[Node, tuple[Node, ...]]:
        """Walk back from ``name`` through pass-through ops: ``(source, via)`` (the inverse of
        :meth:`spike_targets`; :func:`~multispike.analysis.ops.count_events` reads it)."""
        via: list[Node] = []
        node = self.nodes[name]
        while node.op in PASS_THROUGH:
            via.insert(0, node)
            (src,) = node.inputs
            node = self.nodes[src]
        return node, tuple(via)

    # -- running ---------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, x: Tensor, *, keep: bool = False) -> Tensor | dict[str, Tensor]:
        """Run the graph densely with the model's modules (eval mode).

        ``x`` is what the model takes (``[B, C, H, W]`` or ``[T, B, C, H, W]``). Returns the
        output ``[T, B, K]``, or with ``keep=True`` every node's value ``[T, B, ...]``.
        """
        self.model.check_input(x)
        values: dict[str, Tensor] = {}
        for node in self:
            values[node.name] = run_node(node, values, x, self.model.timesteps)
        return values if keep else values["output"]

    def shapes(self, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Per-sample output shape of every node (no T, no batch) for one ``(C, H, W)`` image."""
        p = next(self.model.parameters())
        x = torch.zeros(1, *input_shape, dtype=p.dtype, device=p.device)
        values = self.run(x, keep=True)
        assert isinstance(values, dict)
        return {k: tuple(v.shape[2:]) for k, v in values.items()}


# -- tracing the zoo ---------------------------------------------------------------------------
def trace(model: nn.Module) -> DeployGraph:
    """The :class:`DeployGraph` of a zoo model, read from ``model.graph()``.

    Raises :class:`~multispike.errors.ConfigError` for other models, the ANN twin, or layers
    the deploy transforms do not know.
    """
    if not isinstance(model, SpikingModel):
        raise ConfigError(
            f"deploy handles the zoo's VGG and ResNet models (multispike.models.create), got "
            f"{type(model).__name__}"
        )
    g = DeployGraph(model)
    passed: dict[str, tuple[str, ...]] = {}  # a skipped slot -> what its consumers read
    for node in model.graph():
        inputs = tuple(n for i in node.inputs for n in passed.get(i, (i,)))
        if node.module is None:
            g.add(node.name, node.kind, inputs)
            continue
        op = _op_of(node.module, node.name)
        if op is None:
            if len(inputs) != 1:  # pragma: no cover - the zoo never sums into an identity
                raise RuntimeError(f"identity {node.name} with {len(inputs)} inputs")
            passed[node.name] = inputs
            continue
        g.add(node.name, op, inputs, node.module, node.kind)
    return g


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at ``path`` (``"stages.0.bn1"``, ``"features.2"``)."""
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)
