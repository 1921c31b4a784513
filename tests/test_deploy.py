"""Deployment transforms: the graph, BN folding, amplitude folding on every registered model
(Ternary Spike Eq 15-17), MT spike planes (MT-SNN Eq 12), save/load.

Equality checks run in float64: spikes are discontinuous, and float32 rounding of a folded
weight could flip a spike whose membrane sits within 1e-7 of a threshold. Models are made to
fire first (:func:`multispike.deploy.testing.exercise`: random amplitudes 0.3-1.7, BN set from
the input), so that every layer's spikes matter.
"""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
import torch
from torch import nn

from multispike.deploy import (
    PlaneConv,
    PlaneMaxPool,
    PlaneMerge,
    PlaneNeuron,
    PlaneVote,
    ScaledVotingLayer,
    fold_amplitudes,
    fold_batchnorm,
    is_deployed,
    load_deployed,
    save_deployed,
    split_planes,
    trace,
)
from multispike.deploy.fold import bn_affine
from multispike.deploy.graph import set_module
from multispike.deploy.testing import exercise, firing_rates
from multispike.deploy.wrappers import unwrap
from multispike.errors import CheckpointError, ConfigError
from multispike.layers import BatchNormFold, BatchNormPerStep, TDBatchNorm
from multispike.models import create, list_models
from multispike.neurons import Neuron

#: construction options and input side per model: small but valid
TINY = {
    "vgg8": ({"input_size": 8}, 8),
    "vgg9": ({"input_size": 8}, 8),
    "vgg12": ({"input_size": 32, "timesteps": 2}, 32),
    "digits_net": ({}, 8),
    "resnet20": ({}, 8),
    "resnet19": ({}, 8),
    "resnet20m": ({}, 16),
    "resnet18": ({"num_classes": 10}, 32),
    "resnet34": ({"num_classes": 10}, 32),
}


def build(name: str, seed: int = 0, batch: int = 2, **kw):
    """A float64 model of ``name`` that fires on its tiny input, and that input."""
    opts, side = TINY[name]
    torch.manual_seed(seed)
    model = create(name, **{"learn_amplitude": True, **opts, **kw}).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, model.in_channels, side, side, generator=g, dtype=torch.float64)
    exercise(model, x, seed=seed)
    return model, x


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-10) -> None:
    a, b = a.detach(), b.detach()
    scale = max(1.0, float(b.abs().max()))
    assert float((a - b).abs().max()) <= tol * scale


def neuron_values(model, x):
    graph = trace(model)
    values = graph.run(x, keep=True)
    return {n.name: values[n.name] for n in graph.of_op("neuron")}


# -- the graph ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["digits_net", "resnet20", "resnet20m"])
def test_graph_run_equals_the_model(name):
    model, x = build(name, firing="ternary")
    graph = trace(model)
    assert torch.equal(graph.run(x), model(x))
    ops = {n.op for n in graph}
    assert {"input", "conv", "neuron", "linear", "output"} <= ops


def test_graph_names_every_consumer_of_the_spikes():
    model, _ = build("resnet20m", firing="ternary")
    graph = trace(model)
    # the stem's last neuron feeds, through 2x2 average pooling, the first block's conv1
    # and (identity shortcut) its second neuron
    targets = {t.name: [v.op for v in via] for t, via in graph.spike_targets("stem_rest.1.act")}
    assert targets == {"stages.0.conv1": ["avgpool"], "stages.0.sn2": ["avgpool"]}
    # a downsampling block: average pooling then a 1x1 convolution
    targets = {t.name for t, _ in graph.spike_targets("stages.1.sn2")}
    assert targets == {"stages.2.conv1", "stages.2.shortcut.1"}


@pytest.mark.parametrize("name", sorted(TINY))
def test_graph_run_equals_the_model_for_every_registered_model(name):
    """The deploy graph is read from the description the forward runs: same values."""
    model, x = build(name)  # the model's own firing, neuron and output mode
    graph = trace(model)
    values = graph.run(x, keep=True)
    assert torch.equal(values["output"], model(x))
    assert [n.name for n in graph][:2] == ["input", "stem_conv"]
    for node in graph:
        if node.module is not None:  # every module node is the module in that slot
            assert model.get_submodule(node.name) is node.module


#: the variants whose graphs are pinned below (tiny sizes as in TINY)
GRAPH_VARIANTS = [{}, {"output": "vote", "vote_group": 3},
                  {"firing": "ternary-mt", "mt_on_fc": True}]
