"""The papers' accuracy figures from evaluation rows.

- :func:`plot_accuracy_vs_timesteps`: accuracy against T for single-threshold, MT, ternary and
  the ANN twin (MT-SNN Fig 3 for CIFAR, Fig 4 for CIFAR10-DVS), or for any labelled groups
  (the MT placement ablation, MT-SNN Fig 5a/b);
- :func:`plot_delta_sweep`: accuracy against the size of the deltas for negative-only,
  positive-only and two-sided deltas (MT-SNN Fig 5c).

Rows are plain dicts, e.g. from the engine's ``evaluate_model`` or a JSON file::

    {"firing": "mt", "timesteps": 2, "accuracy": 0.947}

``accuracy`` may be a fraction or a percentage (values above 1 are read as percent). The ANN
twin has no time steps: its rows (``firing: "ann"``) are drawn as a horizontal line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from multispike.analysis._io import new_figure, save_figure, write_csv
from multispike.errors import ConfigError

#: legend names of the firing rules (MT-SNN calls the binary neuron "ST")
FIRING_LABELS = {
    "binary": "ST (binary)",
    "mt": "MT",
    "ternary": "ternary",
    "ternary-mt": "ternary-MT",
    "ann": "ANN twin",
}


def _num(row: Mapping[str, Any], key: str, where: str) -> float:
    try:
        return float(row[key])
    except KeyError:
        raise ConfigError(f"{where}: a row has no {key!r}: {dict(row)}") from None
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key!r} must be a number, got {row[key]!r}") from None


def _percent(values: Sequence[float]) -> list[float]:
    """Fractions to percent; values already in percent pass unchanged."""
    return [v * 100 if all(abs(u) <= 1.0 for u in values) else v for v in values]


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
    for key, pts in groups.items():
        timed = sorted((t, a) for t, a in pts if t is not None)
        flat = [a for t, a in pts if t is None]
        if timed:
            ax.plot([t for t, _ in timed], [a for _, a in timed], marker="o", label=key)
        if flat:
            ax.axhline(max(flat), ls="--", color="black" if "ANN" in key else "gray",
                       lw=1.2, label=f"{key} ({max(flat):.2f}%)")
    if all_t:
        ax.set_xticks(all_t)
    ax.set_xlabel("time steps T")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
    ax.legend(fontsize=8)
    png = save_figure(fig, png)
    return {"png": png, "csv": csv_path}
