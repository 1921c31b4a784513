"""NIR import: run a graph written by another library (or by :func:`~.nir_export.export_nir`)
as a multispike model, and give its neurons multi-bit spikes.

:func:`from_nir` translates a ``nir.NIRGraph`` (or a ``.nir`` file) into a ``nir_graph`` model
(:mod:`multispike.models.graph_net`): the graph's description goes into ``model_args``, its
weights into the state dict, so the model checkpoints, evaluates, deploys and exports like a
zoo model. It is the inverse of :func:`~.nir_export.export_nir` (export → import → export gives
the graph back). NIR ``LIF``/``IF``/``CubaLIF`` nodes become LIF, PLIF or IF layers with their
thresholds divided by the input gain (exact); what has no multispike layer is refused with one
:class:`~multispike.errors.ConfigError` line naming the node. The node and neuron mapping, the
refusals and the upgrade to multi-bit firing: ``docs/deploy.md`` § NIR import.

Example (our own export read back; ``firing="mt"`` upgrades every neuron)::

    >>> import torch
    >>> from multispike.deploy import export_nir
    >>> from multispike.models import create
    >>> net = create("digits_net", firing="binary", neuron="lif").double().eval()
    >>> graph = export_nir(net)                     # BN folded into the convolutions
    >>> model = from_nir(graph, dtype=torch.float64).eval()
    >>> x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    >>> bool((model(x) - net(x)).abs().max() < 1e-12)
    True
    >>> mt = from_nir(graph, firing="mt")
    >>> mt.get_submodule("features.0.act").rule.name, mt.model_args["firing"]
    ('mt', 'mt')
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import numpy as np
import torch
from torch import nn

from multispike.deploy.nir_export import _nir
from multispike.errors import ConfigError, DataError
from multispike.models import create
from multispike.models.graph_net import GraphNet, reserved_names

#: the NIR node types :func:`from_nir` reads
SUPPORTED = ("Input", "Output", "Affine", "Linear", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d",
             "Flatten", "Scale", "IF", "LIF", "CubaLIF", "Threshold")
#: the dt NIR graphs without metadata assume (snnTorch's and SpikingJelly's exporters)
DEFAULT_DT = 1e-4
_NEURONS = ("LIF", "IF", "CubaLIF")


def _fail(name: str, reason: str) -> ConfigError:
    return ConfigError(f"NIR import: node {name} {reason}")


def read_graph(graph_or_path: Any) -> Any:
    """A ``nir.NIRGraph`` as it is, or read from a ``.nir`` file (one-line
    :class:`~multispike.errors.DataError` if it cannot be read)."""
    nir = _nir()
    if isinstance(graph_or_path, nir.NIRGraph):
        return graph_or_path
    path = os.fspath(graph_or_path)
    if not os.path.isfile(path):
        raise DataError(f"NIR import: {path} is not a file; give a .nir file")
    try:
        graph = nir.read(path)
    except Exception as e:  # h5py and nir raise many kinds; the user sees one line
        raise DataError(f"NIR import: cannot read {path} as a NIR graph "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
                        "; write it with nir.write") from None
    if not isinstance(graph, nir.NIRGraph):
        raise DataError(f"NIR import: {path} holds a single {type(graph).__name__}, not a graph")
    return graph


def _order(graph: Any) -> list[str]:
    """The node names in an order where every source comes first; refuses cycles, nested
    graphs and unknown node types."""
    nodes, edges = graph.nodes, [tuple(e) for e in graph.edges]
    for name, node in nodes.items():
        kind = type(node).__name__
        if kind == "NIRGraph":
            raise _fail(name, "is a nested graph (a recurrent layer such as snnTorch's RLeaky?); "
                        "multispike imports flat feed-forward graphs")
        if kind not in SUPPORTED:
            raise _fail(name, f"is a {kind}, which multispike has no layer for; it reads "
                        f"{', '.join(SUPPORTED)}")
    for src, dst in edges:
        for end in (src, dst):
            if end not in nodes:
                raise ConfigError(f"NIR import: edge {src} -> {dst} names no node {end}")
    indeg = {n: 0 for n in nodes}
    for _, dst in edges:
        indeg[dst] += 1
    order, ready = [], [n for n in nodes if indeg[n] == 0]
    while ready:
        name = ready.pop(0)
        order.append(name)
        for src, dst in edges:
            if src == name:
                indeg[dst] -= 1
                if indeg[dst] == 0:
                    ready.append(dst)
    if len(order) < len(nodes):
        stuck = next(n for n in nodes if n not in order)
        raise _fail(stuck, "lies on a cycle (a recurrent connection); multispike networks are "
                    "feed-forward: each neuron's only recurrence is its own membrane")
    return order


def _uniform(name: str, node: Any, key: str) -> float:
    """The one value a layer parameter holds (refuses per-neuron values that differ)."""
    a = np.asarray(getattr(node, key), dtype=np.float64)
    if a.size == 0 or not np.all(a == a.flat[0]):
        lo, hi = (float(a.min()), float(a.max())) if a.size else (math.nan, math.nan)
        raise _fail(name, f"has per-neuron {key} ({lo:g} .. {hi:g}); a multispike neuron "
                    f"layer has one {key} for all its neurons")
    value = float(a.flat[0])
    if not math.isfinite(value):
        raise _fail(name, f"has {key} = {value}")
    return value


def _near_one(g: float, node: Any) -> bool:
    """``g`` equals 1 up to the rounding of the node's parameter arrays."""
    dtype = np.asarray(getattr(node, "r", 1.0)).dtype
    eps = float(np.finfo(dtype if dtype.kind == "f" else np.float64).eps)
    return abs(g - 1.0) <= 8 * eps