PLANE_VARIANTS = {
    "resnet19": {"firing": "mt"},
    "digits_net": {"firing": "ternary-mt", "mt_on_fc": True, "output": "vote"},
    "resnet20": {"firing": "mt"},
    "resnet20m": {"firing": "ternary-mt"},
    "vgg9": {"firing": "ternary-mt"},
}
#: sha256 (first 16 hex digits) of ``[[name, op, [inputs...]], ...]`` of each graph as the
#: per-family tracers of deploy/graph.py traced it before the models described their own
#: graphs: the description keeps every node name, op and edge
GRAPH_DIGESTS = {
    "digits_net/0": "54dbd74afd7be89a",
    "digits_net/1": "d7bc91732868050e",
    "digits_net/2": "54dbd74afd7be89a",
    "resnet18/0": "62a01486dace647e",
    "resnet18/1": "0798f1b140494a04",
    "resnet18/2": "62a01486dace647e",
    "resnet19/0": "a895e1277ac9397f",
    "resnet19/1": "299ac098735b1d0e",
    "resnet19/2": "a895e1277ac9397f",
    "resnet20/0": "a3ad32b6a7ac9ca9",
    "resnet20/1": "8abf067cde931b24",
    "resnet20/2": "a3ad32b6a7ac9ca9",
    "resnet20m/0": "d60ca5941d77421c",
    "resnet20m/1": "48eced794129fe0a",
    "resnet20m/2": "d60ca5941d77421c",
    "resnet34/0": "39ac67643ddca919",
    "resnet34/1": "80259e74390c830d",
    "resnet34/2": "39ac67643ddca919",
    "vgg12/0": "f6ce24a6e36552fe",
    "vgg12/1": "f6ce24a6e36552fe",
    "vgg12/2": "f6ce24a6e36552fe",
    "vgg8/0": "fb13ec87be62af37",
    "vgg8/1": "9e3193c6db667728",
    "vgg8/2": "fb13ec87be62af37",
    "vgg9/0": "d045477e6a7e0648",
    "vgg9/1": "880092b575065650",
    "vgg9/2": "d045477e6a7e0648",
    "digits_net/nofcnorm": "3ef698a47d1951cc",
    "resnet19/planes": "1c48ea85e89359eb",
    "digits_net/planes": "cb724bc6bb4be34e",
    "resnet20/planes": "c3be2ee7798635cc",
    "resnet20m/planes": "f277894ce85fb2db",
    "vgg9/planes": "afd6cc43b5a71f33",
}


def _edges(model) -> list:
    return [[n.name, n.op, list(n.inputs)] for n in trace(model)]


def _digest(edges: list) -> str:
    return hashlib.sha256(json.dumps(edges).encode()).hexdigest()[:16]


def test_graph_nodes_are_those_traced_before():
    got = {}
    for name in sorted(TINY):
        for i, kw in enumerate(GRAPH_VARIANTS):
            got[f"{name}/{i}"] = _digest(_edges(create(name, **{**TINY[name][0], **kw})))
    got["digits_net/nofcnorm"] = _digest(_edges(create("digits_net", fc_norm=False)))
    for name, kw in PLANE_VARIANTS.items():
        model = create(name, learn_amplitude=True, **{**TINY[name][0], **kw}).double()
        got[f"{name}/planes"] = _digest(_edges(split_planes(fold_amplitudes(model))))
    assert got == GRAPH_DIGESTS
    assert json.loads(json.dumps(_edges(create("digits_net")))) == [
        ["input", "input", []],
        ["stem_conv", "conv", ["input"]],
        ["stem_norm", "norm", ["stem_conv"]],
        ["stem_act", "neuron", ["stem_norm"]],
        ["features.0.conv", "conv", ["stem_act"]],
        ["features.0.norm", "norm", ["features.0.conv"]],
        ["features.0.act", "neuron", ["features.0.norm"]],
        ["features.1.module", "maxpool", ["features.0.act"]],
        ["flatten", "flatten", ["features.1.module"]],
        ["fc1", "linear", ["flatten"]],
        ["fc1_norm", "norm", ["fc1"]],
        ["fc1_act", "neuron", ["fc1_norm"]],
        ["head.fc", "linear", ["fc1_act"]],
        ["output", "output", ["head.fc"]],
    ]
    block = [e for e in _edges(create("resnet20")) if e[0].startswith("stages.3.")]
    assert block == [  # a downsampling membrane-level block: the sum is a node of its own
        ["stages.3.sn1", "neuron", ["stages.2.sum"]],
        ["stages.3.conv1", "conv", ["stages.3.sn1"]],
        ["stages.3.bn1", "norm", ["stages.3.conv1"]],
        ["stages.3.sn2", "neuron", ["stages.3.bn1"]],
        ["stages.3.conv2", "conv", ["stages.3.sn2"]],
        ["stages.3.bn2", "norm", ["stages.3.conv2"]],
        ["stages.3.shortcut", "conv", ["stages.3.sn1"]],
        ["stages.3.shortcut_bn", "norm", ["stages.3.shortcut"]],
        ["stages.3.sum", "sum", ["stages.3.shortcut_bn", "stages.3.bn2"]],
    ]


