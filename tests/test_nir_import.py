"""NIR import (multispike.deploy.nir_import) and the nir_graph family it builds: the inverse of
export on every registered model (float64), NIR's own semantics on hand-written graphs (the
``run_nir`` reference and step loops written here), branch/merge graphs, the upgrade to
multi-bit spikes, refusals (one line naming the node), and the ``multispike import`` command
feeding ``eval``. The peers (snnTorch, SpikingJelly) are in tests/test_nir_peers.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from multispike.cli import main
from multispike.deploy import export_nir, run_nir
from multispike.engine.checkpoint import load_model
from multispike.errors import ConfigError, DataError, InputError
from multispike.models import create, list_models
from multispike.neurons import IFNode, LIFNode, Neuron, PLIFNode
from tests.test_deploy import TINY, build
from tests.test_deploy_nir import assert_graphs_equal

nir = pytest.importorskip("nir")
pytest.importorskip("nirtorch")
from multispike.deploy.nir_import import from_nir  # noqa: E402  (needs nir)

F64 = torch.float64


# -- the inverse of export -------------------------------------------------------------------
def test_every_registered_model_is_covered():
    assert set(TINY) == set(list_models())
    assert "nir_graph" not in list_models()  # a family built from data: no default model


@pytest.mark.parametrize("name", sorted(TINY))
def test_export_import_export_is_the_identity(name):
    """float64: the imported model computes the exported one's outputs, and exporting it again
    writes the same graph (names, types, edges, every parameter bit for bit)."""
    model, x = build(name, firing="binary", timesteps=2, learn_amplitude=False)
    shape = tuple(x.shape[1:])
    graph = export_nir(model, input_shape=shape)
    back = from_nir(graph, dtype=F64).eval()
    assert back.timesteps == 2 and back.firing == "binary"
    assert torch.equal(back(x), model(x).detach())
    assert_graphs_equal(graph, export_nir(back, input_shape=shape))
    again = create(**back.model_args).double()  # what a checkpoint rebuilds
    again.load_state_dict(back.state_dict())
    assert torch.equal(again.eval()(x), back(x))


def test_round_trip_of_a_trained_plif_tau_and_folded_amplitudes():
    """A learnt τ = 1 + exp(−w) comes back through w = −log(τ − 1) to an ulp; amplitudes and
    BN, folded by the export, stay folded."""
    model, x = build("digits_net", firing="binary", neuron="plif", timesteps=3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, PLIFNode):
                m.w.fill_(0.37)
    graph = export_nir(model, input_shape=tuple(x.shape[1:]))
    back = from_nir(graph, dtype=F64).eval()
    ref = model(x).detach()
    assert float((back(x) - ref).abs().max()) <= 1e-12 * max(1.0, float(ref.abs().max()))
    assert_graphs_equal(graph, export_nir(back, input_shape=tuple(x.shape[1:])), rtol=4e-16)


# -- NIR semantics on hand-written graphs -------------------------------------------------------
def _conv_graph(neuron, second=None):
    """Input [1, 6, 6] → Conv2d → neuron → AvgPool2d → Flatten → Affine → neuron 2 → Output."""
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(3, 1, 3, 3, generator=g, dtype=F64) * 0.8).numpy()
    w2 = (torch.randn(4, 27, generator=g, dtype=F64) * 0.6).numpy()
    nodes = {
        "input": nir.Input(input_type=np.array([1, 6, 6])),
        "conv": nir.Conv2d(input_shape=(6, 6), weight=w, stride=1, padding=0, dilation=1,
                           groups=1, bias=np.full(3, 0.2)),
        "act": neuron((3, 4, 4)),
        "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([1, 1]),
                              padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([3, 3, 3])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=w2, bias=np.full(4, 0.1)),
        "act2": (second or neuron)((4,)),
        "output": nir.Output(output_type=np.array([4])),
    }
    order = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:], strict=True)),
                        type_check=False)


def _lif(tau, r, v_leak, v_th, v_reset):
    return lambda s: nir.LIF(tau=np.full(s, tau), r=np.full(s, r), v_leak=np.full(s, v_leak),
                             v_threshold=np.full(s, v_th), v_reset=np.full(s, v_reset))


def _if(r, v_th, v_reset):
    return lambda s: nir.IF(r=np.full(s, r), v_threshold=np.full(s, v_th),
                            v_reset=np.full(s, v_reset))


#: (neuron, dt, the layer it must become): every row of the mapping table
MAPPINGS = [
    (_lif(4e-4, 4.0, 0.0, 0.5, 0.0), 1e-4, LIFNode),          # k·r = 1: decay = 1 − k
    (_lif(2.0, 1.0, 0.2, 0.6, 0.2), 1.0, PLIFNode),           # v_leak = v_reset: PLIF τ = 2
    (_lif(3.0, 1.7, -0.3, 0.4, -0.3), 1.0, PLIFNode),         # ... with a gain r: V_th / r
    (_lif(2.5, 0.9, 0.0, 0.3, 0.1), 1.0, LIFNode),            # leak to 0, gain k·r ≠ 1
    (_if(1e4, 0.5, 0.0), 1e-4, IFNode),                        # dt·r = 1
    (_if(2.5, 0.7, -0.1), 1.0, IFNode),                        # gain 2.5: V_th / 2.5
]


@pytest.mark.parametrize(("neuron", "dt", "cls"), MAPPINGS)
def test_neurons_follow_nir_semantics(neuron, dt, cls):
    """Against run_nir (nirtorch with NIR's Euler step, multispike.deploy.nir_export) in
    float64: the same outputs, the neurons of the table's class."""
    graph = _conv_graph(neuron)
    model = from_nir(graph, dt=dt, timesteps=5, dtype=F64).eval()
    assert all(isinstance(m, cls) for m in model.modules() if isinstance(m, Neuron))
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=F64) * 2
    ours, ref = model(x), run_nir(graph, x, 5, dt=dt)
    assert 0 < float(ref.mean()) < 1  # the output layer fires: the check means something
    assert torch.equal(ours, ref)


