"""The MT-SNN ablations as runnable sweeps: they train, evaluate and draw.

- :func:`delta_sweep` (MT-SNN Fig 5c): one MT model per delta size ``d`` and mode (negative
  only ``(−d,)``, positive only ``(+d,)``, both ``(−d, +d)``), plus the single-threshold
  baseline, all at one T; accuracy against ``d``.
- :func:`placement_ablation` (MT-SNN Fig 5a/b): MT on the convolution layers only against MT on
  the convolution and fully-connected layers (``mt_on_fc``), plus the single-threshold
  baseline, at each T; accuracy against T.
- :func:`levels_sweep` (beyond both papers, issue #15): integer spikes (SpikeYOLO's I-LIF
  rule) with ``D = 1 … 4`` levels, plus binary and MT as reference points, at one T; accuracy
  against spike bits (``log2`` of the values a spike takes: ``log2(D + 1)`` for integer ``D``).
- :func:`learn_thresholds_sweep` (issue #15): fixed against learned thresholds
  (``learn_thresholds``) for MT and integer spikes, at one T; accuracy against spike bits.

Defaults are small enough for a CPU: the ``digits`` dataset, a few epochs. The papers'
settings (VGG-9 on CIFAR-10, T = 1, hundreds of epochs) go through ``recipe=`` and the
training engine's recipes.

The sweeps do not train by themselves: the caller hands them ``train_fn``, which gets a dict
of :class:`multispike.engine.TrainConfig` fields per run and returns a dict
with ``best_accuracy``. ``multispike analyze --sweep`` hands them
:func:`multispike.workflows.sweeps.engine_train_fn` (the training engine; a run whose ``out``
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
from multispike.analysis.figures import (
    plot_accuracy_vs_bits,
    plot_accuracy_vs_timesteps,
    plot_delta_sweep,
)
from multispike.analysis.information import spike_bits
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


def _check_runs(runs: Sequence[tuple[dict[str, Any], dict[str, Any]]],
                check_fn: Callable[[Mapping[str, Any]], None] | None) -> None:
    """Build every run's model before any is trained: a wrong option (``deltas`` with the
    integer rule, say) is one :class:`ConfigError` before hours of training, naming the run."""
    if check_fn is None:
        return
    for row, s in runs:
        try:
            check_fn(s)
        except ConfigError as e:
            raise ConfigError(f"run {row['label']} {row.get('point', '')}: {e}") from None


def _bits_runs(runs: list[tuple[dict[str, Any], dict[str, Any]]], train: TrainFn,
               check_fn: Callable[[Mapping[str, Any]], None] | None) -> list[dict[str, Any]]:
    _check_runs(runs, check_fn)
    for row, s in runs:
        row["accuracy"] = _accuracy(train(s))
    return [row for row, _ in runs]


def _bits_run(base: Mapping[str, Any], out: Path, folder: str, label: str, point: str,
              firing: str, options: Mapping[str, Any]) -> tuple[dict[str, Any], dict]:
    """One run of an accuracy-against-bits sweep: its row and its settings. A sweep-wide
    ``deltas`` reaches the MT rules only, ``levels`` the integer rules only."""
    opts = {**base.get("model_options", {}), **options}
    if firing not in ("mt", "ternary-mt"):
        opts.pop("deltas", None)
    if firing not in ("integer", "signed-integer"):
        opts.pop("levels", None)
    deltas, levels = opts.get("deltas"), opts.get("levels")
    row = {"label": label, "point": point, "firing": firing,
           "levels": levels, "learn_thresholds": bool(opts.get("learn_thresholds")),
           "spike_bits": spike_bits(firing, deltas, levels),
           "timesteps": base["timesteps"], "accuracy": None}
    s = dict(base, firing=firing, model_options=opts, out=str(out / folder))
    return row, s


def levels_sweep(
    *,
    dataset: str = "digits",
    model: str | None = None,
    levels: Sequence[int] = (1, 2, 3, 4),
    timesteps: int = 1,
    references: Sequence[str] = ("binary", "mt"),
    epochs: int = 3,
    batch_size: int = 64,
    lr: float = 0.1,
    seed: int = 0,
    recipe: str | None = None,
    out: str | Path = "runs/levels-sweep",
    train_fn: TrainFn,
    check_fn: Callable[[Mapping[str, Any]], None] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Integer spikes with ``D`` levels (``firing="integer"``, ``levels=D``), one model per
    ``D``, plus the ``references`` (binary: 1 bit; MT with the neurons' default deltas: 2
    bits), all at one T; accuracy against spike bits; JSON, CSV and PNG.

    Args:
        levels: the ``D`` to train (each ``>= 1``); integer ``D`` spikes carry
            ``log2(D + 1)`` bits.
        references: rules trained once each as reference points (any of ``binary``, ``mt``,
            ``ternary``, ``ternary-mt``; empty for none).
        check_fn: builds every run's model before any training, e.g. :func:`zoo_check`; a
            model that cannot be built stops the sweep with one line, before it trains.
        train_fn, recipe, settings: as for :func:`delta_sweep`.

    Returns:
        ``{"rows": [...], "png", "csv", "json"}``; each row has ``label`` (``integer`` or the
        reference's rule), ``point`` (``D=3``), ``firing``, ``levels``, ``spike_bits``,
        ``timesteps`` and ``accuracy``.

    Example, with a stand-in trainer::

        >>> import tempfile
        >>> def train(s):
        ...     return {"best_accuracy": 0.8 + 0.02 * s["model_options"].get("levels", 0)}
        >>> with tempfile.TemporaryDirectory() as out:
        ...     res = levels_sweep(levels=(1, 3), references=("binary",), out=out,
        ...                        train_fn=train)
        >>> [(r["point"], r["spike_bits"], round(r["accuracy"], 2)) for r in res["rows"]]
        [('D=1', 1.0, 0.82), ('D=3', 2.0, 0.86), ('binary', 1.0, 0.8)]
    """
    _check_common(epochs, [timesteps])
    ds = [positive_int("levels", d) for d in levels]
    if not ds:
        raise ConfigError("give at least one number of levels, e.g. 1,2,3,4")
    bad = [r for r in references if r not in ("binary", "mt", "ternary", "ternary-mt")]
    if bad:
        raise ConfigError(f"unknown reference rule {bad[0]!r}; choose binary, mt, ternary or "
                          "ternary-mt")
    out = Path(out)
    base = _base_settings(dataset, model, epochs, batch_size, lr, seed, recipe, settings)
    base["timesteps"] = timesteps
    base_opts = {k: v for k, v in base.get("model_options", {}).items() if k != "levels"}
    base["model_options"] = base_opts
    runs = [_bits_run(base, out, f"integer-D{d}", "integer", f"D={d}", "integer",
                      {"levels": d}) for d in ds]
    for ref in references:
        runs.append(_bits_run(base, out, ref, ref, ref, ref, {}))
    rows = _bits_runs(runs, train_fn, check_fn)
    paths = plot_accuracy_vs_bits(
        rows, out / "levels_sweep.png",
        title=f"integer spikes, D = {', '.join(map(str, ds))}, on {dataset}, T = {timesteps}")
    json_path = write_json({"sweep": "levels", "settings": base, "rows": rows},
                           out / "levels_sweep.json")
    return {"rows": rows, **paths, "json": json_path}


