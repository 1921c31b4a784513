"""The addition-only executor: outputs equal the dense model, no multiplication of spikes by
weights after the encoder, and synaptic-operation counts that match an independent count.

The independent count runs the dense graph, takes every spike tensor (MT values count as
``|value|`` events, plane-split models as their planes) and pushes ``|spikes|`` through the
same pooling and a convolution / linear layer whose weights are all ones, with average pooling
replaced by sum pooling: the sum of the result is Σ events × fan-out, computed by dense torch
operations instead of the executor's index arithmetic.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from multispike.deploy import (
    AdditionOnlyExecutor,
    fold_amplitudes,
    run_addition_only,
    split_planes,
    trace,
)
from multispike.deploy.graph import DeployGraph
from multispike.errors import ConfigError
from tests.test_deploy import build

#: (model, options, batch): small models that exercise every connection type
CASES = [
    ("digits_net", {"firing": "binary"}, 2),  # max pooling, flatten, FC
    ("digits_net", {"firing": "ternary", "norm": "per-step"}, 2),  # a weight table per step
    ("digits_net", {"firing": "mt", "pool": "avg", "mt_on_fc": True, "output": "vote"}, 2),
    ("digits_net", {"firing": "ternary-mt", "neuron": "lif"}, 2),
    ("resnet20m", {"firing": "ternary"}, 1),  # identity through avg pooling, avg-down, GAP
    ("resnet20", {"firing": "mt", "norm": "tdbn"}, 1),  # membrane residual, 3x3 shortcut
]


def _source(graph: DeployGraph, name: str) -> tuple[str, list]:
    """Walk back through average pooling, GAP, flatten and plane merges to the spikes."""
    via = []
    node = graph[name]
    while node.op in ("avgpool", "gap", "flatten", "merge"):
        via.insert(0, node)
        node = graph[node.inputs[0]]
    return node.name, via


def independent_sops(model, x) -> dict[str, int]:
    graph = trace(model)
    values = graph.run(x, keep=True)
    counts: dict[str, int] = {}

    def count(src: str, target) -> int:
        origin, via = _source(graph, src)
        if graph[origin].op not in ("neuron", "maxpool"):
            return -1  # currents, not spikes
        y = values[origin].abs().flatten(0, 1)  # unit events per position
        for v in via:
            if v.op == "avgpool":  # membership count of each pooled window
                p = v.module
                y = F.avg_pool2d(y, p.kernel_size, p.stride, p.padding, p.ceil_mode, True, 1)
            elif v.op == "gap":
                y = y.sum((-2, -1))
            elif v.op == "flatten":
                y = y.flatten(1)
            elif v.op == "merge":
                y = sum(y.chunk(len(v.module.signs), 1))
        if target is None:  # identity shortcut: one addition per event and pooled cell
            return int(y.sum())
        layer = getattr(target.module, "conv", None) or getattr(target.module, "linear", None) \
            or target.module
        if target.op == "conv":
            ones = torch.ones(layer.out_channels, y.shape[1], *layer.kernel_size,
                              dtype=y.dtype)
            return int(F.conv2d(y, ones, None, layer.stride, layer.padding, layer.dilation)
                       .sum())
        return int(y.sum()) * layer.out_features

    for node in graph:
        if node.op in ("conv", "linear") and node.inputs != ("input",):
            counts[node.name] = count(node.inputs[0], node)
        if node.op in ("neuron", "sum"):
            for src in node.inputs:
                n = count(src, None)
                if n >= 0:
                    counts[f"{node.name}.identity"] = counts.get(f"{node.name}.identity", 0) + n
    return counts


@pytest.mark.parametrize(("name", "kw", "batch"), CASES)
def test_executor_equals_dense_model_and_counts_exactly(name, kw, batch):
    model, x = build(name, batch=batch, **kw)
    deployed = fold_amplitudes(model)
    report, diff = run_addition_only(deployed, x)
    ref = model(x).detach()
    assert diff <= 1e-10 * max(1.0, float(ref.abs().max()))
    assert float((report.output - ref).abs().max()) <= 1e-10 * max(1.0, float(ref.abs().max()))
    expected = independent_sops(deployed, x)
    assert report.sops == expected
    assert report.total_sops > 0
    assert report.encoder_macs > 0
    assert set(report.dense_macs) == set(report.sops)
    # MT spikes of value k are k plane events: the split model gives the same counts, and
    # the independent count over its binary planes agrees
    planes = split_planes(deployed)
    report2 = AdditionOnlyExecutor(planes).run(x)
    assert report2.sops == report.sops
    assert independent_sops(planes, x) == report.sops


def test_identity_shortcuts_are_counted_as_one_addition_per_event():
    model, x = build("resnet20m", batch=1, firing="ternary")
    report = AdditionOnlyExecutor(fold_amplitudes(model)).run(x)
    identity = {k: v for k, v in report.sops.items() if k.endswith(".identity")}
    assert set(identity) == {f"stages.{i}.sn2.identity" for i in (0, 1, 3, 5, 7)}
    # the first block's identity reads the 2x2-average-pooled stem spikes: each event reaches
    # exactly one pooled cell (stride = kernel) so additions = events
    assert report.sops["stages.0.sn2.identity"] == report.events["stages.0.sn2.identity"]


def test_no_multiplication_after_the_encoder(monkeypatch):
    """The executor never calls a convolution or matrix product except the encoder's."""
    model, x = build("resnet20m", batch=1, firing="ternary")
    ex = AdditionOnlyExecutor(fold_amplitudes(model))
    calls = {"conv2d": 0, "linear": 0, "matmul": 0}
    for fn in calls:
        original = getattr(F if fn != "matmul" else torch, fn)

        def counting(*a, _fn=fn, _orig=original, **k):
            calls[_fn] += 1
            return _orig(*a, **k)

        monkeypatch.setattr(F if fn != "matmul" else torch, fn, counting)
    report = ex.run(x)
    assert calls == {"conv2d": 1, "linear": 0, "matmul": 0}  # the stem convolution, once
    assert report.total_sops > 0


def test_event_frames_run_the_encoder_every_step():
    model, _ = build("digits_net", firing="binary")
    frames = torch.rand(model.timesteps, 2, 1, 8, 8, dtype=torch.float64)
    static = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    ex = AdditionOnlyExecutor(fold_amplitudes(model))
    r_frames, diff = ex.verify(frames)
    assert diff <= 1e-12
    r_static = ex.run(static)
    assert r_frames.encoder_macs == model.timesteps * r_static.encoder_macs


def test_executor_refuses_models_that_are_not_deployed():
    model, _ = build("digits_net", firing="ternary")
    with pytest.raises(ConfigError, match="fold_amplitudes"):
        AdditionOnlyExecutor(model)
    model, _ = build("digits_net", firing="binary", learn_amplitude=False)
    with pytest.raises(ConfigError, match="BN stem_norm is not folded"):
        AdditionOnlyExecutor(model)


def test_report_summary_is_plain_numbers():
    import json

    model, x = build("digits_net", firing="ternary")
    report = AdditionOnlyExecutor(fold_amplitudes(model)).run(x)
    s = json.loads(json.dumps(report.summary()))
    assert s["total_sops"] == report.total_sops
    assert s["layers"]["features.0.conv"]["sops"] == report.sops["features.0.conv"]
