"""A model measured on a dataset: its energy per sample (Ternary Spike Table 5) and its activity
figures (firing statistics, entropy, membrane histograms).

These take objects: a built model, a dataset spec (:func:`multispike.data.get_spec`), a cost
table, a loader. ``multispike energy`` and ``multispike analyze`` (``multispike.cli.analysis``)
turn their flags into these objects; ``multispike reproduce`` calls the same functions.

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

from pathlib import Path
from typing import Any

from multispike.analysis.energy import CostTable, EnergyReport, estimate_energy
from multispike.analysis.ops import ModelOps, trace_ops
from multispike.errors import ConfigError


def eval_loader(spec: Any, *, data_dir: str | None = None, batch_size: int = 64,
                timesteps: int | None = None) -> tuple[Any, Any]:
    """The test split of ``spec``'s dataset in batches of ``batch_size`` (in order), and its
    evaluation transform (normalisation; ``None`` where there is none). Event data is framed
    into ``timesteps`` frames."""
    from multispike import data

    kwargs: dict[str, Any] = {"data_dir": data_dir, "train": False}
    if spec.is_event:
        kwargs["timesteps"] = timesteps
    loader = data.make_loader(data.build(spec.name, **kwargs), batch_size, shuffle=False)
    return loader, data.batch_transform(spec.name, train=False)


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
