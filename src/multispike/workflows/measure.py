"""A model measured on a dataset: its energy per sample (Ternary Spike Table 5) and its activity
figures (firing statistics, entropy, membrane histograms).

The pipeline of ``multispike energy`` and ``multispike analyze`` (:mod:`multispike.cli.analysis`
parses their flags and prints): :func:`resolve_target` reads a checkpoint's run (its dataset,
data folder, options and T; the caller's settings win, each with a note),
:func:`build_target_model` builds or checks the model, :func:`measure_energy` and
:func:`record_activity` measure it. :func:`model_energy` and :func:`activity_report` take
objects (a built model, a dataset spec, a cost table, a loader); ``multispike reproduce`` calls
them too.

Example (Ternary Spike Table 5, binary row, an assumed rate)::

    >>> from multispike import data, models
    >>> from multispike.analysis.energy import get_cost_table
    >>> model = models.create("resnet20m", num_classes=10, firing="binary")
    >>> report = model_energy(model, data.get_spec("cifar10"), 2, get_cost_table("hu2021"),
    ...                       rates=0.1642)
    >>> report.rate_source, round(report.energy_uj, 1)
    ('assumed', 50.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multispike.analysis.energy import CostTable, EnergyReport, estimate_energy
from multispike.analysis.ops import ModelOps, trace_ops
from multispike.errors import ConfigError

#: what energy and analyze assume without a checkpoint
DEFAULTS = {"timesteps": 2, "firing": "binary"}


# -- what is measured ----------------------------------------------------------------------------
@dataclass
class Target:
    """What a measurement reads: the checkpoint's model (``loaded``; ``None`` for a model built
    from its name), the dataset it is fed, at ``timesteps``, and the ``note: ...`` lines that
    say where a setting overrides the checkpoint's. ``data_given``: the data flags the user
    set (``--dataset``, ``--data-option``), which a mismatched input names."""

    checkpoint: str | None
    loaded: Any
    dataset: str | None
    timesteps: int
    data_dir: str | None
    data_options: dict[str, Any]
    data_given: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)


def resolve_target(checkpoint: str | None, *, model: str | None = None,
                   firing: str | None = None, dataset: str | None = None,
                   timesteps: int | None = None, data_dir: str | None = None,
                   data_options: dict[str, Any] | None = None,
                   default_dataset: str | None = None) -> Target:
    """The :class:`Target` of a ``checkpoint`` (its run's dataset, data folder, dataset options
    and T; the values given win, each with a note) or, without one, of the values given and
    the defaults (T = 2, ``default_dataset``).

    A ``model`` or ``firing`` other than the checkpoint's is refused (one line): a trained
    model keeps its architecture and firing rule.
    """
    options = dict(data_options or {})
    given = ("--dataset",) * bool(dataset) + ("--data-option",) * bool(options)
    if not checkpoint:
        return Target(None, None, dataset if dataset is not None else default_dataset,
                      timesteps if timesteps is not None else DEFAULTS["timesteps"], data_dir,
                      options, given)
    from multispike.engine.checkpoint import run_data

    loaded, saved = _load_checkpoint(checkpoint)
    _same_model(model, firing, loaded, saved)
    notes: list[str] = []
    saved_t = saved.get("timesteps") or getattr(loaded, "timesteps", None)
    if timesteps is None:
        timesteps = saved_t or DEFAULTS["timesteps"]
    elif saved_t and timesteps != saved_t:
        notes.append(f"note: --timesteps {timesteps} overrides the checkpoint's T = {saved_t}")
    if dataset is not None and saved.get("dataset") and dataset != saved["dataset"]:
        notes.append(f"note: --dataset {dataset} overrides the checkpoint's dataset "
                     f"{saved['dataset']}")
    run = run_data(saved, dataset=dataset, data_dir=data_dir, options=options)
    return Target(checkpoint, loaded, run.dataset, timesteps, run.data_dir, run.options, given,
                  notes)


def _load_checkpoint(path: str) -> tuple[Any, dict[str, Any]]:
    """The model of a checkpoint file and what the checkpoint says of its run (dataset,
    data_dir, timesteps, firing, model); one :class:`CheckpointError` line for a bad file."""
    from multispike.engine.checkpoint import checkpoint_settings, load_model

    model, ckpt = load_model(path)
    return model, checkpoint_settings(ckpt)


def _same_model(model: str | None, firing: str | None, loaded: Any,
                saved: dict[str, Any]) -> None:
    """Refuse (one line) a ``--model`` or ``--firing`` other than the checkpoint's."""
    name = saved.get("model") or getattr(loaded, "name", None)
    if model and name and model != name:
        raise ConfigError(f"--model {model} differs from the checkpoint's model {name}; "
                          "drop --model (a checkpoint rebuilds its own model)")
    own = getattr(loaded, "firing", None) or saved.get("firing")
    if firing and own and str(firing) != str(own):
        raise ConfigError(f"--firing {firing} differs from the checkpoint's firing "
                          f"{own}; drop --firing (a trained model keeps its firing rule)")