def _loop_lif(current, decay, v_th, v_reset=0.0):
    """A step loop of NIR's LIF with k·r = 1: ``v ← decay·v + I``, spike where v > V_th."""
    v, out = torch.full_like(current[0], v_reset), []
    for i in current:
        v = decay * v + i
        s = (v > v_th).to(v.dtype)
        v = torch.where(s > 0, torch.full_like(v, v_reset), v)
        out.append(s)
    return torch.stack(out)


def test_cuba_lif_with_an_instant_synapse_is_a_lif():
    """CubaLIF with tau_syn = dt passes w_in·I at once: an LIF with r·w_in (loop reference);
    with a slower synapse it is refused."""
    def cuba(tau_syn):
        return lambda s: nir.CubaLIF(tau_syn=np.full(s, tau_syn), tau_mem=np.full(s, 4.0),
                                     r=np.full(s, 2.0), v_leak=np.zeros(s),
                                     v_threshold=np.full(s, 0.5), v_reset=np.zeros(s),
                                     w_in=np.full(s, 2.0))
    model = from_nir(_conv_graph(cuba(1.0)), dt=1.0, timesteps=4, dtype=F64).eval()
    act = model.get_submodule("act")
    assert isinstance(act, LIFNode) and act.decay == 0.75 and act.v_threshold == 0.5
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(2), dtype=F64)
    current = model.conv(x).unsqueeze(0).expand(4, -1, -1, -1, -1)
    spikes = {}
    act.register_forward_hook(lambda m, a, out: spikes.setdefault("act", out))
    model(x)
    assert torch.equal(spikes["act"], _loop_lif(current, 0.75, 0.5))  # (dt/τ)·r·w_in = 1
    with pytest.raises(ConfigError, match=r"node act .*tau_syn"):
        from_nir(_conv_graph(cuba(2.0)), dt=1.0)


def test_branch_and_merge_sums_the_inputs():
    """Input feeds two Affine branches that merge (NIR sums a node's inputs) into one LIF,
    whose spikes and a skip branch both reach the output layer: a residual graph."""
    g = torch.Generator().manual_seed(3)
    a, b, c = (torch.randn(5, n, generator=g, dtype=F64).numpy() for n in (6, 6, 5))
    nodes = {"input": nir.Input(input_type=np.array([6])),
             "a": nir.Affine(weight=a, bias=np.zeros(5)), "b": nir.Linear(weight=b),
             "lif": _lif(2.0, 2.0, 0.0, 0.5, 0.0)((5,)),
             "skip": nir.Affine(weight=c, bias=np.full(5, 0.1)),
             "out_fc": nir.Linear(weight=np.eye(5)),
             "output": nir.Output(output_type=np.array([5]))}
    edges = [("input", "a"), ("input", "b"), ("a", "lif"), ("b", "lif"), ("lif", "skip"),
             ("lif", "out_fc"), ("skip", "out_fc"), ("out_fc", "output")]
    model = from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), dt=1.0,
                     timesteps=4, dtype=F64).eval()
    assert [n.inputs for n in model.graph() if n.name in ("lif", "out_fc")] == [
        ("a", "b"), ("lif", "skip")]
    x = torch.rand(3, 6, generator=g, dtype=F64) * 3
    current = (x @ torch.from_numpy(a).T + x @ torch.from_numpy(b).T).expand(4, -1, -1)
    s = _loop_lif(current, 0.5, 0.5)  # k = dt/tau = 0.5, k·r = 1: decay 0.5
    want = s + s @ torch.from_numpy(c).T + 0.1
    assert 0 < float(s.mean()) < 1
    assert torch.allclose(model(x), want, rtol=1e-12, atol=1e-12)