def _neuron(name: str, node: Any, dt: float) -> dict[str, Any]:
    """The description fields of one NIR neuron node (``docs/deploy.md`` § NIR import)."""
    kind = type(node).__name__
    get = lambda key: _uniform(name, node, key)  # noqa: E731
    vth, vr = get("v_threshold"), get("v_reset")
    if kind == "IF":
        return _gained(name, {"dynamics": "if"}, vth, vr, dt * get("r"))
    r = get("r")
    if kind == "CubaLIF":
        k_syn = dt / get("tau_syn")
        if not _near_one(k_syn, node):
            raise _fail(name, f"is a CubaLIF whose synaptic current decays with tau_syn = "
                        f"{get('tau_syn'):g} != dt = {dt:g}; multispike neurons have one state "
                        "(the membrane), so only tau_syn = dt (an instantaneous synapse) reduces")
        r *= get("w_in")
        tau = get("tau_mem")
    else:
        tau = get("tau")
    leak = get("v_leak")
    if not (tau > 0 and r > 0):
        raise _fail(name, f"has tau = {tau:g}, r = {r:g}; both must be > 0")
    k = 1.0 if _near_one(dt / tau, node) else dt / tau  # tau = dt, up to rounding: no leak
    if k > 1:
        raise _fail(name, f"has tau = {tau:g} < dt = {dt:g}: one Euler step overshoots its "
                    "leak; import with the dt the graph was written for (--dt)")
    if leak == 0 and _near_one(k * r, node):
        return _gained(name, {"dynamics": "lif", "decay": 1.0 - k}, vth, vr, 1.0)
    if leak == vr and k < 1:
        return _gained(name, {"dynamics": "plif", "init_tau": tau / dt}, vth, vr, r)
    if leak == 0:
        return _gained(name, {"dynamics": "lif", "decay": 1.0 - k}, vth, vr, k * r)
    raise _fail(name, f"leaks towards v_leak = {leak:g}, neither 0 nor v_reset = {vr:g}; "
                "multispike neurons leak towards 0 (LIF) or v_reset (PLIF)")


def _gained(name: str, fields: dict[str, Any], vth: float, vr: float, g: float
            ) -> dict[str, Any]:
    """Thresholds divided by the input gain ``g`` (exact: the membrane is scaled by 1/g)."""
    if not g > 0:
        raise _fail(name, f"has an input gain of {g:g}; it must be > 0")
    vth, vr = vth / g, vr / g
    if not vth > 0 or not vr < vth:
        raise _fail(name, f"has v_threshold {vth:g} and v_reset {vr:g} (after the input gain); "
                    "multispike needs 0 < v_threshold and v_reset < v_threshold")
    return {"op": "neuron", **fields, "v_threshold": vth, "v_reset": vr}


def _ints(value: Any, n: int) -> list[int]:
    a = np.atleast_1d(np.asarray(value)).astype(int).tolist()
    return a * n if len(a) == 1 else a


