"""Deployment and counting for every multi-level rule (issue #15 point 4).

Integer spikes (``firing="integer"``, ``levels=D``) split into ``D`` thermometer planes,
signed ones into ``D`` positive and ``D`` negative planes, one synaptic layer per plane with its
bias added once; learned thresholds deploy as constants; every reset choice; float64 outputs
equal the trained model's; the addition-only executor adds one weight per unit of ``|b|`` per
fan-out, which the test counts itself (explicit loops over kernel taps on the recorded spikes);
``multispike energy`` bills the same SOPs; NIR refuses what it cannot express, in one line.

The zoo's models do not take the integer rules as a model option yet: :func:`multilevel`
builds the model with its own rule and replaces every neuron layer by the same layer with the
integer rule (``build_neuron`` of its config), which is what a model built with it would hold.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from multispike.analysis import estimate_energy, measure_rates, trace_ops
from multispike.deploy import (
    AdditionOnlyExecutor,
    PlaneConv,
    PlaneMaxPool,
    PlaneMerge,
    PlaneNeuron,
    PlaneVote,
    event_model,
    export_nir,
    fold_amplitudes,
    is_deployed,
    load_deployed,
    run_nir,
    save_deployed,
    split_planes,
    trace,
)
from multispike.deploy.graph import set_module
from multispike.deploy.testing import exercise, firing_rates
from multispike.deploy.wrappers import unwrap
from multispike.errors import ConfigError
from multispike.functional import Integer, SignedInteger
from multispike.models import create
from multispike.neurons import Neuron, build_neuron
from tests.test_deploy import TINY, assert_close

INTEGER_RULES = ("integer", "signed-integer")


def neurons_of(model: nn.Module) -> dict[str, Neuron]:
    return {n: m for n, m in model.named_modules() if isinstance(m, Neuron)}


def move_thresholds(model: nn.Module, x: torch.Tensor, steps: int = 3, lr: float = 0.3) -> None:
    """A few SGD steps on the learned thresholds only (cross-entropy on fixed labels)."""
    params = [m.threshold_rho for m in neurons_of(model).values()
              if m.threshold_rho is not None]
    assert params
    opt = torch.optim.SGD(params, lr=lr)
    labels = torch.arange(len(x)) % model.num_classes
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x).mean(0), labels).backward()
        opt.step()
    for p in params:  # every layer's thresholds moved away from where they started
        assert float(p.detach().abs().max()) > 1e-4


def multilevel(name: str, firing: str, *, levels: int = 3, reset: str | None = None,
               learn: bool = False, seed: int = 0, batch: int = 2, **kw):
    """A float64 zoo model whose every neuron fires ``firing`` (integer rules with ``levels``),
    with ``reset`` and learned thresholds (moved by a few SGD steps) as asked, made to fire on
    its tiny input; returns the model and the input."""
    opts, side = TINY[name]
    torch.manual_seed(seed)
    base = firing if firing not in INTEGER_RULES else "binary"
    extra = {} if reset is None else {"reset": reset}
    model = create(name, **{"learn_amplitude": True, **opts, "firing": base, **extra,
                            **({"learn_thresholds": True} if learn else {}), **kw}).double()
    if firing in INTEGER_RULES:
        for path, m in neurons_of(model).items():
            cfg = {**m.config(), "firing": firing, "levels": levels, "deltas": None,
                   "reset": reset}
            set_module(model, path, build_neuron({**cfg, "check_input": False}).double())
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, model.in_channels, side, side, generator=g, dtype=torch.float64)
    exercise(model, x, seed=seed)
    if learn:
        move_thresholds(model, x)
    model.eval()
    return model, x


# -- planes ------------------------------------------------------------------------------------
PLANE_CASES = [
    ("digits_net", "integer", None, {}),  # max pooling of nested planes, flatten, FC
    ("digits_net", "integer", "main", {"output": "vote"}),  # voting over plane outputs
    ("digits_net", "signed-integer", "any", {}),  # signed planes pooled as values
    ("vgg9", "signed-integer", None, {}),
    ("resnet20m", "integer", None, {}),  # identity shortcuts through average pooling
    ("resnet19", "signed-integer", "main", {}),  # identity shortcut: planes merged
    ("resnet20", "integer", "any", {"norm": "tdbn"}),  # membrane residual sums
]


@pytest.mark.parametrize(("name", "firing", "reset", "kw"), PLANE_CASES)
def test_split_planes_expands_integer_spikes(name, firing, reset, kw):
    model, x = multilevel(name, firing, reset=reset, **kw)
    assert min(firing_rates(model, x).values()) > 0.05  # every layer fires
    deployed = fold_amplitudes(model)
    planes = split_planes(deployed)
    assert_close(deployed(x), model(x))
    assert_close(planes(x), model(x))
    graph = trace(planes)
    values = graph.run(x, keep=True)
    spikes = trace(deployed).run(x, keep=True)
    split = [n for n in graph.of_op("neuron") if isinstance(n.module, PlaneNeuron)]
    assert len(split) == len(neurons_of(model))  # every integer neuron (levels 3) is split
    top = 0
    for node in split:
        rule = node.module.neuron.rule
        assert isinstance(rule, Integer) and rule.levels == 3
        signs = rule.plane_signs
        assert signs == ((1,) * 3 + ((-1,) * 3 if firing == "signed-integer" else ()))
        p, b = values[node.name], spikes[node.name]
        assert set(p.unique().tolist()) <= {0.0, 1.0}  # binary planes
        assert p.shape[2] == len(signs) * b.shape[2]
        # thermometer: plane k of sign +1 is [b >= k], of sign -1 [b <= -k], independently
        chunks = p.chunk(len(signs), 2)
        for k in range(1, 4):
            assert torch.equal(chunks[k - 1], (b >= k).double())
            if firing == "signed-integer":
                assert torch.equal(chunks[3 + k - 1], (b <= -k).double())
        assert torch.equal(PlaneMerge(signs, dim=2)(p), b)
        top = max(top, int(b.abs().max()))
        for target, _ in graph.spike_targets(node.name):
            if target.op == "conv":
                assert isinstance(target.module, PlaneConv) and target.module.signs == signs
    assert top >= 2  # values above 1 occur: the planes are not a binary spike in disguise
    if name == "digits_net" and firing == "signed-integer":
        assert isinstance(planes.features[1].module, PlaneMaxPool)
    if kw.get("output") == "vote":
        assert isinstance(planes.head.vote, PlaneVote)
    if name == "resnet19":
        assert isinstance(planes.stages[0].shortcut, PlaneMerge)


def test_levels_one_stays_one_plane():
    model, x = multilevel("digits_net", "signed-integer", levels=1)
    planes = split_planes(fold_amplitudes(model))
    assert not any(isinstance(m, PlaneNeuron) for m in planes.modules())
    assert not planes.deployment["split_planes"]
    assert_close(planes(x), model(x))


def test_a_bias_after_expanded_planes_is_added_once():
    """Unit: a conv with a bias on D thermometer planes equals the conv of the integer
    spikes; adding the bias with each plane's convolution would give D times the bias."""
    torch.manual_seed(1)
    rule = Integer(levels=4)
    h = torch.randn(2, 3, 5, 5, dtype=torch.float64) * 3
    b, _ = rule.fire(h, 1.0, None)
    assert int(b.max()) == 4
    conv = nn.Conv2d(3, 6, 3, padding=1, bias=True).double()
    with torch.no_grad():
        conv.bias.uniform_(1.0, 2.0)
    planes = rule.planes(h, 1.0)  # [D, N, C, H, W]
    stacked = planes.movedim(0, 1).flatten(1, 2)  # [N, D*C, H, W]
    out = PlaneConv(conv, rule.plane_signs)(stacked)
    assert_close(out, conv(b), 1e-12)
    with torch.no_grad():
        wrong = sum(conv(plane) for plane in planes)  # the bias D times
        assert float((wrong - conv(b)).abs().min()) > 2.9  # 3 extra biases of at least 1

    srule = SignedInteger(levels=2)
    b, _ = srule.fire(h, 1.0, None)
    stacked = srule.planes(h, 1.0).movedim(0, 1).flatten(1, 2)
    assert_close(PlaneConv(conv, srule.plane_signs)(stacked), conv(b), 1e-12)