# -- the upgrade --------------------------------------------------------------------------------
@pytest.mark.parametrize(("firing", "options", "values"), [
    ("mt", {}, {0.0, 1.0, 2.0, 3.0}),
    ("ternary", {}, {-1.0, 0.0, 1.0}),
    ("integer", {"levels": 3}, {0.0, 1.0, 2.0, 3.0}),
])
def test_upgrade_swaps_the_firing_rule_and_keeps_weights_and_dynamics(firing, options, values):
    model, x = build("digits_net", firing="binary", neuron="lif", timesteps=3,
                     learn_amplitude=False)
    graph = export_nir(model, input_shape=tuple(x.shape[1:]))
    base = from_nir(graph, dtype=F64)
    up = from_nir(graph, firing=firing, dtype=F64, **options).eval()
    assert up.model_args["firing"] == firing
    for key, value in base.state_dict().items():
        assert torch.equal(up.state_dict()[key], value), key
    seen = set()
    for name, m in up.named_modules():
        if isinstance(m, Neuron):
            old = base.get_submodule(name)
            assert m.rule.name == firing and (m.decay, m.v_threshold, m.v_reset) == (
                old.decay, old.v_threshold, old.v_reset)
            m.register_forward_hook(lambda mod, a, out: seen.update(out.unique().tolist()))
    up(x)
    assert seen <= values and len(seen) > 2  # multi-bit spikes fired


def test_max_pooling_and_voting_come_back_as_themselves():
    model, x = build("digits_net", firing="binary", neuron="if", output="vote",
                     num_classes=4, timesteps=2, learn_amplitude=False)
    graph = export_nir(model, input_shape=tuple(x.shape[1:]))
    pool = "features.1.module"
    assert {f"{pool}.sumpool", f"{pool}.threshold", "head.vote"} <= set(graph.nodes)
    back = from_nir(graph, dtype=F64)
    assert type(back.get_submodule(pool)).__name__ == "MaxPool2d"
    assert type(back.get_submodule("head.vote")).__name__ == "VotingLayer"


# -- refusals ----------------------------------------------------------------------------------
def _refused(graph, match, **kw):
    with pytest.raises(ConfigError) as err:
        from_nir(graph, **kw)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("NIR import")
    assert match in msg, msg


def test_refusals_name_the_node_and_the_reason():
    lif = _lif(2.0, 1.0, 0.0, 0.5, 0.0)
    g = _conv_graph(lif)
    g.nodes["act"].tau[0, 0, 0] = 3.0  # per-neuron tau
    _refused(g, "node act has per-neuron tau", dt=1.0)
    _refused(_conv_graph(_lif(0.5, 1.0, 0.0, 0.5, 0.0)), "node act has tau = 0.5 < dt", dt=1.0)
    _refused(_conv_graph(_lif(2.0, 1.0, 0.3, 0.5, 0.0)), "node act leaks towards v_leak = 0.3",
             dt=1.0)
    _refused(_conv_graph(_lif(2.0, 1.0, 0.0, -0.5, -1.0)), "node act has v_threshold", dt=1.0)
    li = _conv_graph(lif, second=lambda s: nir.LI(tau=np.ones(s), r=np.ones(s),
                                                  v_leak=np.zeros(s)))
    _refused(li, "node act2 is a LI", dt=1.0)
    _refused(_recurrent(), "lies on a cycle", dt=1.0)  # a recurrent weight
    nested = _conv_graph(lif)
    nested.nodes["act2"] = _conv_graph(lif)
    _refused(nested, "node act2 is a nested graph", dt=1.0)
    flat = _conv_graph(lif)
    flat.nodes["flat"].start_dim = 1
    _refused(flat, "node flat flattens axes 1..-1", dt=1.0)
    with pytest.raises(DataError, match="is not a file"):
        from_nir("/nonexistent/net.nir")


