"""The papers' accuracy figures from evaluation rows.

- :func:`plot_accuracy_vs_timesteps`: accuracy against T for single-threshold, MT, ternary and
  the ANN twin (MT-SNN Fig 3 for CIFAR, Fig 4 for CIFAR10-DVS), or for any labelled groups
  (the MT placement ablation, MT-SNN Fig 5a/b);
- :func:`plot_delta_sweep`: accuracy against the size of the deltas for negative-only,
  positive-only and two-sided deltas (MT-SNN Fig 5c);
- :func:`plot_accuracy_vs_bits`: accuracy against the bits a spike carries (the integer
  levels and learned-threshold sweeps, issue #15).

Rows are plain dicts, e.g. from the engine's ``evaluate_model`` or a JSON file::

    {"firing": "mt", "timesteps": 2, "accuracy": 0.947}

``accuracy`` may be a fraction or a percentage (values above 1 are read as percent). The ANN
twin has no time steps: its rows (``firing: "ann"``) are drawn as a horizontal line.

Several rows of one group at one T (one per seed) are drawn as their mean with error bars of
the standard deviation over the rows, and the figure says so. The accuracy axis spans at
least :data:`MIN_SPAN` percentage points, so that one image of a small test set does not
look like a peak.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from multispike.analysis._io import new_figure, save_figure, write_csv
from multispike.errors import ConfigError

#: legend names of the firing rules (MT-SNN calls the binary neuron "ST")
FIRING_LABELS = {
    "binary": "ST (binary)",
    "mt": "MT",
    "ternary": "ternary",
    "ternary-mt": "ternary-MT",
    "integer": "integer",
    "signed-integer": "signed integer",
    "ann": "ANN twin",
}


#: least span of the accuracy axis, in percentage points
MIN_SPAN = 5.0


def legend_outside(ax: Any, **kwargs: Any) -> Any:
    """``ax``'s legend beside it, on the right, top-aligned: it never covers a data point or
    another panel, and the figure's constrained layout (:func:`~multispike.analysis._io.
    new_figure`) makes room for it, so it is never cut off. Returns the legend."""
    kwargs.setdefault("fontsize", 8)
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def layout_problems(fig: Figure) -> list[str]:
    """What is wrong with ``fig``'s layout once drawn at its size, one line each (``[]``: none):
    a legend or a panel (with its labels and title) reaching outside the figure, a legend over
    another panel, over the title, axis labels or tick labels of any panel, or over another
    legend, a legend over a data point of its own panel (line vertices and markers, error bars,
    bars).

    >>> from multispike.analysis._io import new_figure
    >>> fig = new_figure(4, 3)
    >>> ax = fig.subplots()
    >>> _ = ax.plot([0, 1, 2], [0, 1, 2], marker="o", label="data")
    >>> _ = ax.legend(loc="center")                   # on the point (1, 1)
    >>> layout_problems(fig)
    ['the legend of panel 1 covers 1 data point(s) of its panel']
    >>> _ = legend_outside(ax)
    >>> layout_problems(fig)
    []
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox.padded(0.5)  # half a pixel of rounding
    problems = []
    for i, ax in enumerate(fig.axes, 1):
        if not _inside(ax.get_tightbbox(renderer), frame):
            problems.append(f"panel {i} (with its labels) reaches outside the figure")
    legends = [(i, ax, ax.get_legend()) for i, ax in enumerate(fig.axes, 1) if ax.get_legend()]
    boxes = [(i, leg.get_window_extent(renderer)) for i, _, leg in legends]
    for i, ax, leg in legends:
        box = leg.get_window_extent(renderer)
        if not _inside(box, frame):
            problems.append(f"the legend of panel {i} reaches outside the figure (cut off)")
        for j, other in enumerate(fig.axes, 1):
            if other is not ax and box.overlaps(other.get_window_extent(renderer)):
                problems.append(f"the legend of panel {i} covers panel {j}")
            elif any(box.overlaps(t.get_window_extent(renderer)) for t in _texts(other)):
                problems.append(f"the legend of panel {i} covers labels of panel {j}")
        problems += [f"the legend of panel {i} covers the legend of panel {j}"
                     for j, b in boxes if j > i and box.overlaps(b)]
        covered = _covered_points(ax, box, renderer)
        if covered:
            problems.append(f"the legend of panel {i} covers {covered} data point(s) of its "
                            "panel")
    return problems


def _texts(ax: Any) -> list[Any]:
    """The title, axis labels and tick labels of ``ax`` that show."""
    texts = [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.get_xticklabels(),
             *ax.get_yticklabels()]
    return [t for t in texts if t.get_visible() and t.get_text()]


def _inside(box: Any, frame: Any) -> bool:
    return (box.x0 >= frame.x0 and box.y0 >= frame.y0 and box.x1 <= frame.x1
            and box.y1 <= frame.y1)


def _covered_points(ax: Any, box: Any, renderer: Any) -> int:
    """Data points of ``ax`` drawn inside ``box`` (display coordinates): line vertices and
    markers, error-bar segments' ends, and bars (a bar counts when it overlaps ``box``)."""
    import numpy as np

    points = [line.get_transform().transform(line.get_xydata()) for line in ax.lines
              if line.get_visible() and len(line.get_xydata())]
    for coll in ax.collections:
        transform = coll.get_transform()
        points += [transform.transform(path.vertices) for path in coll.get_paths()]
    xy = np.concatenate(points) if points else np.zeros((0, 2))
    finite = xy[np.isfinite(xy).all(axis=1)]
    inside = ((finite[:, 0] > box.x0) & (finite[:, 0] < box.x1) & (finite[:, 1] > box.y0)
              & (finite[:, 1] < box.y1))
    bars = sum(1 for p in ax.patches if p.get_visible() and p.get_height() != 0
               and box.overlaps(p.get_window_extent(renderer)))
    return int(inside.sum()) + bars


def _num(row: Mapping[str, Any], key: str, where: str) -> float:
    try:
        value = float(row[key])
    except KeyError:
        raise ConfigError(f"{where}: a row has no {key!r}: {dict(row)}") from None
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key!r} must be a number, got {row[key]!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {key!r} must be a finite number, got {row[key]!r}")
    return value


def _percent(values: Sequence[float], where: str = "accuracy") -> list[float]:
    """Fractions to percent; values already in percent pass unchanged; outside [0, 100] is an
    error."""
    bad = [v for v in values if not 0.0 <= v <= 100.0]
    if bad:
        raise ConfigError(f"{where}: accuracy {bad[0]!r} is outside [0, 1] (or [0, 100] %); "
                          "check the rows")
    return [v * 100 if all(abs(u) <= 1.0 for u in values) else v for v in values]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def span_ylim(ax: Any, values: Sequence[float]) -> None:
    """At least :data:`MIN_SPAN` points around the data, inside [0, 100]."""
    lo, hi = min(values), max(values)
    pad = max(MIN_SPAN - (hi - lo), 0.0) / 2 + 0.5
    lo, hi = lo - pad, hi + pad
    if lo < 0:
        lo, hi = 0.0, hi - lo
    if hi > 100:
        lo, hi = max(0.0, lo - (hi - 100)), 100.0
    ax.set_ylim(lo, hi)


def _group_key(row: Mapping[str, Any], by: str | None) -> str:
    if by is not None:
        return str(row.get(by, ""))
    if row.get("label"):
        return str(row["label"])
    firing = str(row.get("firing", "")).lower()
    base = FIRING_LABELS.get(firing, firing or "?")
    return f"{row['model']} {base}" if row.get("model") and row.get("_multi_model") else base


def plot_accuracy_vs_timesteps(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    group_by: str | None = None,
    title: str = "Accuracy against time steps (MT-SNN Fig 3/4)",
) -> dict[str, Path]:
    """Lines of accuracy (%) against T, one per group; PNG + CSV of the plotted points.

    Groups: ``group_by`` (a row key) if given, else a row's ``label``, else its ``firing``
    (prefixed with ``model`` when rows hold several models). A group whose rows are all
    ``firing: "ann"`` (or have no ``timesteps``) is a horizontal dashed line.
    """
    if not rows:
        raise ConfigError("no evaluation rows to plot")
    where = "accuracy vs time steps"
    models = {str(r.get("model")) for r in rows if r.get("model")}
    prepared = [dict(r, _multi_model=len(models) > 1) for r in rows]
    accs = _percent([_num(r, "accuracy", where) for r in prepared])
    groups: dict[str, list[tuple[float | None, float]]] = {}
    out_rows = []
    for r, acc in zip(prepared, accs, strict=True):
        key = _group_key(r, group_by)
        t = r.get("timesteps")
        ann = str(r.get("firing", "")).lower() == "ann" or t in (None, "")
        tt = None if ann else _num(r, "timesteps", where)
        groups.setdefault(key, []).append((tt, acc))
        out_rows.append({"group": key, "firing": r.get("firing", ""), "timesteps": tt,
                         "accuracy_percent": acc, "model": r.get("model", ""),
                         "dataset": r.get("dataset", "")})
    png = Path(path)
    csv_path = write_csv(out_rows, png.with_suffix(".csv"))
    fig = new_figure(6.0, 4.2)
    ax = fig.subplots()
    all_t = sorted({t for pts in groups.values() for t, _ in pts if t is not None})
    shown: list[float] = []
    most = 1
    for key, pts in groups.items():
        by_t: dict[float, list[float]] = {}
        for t, a in pts:
            if t is not None:
                by_t.setdefault(t, []).append(a)
        flat = [a for t, a in pts if t is None]
        if by_t:
            ts = sorted(by_t)
            stats = [mean_std(by_t[t]) for t in ts]
            most = max(most, *(len(by_t[t]) for t in ts))
            ax.errorbar(ts, [m for m, _ in stats], yerr=[sd for _, sd in stats], marker="o",
                        capsize=3, label=key)
            shown += [m + sd for m, sd in stats] + [m - sd for m, sd in stats]
        if flat:
            m, _ = mean_std(flat)
            ax.axhline(m, ls="--", color="black" if "ANN" in key else "gray",
                       lw=1.2, label=f"{key} ({m:.2f}%)")
            shown.append(m)
    if all_t:
        ax.set_xticks(all_t)
    if shown:
        span_ylim(ax, shown)
    ax.set_xlabel("time steps T")
    ax.set_ylabel("accuracy (%)")
    if most > 1:
        title = f"{title}\nmean of up to {most} seeds; error bars: standard deviation over seeds"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    legend_outside(ax)
    png = save_figure(fig, png)
    return {"png": png, "csv": csv_path}


#: legend names of the delta-sweep modes (MT-SNN Fig 5c)
DELTA_MODES = {"neg": "negative Δ only", "pos": "positive Δ only", "both": "Δ = ±d"}


def plot_delta_sweep(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    baseline: float | None = None,
    title: str = "MT deltas (MT-SNN Fig 5c)",
) -> dict[str, Path]:
    """Accuracy (%) against the delta size ``d`` for each mode; PNG + CSV.

    Rows: ``{"mode": "neg"|"pos"|"both", "delta": d, "accuracy": a}`` (``deltas`` optional).
    ``baseline``: the single-threshold accuracy, drawn as a dashed line.
    """
    if not rows:
        raise ConfigError("no delta-sweep rows to plot")
    where = "delta sweep"
    accs = _percent([_num(r, "accuracy", where) for r in rows]
                    + ([baseline] if baseline is not None else []))
    base = accs.pop() if baseline is not None else None
    series: dict[str, list[tuple[float, float]]] = {}
    out_rows = []
    for r, acc in zip(rows, accs, strict=True):
        mode = str(r.get("mode", "both"))
        d = _num(r, "delta", where)
        series.setdefault(mode, []).append((d, acc))
        out_rows.append({"mode": mode, "delta": d, "deltas": r.get("deltas", ""),
                         "accuracy_percent": acc})
    if base is not None:
        out_rows.append({"mode": "single-threshold", "delta": 0.0, "deltas": "",
                         "accuracy_percent": base})
    png = Path(path)
    csv_path = write_csv(out_rows, png.with_suffix(".csv"))
    fig = new_figure(6.0, 4.2)
    ax = fig.subplots()
    for mode, pts in series.items():
        pts.sort()
        ax.plot([d for d, _ in pts], [a for _, a in pts], marker="o",
                label=DELTA_MODES.get(mode, mode))
    if base is not None:
        ax.axhline(base, color="gray", ls="--", lw=1.2, label=f"single threshold ({base:.2f}%)")
    ax.set_xlabel("|Δ| (membrane potential units)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    legend_outside(ax)
    png = save_figure(fig, png)
    return {"png": png, "csv": csv_path}


def plot_accuracy_vs_bits(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    group_by: str = "label",
    title: str = "Accuracy against spike bits",
) -> dict[str, Path]:
    """Accuracy (%) against the bits a spike carries (``spike_bits``: ``log2`` of the number
    of values it takes; integer ``D`` → ``log2(D + 1)``), one line per group; PNG + CSV.

    Rows: ``{"spike_bits": b, "accuracy": a}``, grouped by ``group_by`` (default ``label``);
    a row's ``point`` (e.g. ``"D=3"`` or ``"mt"``), where given, is written beside its marker.

    >>> import tempfile, pathlib
    >>> rows = [{"label": "integer", "point": f"D={d}", "spike_bits": math.log2(d + 1),
    ...          "accuracy": 0.9 + 0.01 * d} for d in (1, 2, 3)]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = plot_accuracy_vs_bits(rows, pathlib.Path(tmp) / "bits.png")
    ...     paths["csv"].read_text().splitlines()[1]
    'integer,D=1,1.0,91.0'
    """
    if not rows:
        raise ConfigError("no rows to plot against spike bits")
    where = "accuracy vs spike bits"
    accs = _percent([_num(r, "accuracy", where) for r in rows])
    series: dict[str, list[tuple[float, float, str]]] = {}
    out_rows = []
    for r, acc in zip(rows, accs, strict=True):
        bits = _num(r, "spike_bits", where)
        key = str(r.get(group_by, "") or "?")
        point = str(r.get("point", "") or "")
        series.setdefault(key, []).append((bits, acc, point))
        out_rows.append({"group": key, "point": point, "spike_bits": bits,
                         "accuracy_percent": acc})
    png = Path(path)
    csv_path = write_csv(out_rows, png.with_suffix(".csv"))
    fig = new_figure(6.0, 4.2)
    ax = fig.subplots()
    for key, pts in series.items():
        pts.sort()
        ax.plot([b for b, _, _ in pts], [a for _, a, _ in pts], marker="o", label=key)
        for b, a, point in pts:
            if point:
                ax.annotate(point, (b, a), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
    span_ylim(ax, accs)
    ax.set_xlabel("spike bits (log2 of the values a spike takes)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    legend_outside(ax)
    png = save_figure(fig, png)
    return {"png": png, "csv": csv_path}


def plot_training_curves(
    epochs: Sequence[int],
    curves: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    title: str = "Training curves",
) -> Path:
    """Loss, accuracy (%) and learning rate against the epoch, one panel each; PNG.

    ``curves``: plain lists of one value per epoch, named as a run's ``metrics.csv`` columns
    (``train_loss``, ``test_loss``, ``train_accuracy``, ``test_accuracy``, ``val_accuracy``,
    ``lr``); the panels draw those given.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     png = plot_training_curves([1, 2], {"train_loss": [2.0, 1.0], "lr": [0.1, 0.05]},
    ...                                pathlib.Path(tmp) / "curves.png")
    ...     png.name
    'curves.png'
    """
    if not epochs:
        raise ConfigError("no epochs to plot training curves of")
    panels = (("loss", ("train_loss", "test_loss", "val_loss")),
              ("accuracy (%)", ("train_accuracy", "test_accuracy", "val_accuracy")),
              ("learning rate", ("lr",)))
    fig = new_figure(10.0, 3.4)
    axes = fig.subplots(1, 3)
    for ax, (label, keys) in zip(axes, panels, strict=True):
        for key in keys:
            values = curves.get(key)
            if values:
                shown = _percent(values, key) if "accuracy" in key else list(values)
                ax.plot(list(epochs), shown, marker="o", markersize=3,
                        label=key.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0] and label != "learning rate":
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