def learn_thresholds_sweep(
    *,
    dataset: str = "digits",
    model: str | None = None,
    rules: Sequence[str] = ("mt", "integer"),
    levels: int = 3,
    timesteps: int = 1,
    epochs: int = 3,
    batch_size: int = 64,
    lr: float = 0.1,
    seed: int = 0,
    recipe: str | None = None,
    out: str | Path = "runs/learn-thresholds",
    train_fn: TrainFn,
    check_fn: Callable[[Mapping[str, Any]], None] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fixed against learned thresholds (``learn_thresholds=True``: a per-layer learnable
    ``V_th``, and for MT its auxiliary thresholds, see ``docs/neurons.md``) for each rule of
    ``rules``, at one T; accuracy against spike bits, one line for fixed and one for learned
    thresholds; JSON, CSV and PNG.

    Args:
        rules: firing rules (``mt``, ``integer``, ``binary``, ``ternary``, ``ternary-mt``,
            ``signed-integer``); MT takes the neurons' default deltas unless ``settings``
            gives ``deltas``.
        levels: ``D`` of the integer rules (default 3: the four values of MT with three
            thresholds, two bits).
        check_fn, train_fn, recipe, settings: as for :func:`levels_sweep`.

    Returns:
        ``{"rows": [...], "png", "csv", "json"}``; each row has ``label`` (``fixed
        thresholds`` or ``learned thresholds``), ``point`` (the rule), ``firing``,
        ``learn_thresholds``, ``spike_bits`` and ``accuracy``.

    Example, with a stand-in trainer::

        >>> import tempfile
        >>> def train(s):
        ...     return {"best_accuracy": 0.9 if s["model_options"].get("learn_thresholds")
        ...             else 0.85}
        >>> with tempfile.TemporaryDirectory() as out:
        ...     res = learn_thresholds_sweep(out=out, train_fn=train)
        >>> for r in res["rows"]:
        ...     print(r["point"], r["learn_thresholds"], r["spike_bits"], r["accuracy"])
        mt False 2.0 0.85
        mt True 2.0 0.9
        integer D=3 False 2.0 0.85
        integer D=3 True 2.0 0.9
    """
    _check_common(epochs, [timesteps])
    from multispike.functional.firing import firing_key

    if not rules:
        raise ConfigError("give at least one firing rule, e.g. mt,integer")
    rules = [firing_key(r) for r in rules]  # "unknown firing ...; choose one of ..."
    positive_int("levels", levels)
    out = Path(out)
    base = _base_settings(dataset, model, epochs, batch_size, lr, seed, recipe, settings)
    base["timesteps"] = timesteps
    base_opts = {k: v for k, v in base.get("model_options", {}).items()
                 if k not in ("learn_thresholds", "levels")}
    runs = []
    for rule in rules:
        integer = rule in ("integer", "signed-integer")
        point = f"{rule} D={levels}" if integer else rule
        for learned in (False, True):
            label = "learned thresholds" if learned else "fixed thresholds"
            folder = f"{rule}-{'learned' if learned else 'fixed'}"
            runs.append(_bits_run(dict(base, model_options=base_opts), out, folder, label,
                                  point, rule, {"levels": levels, "learn_thresholds": learned}))
    rows = _bits_runs(runs, train_fn, check_fn)
    paths = plot_accuracy_vs_bits(
        rows, out / "learn_thresholds.png",
        title=f"fixed vs learned thresholds on {dataset}, T = {timesteps}")
    json_path = write_json({"sweep": "learn-thresholds", "settings": base, "rows": rows},
                           out / "learn_thresholds.json")
    return {"rows": rows, **paths, "json": json_path}
