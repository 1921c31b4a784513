"""The energy estimate's two SOP conventions.

``events`` (the default with recorded spikes) bills each layer for what it actually reads and
must equal the addition-only executor's exact count layer by layer, the layers behind max
pooling (digits_net's ``fc1``), average pooling (resnet20m's ``stages.0.conv1`` and its
average-pooled shortcuts) and global average pooling included. ``paper`` (Ternary Spike
Table 5) bills every layer at the rate of the neuron feeding it and keeps the Table 5 numbers.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from multispike.analysis import estimate_energy, measure_rates, trace_ops
from multispike.analysis.ops import count_events
from multispike.cli import analysis as commands
from multispike.deploy import AdditionOnlyExecutor, event_model, fold_amplitudes
from multispike.errors import ConfigError
from multispike.workflows import measure
from tests.test_deploy import build


def _compare(model, x):
    """(events report, paper report, executor report) for one batch ``x``."""
    measured = measure_rates(model, [(x, None)], batches=1, events=event_model)
    assert measured.events is not None, measured.events_error
    ops = trace_ops(model, tuple(x.shape[1:]), model.timesteps)
    events = estimate_energy(ops, measured, model.timesteps, "hu2021")
    paper = estimate_energy(ops, measured.rates, model.timesteps, "hu2021")
    exact = AdditionOnlyExecutor(fold_amplitudes(model)).run(x)
    return events, paper, exact


def _assert_every_layer_matches(report, exact, batch):
    assert report.convention == "events"
    billed = {r["name"]: r["sops"] * batch for r in report.layers if r["role"] == "spiking"}
    assert set(billed) == set(exact.sops)  # every synaptic layer and identity shortcut
    for name, sops in exact.sops.items():
        assert billed[name] == pytest.approx(sops, rel=0.01), name
    assert report.sops * batch == pytest.approx(exact.total_sops, rel=0.01)


@pytest.fixture(scope="module")
def trained_digits():
    """digits_net (binary, max pooling) after two quick epochs, and 16 normalised test images."""
    from multispike import data
    from multispike.engine import TrainConfig, train_model

    torch.manual_seed(0)
    result = train_model(TrainConfig(dataset="digits", epochs=2, batch_size=128, progress=False,
                                     num_workers=0, device="cpu"))
    model = result["model"].eval()
    test = data.build("digits", train=False)
    x = torch.stack([test[i][0] for i in range(16)])
    transform = data.batch_transform("digits", train=False)
    return model, transform(x) if transform is not None else x


def test_trained_digits_max_pooled_fc_is_billed_at_the_pooled_spikes(trained_digits):
    model, x = trained_digits
    events, paper, exact = _compare(model, x)
    _assert_every_layer_matches(events, exact, len(x))
    # fc1 reads the max-pooled map: the neuron's own rate misbills it
    fc1 = {r["name"]: r for r in paper.layers}["fc1"]
    assert abs(fc1["sops"] * len(x) / exact.sops["fc1"] - 1) > 0.2


@pytest.mark.parametrize(
    ("name", "kw", "batch"),
    [
        ("digits_net", {"firing": "mt", "pool": "avg", "mt_on_fc": True}, 2),  # avg pool, MT
        ("vgg8", {"firing": "ternary"}, 1),  # VGG: pooling between the stages
        ("resnet20m", {"firing": "binary"}, 1),  # avg-pooled stem, avg-down shortcuts, GAP
    ],
)
def test_events_estimate_equals_the_executor_on_every_layer(name, kw, batch):
    model, x = build(name, batch=batch, **kw)  # a model that fires on its input
    events, paper, exact = _compare(model, x)
    _assert_every_layer_matches(events, exact, batch)
    if name == "resnet20m":
        rows = {r["name"]: r for r in paper.layers}
        # behind 2x2 average pooling every input carries four neurons' events: the paper
        # convention bills about a quarter of them
        for layer in ("stages.0.conv1", "stages.2.shortcut.1"):
            assert rows[layer]["sops"] < 0.5 * exact.sops[layer], layer
        ev = {r["name"]: r for r in events.layers}
        assert ev["stages.0.conv1"]["rate"] > 2 * ev["stages.0.conv1"]["source_rate"]


def test_event_counts_accumulate_over_batches():
    model, x = build("digits_net", batch=4, firing="ternary")
    deployed, graph = event_model(model)
    whole = count_events(deployed, graph, x)
    parts = count_events(deployed, graph, x[:2]).add(count_events(deployed, graph, x[2:]))
    assert parts.sops == pytest.approx(whole.sops) and parts.rows == whole.rows
    assert whole.samples == 4 and whole.timesteps == model.timesteps
    measured = measure_rates(model, [(x[:2], None), (x[2:], None)], batches=2, events=event_model)
    assert measured.events.per_step() == pytest.approx(whole.per_step())


def test_event_frames_are_counted_like_the_executor():
    model, _ = build("digits_net", firing="ternary")
    frames = torch.rand(model.timesteps, 3, 1, 8, 8, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64) * 2
    deployed, graph = event_model(model)
    counted = count_events(deployed, graph, frames)
    exact = AdditionOnlyExecutor(deployed).run(frames)
    assert counted.sops == pytest.approx({k: float(v) for k, v in exact.sops.items()})
    assert (counted.rows, counted.samples) == (3 * model.timesteps, 3)


# -- the paper convention and Table 5 --------------------------------------------------------------
def test_assumed_rate_is_billed_by_the_paper_convention():
    from multispike.models import create

    ops = trace_ops(create("resnet20m", num_classes=10, firing="binary", timesteps=2),
                    (3, 32, 32), timesteps=2)
    r = estimate_energy(ops, 0.1642, 2, "hu2021")
    assert r.convention == "paper"
    assert round(r.energy_uj, 2) == 50.03  # Ternary Spike Table 5: 50.14
    assert estimate_energy(ops, 0.1642, 2, "hu2021", convention="paper").energy_uj == \
        r.energy_uj
    with pytest.raises(ConfigError, match="recorded spikes"):
        estimate_energy(ops, 0.1642, 2, "hu2021", convention="events")
    with pytest.raises(ConfigError, match="unknown convention"):
        estimate_energy(ops, 0.1642, 2, "hu2021", convention="exact")


def test_events_must_cover_every_spiking_layer():
    model, x = build("digits_net", batch=2, firing="binary")
    measured = measure_rates(model, [(x, None)], batches=1, events=event_model)
    ops = trace_ops(model, (1, 8, 8), model.timesteps)
    partial = {k: v for k, v in measured.events.per_step().items() if k != "fc1"}
    with pytest.raises(ConfigError, match="fc1"):
        estimate_energy(ops, measured.rates, model.timesteps, events=partial)


def _run(argv):
    parser = argparse.ArgumentParser(prog="multispike")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_command_conventions(trained_digits, monkeypatch, capsys):
    table5 = ["energy", "--model", "resnet20m", "--dataset", "cifar10", "--timesteps", "2",
              "--firing-rate", "0.1642", "--cost-table", "hu2021", "--json"]
    assert _run(table5 + ["--convention", "paper"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["convention"] == "paper" and round(d["energy_uj"], 2) == 50.03
    with pytest.raises(ConfigError, match="--convention events"):
        _run(table5 + ["--convention", "events"])

    model, _ = trained_digits
    monkeypatch.setattr(measure, "_load_checkpoint", lambda path: (model, {}))
    base = ["energy", "--checkpoint", "x.pt", "--dataset", "digits", "--batches", "1",
            "--batch-size", "16", "--json", "--layers", "--device", "cpu"]
    out = {}
    for convention in ("events", "paper"):
        flag = [] if convention == "events" else ["--convention", "paper"]
        assert _run(base + flag) == 0
        out[convention] = json.loads(capsys.readouterr().out)
        assert out[convention]["convention"] == convention
    fc1 = [{r["name"]: r for r in out[c]["layers"]}["fc1"] for c in ("events", "paper")]
    assert fc1[0]["sops"] != pytest.approx(fc1[1]["sops"], rel=0.05)
    assert out["events"]["signs"] == pytest.approx(out["paper"]["signs"])  # same neurons
