"""The deployment graph of a zoo model: where every neuron's spikes go.

Each deploy transform needs the same facts about a network: which convolution or linear layer
consumes a neuron's output, which pooling or flattening lies in between, which BN follows which
convolution, and where a spike stream is added straight into another neuron's input (an
identity shortcut). :func:`trace` reads them from the structure of the zoo's two families
(:class:`~multispike.models.VGG`, :class:`~multispike.models.ResNet` with membrane- or
spike-level blocks) into a :class:`DeployGraph`.

A node is named by the path of its module in the model (``"features.0.conv"``,
``"stages.3.sn2"``); the few nodes without a module have synthetic names (``"input"``,
``"flatten"``, ``"gap"``, ``"stages.1.sum"``, ``"output"``). Nodes are stored in forward order
and a node with several inputs **sums** them (NIR's edge semantics). Dropout is left out (the
graph describes the model in eval mode) and so are ``nn.Identity`` slots.

======== ================================================== ===================================
op       module                                             value
======== ================================================== ===================================
input    —                                                  the image (repeated over T) or frames
conv     ``nn.Conv2d`` / :class:`~.planes.PlaneConv`        ``fold_time(conv, x)``
norm     ``BatchNormFold`` / ``BatchNormPerStep`` / tdBN     BN of its input
neuron   :class:`~multispike.neurons.Neuron` / PlaneNeuron  spikes over T
maxpool  ``nn.MaxPool2d`` / :class:`~.planes.PlaneMaxPool`  ``fold_time(pool, x)``
avgpool  ``nn.AvgPool2d``                                   ``fold_time(pool, x)``
gap      —                                                  global average pooling over H, W
flatten  —                                                  ``x.flatten(2)``
linear   ``nn.Linear`` / :class:`~.planes.PlaneLinear`      ``linear(x)``
merge    :class:`~.planes.PlaneMerge`                       signed sum of MT planes
sum      —                                                  sum of its inputs (membrane residual)
vote     ``VotingLayer`` (or a scaled / plane variant)      class scores
output   —                                                  the model output ``[T, B, K]``
======== ================================================== ===================================

:meth:`DeployGraph.run` executes the graph densely with the model's own modules; it equals
``model(x)`` and is the reference the addition-only executor and the NIR export are read from.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from multispike.errors import ConfigError
from multispike.layers import (
    BatchNormFold,
    BatchNormPerStep,
    ConvUnit,
    MembraneBlock,
    SpikeBlock,
    TDBatchNorm,
    TimeFold,
    VotingLayer,
    fold_time,
)
from multispike.models import VGG, ResNet
from multispike.neurons import Neuron

#: ops whose value is a linear function of one spike stream, passed on to a consumer
PASS_THROUGH = ("maxpool", "avgpool", "gap", "flatten", "merge")
#: ops that consume a spike stream through synapses (weights)
SYNAPTIC = ("conv", "linear")


@dataclass
class Node:
    """One node of a :class:`DeployGraph`.

    Attributes:
        name: the module path in the model, or a synthetic name for module-less nodes.
        op: one of the ops in the module docstring.
        inputs: names of the nodes whose values are summed into this node's input.
        module: the module at ``name`` (``None`` for module-less nodes).
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    module: nn.Module | None = None


