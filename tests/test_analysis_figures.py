"""Firing statistics, entropy, membrane and accuracy figures: PNG + numbers files."""

import csv
import json
import math

import pytest
import torch

from multispike.analysis import (
    capacity_bits,
    collect_activity,
    entropy_bits,
    entropy_rows,
    membrane_histograms,
    neuron_thresholds,
    plot_accuracy_vs_timesteps,
    plot_delta_sweep,
    plot_entropy,
    plot_firing_stats,
    plot_membrane,
    spike_bits,
    spike_values,
)
from multispike.errors import ConfigError
from tests.test_analysis_nets import TinySNN

PNG_MAGIC = b"\x89PNG"


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(4) == PNG_MAGIC


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def ternary_monitor():
    model = TinySNN(firing="ternary", timesteps=2)
    gen = torch.Generator().manual_seed(1)
    loader = [(torch.randn(6, 1, 8, 8, generator=gen), 0) for _ in range(2)]
    return model, collect_activity(model, loader, membrane_samples=50)


def test_entropy_of_known_distributions():
    assert entropy_bits([0.5, 0.5]) == pytest.approx(1.0)
    assert entropy_bits({-1: 1, 0: 1, 1: 1}) == pytest.approx(math.log2(3))
    assert entropy_bits([1.0, 0.0]) == 0.0
    assert entropy_bits([3, 1]) == pytest.approx(entropy_bits([0.75, 0.25]))
    p = 0.16
    assert entropy_bits([p, 1 - p]) == pytest.approx(-p * math.log2(p) - (1 - p) * math.log2(1 - p))
    with pytest.raises(ConfigError):
        entropy_bits([0, 0])


def test_capacity_bounds():
    assert capacity_bits(spike_values("binary")) == 1.0
    assert capacity_bits(spike_values("ternary")) == pytest.approx(1.585, abs=1e-3)
    assert capacity_bits(spike_values("mt", (-0.5, 0.5))) == 2.0  # {0, 1, 2, 3}
    assert spike_values("ternary-mt", (-0.5, 0.5)) == 7
    assert spike_values("integer", levels=3) == 4  # {0, 1, 2, 3}
    assert spike_values("signed-integer", levels=3) == 7  # {-3, ..., 3}
    assert spike_bits("integer", levels=7) == 3.0
    with pytest.raises(ConfigError):
        spike_values("quaternary")


def test_entropy_rows_use_the_layer_bound():
    summary = [
        {"layer": "t", "firing": "ternary", "rate": 0.5, "plane_rates": [0.25, 0.25],
         "value_fractions": {-1: 0.25, 0: 0.5, 1: 0.25}},
        {"layer": "m", "firing": "mt", "rate": 1.5, "plane_rates": [0.5, 0.75, 0.25],
         "value_fractions": {0: 0.25, 1: 0.25, 2: 0.25, 3: 0.25}},
    ]
    t, m = entropy_rows(summary)
    assert t["entropy_bits"] == pytest.approx(1.5) and t["bound_bits"] == pytest.approx(
        math.log2(3))
    assert m["entropy_bits"] == pytest.approx(2.0) and m["efficiency"] == pytest.approx(1.0)


def test_firing_stats_and_entropy_figures(tmp_path, ternary_monitor):
    _, mon = ternary_monitor
    summary = mon.summary()
    paths = plot_firing_stats(summary, tmp_path / "stats.png")
    assert _is_png(paths["png"])
    rows = _read_csv(paths["csv"])
    assert [r["layer"] for r in rows] == ["a", "b"]
    for r in rows:
        total = sum(float(r[f"value_{v}"]) for v in (-1, 0, 1) if f"value_{v}" in r)
        assert total == pytest.approx(1.0)
        assert float(r["rate"]) == pytest.approx(float(r["plane_0"]) + float(r["plane_1"]))
    paths = plot_entropy(summary, tmp_path / "entropy.png")
    assert _is_png(paths["png"])
    rows = _read_csv(paths["csv"])
    assert all(0 <= float(r["entropy_bits"]) <= float(r["bound_bits"]) + 1e-9 for r in rows)