def test_nir_graph_refuses_node_dynamics_as_model_options():
    model = from_nir(_conv_graph(_lif(2.0, 1.0, 0.0, 0.5, 0.0)), dt=1.0)
    with pytest.raises(ConfigError, match="belong to each neuron node"):
        create(**{**model.model_args, "v_threshold": 0.3})
    with pytest.raises(ConfigError, match="num_classes=7"):
        create(**{**model.model_args, "num_classes": 7})


# -- the command ---------------------------------------------------------------------------------
def _mlp_file(tmp_path):
    """A flat 64-input graph (an MLP, as snnTorch writes them) trained by nobody."""
    g = torch.Generator().manual_seed(4)
    w1, w2 = (torch.randn(o, i, generator=g).numpy() * 0.3 for o, i in ((32, 64), (10, 32)))
    nodes = {"input": nir.Input(input_type=np.array([64])),
             "fc1": nir.Affine(weight=w1, bias=np.zeros(32, np.float32)),
             "lif1": _lif(2e-4, 1.0, 0.0, 0.3, 0.0)((32,)),
             "fc2": nir.Affine(weight=w2, bias=np.zeros(10, np.float32)),
             "output": nir.Output(output_type=np.array([10]))}
    order = list(nodes)
    path = tmp_path / "mlp.nir"
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:],
                                                                strict=True)), type_check=False))
    return path


def test_cli_import_then_eval_on_digits(tmp_path, capsys):
    model, _ = build("digits_net", firing="binary", neuron="lif", timesteps=2,
                     learn_amplitude=False)
    path = tmp_path / "net.nir"
    nir.write(path, export_nir(model.float()))
    out = tmp_path / "imported"
    assert main(["import", str(path), "--out", str(out)]) == 0
    assert "LIFNode, decay=0.25" in capsys.readouterr().out
    loaded, ckpt = load_model(out / "model.pt")
    assert ckpt["model_args"]["name"] == "nir_graph"
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded.eval()(x), model.eval()(x))
    assert main(["eval", "--checkpoint", str(out / "model.pt"), "--dataset", "digits",
                 "--batch-size", "128", "--no-progress", "--json"]) == 0
    binary = json.loads(capsys.readouterr().out)[0]
    assert main(["import", str(path), "--out", str(tmp_path / "mt"), "--firing", "mt"]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "mt" / "model.pt"), "--dataset",
                 "digits", "--batch-size", "128", "--no-progress", "--json"]) == 0
    mt = json.loads(capsys.readouterr().out)[0]
    assert 0 <= mt["accuracy"] <= 1 and mt["mean_firing_rate"] > binary["mean_firing_rate"]


