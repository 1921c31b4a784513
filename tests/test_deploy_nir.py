"""NIR export: write, read back, compare graph and parameters; run the graph back through
nirtorch with NIR's semantics and, where a peer library's importer is installed
(SpikingJelly, snnTorch), through it; MT and ternary neurons fail with a one-line message."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from multispike.deploy import export_nir, fold_amplitudes, run_nir
from multispike.errors import ConfigError
from tests.test_deploy import build

nir = pytest.importorskip("nir")
pytest.importorskip("nirtorch")


def assert_graphs_equal(a, b, *, rtol: float = 0.0) -> None:
    """Same node names, node types, edges and parameters (bit for bit; float arrays within
    ``rtol`` where it is given)."""
    assert set(a.nodes) == set(b.nodes)
    assert sorted(a.edges) == sorted(map(tuple, b.edges))
    for name, node in a.nodes.items():
        other = b.nodes[name]
        assert type(node) is type(other), name
        da, db = node.to_dict(), other.to_dict()
        da.pop("metadata", None)
        db.pop("metadata", None)
        assert set(da) == set(db), name
        for key, value in da.items():
            x, y = np.asarray(value), np.asarray(db[key])
            if x.dtype.kind == "f" and rtol:
                np.testing.assert_allclose(x, y, rtol=rtol, atol=0, err_msg=f"{name}.{key}")
            else:
                np.testing.assert_array_equal(x, y, err_msg=f"{name}.{key}")


CASES = [
    ("digits_net", {"neuron": "plif"}),  # max pooling as SumPool2d + Threshold
    ("digits_net", {"neuron": "if", "pool": "avg", "norm": "tdbn", "output": "vote",
                    "num_classes": 4}),  # voting as a Linear
    ("resnet20m", {"neuron": "lif"}),  # identity shortcuts: several edges into one neuron
    ("resnet20", {"neuron": "plif"}),  # membrane residual sums forwarded as edges
]


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_nir_round_trip_and_run(tmp_path, name, kw):
    model, x = build(name, firing="binary", timesteps=3, **kw)
    graph = export_nir(model, input_shape=tuple(x.shape[1:]))
    path = tmp_path / "model.nir"
    nir.write(path, graph)
    back = nir.read(path)
    assert_graphs_equal(graph, back)
    ref = model(x).detach()
    out = run_nir(back, x, model.timesteps)
    assert out.shape == ref.shape
    assert float((out - ref).abs().max()) <= 1e-10 * max(1.0, float(ref.abs().max()))
    types = {type(n).__name__ for n in back.nodes.values()}
    assert {"Input", "Conv2d", "Affine", "Output"} <= types
    if name == "digits_net" and "pool" not in kw:
        assert {"SumPool2d", "Threshold"} <= types
    if name == "resnet20m":  # stages.0.sn2 sums its conv branch and the identity shortcut
        into = [a for a, b in back.edges if b == "stages.0.sn2"]
        assert sorted(into) == ["stages.0.conv2", "stem_rest.2.module"]


def test_neuron_mapping_formulas():
    for neuron, dt in (("plif", 1.0), ("lif", 1e-4), ("if", 1e-3)):
        model, x = build("digits_net", firing="binary", neuron=neuron,
                         **({"decay": 0.25} if neuron == "lif" else {}))
        graph = export_nir(model, input_shape=tuple(x.shape[1:]), dt=dt)
        node = graph.nodes["fc1_act"]
        assert node.v_threshold.shape == (64,)
        np.testing.assert_allclose(node.v_threshold, model.fc1_act.v_threshold)
        if neuron == "plif":  # tau = τ·dt, r = 1
            assert isinstance(node, nir.LIF)
            np.testing.assert_allclose(node.tau, float(model.fc1_act.tau.detach()) * dt)
            np.testing.assert_allclose(node.r, 1.0)
        elif neuron == "lif":  # 1 - dt/tau = decay, (dt/tau)·r = 1
            assert isinstance(node, nir.LIF)
            np.testing.assert_allclose(1 - dt / node.tau, 0.25)
            np.testing.assert_allclose(dt / node.tau * node.r, 1.0)
        else:  # dt·r = 1
            assert isinstance(node, nir.IF)
            np.testing.assert_allclose(node.r * dt, 1.0)
        assert graph.metadata["dt"] == dt
        ref = model(x).detach()
        assert float((run_nir(graph, x, model.timesteps, dt=dt) - ref).abs().max()) < 1e-10


@pytest.mark.parametrize("neuron", ["plif", "if"])
def test_read_back_starts_every_membrane_at_v_reset(neuron):
    """multispike (like SpikingJelly and Norse) starts the membrane at v_reset, and so does the
    graph read back from NIR; the metadata says so."""
    model, x = build("digits_net", firing="binary", neuron=neuron, v_reset=0.2)
    graph = export_nir(model, input_shape=tuple(x.shape[1:]))
    assert "v_reset" in graph.metadata["initial_state"]
    ref = model(x).detach()
    assert float((run_nir(graph, x, model.timesteps) - ref).abs().max()) < 1e-10


@pytest.mark.parametrize("firing", ["mt", "ternary", "ternary-mt"])
def test_multi_bit_neurons_fail_with_a_one_line_message(firing):
    model, _ = build("digits_net", firing=firing)
    with pytest.raises(ConfigError) as err:
        export_nir(model)
    msg = str(err.value)
    assert "\n" not in msg and "stem_act" in msg and repr(firing) in msg
    assert "reset" in msg


def test_per_step_bn_fails_with_a_one_line_message():
    model, _ = build("digits_net", firing="binary", norm="per-step")
    with pytest.raises(ConfigError) as err:
        export_nir(model)
    assert "\n" not in str(err.value) and "stem_norm" in str(err.value)


def test_partial_average_pooling_windows_are_refused():
    model, _ = build("resnet20m", firing="binary")
    # 16x16 input: 8x8 at the first avg-down shortcut, even sizes down to the 1x1 stage
    export_nir(model, input_shape=(3, 16, 16))
    with pytest.raises(ConfigError, match="partial windows"):
        export_nir(model, input_shape=(3, 24, 24))  # 3x3 at the last avg-down: ceil_mode


def test_export_folds_a_copy():
    model, x = build("resnet20m", firing="binary")
    graph = export_nir(model, input_shape=(3, 16, 16))
    assert model.stem_act.amplitude is not None  # the input model is untouched
    deployed = fold_amplitudes(model)
    np.testing.assert_array_equal(graph.nodes["stages.0.conv1"].weight,
                                  deployed.stages[0].conv1.weight.detach().numpy())


# -- peer libraries ----------------------------------------------------------------------------
def test_spikingjelly_import_runs_the_network():
    sj = pytest.importorskip("spikingjelly.activation_based.nir_exchange.from_nir")
    for neuron in ("plif", "lif", "if"):
        model, x = build("resnet20m", firing="binary", neuron=neuron, timesteps=3)
        graph = export_nir(model, input_shape=tuple(x.shape[1:]), dt=1e-4)
        net = sj.import_from_nir(graph, dt=1e-4, dtype=torch.float64)
        state, outs = None, []
        with torch.no_grad():
            for _ in range(model.timesteps):
                out, state = net(x) if state is None else net(x, state)
                outs.append(out)
        ref = model(x).detach()
        assert float((torch.stack(outs) - ref).abs().max()) <= 1e-10 * float(ref.abs().max())


def test_snntorch_import_runs_the_network():
    pytest.importorskip("snntorch.import_nir")
    from snntorch.import_nir import import_from_nir
    from snntorch.utils import reset

    for neuron in ("plif", "lif"):  # snnTorch maps nir.IF to a leaky neuron: not compared
        model, _ = build("digits_net", firing="binary", neuron=neuron, pool="avg", timesteps=3)
        model = model.float()
        x = torch.rand(1, 1, 8, 8)  # snnTorch's Flatten keeps no batch axis: one image
        graph = export_nir(model, input_shape=(1, 8, 8), dt=1e-4)
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():  # it prints to stdout
            net = import_from_nir(graph)
            reset(net)
            state, outs = None, []
            for _ in range(model.timesteps):
                out, state = net(x) if state is None else net(x, state)
                outs.append(out.reshape(1, -1))
        ref = model(x).detach()
        assert float((torch.stack(outs) - ref).abs().max()) <= 1e-5 * max(1.0,
                                                                           float(ref.abs().max()))