def test_membrane_figure(tmp_path, ternary_monitor):
    model, mon = ternary_monitor
    th = neuron_thresholds(model)
    assert th["a"] == [-0.5, 0.5]
    hist = membrane_histograms(mon, bins=10, thresholds=th)
    layer = hist["layers"][0]
    assert [s["t"] for s in layer["steps"]] == [0, 1]
    assert all(len(s["counts"]) == 10 and len(s["edges"]) == 11 for s in layer["steps"])
    paths = plot_membrane(hist, tmp_path / "membrane.png", max_layers=1)
    assert _is_png(paths["png"])
    data = json.loads(paths["json"].read_text())
    assert [entry["layer"] for entry in data["layers"]] == ["a", "b"]
    with pytest.raises(ConfigError, match="no recorded neuron layer"):
        membrane_histograms(mon, layers=["nope"])
    for bad in (0, 2.5):
        with pytest.raises(ConfigError, match=r"^bins must be an integer >= 1, got "):
            membrane_histograms(mon, bins=bad)


def test_accuracy_vs_timesteps(tmp_path):
    rows = [{"firing": f, "timesteps": t, "accuracy": acc}
            for f, base in (("binary", 0.80), ("mt", 0.85), ("ternary", 0.86))
            for t, acc in ((1, base), (2, base + 0.03), (4, base + 0.05))]
    rows.append({"firing": "ann", "timesteps": 1, "accuracy": 0.90})
    paths = plot_accuracy_vs_timesteps(rows, tmp_path / "acc.png")
    assert _is_png(paths["png"])
    out = _read_csv(paths["csv"])
    assert len(out) == 10
    ann = [r for r in out if r["firing"] == "ann"]
    assert ann[0]["timesteps"] == "" and float(ann[0]["accuracy_percent"]) == pytest.approx(90)
    with pytest.raises(ConfigError, match="accuracy"):
        plot_accuracy_vs_timesteps([{"firing": "mt", "timesteps": 1}], tmp_path / "x.png")


def test_delta_sweep_figure(tmp_path):
    rows = [{"mode": m, "delta": d, "accuracy": 90 + d + i}
            for i, m in enumerate(("neg", "pos", "both")) for d in (0.1, 0.3)]
    paths = plot_delta_sweep(rows, tmp_path / "deltas.png", baseline=88.0)
    assert _is_png(paths["png"])
    out = _read_csv(paths["csv"])
    assert len(out) == 7 and out[-1]["mode"] == "single-threshold"


def test_membrane_thresholds_are_the_learned_ones():
    from torch import nn

    from multispike.analysis.membrane import neuron_thresholds
    from multispike.neurons import IFNode

    node = IFNode(firing="mt", deltas=(-0.5, 0.5), learn_thresholds=True)
    net = nn.Sequential(node)
    assert neuron_thresholds(net)["0"] == pytest.approx([0.5, 1.0, 1.5])
    with torch.no_grad():
        node.threshold_rho.add_(0.1)  # every segment grows by m(0.1) = 1.1 - 1/1500 (about)
    v_th, rule = node.fixed_firing()
    assert neuron_thresholds(net)["0"] == pytest.approx(sorted(rule.thresholds(v_th)))
    assert neuron_thresholds(net)["0"] != pytest.approx([0.5, 1.0, 1.5])


# -- layouts: nothing cut off, no legend over data, labels or another panel -----------------------
def _figures_of(monkeypatch, module):
    """The figures ``module`` saves (its ``save_figure``), kept for :func:`layout_problems`."""
    figs = []
    save = module.save_figure
    monkeypatch.setattr(module, "save_figure", lambda fig, path: (figs.append(fig),
                                                                  save(fig, path))[1])
    return figs


def test_layout_problems_finds_each_fault():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from multispike.analysis._io import new_figure
    from multispike.analysis.figures import layout_problems, legend_outside

    def two_panels(fig):
        top, bottom = fig.subplots(2, 1)
        top.bar([0, 1, 2], [1, 2, 3], label="rate")
        bottom.plot([0, 1], [0, 1], label="line")
        return top

    fixed = Figure(figsize=(4, 5))  # no layout engine: nothing moves out of a legend's way
    FigureCanvasAgg(fixed)
    top = two_panels(fixed)
    assert layout_problems(fixed) == []
    top.legend(loc="upper right")  # on the highest bar
    assert layout_problems(fixed) == ["the legend of panel 1 covers 1 data point(s) of its panel"]
    top.legend(loc="upper left", bbox_to_anchor=(0.0, -0.05))  # down onto the lower panel
    assert "the legend of panel 1 covers panel 2" in layout_problems(fixed)
    top.legend(loc="upper right", bbox_to_anchor=(0.0, 1.0))  # off the left edge
    assert layout_problems(fixed) == [
        "panel 1 (with its labels) reaches outside the figure",
        "the legend of panel 1 reaches outside the figure (cut off)",
        "the legend of panel 1 covers labels of panel 1"]  # the y tick labels

    fig = new_figure(4, 5)  # constrained layout makes room beside the panel
    legend_outside(two_panels(fig))
    assert layout_problems(fig) == []