def test_cli_reads_an_mlp_as_images_and_upgrades_to_integer(tmp_path, capsys):
    path = _mlp_file(tmp_path)
    out = tmp_path / "int"
    assert main(["import", str(path), "--out", str(out), "--input-shape", "1,8,8",
                 "--firing", "integer", "--option", "levels=3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["input_shape"] == [1, 8, 8] and summary["firing"] == "integer"
    assert summary["neurons"][0]["neuron"] == "PLIFNode"  # r = 1 with v_leak = v_reset
    assert main(["eval", "--checkpoint", str(out / "model.pt"), "--dataset", "digits",
                 "--batch-size", "256", "--no-progress"]) == 0


@pytest.mark.parametrize(("args", "match"), [
    (["--firing", "sparkly"], "unknown firing"),
    (["--option", "levels=3"], "levels apply to firing"),
    (["--dt", "0"], "dt must be > 0"),
    (["--input-shape", "2,8,8"], "does not fit the graph's input"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, match):
    path = _mlp_file(tmp_path)
    assert main(["import", str(path), "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err and "Traceback" not in err


def _recurrent():
    """The conv graph with a recurrent weight on its second neuron layer (a cycle)."""
    rec = _conv_graph(_lif(2.0, 1.0, 0.0, 0.5, 0.0))
    rec.nodes["rec"] = nir.Linear(weight=np.eye(4) * 0.5)
    rec.edges.extend([("act2", "rec"), ("rec", "act2")])
    return rec


def test_cli_refuses_a_recurrent_graph_and_a_missing_file(tmp_path, capsys):
    rec = _recurrent()
    path = tmp_path / "rec.nir"
    nir.write(path, rec)
    assert main(["import", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cycle" in err
    assert main(["import", str(tmp_path / "none.nir"), "--out", str(tmp_path / "o")]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_cli_import_then_deploy_writes_the_graph_it_read(tmp_path, capsys):
    """checkpoint → deploy --nir → import → deploy --nir: the second file is the first."""
    model, _ = build("digits_net", firing="binary", neuron="plif", timesteps=2,
                     learn_amplitude=False)
    first = export_nir(model.float())
    path = tmp_path / "net.nir"
    nir.write(path, first)
    assert main(["import", str(path), "--out", str(tmp_path / "imp")]) == 0
    assert main(["deploy", "--checkpoint", str(tmp_path / "imp" / "model.pt"), "--out",
                 str(tmp_path / "dep"), "--nir", "--no-progress"]) == 0
    capsys.readouterr()
    assert_graphs_equal(first, nir.read(tmp_path / "dep" / "model.nir"))
    x = torch.rand(2, 1, 8, 8).double()
    with pytest.raises(InputError, match="NaN or inf"):
        from_nir(first).eval()(torch.full((2, 1, 8, 8), float("nan")))
    assert from_nir(first, dtype=F64).eval()(x).shape == (2, 2, 10)


def test_node_names_become_module_paths():
    """Characters a module name cannot hold become "_", and a name that is an attribute of the
    model ("training", "forward", ...) gets a "_" so that it cannot shadow it."""
    s = (3,)
    nodes = {"input": nir.Input(input_type=np.array(s)),
             "training": nir.Affine(weight=np.eye(3), bias=np.zeros(3)),
             "a-b.c": _if(1.0, 1.0, 0.0)(s), "forward": nir.Linear(weight=np.eye(3)),
             "output": nir.Output(output_type=np.array(s))}
    order = list(nodes)
    model = from_nir(nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:],
                                                                strict=True)), type_check=False),
                     dt=1.0)
    assert [n.name for n in model.graph()] == ["input", "training_", "a_b.c", "forward_",
                                               "output"]
    assert model.training and isinstance(model.get_submodule("a_b.c"), IFNode)


def test_sum_pooling_and_a_threshold_on_the_input_follow_nir_semantics():
    """SumPool2d → Threshold fed by the input (not by neurons: no max pooling) stay what they
    are; against run_nir in float64."""
    g = _conv_graph(_lif(2.0, 1.0, 0.0, 0.5, 0.0))
    g.nodes["sum"] = nir.SumPool2d(kernel_size=np.array([1, 1]), stride=np.array([1, 1]),
                                   padding=np.array([0, 0]))
    g.nodes["thr"] = nir.Threshold(threshold=np.full((1, 6, 6), 0.4))
    g.edges = [e for e in g.edges if e != ("input", "conv")] + [
        ("input", "sum"), ("sum", "thr"), ("thr", "conv")]
    model = from_nir(g, dt=1.0, timesteps=3, dtype=F64).eval()
    assert [type(model.get_submodule(n)).__name__ for n in ("sum", "thr")] == [
        "SumPool2d", "Threshold"]
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(5), dtype=F64) * 2
    ref = run_nir(g, x, 3, dt=1.0)
    assert 0 < float(ref.mean()) < 1 and torch.equal(model(x), ref)


def test_conv1d_and_scale_against_a_loop():
    """Input [2, 10] → Conv1d → Scale → LIF → Flatten → Affine → Output: the LIF's spikes are
    the step loop's on scale·conv1d(x); the output is their affine map."""
    g = torch.Generator().manual_seed(6)
    w = torch.randn(3, 2, 3, generator=g, dtype=F64)
    scale = torch.rand(3, 8, generator=g, dtype=F64) + 0.5
    w2 = torch.randn(4, 24, generator=g, dtype=F64)
    nodes = {"input": nir.Input(input_type=np.array([2, 10])),
             "conv": nir.Conv1d(input_shape=10, weight=w.numpy(), stride=1, padding=0,
                                dilation=1, groups=1, bias=np.zeros(3)),
             "scale": nir.Scale(scale=scale.numpy()),
             "lif": _lif(2.0, 2.0, 0.0, 0.5, 0.0)((3, 8)),
             "flat": nir.Flatten(input_type={"input": np.array([3, 8])}, start_dim=0,
                                 end_dim=-1),
             "fc": nir.Linear(weight=w2.numpy()),
             "output": nir.Output(output_type=np.array([4]))}
    order = list(nodes)
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:], strict=True)),
                         type_check=False)
    model = from_nir(graph, dt=1.0, timesteps=4, dtype=F64).eval()
    x = torch.rand(5, 2, 10, generator=g, dtype=F64) * 2
    current = (torch.nn.functional.conv1d(x, w) * scale).expand(4, -1, -1, -1)
    s = _loop_lif(current, 0.5, 0.5)
    assert 0 < float(s.mean()) < 1
    assert torch.allclose(model(x), s.flatten(2) @ w2.T, rtol=1e-12, atol=1e-12)