def test_a_replaced_slot_changes_forward_and_graph_alike():
    """The graph follows the modules in their slots now, as the forward does."""
    model, x = build("resnet19", firing="binary")
    before = model(x)
    set_module(model, "stages.1.bn1", nn.Identity())
    graph = trace(model)
    assert "stages.1.bn1" not in graph.nodes
    assert graph["stages.1.sn1"].inputs == ("stages.1.conv1",)
    out = model(x)
    assert torch.equal(graph.run(x), out) and not torch.equal(out, before)


DEPLOY_MODULES = ["executor", "fold", "graph", "io", "nir_export", "planes", "testing",
                  "wrappers"]


@pytest.mark.parametrize("module", DEPLOY_MODULES)
def test_each_deploy_module_imports_first(module):
    """A fresh interpreter imports each deploy module first, whatever the order."""
    import subprocess
    import sys

    code = f"import multispike.deploy.{module}; import multispike.deploy"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_deploy_modules_import_no_circle():
    """Every import between deploy modules (lazy ones in functions too) points one way."""
    import ast
    from pathlib import Path

    import multispike.deploy as pkg

    root = Path(pkg.__file__).parent
    edges: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        me = "__init__" if path.stem == "__init__" else path.stem
        edges[me] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for full in names:
                if full == "multispike.deploy":
                    edges[me].add("__init__")
                elif full.startswith("multispike.deploy."):
                    target = full.split(".")[2]
                    if (root / f"{target}.py").exists() and target != me:
                        edges[me].add(target)
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges.get(m, ())):
            assert state.get(t) != 1, f"import circle: {' -> '.join(stack + [m, t])}"
            if t not in state:
                visit(t, stack + [m])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [])
    assert edges["wrappers"] == set()  # the leaf
    assert not edges["graph"] & {"planes", "fold"}  # the graph reads wrappers, not transforms


def test_trace_refuses_the_ann_twin_and_foreign_models():
    with pytest.raises(ConfigError, match="ANN twin"):
        trace(create("digits_net", firing="ann"))
    with pytest.raises(ConfigError, match="VGG and ResNet"):
        trace(nn.Sequential(nn.Linear(2, 2)))


# -- BN folding --------------------------------------------------------------------------------
def test_bn_affine_matches_each_bn_variant():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, 5, dtype=torch.float64)  # [T, B, C, H, W]
    for bn in (BatchNormFold(4), TDBatchNorm(4, v_threshold=0.5, alpha=0.7)):
        bn = bn.double()
        inner = bn.bn
        inner.running_mean.normal_()
        inner.running_var.uniform_(0.5, 2.0)
        for p in bn.parameters():
            p.data.uniform_(0.5, 1.5)
        bn.eval()
        scale, shift = bn_affine(bn)
        expect = x * scale.view(1, 1, -1, 1, 1) + shift.view(1, 1, -1, 1, 1)
        assert_close(bn(x), expect, 1e-12)


@pytest.mark.parametrize("norm", ["fold", "tdbn", "per-step"])
def test_fold_batchnorm(norm):
    model, x = build("resnet19", firing="binary", norm=norm)
    folded = fold_batchnorm(model)
    assert_close(folded(x), model(x))
    norms = [m for m in folded.modules() if isinstance(m, (BatchNormFold, TDBatchNorm,
                                                           BatchNormPerStep))]
    if norm == "per-step":  # a different affine map per step: kept, documented
        assert norms and all(isinstance(m, BatchNormPerStep) for m in norms)
    else:
        assert norms == []
        assert folded.stages[0].conv1.bias is not None
    # the input model is untouched
    assert any(isinstance(m, (BatchNormFold, TDBatchNorm, BatchNormPerStep))
               for m in model.modules())