def _mt_summary(layers):
    """Firing statistics of MT layers (thresholds 0.5, 1, 1.5: long plane labels), the last
    layer firing most."""
    out = []
    for i in range(layers):
        planes = [0.05 + 0.1 * i / layers, 0.2 + 0.2 * i / layers, 0.02]
        out.append({"layer": f"features.{i}.act", "firing": "mt", "rate": sum(planes),
                    "spikes": 100 * sum(planes), "neuron_steps": 100, "plane_rates": planes,
                    "thresholds": [0.5, 1.0, 1.5], "value_fractions": {}})
    return out


@pytest.mark.parametrize("layers", [3, 12])
def test_firing_stats_legends_are_beside_the_panels(layers, tmp_path, monkeypatch):
    """The plane legend (``ncol=3`` over the lower panel) was cut off on the left and ran over
    the panel's labels; beside the panels it shows whole and covers nothing."""
    import multispike.analysis.stats as stats
    from multispike.analysis.figures import layout_problems

    figs = _figures_of(monkeypatch, stats)
    plot_firing_stats(_mt_summary(layers), tmp_path / "firing_stats.png")
    assert layout_problems(figs[-1]) == []


def test_ternary_firing_stats_layout(tmp_path, monkeypatch, ternary_monitor):
    import multispike.analysis.stats as stats
    from multispike.analysis.figures import layout_problems

    figs = _figures_of(monkeypatch, stats)
    plot_firing_stats(ternary_monitor[1].summary(), tmp_path / "firing_stats.png")
    assert layout_problems(figs[-1]) == []


def test_demo_legend_covers_no_data_point():
    """The README's demo table: inside the axes, the legend sat on binary's T=2 point."""
    from multispike.analysis.figures import layout_problems
    from multispike.workflows.demo import demo_figure

    accuracy = {"binary": (0.80, 0.86), "mt": (0.88, 0.91), "ternary": (0.85, 0.90),
                "ternary + learned a": (0.86, 0.905), "integer D=3": (0.875, 0.915),
                "mt + learned thresholds": (0.885, 0.92)}
    rows = [{"label": label, "timesteps": t, "accuracy": a, "std": 0.01}
            for label, pair in accuracy.items() for t, a in zip((1, 2), pair, strict=True)]
    rows.append({"label": "ann", "timesteps": 1, "accuracy": 0.93, "std": 0.0})
    assert layout_problems(demo_figure(rows)) == []


def test_accuracy_figures_layout(tmp_path, monkeypatch):
    import multispike.analysis.figures as figures
    from multispike.analysis.figures import layout_problems, plot_accuracy_vs_bits

    figs = _figures_of(monkeypatch, figures)
    rows = [{"firing": f, "timesteps": t, "accuracy": base + 0.01 * t + 0.01 * seed}
            for f, base in (("binary", 0.80), ("mt", 0.85), ("ternary", 0.86),
                            ("ternary-mt", 0.83), ("integer", 0.84), ("signed-integer", 0.82))
            for t in (1, 2, 4, 8) for seed in (0, 1)]
    plot_accuracy_vs_timesteps([*rows, {"firing": "ann", "accuracy": 0.9}], tmp_path / "a.png")
    plot_delta_sweep([{"mode": m, "delta": d, "accuracy": 90 + d + i}
                      for i, m in enumerate(("neg", "pos", "both")) for d in (0.1, 0.3, 0.5)],
                     tmp_path / "d.png", baseline=91.0)
    plot_accuracy_vs_bits([{"label": lab, "spike_bits": math.log2(d + 1), "point": f"D={d}",
                            "accuracy": 0.9 + 0.01 * d + k}
                           for k, lab in enumerate(("integer", "signed")) for d in (1, 2, 3)],
                          tmp_path / "b.png")
    figures.plot_training_curves([1, 2, 3], {"train_loss": [2.0, 1.5, 1.2],
                                             "test_loss": [2.1, 1.7, 1.5],
                                             "train_accuracy": [0.5, 0.7, 0.8],
                                             "test_accuracy": [0.45, 0.65, 0.75],
                                             "lr": [0.1, 0.05, 0.01]}, tmp_path / "c.png")
    assert len(figs) == 4
    assert [layout_problems(f) for f in figs] == [[], [], [], []]