def _layer(name: str, node: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Description fields and parameters of one non-neuron NIR node."""
    kind = type(node).__name__
    if kind in ("Affine", "Linear"):
        w = np.asarray(node.weight)
        bias = getattr(node, "bias", None)
        state = {"weight": w, **({"bias": np.asarray(bias)} if bias is not None else {})}
        return {"op": "linear", "in_features": int(w.shape[1]), "out_features": int(w.shape[0]),
                "bias": bias is not None}, state
    if kind in ("Conv1d", "Conv2d"):
        w = np.asarray(node.weight)
        n = w.ndim - 2
        pad = node.padding if isinstance(node.padding, str) else _ints(node.padding, n)
        groups = int(node.groups)
        return {"op": "conv", "in_channels": int(w.shape[1]) * groups,
                "out_channels": int(w.shape[0]), "kernel": list(w.shape[2:]),
                "stride": _ints(node.stride, n), "padding": pad,
                "dilation": _ints(node.dilation, n), "groups": groups, "bias": True}, \
            {"weight": w, "bias": np.zeros(w.shape[0]) if node.bias is None
             else np.asarray(node.bias)}
    if kind in ("AvgPool2d", "SumPool2d"):
        return {"op": "avgpool" if kind == "AvgPool2d" else "sumpool",
                "kernel": _ints(node.kernel_size, 2), "stride": _ints(node.stride, 2),
                "padding": _ints(node.padding, 2)}, {}
    if kind == "Scale":
        return {"op": "scale"}, {"scale": np.asarray(node.scale)}
    if kind == "Threshold":
        return {"op": "threshold"}, {"threshold": np.asarray(node.threshold)}
    return {"op": "flatten", "start_dim": int(node.start_dim),
            "end_dim": int(node.end_dim)}, {}  # Flatten; checked against its input shape


def _merges(graph: Any, ins: dict[str, list[str]], outs: dict[str, list[str]]
            ) -> dict[str, tuple[str, str]]:
    """The patterns read back as one layer: ``{first: (op, second)}`` for
    ``SumPool2d → Threshold(0.5)`` on neuron spikes (``"maxpool"``: the max of {0, 1} spikes is
    their OR) and a bias-free ``Linear`` averaging groups of neurons into the output
    (``"vote"``)."""
    nodes, found = graph.nodes, {}
    for name, node in nodes.items():
        kind = type(node).__name__
        spikes = bool(ins[name]) and all(type(nodes[i]).__name__ in _NEURONS for i in ins[name])
        if not spikes or len(outs[name]) != 1:
            continue
        nxt = outs[name][0]
        if kind == "SumPool2d" and type(nodes[nxt]).__name__ == "Threshold" \
                and ins[nxt] == [name] and not np.any(np.asarray(node.padding)) \
                and np.all(np.asarray(nodes[nxt].threshold) == 0.5):
            found[name] = ("maxpool", nxt)
        elif kind == "Linear" and type(nodes[nxt]).__name__ == "Output" and _is_vote(node.weight):
            found[name] = ("vote", nxt)
    return found


def _is_vote(weight: Any) -> bool:
    w = np.asarray(weight)
    k, n = w.shape
    if n % k:
        return False
    g = n // k
    want = np.zeros_like(w)
    for c in range(k):
        want[c, c * g:(c + 1) * g] = 1.0 / g
    return bool(np.array_equal(w, want))


def _module_names(graph: Any, order: list[str], merges: dict[str, tuple[str, str]]
                  ) -> dict[str, str]:
    """NIR node name → module path in the model (``Input``/``Output`` → ``input``/``output``;
    other names with ``[^A-Za-z0-9_.]`` replaced and clashes with model attributes renamed)."""
    reserved, used, out = reserved_names() | {"input", "output"}, set(), {}
    for name in order:
        kind = type(graph.nodes[name]).__name__
        if kind in ("Input", "Output"):
            if kind.lower() in used:
                raise _fail(name, f"is a second {kind} node; multispike models have one of each")
            out[name] = kind.lower()
            used.add(kind.lower())
            continue
        base = str(name)
        op, second = merges.get(name, ("", ""))
        if op == "maxpool" and base.endswith(".sumpool") and second == base[:-8] + ".threshold":
            base = base[:-8]  # our own export of max pooling: the module's path again
        segs = [re.sub(r"\W", "_", s) or "_" for s in base.split(".")]
        if segs[0] in reserved:
            segs[0] += "_"
        path = ".".join(segs)
        while path in used:
            path += "_"
        used.add(path)
        out[name] = path
    return out


def _shape(name: str, f: dict[str, Any], shapes: list[list[int]]) -> list[int]:
    """The per-sample output shape of a node from its inputs' shapes (checked)."""
    if any(s != shapes[0] for s in shapes):
        raise _fail(name, f"sums inputs of different shapes {shapes}")
    s, op = list(shapes[0]), f["op"]
    if op == "linear":
        if s != [f["in_features"]]:
            raise _fail(name, f"has {f['in_features']} inputs but reads shape {s}")
        return [f["out_features"]]
    if op == "conv" and (len(s) != len(f["kernel"]) + 1 or s[0] != f["in_channels"]):
        raise _fail(name, f"convolves {f['in_channels']} channels but reads shape {s}")
    if op in ("conv", "avgpool", "sumpool", "maxpool"):
        if op != "conv" and len(s) != 3:
            raise _fail(name, f"pools over two axes but reads shape {s}")
        pad, dil = f.get("padding", [0, 0]), f.get("dilation", [1] * len(f["kernel"]))
        if isinstance(pad, str):
            if pad == "same":
                return [f["out_channels"], *s[1:]]
            pad = [0] * len(f["kernel"])
        size = [(n + 2 * p - d * (k - 1) - 1) // st + 1 for n, p, d, k, st
                in zip(s[1:], pad, dil, f["kernel"], f["stride"], strict=True)]
        return [f["out_channels"] if op == "conv" else s[0], *size]
    if op == "flatten":
        start, end = f.pop("start_dim"), f.pop("end_dim")
        if len(s) > 1 and (start != 0 or end not in (-1, len(s) - 1)):
            raise _fail(name, f"flattens axes {start}..{end} of shape {s}; multispike flattens "
                        "every axis of a sample (start_dim=0, end_dim=-1)")
        return [math.prod(s)]
    if op == "vote":
        return [f["num_classes"]]
    return s


def describe_nir(graph: Any, *, dt: float, input_shape: Any = None
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The ``nir_graph`` description of a NIR graph and its parameters by state-dict key.

    ``input_shape`` (one sample) replaces the graph's input shape when both hold as many
    values and the graph's is flat: a flatten node is put after the input (so an MLP reads
    images)."""
    order = _order(graph)
    edges = [tuple(e) for e in graph.edges]
    ins = {n: [s for s, d in edges if d == n] for n in graph.nodes}
    outs = {n: [d for s, d in edges if s == n] for n in graph.nodes}
    merges = _merges(graph, ins, outs)
    names = _module_names(graph, order, merges)
    alias = dict(names)  # NIR node -> the description node holding its value
    for first, (_, second) in merges.items():
        if type(graph.nodes[second]).__name__ == "Threshold":
            alias[second] = names[first]
    nodes: list[dict[str, Any]] = []
    params: dict[str, np.ndarray] = {}
    shapes: dict[str, list[int]] = {}
    for name in order:
        if alias[name] != names[name]:
            continue  # the Threshold of a max pooling
        fields, arrays = _fields(name, graph.nodes[name], merges.get(name), dt)
        src = [alias[i] for i in ins[name]]
        if fields["op"] == "input":
            shape = _input_shape(graph.nodes[name])
            if input_shape is not None and list(input_shape) != shape:
                src, shape = _reshaped_input(name, shape, list(input_shape), nodes, shapes)
                alias[name] = src[0]
                continue
        elif not src:
            raise _fail(name, "has no input edge; every node must be reachable from the input")
        else:
            shape = _shape(name, fields, [shapes[s] for s in src])
        path = names[name]
        nodes.append({"name": path, **fields, **({"inputs": src} if src else {}),
                      "shape": shape})
        shapes[path] = shape
        params.update({f"{path}.{k}": v for k, v in arrays.items()})
    if "input" not in shapes or "output" not in shapes:
        raise ConfigError("NIR import: the graph needs one Input and one Output node")
    if len(shapes["output"]) != 1:
        raise ConfigError(f"NIR import: the output has shape {shapes['output']}; multispike "
                          "models output class scores [K]: end the graph with a Flatten")
    return {"input": shapes["input"], "nodes": nodes}, params


def _input_shape(node: Any) -> list[int]:
    types = getattr(node, "input_type", None) or getattr(node, "output_type", None) or {}
    shape = next(iter(types.values()), None)
    if shape is None or np.asarray(shape).size == 0:
        raise ConfigError("NIR import: the Input node has no shape; give input_shape "
                          "(--input-shape C,H,W)")
    return [int(v) for v in np.asarray(shape).ravel()]


def _reshaped_input(name: str, shape: list[int], want: list[int], nodes: list[dict[str, Any]],
                    shapes: dict[str, list[int]]) -> tuple[list[str], list[int]]:
    """Input of shape ``want`` flattened into the graph's flat input: the two nodes added."""
    if len(shape) != 1 or math.prod(want) != shape[0]:
        raise ConfigError(f"NIR import: input_shape {tuple(want)} does not fit the graph's "
                          f"input {tuple(shape)}; only a flat input of as many values can be "
                          "read as another shape")
    nodes.append({"name": "input", "op": "input", "shape": want})
    nodes.append({"name": "input_flatten", "op": "flatten", "inputs": ["input"],
                  "shape": shape})
    shapes.update({"input": want, "input_flatten": shape})
    return ["input_flatten"], shape


def _fields(name: str, node: Any, merge: tuple[str, str] | None, dt: float
            ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Description fields and parameters of one NIR node."""
    kind = type(node).__name__
    if kind in ("Input", "Output"):
        return {"op": kind.lower()}, {}
    if kind in _NEURONS:
        fields = _neuron(name, node, dt)
        if fields["dynamics"] != "plif":
            return fields, {}
        return fields, {"w": np.asarray(-math.log(fields["init_tau"] - 1.0))}
    if merge is not None and merge[0] == "maxpool":
        return {"op": "maxpool", "kernel": _ints(node.kernel_size, 2),
                "stride": _ints(node.stride, 2)}, {}
    if merge is not None and merge[0] == "vote":
        k, n = np.asarray(node.weight).shape
        return {"op": "vote", "num_classes": int(k), "group": int(n // k)}, {}
    return _layer(name, node)


def _load(model: nn.Module, params: dict[str, np.ndarray]) -> None:
    """Copy the graph's parameters into ``model`` (broadcast to each slot's shape)."""
    state = model.state_dict()
    for key, value in params.items():
        own = state[key]
        try:
            array = np.broadcast_to(np.asarray(value, dtype=np.float64), tuple(own.shape))
        except ValueError:
            raise _fail(key.rsplit(".", 1)[0], f"has {key.rsplit('.', 1)[1]} of shape "
                        f"{np.shape(value)}, which does not fit {tuple(own.shape)}") from None
        state[key] = torch.from_numpy(array.copy()).to(own.dtype)
    model.load_state_dict(state, strict=True)


def from_nir(graph_or_path: Any, *, firing: str | None = None, dt: float | None = None,
             timesteps: int | None = None, input_shape: Any = None,
             dtype: torch.dtype = torch.float32, **options: Any) -> GraphNet:
    """The multispike model of a NIR graph (a ``nir.NIRGraph`` or a ``.nir`` path).

    Args:
        firing: the firing rule of every neuron (default ``"binary"``, the graph's own);
            ``"mt"``, ``"ternary"``, ``"integer"``, ... is the upgrade: same weights and
            dynamics, multi-bit spikes. Rule options (``deltas``, ``levels``, ``reset``,
            ``learn_thresholds``, ...) and model options (``mt_on_fc``) go in ``options``.
        dt: the Euler step the graph's time constants are read with (default: the graph's
            ``metadata["dt"]``, else 1e-4, snnTorch's and SpikingJelly's).
        timesteps: T (default: ``metadata["timesteps"]``, else 4).
        input_shape: one sample's shape when the data's differs from a flat graph input.
        dtype: of the weights (float64 keeps a float64 graph exact).

    Returns a ``nir_graph`` model (:class:`~multispike.models.graph_net.GraphNet`) in train
    mode; ``create(**model.model_args)`` rebuilds it. Raises a one-line
    :class:`~multispike.errors.ConfigError` naming the node NIR import cannot express.
    """
    graph = read_graph(graph_or_path)
    meta = dict(getattr(graph, "metadata", None) or {})
    dt = float(dt if dt is not None else meta.get("dt", DEFAULT_DT))
    if not (math.isfinite(dt) and dt > 0):
        raise ConfigError(f"NIR import: dt must be > 0, got {dt}")
    steps = int(timesteps or meta.get("timesteps") or 4)
    desc, params = describe_nir(graph, dt=dt, input_shape=input_shape)
    if firing is not None:
        options["firing"] = firing
    model = create("nir_graph", graph=desc, timesteps=steps, **options).to(dtype)
    _load(model, params)
    return model