# -- amplitude folding, every registered model ------------------------------------------------
def test_every_registered_model_is_covered():
    assert set(TINY) == set(list_models())


@pytest.mark.parametrize("name", sorted(TINY))
def test_fold_amplitudes_every_registered_model(name):
    model, x = build(name)  # the model's own firing, neuron and output mode
    before = copy.deepcopy(model.state_dict())
    rates = firing_rates(model, x)
    assert min(rates.values()) > 0.05, rates  # every layer fires: the check means something
    amps = [float(m.amplitude.detach()) for m in model.modules()
            if isinstance(m, Neuron) and m.amplitude is not None]
    assert len(set(amps)) > 1 and all(0.3 <= a <= 1.7 for a in amps)

    deployed = fold_amplitudes(model)
    assert_close(deployed(x), model(x))
    assert is_deployed(deployed) and not is_deployed(model)
    for k, v in model.state_dict().items():  # not modified in place
        assert torch.equal(v, before[k])
    rec = deployed.deployment
    for layer, v in neuron_values(deployed, x).items():
        neuron = unwrap(deployed.get_submodule(layer))
        assert neuron.amplitude is None
        assert torch.equal(v, v.round())
        if neuron.rule.name in ("binary", "ternary"):
            assert set(v.unique().tolist()) <= {-1.0, 0.0, 1.0}
        original = unwrap(model.get_submodule(layer))
        if layer in rec["rescaled_neurons"]:  # identity-shortcut receivers: V_th / a
            assert neuron.v_threshold != original.v_threshold
        else:
            assert neuron.v_threshold == original.v_threshold
    if name in ("resnet19", "resnet20m", "resnet18", "resnet34"):  # spike-level residuals
        assert rec["rescaled_neurons"]
    if model.output == "vote":
        assert isinstance(deployed.head.vote, ScaledVotingLayer)


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("digits_net", {"firing": "mt", "norm": "per-step"}),
        ("digits_net", {"firing": "ternary-mt", "norm": "tdbn", "mt_on_fc": True,
                        "output": "vote"}),
        ("digits_net", {"firing": "ternary", "pool": "avg", "neuron": "if"}),
        ("resnet19", {"firing": "ternary", "norm": "per-step", "neuron": "plif"}),
        ("resnet20m", {"firing": "mt", "norm": "tdbn"}),
        ("resnet20", {"firing": "ternary", "neuron": "lif"}),
    ],
)
def test_fold_amplitudes_variants(name, kw):
    model, x = build(name, **kw)
    assert min(firing_rates(model, x).values()) > 0.05
    assert_close(fold_amplitudes(model)(x), model(x))


def test_fold_in_float32_is_within_float_tolerance():
    model, x = build("resnet20m", firing="ternary")
    model, x = model.float(), x.float()
    out, ref = fold_amplitudes(model)(x).detach(), model(x).detach()
    assert float((out - ref).abs().max()) <= 1e-5 * max(1.0, float(ref.abs().max()))


def test_negative_amplitude_folds_into_convolutions():
    model, x = build("resnet20", firing="ternary")  # membrane residuals: every consumer a conv
    model.stages[1].sn1.amplitude.data.fill_(-0.6)
    assert_close(fold_amplitudes(model)(x), model(x))


def test_amplitudes_that_cannot_be_folded_are_one_line_errors():
    model, _ = build("digits_net", firing="ternary")
    model.features[0].act.amplitude.data.fill_(-0.5)
    with pytest.raises(ConfigError) as err:
        fold_amplitudes(model)
    msg = str(err.value)
    assert "\n" not in msg and "features.0.act" in msg and "max pooling" in msg

    model, _ = build("resnet19", firing="ternary")
    model.stem_act.amplitude.data.fill_(-0.5)
    with pytest.raises(ConfigError, match="stem_act.*identity shortcut"):
        fold_amplitudes(model)

    model, _ = build("resnet20", firing="binary")
    model.final_act.amplitude.data.fill_(0.0)
    with pytest.raises(ConfigError, match="final_act has amplitude 0"):
        fold_amplitudes(model)


