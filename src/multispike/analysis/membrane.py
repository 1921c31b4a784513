"""Membrane potential distributions per layer and time step (Ternary Spike Fig 2).

Ternary Spike Fig 2 shows that the membrane potential ``H`` (before firing) of a spiking
ResNet20 is distributed differently in every layer, the reason for its learnable amplitude.
:func:`membrane_histograms` bins the samples :func:`multispike.monitor.record_activity`
keeps (``membrane_samples=N`` per layer and step); :func:`plot_membrane` draws the grid, one
row per time step and one column per layer, with the firing thresholds as vertical lines, and
writes the bin counts as JSON beside the PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multispike.analysis._io import new_figure, save_figure, write_json
from multispike.checks import positive_int
from multispike.errors import ConfigError
from multispike.monitor import ActivityMonitor
from multispike.neurons import Neuron


def neuron_thresholds(model: nn.Module) -> dict[str, list[float]]:
    """Every neuron layer's firing thresholds (negative ones too for signed rules); the values
    learned so far for a layer with ``learn_thresholds``."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, Neuron):
            v_th, rule = m.fixed_firing()
            pos = [float(t) for t in rule.thresholds(v_th)]
            out[name] = sorted(pos + ([-t for t in pos] if rule.signed else []))
    return out


def membrane_histograms(
    monitor: ActivityMonitor,
    *,
    bins: int = 60,
    value_range: tuple[float, float] | None = None,
    layers: Sequence[str] | None = None,
    thresholds: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Histogram of the recorded membrane samples of each layer and time step.

    Args:
        monitor: from ``record_activity(model, membrane_samples=N)`` with N > 0.
        bins: bins per histogram.
        value_range: common ``(low, high)``; default per layer, from the 0.5th to the 99.5th
            percentile of its samples over all steps (one range per layer, so steps compare).
        layers: which layers (default all recorded, in order).
        thresholds: layer → thresholds to store with it (see :func:`neuron_thresholds`).

    Returns:
        ``{"bins": bins, "layers": [{"layer", "firing", "thresholds", "steps": [{"t", "n",
        "mean", "std", "edges", "counts"}]}]}`` (plain lists, JSON-ready).
    """
    bins = positive_int("bins", bins)
    names = list(layers) if layers is not None else list(monitor.layers)
    unknown = [n for n in names if n not in monitor.layers]
    if unknown:
        raise ConfigError(f"no recorded neuron layer {unknown[0]!r}; recorded: "
                          f"{', '.join(list(monitor.layers)[:8])}")
    out_layers = []
    for name in names:
        layer = monitor.layers[name]
        steps = sorted(layer.membrane)
        samples = {t: layer.membrane_samples(t) for t in steps}
        if not steps or all(s.numel() == 0 for s in samples.values()):
            raise ConfigError(
                f"layer {name!r} has no membrane samples: record with membrane_samples > 0"
            )
        if value_range is None:
            allv = torch.cat([s for s in samples.values() if s.numel()])
            lo = float(torch.quantile(allv, 0.005)) if allv.numel() > 1 else float(allv.min())
            hi = float(torch.quantile(allv, 0.995)) if allv.numel() > 1 else float(allv.max())
            if hi <= lo:
                lo, hi = lo - 0.5, hi + 0.5
        else:
            lo, hi = (float(v) for v in value_range)
            if not hi > lo:
                raise ConfigError(f"value_range must be (low, high) with high > low, got "
                                  f"{value_range}")
        step_rows = []
        for t in steps:
            s = samples[t]
            counts = torch.histc(s, bins=bins, min=lo, max=hi) if s.numel() else \
                torch.zeros(bins, device=s.device)
            edges = torch.linspace(lo, hi, bins + 1, device=s.device)
            step_rows.append(
                {
                    "t": int(t),
                    "n": int(s.numel()),
                    "mean": float(s.mean()) if s.numel() else None,
                    "std": float(s.std()) if s.numel() > 1 else None,
                    "edges": [round(float(e), 6) for e in edges],
                    "counts": [int(c) for c in counts],
                }
            )
        out_layers.append(
            {
                "layer": name,
                "firing": layer.firing,
                "thresholds": list((thresholds or {}).get(name, [])),
                "steps": step_rows,
            }
        )
    return {"bins": bins, "layers": out_layers}


def plot_membrane(
    hist: Mapping[str, Any],
    path: str | Path,
    *,
    max_layers: int | None = None,
    title: str = "Membrane potential before firing (Ternary Spike Fig 2)",
) -> dict[str, Path]:
    """Grid of histograms, rows = time steps, columns = layers; PNG + JSON of the bin counts.

    ``max_layers`` keeps the first layers only in the figure (Fig 2 shows the first four); the
    JSON keeps every layer.
    """
    layers = list(hist.get("layers", []))
    if not layers:
        raise ConfigError("no membrane histograms to plot")
    png = Path(path)
    json_path = write_json(dict(hist), png.with_suffix(".json"))
    shown = layers[:max_layers] if max_layers else layers
    n_t = max(len(layer["steps"]) for layer in shown)
    fig = new_figure(max(2.4 * len(shown) + 0.5, 5.0), 1.9 * n_t + 0.6)
    axes = fig.subplots(n_t, len(shown), squeeze=False)
    for j, layer in enumerate(shown):
        for i in range(n_t):
            ax = axes[i][j]
            if i >= len(layer["steps"]):
                ax.set_axis_off()
                continue
            st = layer["steps"][i]
            edges = st["edges"]
            widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
            ax.bar(edges[:-1], st["counts"], width=widths, align="edge", color="tab:blue")
            for th in layer.get("thresholds", []):
                ax.axvline(th, color="tab:red", ls="--", lw=0.8)
            if i == 0:
                ax.set_title(layer["layer"] or "<neuron>", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"t = {st['t'] + 1}\nneuron count", fontsize=8)
            if i == n_t - 1:
                ax.set_xlabel("membrane potential H", fontsize=8)
            ax.tick_params(labelsize=6)
    fig.suptitle(f"{title}\nred dashed lines: the thresholds", fontsize=10)
    png = save_figure(fig, png)
    return {"png": png, "json": json_path}