def test_a_model_bias_after_an_integer_neuron_is_added_once():
    model, x = multilevel("digits_net", "integer")
    planes = split_planes(fold_amplitudes(model))
    conv = planes.features[0].conv  # reads the integer stem neuron, BN folded into its bias
    assert isinstance(conv, PlaneConv) and conv.signs == (1, 1, 1)
    assert conv.conv.bias is not None and float(conv.conv.bias.detach().abs().min()) > 0
    assert_close(planes(x), model(x))
    # the same planes with the bias added per plane change the output
    with torch.no_grad():
        conv.conv.bias.mul_(3.0)
        assert float((planes(x) - model(x)).abs().max()) > 1e-3


# -- learned thresholds and every reset ------------------------------------------------------
LEARNED_CASES = [
    ("digits_net", "binary", None),
    ("digits_net", "binary", "soft"),
    ("digits_net", "mt", "main"),
    ("digits_net", "mt", "any"),
    ("digits_net", "ternary", None),
    ("digits_net", "ternary-mt", "soft"),
    ("digits_net", "integer", None),
    ("digits_net", "integer", "main"),
    ("digits_net", "signed-integer", "any"),
    ("resnet20m", "integer", "soft"),  # rescaled identity-shortcut receivers
    ("resnet19", "mt", None),
]


