"""Small shared helpers: figures without pyplot's global state, CSV and JSON writers."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from multispike.checks import plain
from multispike.errors import ConfigError


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure on the Agg canvas (no display, no pyplot state)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def out_path(path: str | Path, suffix: str) -> Path:
    """``path`` as a Path with ``suffix``, its folder created."""
    p = Path(path)
    if p.suffix.lower() != suffix:
        p = p.with_suffix(suffix)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def save_figure(fig: Figure, path: str | Path) -> Path:
    p = out_path(path, ".png")
    fig.savefig(p, dpi=120)
    return p


def write_json(data: Any, path: str | Path) -> Path:
    p = out_path(path, ".json")
    p.write_text(json.dumps(plain(data), indent=2) + "\n")
    return p


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path,
              columns: Sequence[str] | None = None) -> Path:
    """Rows of flat dicts as CSV; the columns are the union of the keys in first-seen order."""
    if columns is None:
        seen: dict[str, None] = {}
        for r in rows:
            for k in r:
                seen.setdefault(str(k), None)
        columns = list(seen)
    p = out_path(path, ".csv")
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({str(k): ("" if v is None else v) for k, v in r.items()})
    return p


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows from a JSON file (a list, or an object with a ``rows``/``results`` list) or a CSV."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: no such file")
    if p.suffix.lower() == ".csv":
        with p.open(newline="") as f:
            return [dict(r) for r in csv.DictReader(f)]
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if isinstance(data, dict):
        for key in ("rows", "results", "evaluations", "eval"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ConfigError(f"{path} must hold a list of objects (rows)")
    return data