# -- MT spike planes ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("vgg9", {"firing": "mt"}),
        ("vgg9", {"firing": "ternary-mt", "mt_on_fc": True}),
        ("resnet20", {"firing": "mt"}),
        ("resnet20", {"firing": "ternary-mt"}),
        ("digits_net", {"firing": "mt", "mt_on_fc": True, "output": "vote"}),
        ("digits_net", {"firing": "ternary-mt", "deltas": (-0.3, 0.4)}),
        ("resnet19", {"firing": "mt"}),
    ],
)
def test_split_planes_equals_the_model(name, kw):
    model, x = build(name, **kw)
    deployed = fold_amplitudes(model)
    planes = split_planes(deployed)
    assert_close(planes(x), model(x))
    assert_close(planes(x), deployed(x), 1e-12)
    graph = trace(planes)
    splits = [n for n in graph.of_op("neuron") if isinstance(n.module, PlaneNeuron)]
    assert splits
    values = graph.run(x, keep=True)
    spikes = neuron_values(deployed, x)
    for node in splits:
        neuron = node.module.neuron
        p = values[node.name]
        n_planes = neuron.rule.n_planes(neuron.v_threshold)
        assert set(p.unique().tolist()) <= {0.0, 1.0}  # binary planes
        assert p.shape[2] == n_planes * spikes[node.name].shape[2]
        # Σ sign_k · plane_k is the MT spike
        merged = PlaneMerge(neuron.rule.plane_signs, dim=2)(p)
        assert torch.equal(merged, spikes[node.name])
        for target, _ in graph.spike_targets(node.name):
            assert target.op in ("conv", "linear", "vote", "neuron")
            if target.op == "conv":
                assert isinstance(target.module, PlaneConv)
    if name == "resnet19":  # identity shortcut: planes merged into the receiving membrane
        assert isinstance(planes.stages[0].shortcut, PlaneMerge)
    if kw.get("output") == "vote":
        assert isinstance(planes.head.vote, PlaneVote)
    if name == "vgg9" and kw["firing"] == "ternary-mt":  # signed planes: pooled as values
        assert any(isinstance(m, PlaneMaxPool) for m in planes.modules())


def test_signed_planes_cannot_be_max_pooled_apart():
    """Why PlaneMaxPool exists: a window holding +2 and -2 pools to +2, not 0."""
    pool = nn.MaxPool2d(2)
    b = torch.tensor([[[[2.0, -2.0], [0.0, 0.0]]]])  # ternary-MT values
    pos = torch.stack([(b >= 1), (b >= 2)]).double()
    neg = torch.stack([(b <= -1), (b <= -2)]).double()
    planes = torch.cat([pos[0], pos[1], neg[0], neg[1]], 1)  # [1, 4, 2, 2]
    per_plane = pool(planes)
    signs = (1, 1, -1, -1)
    assert float(PlaneMerge(signs)(per_plane)) == 0.0  # wrong
    fixed = PlaneMaxPool(pool, signs, (0, 1, 0, 1))(planes)
    assert float(PlaneMerge(signs)(fixed)) == 2.0 == float(pool(b))


def test_split_planes_needs_folded_amplitudes():
    model, _ = build("digits_net", firing="mt")
    with pytest.raises(ConfigError, match="fold_amplitudes"):
        split_planes(model)


# -- save / load -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kw", "split"),
    [
        ("resnet20m", {"firing": "ternary"}, False),
        ("digits_net", {"firing": "ternary-mt", "mt_on_fc": True, "output": "vote"}, True),
        ("resnet19", {"firing": "mt", "norm": "per-step"}, True),
    ],
)
def test_save_and_load_deployed(tmp_path, name, kw, split):
    model, x = build(name, **kw)
    deployed = fold_amplitudes(model)
    if split:
        deployed = split_planes(deployed)
    paths = save_deployed(deployed, tmp_path)
    assert paths["weights"].name == "model.safetensors" and paths["config"].is_file()
    loaded = load_deployed(tmp_path)
    assert torch.equal(loaded(x), deployed(x))
    assert loaded.deployment["split_planes"] == split


def test_load_deployed_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not a deployed model folder"):
        load_deployed(tmp_path)
    model, _ = build("digits_net", firing="binary")
    save_deployed(fold_amplitudes(model), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as err:
        load_deployed(tmp_path)
    assert "\n" not in str(err.value)
