"""The MT-SNN ablations as runnable sweeps: they train, evaluate and draw.

- :func:`delta_sweep` (MT-SNN Fig 5c): one MT model per delta size ``d`` and mode (negative
  only ``(−d,)``, positive only ``(+d,)``, both ``(−d, +d)``), plus the single-threshold
  baseline, all at one T; accuracy against ``d``.
- :func:`placement_ablation` (MT-SNN Fig 5a/b): MT on the convolution layers only against MT on
  the convolution and fully-connected layers (``mt_on_fc``), plus the single-threshold
  baseline, at each T; accuracy against T.

Defaults are small enough for a CPU: the ``digits`` dataset, a few epochs. The papers'
settings (VGG-9 on CIFAR-10, T = 1, hundreds of epochs) go through ``recipe=`` and the
training engine's recipes.

The sweeps do not train by themselves: the caller hands them ``train_fn``, which gets a dict
of :class:`multispike.engine.TrainConfig` fields per run and returns a dict
with ``best_accuracy``. ``multispike analyze --sweep`` hands them
:func:`multispike.cli.analysis.engine_train_fn` (the training engine; a run whose ``out``
folder already holds a ``last.pt`` is resumed, so a sweep that was stopped, or is run again,
continues where it was); a test hands them a stand-in. Every sweep writes ``<name>.json`` (rows
and settings), ``<name>.csv`` and ``<name>.png`` into ``out``.

Example, with a stand-in trainer::

    >>> import tempfile
    >>> def train(settings):
    ...     return {"best_accuracy": 0.9 if settings["firing"] == "mt" else 0.8}
    >>> with tempfile.TemporaryDirectory() as out:
    ...     res = placement_ablation(timesteps=(1,), out=out, train_fn=train)
    >>> [(r["label"], r["accuracy"]) for r in res["rows"]]
    [('MT on conv', 0.9), ('MT on conv+fc', 0.9), ('single threshold', 0.8)]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from multispike import data, models
from multispike.analysis._io import write_json
from multispike.analysis.figures import plot_accuracy_vs_timesteps, plot_delta_sweep
from multispike.checks import positive_int
from multispike.errors import ConfigError

TrainFn = Callable[[dict[str, Any]], Mapping[str, Any]]

#: the delta modes of MT-SNN Fig 5c
MODES = ("neg", "pos", "both")


def zoo_check(settings: Mapping[str, Any]) -> None:
    """Build the model of a run without training it: a neuron that cannot exist (an MT
    threshold ``V_th + Δ <= 0``) raises :class:`ConfigError` here, before any training.

    Runs from a recipe are not checked (their model is only known to the engine).
    """
    if settings.get("recipe"):
        return
    spec = data.get_spec(str(settings["dataset"]))
    kwargs: dict[str, Any] = dict(settings.get("model_options") or {})
    for key in ("timesteps", "firing", "neuron"):
        if settings.get(key) is not None:
            kwargs[key] = settings[key]
    models.create(settings.get("model") or spec.default_model, num_classes=spec.num_classes,
                  **kwargs)


def _accuracy(result: Mapping[str, Any]) -> float:
    for key in ("best_accuracy", "accuracy"):
        if key in result and result[key] is not None:
            return float(result[key])
    raise ConfigError(f"the trainer returned no best_accuracy (keys: {', '.join(result)})")


def _check_common(epochs: int, timesteps: Sequence[int]) -> None:
    positive_int("epochs", epochs)
    for t in timesteps:
        positive_int("time steps", t)


def _base_settings(
    dataset: str, model: str | None, epochs: int, batch_size: int, lr: float, seed: int,
    recipe: str | None, extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    s: dict[str, Any] = {"dataset": dataset, "epochs": epochs, "batch_size": batch_size,
                         "lr": lr, "seed": seed, "progress": False}
    if model is not None:
        s["model"] = model
    if recipe is not None:
        s["recipe"] = recipe
    s.update(extra or {})
    return s


def delta_sweep(
    *,
    dataset: str = "digits",
    model: str | None = None,
    magnitudes: Sequence[float] = (0.1, 0.3, 0.5, 0.7),
    modes: Sequence[str] = MODES,
    timesteps: int = 1,
    epochs: int = 3,
    batch_size: int = 64,
    lr: float = 0.1,
    seed: int = 0,
    baseline: bool = True,
    recipe: str | None = None,
    out: str | Path = "runs/delta-sweep",
    train_fn: TrainFn,
    check_fn: Callable[[Mapping[str, Any]], None] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """MT-SNN Fig 5c: train MT models over delta sizes and modes; write JSON, CSV and PNG.

    Args:
        magnitudes: delta sizes ``d`` (membrane units; must stay below ``V_th`` = 1 for the
            negative deltas, so that every threshold stays positive).
        modes: any of ``neg`` (``(−d,)``), ``pos`` (``(+d,)``), ``both`` (``(−d, +d)``).
            A run whose model ``check_fn`` cannot build (``V_th − d <= 0``) is not trained: it
            stays a row with ``accuracy: None`` and the reason under ``skipped``, and is left
            out of the figure.
        timesteps: T of every run (the paper: 1).
        baseline: also train the single-threshold model.
        recipe: an engine recipe for the papers' settings; the sweep's own values override it.
        settings: further ``TrainConfig`` fields for every run.
        train_fn: trains one run from its settings; returns ``{"best_accuracy": ...}``.
        check_fn: builds a run's model before any training, e.g. :func:`zoo_check` (default:
            none).

    Returns:
        ``{"rows": [...], "baseline": acc or None, "png", "csv", "json"}``.
    """
    _check_common(epochs, [timesteps])
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ConfigError(f"unknown delta mode {bad[0] if bad else None!r}; use neg, pos, both")
    mags = [float(d) for d in magnitudes]
    if not mags or any(not d > 0 for d in mags):
        raise ConfigError(f"delta sizes must be > 0, got {list(magnitudes)}")
    train = train_fn
    out = Path(out)
    base = _base_settings(dataset, model, epochs, batch_size, lr, seed, recipe, settings)
    base["timesteps"] = timesteps
    runs = []
    for mode in modes:
        for d in mags:
            deltas = {"neg": [-d], "pos": [d], "both": [-d, d]}[mode]
            s = dict(base, firing="mt", out=str(out / f"{mode}-{d:g}"),
                     model_options={**base.get("model_options", {}), "deltas": deltas})
            row: dict[str, Any] = {"mode": mode, "delta": d, "deltas": deltas,
                                   "timesteps": timesteps, "accuracy": None}
            try:
                if check_fn is not None:
                    check_fn(s)
            except ConfigError as e:  # e.g. V_th - d <= 0: this neuron cannot exist
                row["skipped"] = str(e)
            runs.append((row, s))
    if all("skipped" in row for row, _ in runs):
        raise ConfigError(f"no delta-sweep run can start: {runs[0][0]['skipped']}")
    for row, s in runs:
        if "skipped" not in row:
            row["accuracy"] = _accuracy(train(s))
    rows = [row for row, _ in runs]
    done = [r for r in rows if r["accuracy"] is not None]
    base_acc = None
    if baseline:
        s = dict(base, firing="binary", out=str(out / "single-threshold"))
        base_acc = _accuracy(train(s))
    paths = plot_delta_sweep(done, out / "delta_sweep.png", baseline=base_acc,
                             title=f"MT deltas on {dataset}, T = {timesteps} (MT-SNN Fig 5c)")
    json_path = write_json({"sweep": "deltas", "settings": base, "baseline": base_acc,
                            "rows": rows}, out / "delta_sweep.json")
    return {"rows": rows, "baseline": base_acc, **paths, "json": json_path}


#: placements of MT-SNN Fig 5a/b: MT on convolutions only, or on convolutions and FC layers
PLACEMENTS = {"conv": False, "conv+fc": True}


def placement_ablation(
    *,
    dataset: str = "digits",
    model: str | None = None,
    timesteps: Sequence[int] = (1, 2, 3),
    deltas: Sequence[float] | None = None,
    epochs: int = 3,
    batch_size: int = 64,
    lr: float = 0.1,
    seed: int = 0,
    baseline: bool = True,
    recipe: str | None = None,
    out: str | Path = "runs/placement",
    train_fn: TrainFn,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """MT-SNN Fig 5a/b: MT on conv layers only vs conv + FC, at each T; JSON, CSV and PNG.

    One model is trained per (placement, T); ``deltas`` None keeps the neurons' default.
    The model needs a hidden fully-connected neuron layer for the two placements to differ.
    """
    ts = list(timesteps)
    if not ts:
        raise ConfigError("give at least one time step")
    _check_common(epochs, ts)
    train = train_fn
    out = Path(out)
    base = _base_settings(dataset, model, epochs, batch_size, lr, seed, recipe, settings)
    rows = []
    for t in ts:
        for label, on_fc in PLACEMENTS.items():
            opts = {**base.get("model_options", {}), "mt_on_fc": on_fc}
            if deltas is not None:
                opts["deltas"] = [float(d) for d in deltas]
            s = dict(base, timesteps=t, firing="mt", model_options=opts,
                     out=str(out / f"mt-{label.replace('+', '-')}-T{t}"))
            rows.append({"label": f"MT on {label}", "placement": label, "firing": "mt",
                         "timesteps": t, "accuracy": _accuracy(train(s))})
        if baseline:
            s = dict(base, timesteps=t, firing="binary", out=str(out / f"st-T{t}"))
            rows.append({"label": "single threshold", "placement": "", "firing": "binary",
                         "timesteps": t, "accuracy": _accuracy(train(s))})
    paths = plot_accuracy_vs_timesteps(
        rows, out / "placement.png",
        title=f"MT placement on {dataset} (MT-SNN Fig 5a/b)",
    )
    json_path = write_json({"sweep": "placement", "settings": base, "rows": rows},
                           out / "placement.json")
    return {"rows": rows, **paths, "json": json_path}