def _op_of(module: nn.Module, path: str) -> str | None:
    """The graph op of a module, ``None`` for an identity slot (skipped)."""
    from multispike.deploy import planes  # local: planes imports this module

    if isinstance(module, nn.Identity):
        return None
    if isinstance(module, (Neuron, planes.PlaneNeuron)):
        return "neuron"
    if isinstance(module, (nn.Conv2d, planes.PlaneConv)):
        return "conv"
    if isinstance(module, (nn.Linear, planes.PlaneLinear)):
        return "linear"
    if isinstance(module, (BatchNormFold, BatchNormPerStep, TDBatchNorm)):
        return "norm"
    if isinstance(module, (nn.MaxPool2d, planes.PlaneMaxPool)):
        return "maxpool"
    if isinstance(module, nn.AvgPool2d):
        return "avgpool"
    if isinstance(module, (VotingLayer, planes.PlaneVote)):
        return "vote"
    if isinstance(module, planes.PlaneMerge):
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
    def add(self, name: str, op: str, inputs: tuple[str, ...], module: nn.Module | None = None
            ) -> str:
        if name in self.nodes:  # pragma: no cover - a tracing bug
            raise RuntimeError(f"node {name} traced twice")
        self.nodes[name] = Node(name, op, tuple(inputs), module)
        return name

    def chain(self, path: str, *inputs: str) -> str:
        """Add the module at ``path`` fed by ``inputs``; an identity slot passes them on."""
        module = self.model.get_submodule(path)
        op = _op_of(module, path)
        if op is None:
            if len(inputs) != 1:  # pragma: no cover - the zoo never sums into an identity
                raise RuntimeError(f"identity {path} with {len(inputs)} inputs")
            return inputs[0]
        return self.add(path, op, inputs, module)

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
        """Walk back from ``name`` through pass-through ops: ``(source, via)``."""
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
            values[node.name] = evaluate(node, values, x, self.model.timesteps)
        return values if keep else values["output"]

    def shapes(self, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Per-sample output shape of every node (no T, no batch) for one ``(C, H, W)`` image."""
        p = next(self.model.parameters())
        x = torch.zeros(1, *input_shape, dtype=p.dtype, device=p.device)
        values = self.run(x, keep=True)
        assert isinstance(values, dict)
        return {k: tuple(v.shape[2:]) for k, v in values.items()}


def input_sum(node: Node, values: dict[str, Tensor]) -> Tensor:
    """The sum of a node's inputs, added in the order the model's forward adds them."""
    total = values[node.inputs[0]]
    for name in node.inputs[1:]:
        total = total + values[name]
    return total


def evaluate(node: Node, values: dict[str, Tensor], x: Tensor, timesteps: int) -> Tensor:
    """The dense value of one node from its inputs' values (``[T, B, ...]``)."""
    if node.op == "input":
        # static images are presented at every step (direct encoding): [B, ...] -> [T, B, ...]
        return x if x.dim() == 5 else x.unsqueeze(0).expand(timesteps, *x.shape)
    v = input_sum(node, values)
    m: Any = node.module
    if node.op in ("conv", "maxpool", "avgpool", "merge"):
        return fold_time(m, v)
    if node.op in ("norm", "neuron", "linear", "vote"):
        return m(v)
    if node.op == "gap":
        return v.mean((-2, -1))  # [T, B, C, h, w] -> [T, B, C]
    if node.op == "flatten":
        return v.flatten(2)  # [T, B, C, h, w] -> [T, B, C*h*w]
    if node.op in ("sum", "output"):
        return v
    raise RuntimeError(f"unknown op {node.op}")  # pragma: no cover


# -- tracing the zoo ---------------------------------------------------------------------------
def trace(model: nn.Module) -> DeployGraph:
    """The :class:`DeployGraph` of a zoo model (VGG family or ResNet family).

    Raises :class:`~multispike.errors.ConfigError` for other models, the ANN twin, or layers
    the deploy transforms do not know.
    """
    if isinstance(model, VGG):
        return _trace_vgg(model)
    if isinstance(model, ResNet):
        return _trace_resnet(model)
    raise ConfigError(
        f"deploy handles the zoo's VGG and ResNet models (multispike.models.create), got "
        f"{type(model).__name__}"
    )


def _unit(g: DeployGraph, path: str, y: str) -> str:
    y = g.chain(f"{path}.conv", y)
    y = g.chain(f"{path}.norm", y)
    return g.chain(f"{path}.act", y)


def _sequence(g: DeployGraph, path: str, seq: nn.Module, y: str) -> str:
    for i, layer in enumerate(seq):
        p = f"{path}.{i}"
        if isinstance(layer, ConvUnit):
            y = _unit(g, p, y)
        elif isinstance(layer, TimeFold):
            y = g.chain(f"{p}.module", y)
        else:
            raise ConfigError(f"deploy does not know the layer {p} ({type(layer).__name__})")
    return y


def _head(g: DeployGraph, model: nn.Module, y: str) -> str:
    y = g.chain("head.fc", y)
    if model.head.vote is not None:
        y = g.chain("head.act", y)
        y = g.chain("head.vote", y)
    return g.add("output", "output", (y,))


def _trace_vgg(model: VGG) -> DeployGraph:
    g = DeployGraph(model)
    y = g.add("input", "input", ())
    for path in ("stem_conv", "stem_norm", "stem_act"):
        y = g.chain(path, y)
    y = _sequence(g, "features", model.features, y)
    y = g.add("flatten", "flatten", (y,))
    y = g.chain("fc1", y)  # dropout: identity in eval mode
    if not isinstance(model.fc1_norm, nn.Identity):  # fc_norm=True (digits_net)
        y = g.chain("fc1_norm", y)
    y = g.chain("fc1_act", y)
    _head(g, model, y)
    return g


def _shortcut(g: DeployGraph, path: str, block: nn.Module, s: str) -> str:
    """The shortcut branch of a block reading ``s``: identity, conv, pool+conv, plane merge."""
    sc = block.shortcut
    if sc is None:
        return s
    if isinstance(sc, nn.Sequential):
        for i in range(len(sc)):
            s = g.chain(f"{path}.shortcut.{i}", s)
    else:
        s = g.chain(f"{path}.shortcut", s)
    if block.shortcut_bn is not None:
        s = g.chain(f"{path}.shortcut_bn", s)
    return s


def _trace_resnet(model: ResNet) -> DeployGraph:
    g = DeployGraph(model)
    y = g.add("input", "input", ())
    for path in ("stem_conv", "stem_norm", "stem_act"):
        y = g.chain(path, y)
    y = _sequence(g, "stem_rest", model.stem_rest, y)
    for i, block in enumerate(model.stages):
        p = f"stages.{i}"
        if isinstance(block, MembraneBlock):
            # s = SN1(x); out = x' + BN2(Conv2(SN2(BN1(Conv1(s)))))
            s = g.chain(f"{p}.sn1", y)
            z = g.chain(f"{p}.conv1", s)
            for name in ("bn1", "sn2", "conv2", "bn2"):
                z = g.chain(f"{p}.{name}", z)
            sc = _shortcut(g, p, block, s) if block.shortcut is not None else y
            y = g.add(f"{p}.sum", "sum", (sc, z))
        elif isinstance(block, SpikeBlock):
            # out = SN2(BN2(Conv2(SN1(BN1(Conv1(s))))) + s')
            z = g.chain(f"{p}.conv1", y)
            for name in ("bn1", "sn1", "conv2", "bn2"):
                z = g.chain(f"{p}.{name}", z)
            sc = _shortcut(g, p, block, y)
            y = g.chain(f"{p}.sn2", z, sc)
        else:
            raise ConfigError(f"deploy does not know the block {p} ({type(block).__name__})")
    y = g.chain("final_act", y)
    y = g.add("gap", "gap", (y,))
    _head(g, model, y)
    return g


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at ``path`` (``"stages.0.bn1"``, ``"features.2"``)."""
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def neurons_of(graph: DeployGraph) -> list[Node]:
    return graph.of_op("neuron")


def base_neuron(module: nn.Module) -> Neuron:
    """The :class:`Neuron` of a neuron node (unwrapping a plane neuron)."""
    inner = getattr(module, "neuron", module)
    assert isinstance(inner, Neuron)
    return inner