def dataset_spec(target: Target) -> Any:
    """The dataset spec of the target's dataset with its options (input size, classes)."""
    from multispike import data

    return data.get_spec(str(target.dataset), **target.data_options)


def build_target_model(target: Target, spec: Any, *, model: str | None = None,
                       firing: str | None = None, options: dict[str, Any] | None = None) -> Any:
    """The checkpoint's model at the target's T, checked against the dataset's input; else
    ``model`` (or the dataset's default), untrained, with the dataset's input channels and
    size, ``firing`` and the model ``options``."""
    from multispike.engine.checkpoint import build_for_dataset, check_input_fits, create_args

    if target.loaded is not None:
        if options:
            raise ConfigError("--option sets options of an untrained --model; a --checkpoint "
                              "keeps the options it was trained with: drop --option")
        if hasattr(target.loaded, "timesteps"):
            target.loaded.timesteps = target.timesteps
        check_input_fits(target.loaded, spec, target.data_given)
        return target.loaded
    ann = str(firing or "").lower() == "ann"  # the ANN twin has no dynamics: one step
    options = dict(options or {})
    built, _ = build_for_dataset(create_args(spec, model=model, firing=firing or None,
                                             timesteps=None if ann else target.timesteps,
                                             options=options), spec, options)
    return built


def measuring_batches(target: Target, spec: Any, *, batch_size: int, batches: int, desc: str,
                      progress: bool = True) -> tuple[Any, Any]:
    """The test split of the target's dataset in ``batch_size`` batches, shown as a progress
    display of ``batches`` batches (``progress``), and its evaluation transform."""
    from multispike.engine.evaluate import Progress, split_loader

    loader, transform = split_loader(spec.name, data_dir=target.data_dir,
                                    batch_size=batch_size, timesteps=target.timesteps,
                                    data_options=target.data_options, progress=progress)
    try:
        total = min(len(loader), batches)
    except TypeError:
        total = batches
    return Progress(loader, desc, total=total, enabled=progress), transform


def _placed(model: Any, spec: Any, timesteps: int, batch_size: int, device: str | None) -> Any:
    """The ``torch.device`` of ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``), once a
    batch of ``batch_size`` is known to fit its memory."""
    from multispike.engine.device import check_memory, pick_device

    dev = pick_device(str(device or "auto"))
    check_memory(model, spec.input_shape, timesteps, batch_size, dev, training=False)
    return dev


# -- energy --------------------------------------------------------------------------------------
def measure_energy(model: Any, spec: Any, table: CostTable, target: Target, *,
                   rates: float | None = None, convention: str | None = None,
                   device: str | None = "auto", batches: int = 8, batch_size: int = 64,
                   progress: bool = True, model_name: str | None = None) -> EnergyReport:
    """``multispike energy``: the operations of ``model`` counted on the CPU, its rates
    measured on ``batches`` test batches of a checkpoint's data on ``device``, or ``rates``
    assumed; the report's ``meta`` names the model, the dataset and its input."""
    from multispike.deploy import event_model

    t = target.timesteps
    if str(getattr(model, "firing", "")) == "ann" and not spec.is_event:
        t = 1  # the ANN twin sees the image once
    measuring = target.checkpoint is not None
    dev = _placed(model, spec, t, batch_size if measuring else 1,
                  device if measuring else "cpu")
    ops = trace_ops(model, spec.input_shape, t, event=bool(spec.is_event))
    measure: dict[str, Any] = {}
    if measuring:
        model.to(dev)
        loader, transform = measuring_batches(target, spec, batch_size=batch_size,
                                              batches=batches, progress=progress,
                                              desc=f"measure {spec.name} T={t}")
        measure = {"loader": loader, "transform": transform, "batches": batches,
                   "events": event_model}
    elif rates is None and ops.neurons:
        raise ConfigError(
            "give --firing-rate S (spikes per neuron per step, e.g. 0.1642) or "
            "--checkpoint with data to measure the rates"
        )
    report = model_energy(model, spec, t, table, rates=rates, convention=convention, ops=ops,
                          **measure)
    if target.notes:
        report.meta["notes"] = target.notes
    report.meta.update({
        "model": getattr(model, "name", model_name or spec.default_model),
        "dataset": spec.name,
        "input_shape": list(spec.input_shape),
    })
    return report


