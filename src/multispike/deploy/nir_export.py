"""NIR export: the Neuromorphic Intermediate Representation of a deployed model.

`NIR <https://neuroir.org>`_ (the ``nir`` package) describes a spiking network as a graph of
continuous-time primitives that neuromorphic hardware and other SNN libraries read.
:func:`export_nir` writes a model after :func:`~multispike.deploy.fold_amplitudes` (BN folded
into convolutions, amplitudes into weights); :func:`neuron_node` maps PLIF (MT-SNN Eq 6-8), LIF
(Ternary Spike Eq 4) and IF neurons to NIR ``LIF``/``IF`` nodes, one forward-Euler step of
``dt`` per model step, and refuses multi-level spikes (MT-SNN Eq 3, 10; Ternary Spike Eq 7) and
soft resets. :func:`nir_to_torch` / :func:`run_nir` read a graph back through ``nirtorch`` with
NIR's own semantics, so a written file can be checked against the model it came from.

The mapping of every layer and neuron, and why each refusal is needed: ``docs/deploy.md``
§ NIR export.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multispike.deploy.fold import fold_amplitudes, is_deployed
from multispike.deploy.graph import Node, trace
from multispike.deploy.wrappers import unwrap
from multispike.errors import ConfigError
from multispike.functional import IF, LIF, PLIF, Binary, Integer
from multispike.layers import BatchNormPerStep
from multispike.neurons import Neuron


def _nir() -> Any:
    try:
        import nir
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "NIR export needs the nir and nirtorch packages: pip install 'multispike[nir]'"
        ) from None
    return nir


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _full(shape: tuple[int, ...], value: float, dtype: np.dtype) -> np.ndarray:
    return np.full(shape, value, dtype=dtype)


def neuron_node(name: str, neuron: Neuron, shape: tuple[int, ...], dt: float,
                dtype: np.dtype) -> Any:
    """The NIR node of one binary neuron layer (formulas: ``docs/deploy.md`` § NIR export).

    PLIF (MT-SNN Eq 6-8, with ``V_reset``) becomes ``LIF(tau=τ·dt, r=1, v_leak=V_reset)``; LIF
    (Ternary Spike Eq 4) with ``decay < 1`` becomes ``LIF(tau=dt/(1 − decay),
    r=1/(1 − decay), v_leak=0)``; IF (or LIF with ``decay = 1``) becomes ``IF(r=1/dt)``: one
    forward-Euler step of ``dt`` is one model step. Multi-level spikes are refused: their planes
    share one membrane and one reset (MT-SNN Eq 3, 10; Ternary Spike Eq 7), which NIR neurons,
    each resetting on its own spike, cannot compose. Learned thresholds are written as their
    current values (:meth:`~multispike.neurons.Neuron.fixed_firing`). Raises a one-line
    :class:`~multispike.errors.ConfigError` for what NIR cannot express: spikes that are not
    binary (MT, ternary, ternary-MT, integer, signed-integer), a soft reset, an amplitude."""
    nir = _nir()
    v_threshold, rule = neuron.fixed_firing()
    if isinstance(rule, Integer):
        raise ConfigError(
            f"NIR export: neuron {name} fires {rule.name!r} spikes (0..{rule.levels}"
            f"{' and their negatives' if rule.signed else ''}); NIR spiking nodes emit binary "
            "spikes and reset on their own spike only, so there is no exact NIR composition of "
            "it (see docs/deploy.md); run it with the addition-only executor"
        )
    if not isinstance(rule, Binary):
        raise ConfigError(
            f"NIR export: neuron {name} fires {rule.name!r} spikes; NIR spiking nodes emit "
            "binary spikes and reset on their own spike only, so there is no exact NIR "
            "composition of it (see docs/deploy.md); run it with the addition-only executor"
        )
    if neuron.reset == "soft":
        raise ConfigError(
            f"NIR export: neuron {name} has a soft reset (V = H - V_th after a spike); NIR's "
            "IF and LIF reset to v_reset (a hard reset), so train with reset='main' to export"
        )
    if neuron.amplitude is not None:
        raise ConfigError(f"NIR export: neuron {name} has an amplitude; fold it first")
    vth = _full(shape, v_threshold, dtype)
    vreset = _full(shape, neuron.v_reset, dtype)
    record = neuron.dynamics_record  # the dynamics as data pick the NIR node, not the class
    if isinstance(record, PLIF):
        tau = float(neuron.tau.detach())
        return nir.LIF(tau=_full(shape, tau * dt, dtype), r=_full(shape, 1.0, dtype),
                       v_leak=vreset.copy(), v_threshold=vth, v_reset=vreset)
    if isinstance(record, LIF) and record.decay < 1:
        if neuron.v_reset != 0:
            raise ConfigError(
                f"NIR export: LIF neuron {name} resets to {neuron.v_reset:g}; its leak is "
                "towards 0, which NIR's LIF expresses only with v_reset = 0"
            )
        d = record.decay
        return nir.LIF(tau=_full(shape, dt / (1 - d), dtype), r=_full(shape, 1 / (1 - d), dtype),
                       v_leak=_full(shape, 0.0, dtype), v_threshold=vth, v_reset=vreset)
    if isinstance(record, (IF, LIF)):  # IF, or LIF with decay 1 (no leak)
        return nir.IF(r=_full(shape, 1 / dt, dtype), v_threshold=vth, v_reset=vreset)
    raise ConfigError(f"NIR export: neuron {name} ({type(neuron).__name__}) has no NIR mapping")


def export_nir(
    model: nn.Module,
    *,
    input_shape: tuple[int, int, int] | None = None,
    dt: float = 1.0,
) -> Any:
    """The ``nir.NIRGraph`` of a binary spiking model.

    Args:
        model: a zoo model; folded first (:func:`~multispike.deploy.fold_amplitudes`, on a
            copy) unless it already is. It may live on any device: shapes are traced there
            and the parameters copied to the host (NIR holds numpy arrays).
        input_shape: ``(C, H, W)`` of one input image (default: the model's
            ``in_channels`` and ``input_size``).
        dt: NIR time per model step (snnTorch and SpikingJelly assume ``1e-4``; see
            ``docs/deploy.md`` § NIR export).

    Node names are module paths (``"features.0.conv"``); composed nodes add a suffix
    (``".sumpool"``, ``".threshold"``, ``".flatten"``). Raises a one-line
    :class:`~multispike.errors.ConfigError` naming the first node NIR cannot express.
    """
    nir = _nir()
    if not dt > 0:
        raise ConfigError(f"NIR export: dt must be > 0, got {dt}")
    if not is_deployed(model):
        model = fold_amplitudes(model)
    model.eval()
    graph = trace(model)
    if input_shape is None:
        input_shape = (model.in_channels, *model.input_size)
    shapes = graph.shapes(tuple(input_shape))
    dtype = torch.empty(0, dtype=next(model.parameters()).dtype, device="cpu").numpy().dtype
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    tail: dict[str, str] = {}  # graph node -> the NIR node carrying its output

    def sources(name: str) -> list[str]:
        node = graph[name]
        if node.op == "sum":  # NIR sums the inputs of a node: forward the summands
            return [s for src in node.inputs for s in sources(src)]
        return [tail[name]]

    def connect(node: Node, head: str) -> None:
        for src in node.inputs:
            edges.extend((s, head) for s in sources(src))

    for node in graph:
        if node.op == "sum":
            continue
        head, last = _nodes(node, shapes, dt, dtype, nodes)
        if head != last:  # a composed node: its parts in a chain
            edges.append((head, last))
        if node.op != "input":
            connect(node, head)
        tail[node.name] = last
    out = nir.NIRGraph(nodes=nodes, edges=edges, type_check=True)
    out.metadata = {
        "source": "multispike",
        "model": str(getattr(model, "name", type(model).__name__)),
        "timesteps": int(model.timesteps),
        "dt": float(dt),
        "encoding": "the static image is presented at every one of the timesteps",
        "readout": "output per step; the prediction is its mean over the timesteps",
        "initial_state": "every membrane starts at its v_reset",
    }
    return out


def _nodes(node: Node, shapes: dict[str, tuple[int, ...]], dt: float, dtype: np.dtype,
           nodes: dict[str, Any]) -> tuple[str, str]:
    """Add the NIR node(s) of one graph node; returns (first, last) NIR names."""
    nir = _nir()
    name, op, m = node.name, node.op, node.module
    in_shape = shapes[node.inputs[0]] if node.inputs else shapes[name]
    out_shape = shapes[name]
    if op == "input":
        nodes[name] = nir.Input(input_type=np.array(out_shape))
    elif op == "output":
        nodes[name] = nir.Output(output_type=np.array(out_shape))
    elif op == "conv":
        conv = getattr(m, "conv", m)
        if isinstance(conv.padding, str):
            raise ConfigError(f"NIR export: {name} uses padding {conv.padding!r}")
        bias = conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)
        nodes[name] = nir.Conv2d(
            input_shape=tuple(in_shape[1:]), weight=_np(conv.weight), stride=conv.stride,
            padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
            bias=_np(bias.to(conv.weight.dtype)),
        )
    elif op == "linear":
        lin = getattr(m, "linear", m)
        bias = lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features)
        nodes[name] = nir.Affine(weight=_np(lin.weight), bias=_np(bias.to(lin.weight.dtype)))
    elif op == "norm":
        kind = "per-step BN" if isinstance(m, BatchNormPerStep) else "BN that is not folded"
        raise ConfigError(
            f"NIR export: {name} is a {kind}; its scale changes with the time step and NIR "
            "weights are static: train with norm='fold' or 'tdbn' to export"
        )
    elif op == "neuron":
        nodes[name] = neuron_node(name, unwrap(m), out_shape, dt, dtype)
    elif op == "maxpool":
        pool = getattr(m, "pool", m)
        k, s, p = (_pair(v) for v in (pool.kernel_size, pool.stride, pool.padding))
        if p != (0, 0) or _pair(pool.dilation) != (1, 1) or pool.ceil_mode:
            raise ConfigError(f"NIR export: max pooling {name} with padding/dilation/ceil_mode")
        first, last = f"{name}.sumpool", f"{name}.threshold"
        nodes[first] = nir.SumPool2d(kernel_size=np.array(k), stride=np.array(s),
                                     padding=np.array(p))
        nodes[last] = nir.Threshold(threshold=_full(out_shape, 0.5, dtype))
        nodes[first].input_type = {"input": np.array(in_shape)}
        nodes[first].output_type = {"output": np.array(out_shape)}
        return first, last
    elif op == "avgpool":
        _check_avgpool(name, m, in_shape)
        k, s, p = (_pair(v) for v in (m.kernel_size, m.stride, m.padding))
        nodes[name] = nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s),
                                    padding=np.array(p))
        nodes[name].input_type = {"input": np.array(in_shape)}
        nodes[name].output_type = {"output": np.array(out_shape)}
    elif op == "gap":
        c, h, w = in_shape
        last = f"{name}.flatten"
        nodes[name] = nir.AvgPool2d(kernel_size=np.array([h, w]), stride=np.array([h, w]),
                                    padding=np.array([0, 0]))
        nodes[name].input_type = {"input": np.array(in_shape)}
        nodes[name].output_type = {"output": np.array([c, 1, 1])}
        nodes[last] = nir.Flatten(input_type={"input": np.array([c, 1, 1])}, start_dim=0,
                                  end_dim=-1)
        return name, last
    elif op == "flatten":
        nodes[name] = nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0,
                                  end_dim=-1)
    elif op == "vote":
        vote = getattr(m, "vote", m)
        scale = float(getattr(vote, "scale", 1.0))
        k, g = vote.num_classes, vote.group
        weight = np.zeros((k, k * g), dtype=dtype)
        for c in range(k):
            weight[c, c * g:(c + 1) * g] = scale / g
        nodes[name] = nir.Linear(weight=weight)
    elif op == "merge":  # pragma: no cover - MT neurons are refused first
        raise ConfigError(f"NIR export: {name} merges MT planes; MT is not exportable")
    else:  # pragma: no cover
        raise ConfigError(f"NIR export: {name} ({op}) has no NIR mapping")
    return name, name


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def _check_avgpool(name: str, pool: nn.AvgPool2d, in_shape: tuple[int, ...]) -> None:
    k, s, p = (_pair(v) for v in (pool.kernel_size, pool.stride, pool.padding))
    if pool.divisor_override is not None:
        raise ConfigError(f"NIR export: average pooling {name} overrides its divisor")
    if p != (0, 0) and not pool.count_include_pad:
        raise ConfigError(
            f"NIR export: average pooling {name} excludes padding from its divisor; NIR's "
            "AvgPool2d divides by the full window"
        )
    if pool.ceil_mode:
        for size, kk, ss, pp in zip(in_shape[1:], k, s, p, strict=True):
            if (size + 2 * pp - kk) % ss:
                raise ConfigError(
                    f"NIR export: average pooling {name} (ceil_mode) has partial windows at "
                    f"input size {tuple(in_shape[1:])}; use sizes its stride divides"
                )


# -- reading back ------------------------------------------------------------------------------
def _cpu(value: Any) -> Tensor:
    """A NIR parameter (numpy array) as a CPU tensor: graphs read back run on the CPU."""
    return torch.as_tensor(np.asarray(value), device="cpu")


class _LIF(nn.Module):
    """NIR LIF, one forward-Euler step of ``dt``: returns ``(spikes, membrane)``."""

    def __init__(self, node: Any, dt: float) -> None:
        super().__init__()
        for key in ("tau", "r", "v_leak", "v_threshold", "v_reset"):
            self.register_buffer(key, _cpu(getattr(node, key)))
        self.dt = dt

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        v = torch.zeros_like(x) + self.v_reset.to(x.dtype) if state is None else state
        v = v + (self.dt / self.tau) * (self.v_leak - v + self.r * x)
        z = v > self.v_threshold
        return z.to(x.dtype), torch.where(z, self.v_reset.to(x.dtype), v)


class _IF(nn.Module):
    """NIR IF, one Euler step: ``v ← v + dt·R·I``, spike where ``v > v_th``, reset."""

    def __init__(self, node: Any, dt: float) -> None:
        super().__init__()
        for key in ("r", "v_threshold", "v_reset"):
            self.register_buffer(key, _cpu(getattr(node, key)))
        self.dt = dt

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        v = torch.zeros_like(x) + self.v_reset.to(x.dtype) if state is None else state
        v = v + self.dt * self.r * x
        z = v > self.v_threshold
        return z.to(x.dtype), torch.where(z, self.v_reset.to(x.dtype), v)


class _Threshold(nn.Module):
    def __init__(self, node: Any) -> None:
        super().__init__()
        self.register_buffer("threshold", _cpu(node.threshold))

    def forward(self, x: Tensor) -> Tensor:
        return (x > self.threshold).to(x.dtype)


class _Pool(nn.Module):
    """NIR AvgPool2d (divide by the full window) or SumPool2d (no division)."""

    def __init__(self, node: Any, total: bool) -> None:
        super().__init__()
        self.k, self.s, self.p = (tuple(int(v) for v in np.atleast_1d(a)) for a in
                                  (node.kernel_size, node.stride, node.padding))
        self.total = total

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.k, self.s, self.p, count_include_pad=True,
                            divisor_override=1 if self.total else None)


class _Flatten(nn.Module):
    """NIR Flatten: ``start_dim`` counts from the first non-batch axis."""

    def __init__(self, node: Any) -> None:
        super().__init__()
        self.start = int(node.start_dim)
        self.end = int(node.end_dim)

    def forward(self, x: Tensor) -> Tensor:
        end = self.end + 1 if self.end >= 0 else self.end
        return x.flatten(self.start + 1, end)


def _affine(node: Any) -> nn.Module:
    w = _cpu(node.weight)
    bias = getattr(node, "bias", None)
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    lin.weight.data = w.clone()
    if bias is not None:
        lin.bias.data = _cpu(bias).clone()
    return lin


def _conv(node: Any) -> nn.Module:
    w = _cpu(node.weight)
    conv = nn.Conv2d(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]),
                     stride=tuple(int(v) for v in np.atleast_1d(node.stride)),
                     padding=tuple(int(v) for v in np.atleast_1d(node.padding)),
                     dilation=tuple(int(v) for v in np.atleast_1d(node.dilation)),
                     groups=int(node.groups))
    conv.weight.data = w.clone()
    conv.bias.data = _cpu(node.bias).clone()
    return conv


def node_map(dt: float = 1.0) -> dict[Any, Any]:
    """``nirtorch`` node map that runs NIR primitives with NIR's semantics (Euler step ``dt``)."""
    nir = _nir()
    return {
        nir.Input: lambda n: nn.Identity(),
        nir.Output: lambda n: nn.Identity(),
        nir.Affine: _affine,
        nir.Linear: _affine,
        nir.Conv2d: _conv,
        nir.AvgPool2d: lambda n: _Pool(n, total=False),
        nir.SumPool2d: lambda n: _Pool(n, total=True),
        nir.Flatten: _Flatten,
        nir.Threshold: _Threshold,
        nir.LIF: lambda n: _LIF(n, dt),
        nir.IF: lambda n: _IF(n, dt),
    }


def nir_to_torch(graph: Any, *, dt: float = 1.0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A NIR graph (or a ``.nir`` path) as a ``nirtorch`` module: ``out, state = m(x, state)``
    runs one step of length ``dt``."""
    import nirtorch

    nir = _nir()
    if not isinstance(graph, nir.NIRGraph):
        graph = nir.read(graph)
    return nirtorch.nir_to_torch(graph, node_map(dt), dtype=dtype)


@torch.no_grad()
def run_nir(graph: Any, x: Tensor, timesteps: int, *, dt: float = 1.0) -> Tensor:
    """Run a NIR graph for ``timesteps`` steps: static ``[B, C, H, W]`` input repeated each step
    (or frames ``[T, B, C, H, W]``); returns ``[T, B, K]`` like the model.

    The graph runs on the CPU (its parameters are numpy arrays); ``x`` may be on any device
    and the output is returned on ``x``'s device."""
    module = nir_to_torch(graph, dt=dt, dtype=x.dtype)
    xc = x.detach().cpu()
    state = None
    outs = []
    for t in range(timesteps):
        out, state = module(xc if xc.dim() == 4 else xc[t], state)
        outs.append(out)
    return torch.stack(outs).to(x.device)