@pytest.mark.parametrize(("name", "firing", "reset"), LEARNED_CASES)
def test_learned_thresholds_deploy_as_constants(tmp_path, name, firing, reset):
    model, x = multilevel(name, firing, reset=reset, learn=True)
    ref = model(x)
    learned = neurons_of(model)
    deployed = fold_amplitudes(model)
    assert is_deployed(deployed) and not is_deployed(model)
    assert sorted(deployed.deployment["fixed_thresholds"]) == sorted(learned)
    rescaled = set(deployed.deployment["rescaled_neurons"])
    for path, neuron in learned.items():
        fixed = unwrap(deployed.get_submodule(path))
        assert not fixed.learn_thresholds and fixed.threshold_rho is None
        assert fixed.reset == neuron.reset
        v, rule = neuron.fixed_firing()
        assert v != neuron.v_threshold  # the thresholds moved in training
        if path not in rescaled:
            assert fixed.v_threshold == v and fixed.rule == rule
    assert neurons_of(model)[next(iter(learned))].learn_thresholds  # the input is untouched
    assert_close(deployed(x), ref, 1e-9)
    planes = split_planes(deployed)
    assert_close(planes(x), ref, 1e-9)
    rep, diff = AdditionOnlyExecutor(planes).verify(x)
    assert diff <= 1e-9 * max(1.0, float(ref.abs().max()))
    # save / load keeps the constants
    save_deployed(planes, tmp_path)
    loaded = load_deployed(tmp_path)
    assert torch.equal(loaded(x), planes(x))
    assert sorted(loaded.deployment["fixed_thresholds"]) == sorted(learned)


def test_plane_neuron_and_executor_fix_a_learned_neuron_themselves():
    """Built on a model whose thresholds still learn (no fold), both read the constants."""
    model, x = multilevel("digits_net", "integer", learn=True, learn_amplitude=False,
                          norm="per-step")
    ref = model(x)
    assert is_deployed(model) is False
    node = model.stem_act
    wrapped = PlaneNeuron(node)
    assert not wrapped.neuron.learn_thresholds and node.learn_thresholds
    assert wrapped.neuron.v_threshold == node.fixed_firing()[0]
    rep, diff = AdditionOnlyExecutor(model).verify(x)  # per-step BN stays; no amplitude
    assert diff <= 1e-9 * max(1.0, float(ref.abs().max()))


# -- counts ------------------------------------------------------------------------------------
def _taps(size: int, out: int, k: int, s: int, p: int, d: int) -> list[int]:
    """For each input position along one axis, the kernel taps that land on the output."""
    counts = []
    for i in range(size):
        n = 0
        for u in range(k):
            r = i + p - u * d
            if r % s == 0 and 0 <= r // s < out:
                n += 1
        counts.append(n)
    return counts