def model_energy(
    model: Any,
    spec: Any,
    timesteps: int,
    table: CostTable,
    *,
    rates: float | None = None,
    loader: Any = None,
    transform: Any = None,
    batches: int = 8,
    convention: str | None = None,
    ops: ModelOps | None = None,
    events: Any = None,
) -> EnergyReport:
    """The energy of one sample of ``spec``'s dataset through ``model`` at ``timesteps``.

    The rates are measured on the first ``batches`` batches of ``loader`` (each through
    ``transform``) when it is given, else ``rates`` (one assumed mean rate) is billed; a model
    without spiking layers needs neither. ``convention``: ``events`` (bill what each layer
    reads, counted from the recorded spikes; needs ``loader``), ``paper`` (the feeding
    neuron's rate) or ``None`` (events where they can be counted, else the paper convention,
    noted in ``report.meta["convention_note"]``). ``ops``: the model's traced operations, when
    the caller traced them already. ``events``: how to deploy the model to count its events
    (:func:`multispike.deploy.event_model`; see :func:`~multispike.analysis.stats.measure_rates`),
    None: no event counts.
    """
    from multispike.analysis.stats import measure_rates

    if ops is None:
        ops = trace_ops(model, spec.input_shape, timesteps, event=bool(spec.is_event))
    note = ""
    measured_rates: Any
    if loader is not None:
        measured = measure_rates(model, loader, batches=batches, transform=transform,
                                 events=events if convention != "paper" else None)
        if convention != "paper" and measured.events is None:
            if convention == "events":
                raise ConfigError(
                    f"cannot count the events of {type(model).__name__} "
                    f"({measured.events_error}); use --convention paper"
                )
            note = f"events not counted ({measured.events_error}): paper convention"
        measured_rates = measured if measured.events is not None else measured.rates
        source = f"measured on {measured.batches} batches of {spec.name}"
    elif rates is not None:
        measured_rates, source = rates, "assumed"
    elif not ops.neurons:
        measured_rates, source = 0.0, "none (no spiking layer)"
    else:
        raise ConfigError("give a firing rate (spikes per neuron per step) or a loader to "
                          "measure the rates of the spiking layers")
    report = estimate_energy(ops, measured_rates, timesteps, table, rate_source=source,
                             convention=convention)
    if note:
        report.meta["convention_note"] = note
    if getattr(model, "firing", None):
        report.firing = str(model.firing)
    return report


def record_activity(model: Any, spec: Any, target: Target, out: str | Path, *,
                    device: str | None = "auto", batches: int = 4, batch_size: int = 64,
                    membrane_samples: int = 2000, max_layers: int | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """``multispike analyze --checkpoint/--model``: ``model`` on ``device``, recorded on
    ``batches`` test batches of the target's data, drawn into ``out``
    (:func:`activity_report`)."""
    model = model.to(_placed(model, spec, target.timesteps, batch_size, device))
    loader, transform = measuring_batches(target, spec, batch_size=batch_size, batches=batches,
                                          desc=f"record {spec.name} T={target.timesteps}",
                                          progress=progress)
    return activity_report(model, loader, out, batches=batches, transform=transform,
                           membrane_samples=membrane_samples, max_layers=max_layers or None)


def activity_report(
    model: Any,
    loader: Any,
    out: str | Path,
    *,
    batches: int = 4,
    transform: Any = None,
    membrane_samples: int = 2000,
    max_layers: int | None = None,
) -> dict[str, Any]:
    """Record ``model``'s neurons on ``batches`` batches of ``loader`` and draw into ``out``:
    firing statistics, entropy per layer and (``membrane_samples`` > 0) membrane histograms of
    up to ``max_layers`` layers (``None``: all), each as a PNG with its numbers.

    Returns ``{"written": {name: path}, "mean_rate": spikes per neuron per step, "entropy":
    [{"layer", "entropy_bits", "bound_bits"}, ...]}``.
    """
    from multispike.analysis.information import entropy_rows, plot_entropy
    from multispike.analysis.membrane import membrane_histograms, neuron_thresholds, plot_membrane
    from multispike.analysis.stats import (
        collect_activity,
        plot_firing_stats,
        rates_from_monitor,
    )

    out = Path(out)
    written: dict[str, str] = {}
    mon = collect_activity(model, loader, batches=batches, transform=transform,
                           membrane_samples=membrane_samples)
    summary = mon.summary()
    for key, paths in (
        ("firing", plot_firing_stats(summary, out / "firing_stats.png")),
        ("entropy", plot_entropy(summary, out / "entropy.png")),
    ):
        written.update({f"{key}_{k}": str(v) for k, v in paths.items()})
    if membrane_samples > 0:
        hist = membrane_histograms(mon, thresholds=neuron_thresholds(model))
        paths = plot_membrane(hist, out / "membrane.png", max_layers=max_layers or None)
        written.update({f"membrane_{k}": str(v) for k, v in paths.items()})
    return {
        "written": written,
        "mean_rate": rates_from_monitor(mon).mean_rate,
        "entropy": [{k: r[k] for k in ("layer", "entropy_bits", "bound_bits")}
                    for r in entropy_rows(summary)],
    }
