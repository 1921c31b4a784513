"""Firing statistics per neuron layer: measured rates, value fractions, plane rates, a figure.

The counting rules are those of :mod:`multispike.monitor`: every non-zero spike counts, −1
included, and a multi-threshold neuron counts each plane that fired, so the rate is spikes per
neuron per time step and can exceed 1 for MT neurons.

- :func:`collect_activity` runs a model over batches of a loader inside
  :func:`~multispike.monitor.record_activity` and returns the monitor;
- :func:`firing_rates` gives the per-layer and mean rates alone (what ``multispike eval``
  reports);
- :func:`measure_rates` gives the per-layer rates the energy estimate needs, and, given a way
  to deploy the model (``events=multispike.deploy.event_model``: the analysis does not import
  the deployment), the exact synaptic operations of every layer from the same spikes
  (:func:`~multispike.analysis.ops.count_events`: what each layer reads after pooling);
- :func:`firing_rows` flattens the monitor summary into one CSV row per layer;
- :func:`plot_firing_stats` draws the rates and the −1/0/+1 fractions (ternary) or the plane
  rates (MT) per layer as bar charts, and writes the CSV next to the PNG.

Example::

    >>> import torch
    >>> from multispike.analysis.stats import measure_rates
    >>> from multispike.deploy import event_model
    >>> from multispike.deploy.testing import exercise
    >>> from multispike.models import create
    >>> x = torch.rand(4, 1, 8, 8)
    >>> model = exercise(create("digits_net", firing="mt"), x)   # random weights that fire
    >>> loader = [(x, torch.zeros(4, dtype=torch.long))] * 3    # (images, labels) batches
    >>> rates = measure_rates(model, loader, batches=2, events=event_model)
    >>> rates.batches, list(rates.rates), rates.mean_rate > 0
    (2, ['stem_act', 'features.0.act', 'fc1_act'], True)
    >>> sorted(rates.events.sops), rates.events.samples     # exact SOPs per consuming layer
    (['fc1', 'features.0.conv', 'head.fc'], 8)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from multispike.analysis._io import new_figure, save_figure, write_csv
from multispike.analysis.figures import legend_outside
from multispike.analysis.ops import EventCounts, count_events
from multispike.checks import positive_int
from multispike.errors import ConfigError
from multispike.monitor import ActivityMonitor, record_activity
from multispike.neurons import Neuron

Prepare = Callable[[Tensor], Tensor]


def model_input(x: Tensor) -> Tensor:
    """Loader batch to model input: event batches ``[B, T, C, H, W]`` become ``[T, B, C, H, W]``.

    Static images ``[B, C, H, W]`` pass unchanged (multispike models repeat them over T).
    """
    return x.transpose(0, 1) if x.dim() == 5 else x


def _batches(loader: Iterable, batches: int | None) -> Iterator[Any]:
    if batches is not None:
        positive_int("batches", batches)
    for i, batch in enumerate(loader):
        if batches is not None and i >= batches:
            break
        yield batch


def _record(
    model: nn.Module,
    loader: Iterable,
    batches: int | None,
    *,
    membrane_samples: int = 0,
    transform: Callable[[Tensor], Tensor] | None = None,
    prepare: Prepare | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    observe: Callable[[Tensor], None] | None = None,
) -> tuple[ActivityMonitor, int]:
    """The one measuring loop: ``model`` (eval mode, its training mode restored after) over up
    to ``batches`` batches inside :func:`~multispike.monitor.record_activity`; returns the
    monitor and the number of batches run. Arguments as in :func:`collect_activity`."""
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    prepare = prepare or model_input
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with torch.no_grad(), record_activity(model, membrane_samples=membrane_samples,
                                              seed=seed) as mon:
            for batch in _batches(loader, batches):
                x = batch[0] if isinstance(batch, (list, tuple)) else batch
                x = x.to(device)
                if transform is not None:
                    x = transform(x)
                x = prepare(x)
                model(x)
                if observe is not None:
                    observe(x)
                seen += 1
    finally:
        model.train(was_training)
    return mon, seen


def _require_activity(model: nn.Module, mon: ActivityMonitor, seen: int) -> None:
    if seen == 0:
        raise ConfigError("the loader gave no batch: nothing to measure")
    if not mon.layers:
        raise ConfigError(
            f"{type(model).__name__} has no spiking neuron layer (an ANN twin?): no rates"
        )


def collect_activity(
    model: nn.Module,
    loader: Iterable,
    *,
    batches: int | None = None,
    membrane_samples: int = 0,
    transform: Callable[[Tensor], Tensor] | None = None,
    prepare: Prepare | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    observe: Callable[[Tensor], None] | None = None,
) -> ActivityMonitor:
    """Run ``model`` (eval mode) over up to ``batches`` batches and record its activity.

    Args:
        loader: yields ``(x, y)`` or ``x``.
        transform: applied to each input batch first (e.g. ``data.batch_transform(...,
            train=False)``: normalisation).
        prepare: turns the batch into model input (default :func:`model_input`).
        device: where the batches go (default: the model's device, CPU or GPU; the model
            must live there).
        observe: called with each model input after the model ran on it.

    A loader without a batch, or a model without a neuron layer, is a :class:`ConfigError`.
    """
    mon, seen = _record(model, loader, batches, membrane_samples=membrane_samples,
                        transform=transform, prepare=prepare, device=device, seed=seed,
                        observe=observe)
    _require_activity(model, mon, seen)
    return mon


@dataclass
class MeasuredRates:
    """Measured firing rates: per neuron layer and overall.

    Attributes:
        rates: neuron-layer name → spikes per neuron per step.
        mean_rate: all spikes over all neuron-steps (Ternary Spike's "mean sparsity" s).
        rows: the monitor summary (one dict per layer).
        batches: batches measured.
        events: exact synaptic operations per consuming layer from the same spikes
            (:class:`~multispike.analysis.ops.EventCounts`), or None when not counted.
        events_error: why they were not counted (a model outside the zoo), or ``""``.
    """

    rates: dict[str, float]
    mean_rate: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    batches: int = 0
    events: EventCounts | None = None
    events_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mean_rate": self.mean_rate, "rates": dict(self.rates),
                             "batches": self.batches}
        if self.events is not None:
            d["events"] = self.events.to_dict()
        return d


def rates_from_monitor(mon: ActivityMonitor, batches: int = 0) -> MeasuredRates:
    """Per-layer and overall rates of what ``mon`` recorded (empty and 0.0 when nothing)."""
    rows = mon.summary()
    spikes = sum(r["spikes"] for r in rows)
    steps = sum(r["neuron_steps"] for r in rows)
    return MeasuredRates(
        rates={r["layer"]: float(r["rate"]) for r in rows},
        mean_rate=spikes / steps if steps else 0.0,
        rows=rows,
        batches=batches,
    )


def firing_rates(
    model: nn.Module,
    loader: Iterable,
    batches: int | None = 8,
    *,
    transform: Callable[[Tensor], Tensor] | None = None,
    prepare: Prepare | None = None,
    device: torch.device | str | None = None,
) -> MeasuredRates:
    """Firing rates of every neuron layer of ``model`` over up to ``batches`` batches.

    The measurement both ``multispike eval`` (:func:`multispike.engine.evaluate_model`) and
    :func:`measure_rates` make. Unlike :func:`measure_rates` it refuses nothing: a model
    without neuron layers (an ANN twin) gets no rates and a mean of 0.0. No event counts.
    """
    mon, seen = _record(model, loader, batches, transform=transform, prepare=prepare,
                        device=device)
    return rates_from_monitor(mon, seen)


def measure_rates(
    model: nn.Module,
    loader: Iterable,
    batches: int | None = 8,
    *,
    events: Callable[[nn.Module], tuple[nn.Module, Any]] | None = None,
    **kwargs: Any,
) -> MeasuredRates:
    """Measured firing rates of every neuron layer over ``batches`` batches of ``loader``.

    With ``events``, a function giving a deployed copy of the model and its deployment graph
    (:func:`multispike.deploy.event_model`), the spikes are also counted into exact synaptic
    operations per layer (:func:`~multispike.analysis.ops.count_events`, on that copy: the
    dense model runs a second time per batch); a model ``events`` cannot deploy (no
    deployment graph: it raises :class:`ConfigError`) gets ``events=None`` and the reason in
    ``events_error``, as does every model without ``events``.

    ``kwargs`` go to :func:`collect_activity` (``transform``, ``prepare``, ``device``).
    Feed the result to :func:`~multispike.analysis.energy.estimate_energy` (the whole object:
    per-layer event counts, ``convention="events"``; its ``rates``: the neuron's rates,
    ``convention="paper"``).
    """
    counted: EventCounts | None = None
    error = "no way to deploy the model was given (events=)" if events is None else ""
    observe = None
    if events is not None and any(isinstance(m, Neuron) for m in model.modules()):
        try:
            deployed, graph = events(model)  # copied before the monitor hooks the model
        except ConfigError as e:
            error = str(e)
        else:
            counted = EventCounts()

            def observe(x: Tensor) -> None:
                assert counted is not None
                counted.add(count_events(deployed, graph, x))

    mon, seen = _record(model, loader, batches, observe=observe, **kwargs)
    _require_activity(model, mon, seen)
    measured = rates_from_monitor(mon, seen)
    measured.events, measured.events_error = counted, error
    return measured


# -- rows and figure ---------------------------------------------------------------------------
def firing_rows(summary: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per layer: rate, value fractions ``value_<v>``, plane rates ``plane_<k>``."""
    rows = []
    for r in summary:
        row: dict[str, Any] = {
            "layer": r["layer"],
            "firing": r["firing"],
            "rate": float(r["rate"]),
            "spikes": float(r["spikes"]),
            "neuron_steps": int(r["neuron_steps"]),
        }
        for v, p in sorted(r.get("value_fractions", {}).items(), key=lambda kv: int(kv[0])):
            row[f"value_{int(v)}"] = float(p)
        for k, p in enumerate(r.get("plane_rates", [])):
            row[f"plane_{k}"] = float(p)
        for t, p in sorted(r.get("rate_per_t", {}).items(), key=lambda kv: int(kv[0])):
            row[f"rate_t{int(t)}"] = float(p)
        rows.append(row)
    return rows


def _columns(rows: Sequence[Mapping[str, Any]], prefix: str) -> list[str]:
    cols: dict[str, None] = {}
    for r in rows:
        for k in r:
            if k.startswith(prefix):
                cols.setdefault(k, None)
    return sorted(cols, key=lambda c: int(c[len(prefix):]))


def _plane_labels(summary: Sequence[Mapping[str, Any]], cols: Sequence[str]) -> list[str]:
    """Legend entries of the MT planes with their thresholds: ``V_th`` and ``V_th + Δ``.

    Where the layers' thresholds differ, the entries say so rather than show one layer's Δ.
    """
    sets = {tuple(r.get("thresholds") or ()) for r in summary if len(r.get("thresholds") or ()) > 1}
    labels = []
    for c in cols:
        k = int(c[len("plane_"):])
        if len(sets) == 1:
            th = next(iter(sets))
            if k == 0:
                labels.append(f"main: H ≥ V_th = {th[0]:g}")
            elif k < len(th):
                labels.append(f"plane {k}: H ≥ V_th + Δ, Δ = {th[k] - th[0]:+g}")
            else:
                labels.append(f"plane {k}")
        else:
            labels.append("main threshold" if k == 0 else
                          f"auxiliary plane {k} (Δ differs by layer)" if sets else
                          f"auxiliary plane {k}")
    return labels


def plot_firing_stats(
    summary: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    title: str = "Firing statistics per layer",
) -> dict[str, Path]:
    """Bar charts of the firing statistics; writes ``path`` (PNG) and the CSV beside it.

    Top: the rate per layer (spikes per neuron per step). Bottom: for signed (ternary) layers
    the fractions of −1 and +1 outputs, for MT layers the rate of each plane (the main
    threshold first), for binary layers the rate again.
    """
    if not summary:
        raise ConfigError("no firing statistics to plot (no neuron layer recorded)")
    rows = firing_rows(summary)
    png = Path(path)
    csv_path = write_csv(rows, png.with_suffix(".csv"))
    names = [r["layer"] or "<neuron>" for r in rows]
    x = list(range(len(rows)))
    fig = new_figure(max(6.0, 0.35 * len(rows) + 2) + 2.5, 6.5)  # + the legends beside
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ax1.bar(x, [r["rate"] for r in rows], color="tab:blue")
    mean = sum(r["spikes"] for r in rows) / max(sum(r["neuron_steps"] for r in rows), 1)
    ax1.axhline(mean, color="k", ls="--", lw=1, label=f"mean {mean:.3f}")
    ax1.set_ylim(0, max([r["rate"] for r in rows] + [1e-3]) * 1.25)
    ax1.set_ylabel("spikes / neuron / step")
    ax1.set_title(title)
    legend_outside(ax1)

    value_cols = [c for c in _columns(rows, "value_") if c != "value_0"]
    plane_cols = _columns(rows, "plane_")
    signed = any("value_-1" in r for r in rows)
    if signed:
        cols = value_cols
        labels = [f"b = {c[len('value_'):]}" for c in cols]
        ax2.set_ylabel("fraction of neuron-steps")
    else:
        cols = plane_cols
        labels = _plane_labels(summary, cols)
        ax2.set_ylabel("plane rate")
    width = 0.8 / max(len(cols), 1)
    for j, (c, lab) in enumerate(zip(cols, labels, strict=True)):
        xs = [i - 0.4 + width * (j + 0.5) for i in x]
        ax2.bar(xs, [r.get(c, 0.0) for r in rows], width=width, label=lab)
    if cols:
        ax2.set_ylim(0, max([r.get(c, 0.0) for r in rows for c in cols] + [1e-3]) * 1.3)
        legend_outside(ax2)
    ax2.set_xticks(x)
    ax2.set_xticklabels(names, rotation=70, ha="right", fontsize=7)
    png = save_figure(fig, png)
    return {"png": png, "csv": csv_path}