def hand_count(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, int], dict[str, int]]:
    """SOPs and unit events of every synaptic layer of a VGG-style deployed model (no
    average pooling), from the recorded spikes and the layers' shapes only:
    ``Σ |b| × fan-out``, fan-out ``C_out × taps_h × taps_w`` (conv) or ``out_features``."""
    graph = trace(model)
    values = graph.run(x, keep=True)
    sops: dict[str, int] = {}
    events: dict[str, int] = {}
    for node in graph:
        if node.op not in ("conv", "linear") or node.inputs == ("input",):
            continue
        src = graph[node.inputs[0]]
        while src.op == "flatten":  # renames only; the spikes are those before it
            src = graph[src.inputs[0]]
        assert src.op in ("neuron", "maxpool")
        b = values[src.name]
        if isinstance(src.module, PlaneNeuron):  # planes: the merged integer spike
            b = PlaneMerge(src.module.signs, dim=2)(b)
        mag = b.abs().round().long()
        events[node.name] = int(mag.sum())
        layer = unwrap(node.module)
        if node.op == "linear":
            sops[node.name] = events[node.name] * layer.out_features
            continue
        _, _, _, h, w = mag.shape
        (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
        (ph, pw), (dh, dw) = layer.padding, layer.dilation
        ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        th, tw = _taps(h, ho, kh, sh, ph, dh), _taps(w, wo, kw, sw, pw, dw)
        per_pos = mag.sum((0, 1, 2))  # [H, W]: units of |b| at each position
        total = 0
        for i in range(h):
            for j in range(w):
                total += int(per_pos[i, j]) * th[i] * tw[j]
        sops[node.name] = total * layer.out_channels
    return sops, events


@pytest.mark.parametrize(
    ("name", "firing", "reset", "learn"),
    [
        ("digits_net", "integer", None, False),
        ("digits_net", "signed-integer", "main", False),
        ("digits_net", "integer", "any", True),
        ("vgg8", "signed-integer", "soft", False),  # strided pooling between the stages
    ],
)
def test_executor_counts_one_addition_per_unit_of_spike(name, firing, reset, learn):
    model, x = multilevel(name, firing, reset=reset, learn=learn)
    ref = model(x)
    deployed = fold_amplitudes(model)
    sops, events = hand_count(deployed, x)
    for target in (deployed, split_planes(deployed)):
        rep, diff = AdditionOnlyExecutor(target).verify(x)
        assert diff <= 1e-9 * max(1.0, float(ref.abs().max()))
        assert float((rep.output - ref).abs().max()) <= 1e-9 * max(1.0, float(ref.abs().max()))
        assert rep.sops == sops
        assert rep.events == events
    # a value k costs k additions per fan-out: more than the binary count of the same spikes
    nonzero = {k: v for k, v in events.items()}
    graph = trace(deployed)
    values = graph.run(x, keep=True)
    fired = int((values["stem_act"] != 0).sum())
    assert nonzero["features.0.conv"] > fired


@pytest.mark.parametrize(
    ("name", "firing", "reset", "learn"),
    [
        ("digits_net", "integer", None, False),
        ("digits_net", "signed-integer", "any", False),
        ("resnet20m", "integer", "main", False),  # average pooling, identity shortcuts, GAP
        ("digits_net", "integer", "soft", True),
    ],
)
def test_energy_bills_integer_spikes_as_the_executor_adds_them(name, firing, reset, learn):
    model, x = multilevel(name, firing, reset=reset, learn=learn)
    measured = measure_rates(model, [(x, None)], batches=1, events=event_model)
    assert measured.events is not None, measured.events_error
    ops = trace_ops(model, tuple(x.shape[1:]), model.timesteps)
    report = estimate_energy(ops, measured, model.timesteps, "hu2021")
    exact = AdditionOnlyExecutor(fold_amplitudes(model)).run(x)
    assert report.convention == "events"
    billed = {r["name"]: r["sops"] * len(x) for r in report.layers if r["role"] == "spiking"}
    assert set(billed) == set(exact.sops)
    for layer, n in exact.sops.items():
        assert billed[layer] == pytest.approx(n, rel=1e-12, abs=1e-6), layer
    # every neuron layer can fire up to D planes per step
    assert {n.name: n.max_spikes for n in ops.neurons} == {n: 3 for n in neurons_of(model)}


def test_energy_counts_integer_spikes_as_planes():
    """#Sign: one per plane that fires (|b| per neuron), two per plane of a signed rule,
    as for MT and ternary-MT."""
    for firing, per in (("integer", 1), ("signed-integer", 2)):
        model, x = multilevel("digits_net", firing)
        measured = measure_rates(model, [(x, None)], batches=1, events=event_model)
        ops = trace_ops(model, tuple(x.shape[1:]), model.timesteps)
        report = estimate_energy(ops, measured, model.timesteps, "hu2021")
        values = trace(fold_amplitudes(model)).run(x, keep=True)  # b, without amplitudes
        units = sum(float(values[n].abs().sum()) for n in neurons_of(model))
        assert report.spikes * len(x) == pytest.approx(units, rel=1e-12)
        assert report.signs == pytest.approx(per * report.spikes, rel=1e-12)


# -- NIR ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("firing", INTEGER_RULES)
def test_nir_refuses_integer_spikes_in_one_line(firing):
    pytest.importorskip("nir")
    model, _ = multilevel("digits_net", firing)
    with pytest.raises(ConfigError) as err:
        export_nir(model)
    msg = str(err.value)
    assert "\n" not in msg and "stem_act" in msg and repr(firing) in msg
    assert "binary spikes" in msg and "0..3" in msg


def test_nir_refuses_a_soft_reset_in_one_line():
    pytest.importorskip("nir")
    model, _ = multilevel("digits_net", "binary", reset="soft")
    with pytest.raises(ConfigError) as err:
        export_nir(model)
    msg = str(err.value)
    assert "\n" not in msg and "stem_act" in msg and "soft reset" in msg
    assert "v_reset" in msg and "reset='main'" in msg


@pytest.mark.parametrize("reset", [None, "any"])
def test_nir_writes_learned_thresholds_as_constants(reset):
    pytest.importorskip("nir")
    pytest.importorskip("nirtorch")
    model, x = multilevel("digits_net", "binary", reset=reset, learn=True, neuron="if")
    graph = export_nir(model, input_shape=tuple(x.shape[1:]))
    for path, neuron in neurons_of(model).items():
        v, _ = neuron.fixed_firing()
        assert v != 1.0
        assert (graph.nodes[path].v_threshold == v).all()
    ref = model(x).detach()
    out = run_nir(graph, x, model.timesteps)
    assert float((out - ref).abs().max()) <= 1e-10 * max(1.0, float(ref.abs().max()))
