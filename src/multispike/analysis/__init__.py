"""Analysis: operation counts, energy estimates, firing statistics, information, figures.

=====================  ==========================================================================
module                 what it gives
=====================  ==========================================================================
:mod:`.ops`            :func:`trace_ops` / :func:`count_ops`: MACs per conv/linear layer, the
                       encoding layer, which neuron layer feeds each layer; neuron counts
:mod:`.energy`         cost tables (``hu2021``, ``45nm``), :func:`estimate_energy` (Ternary Spike
                       Table 5), :class:`EnergyReport`
:mod:`.stats`          :func:`measure_rates`, :func:`collect_activity`, firing-statistics figure
:mod:`.information`    empirical entropy per layer against the binary/ternary bounds (Ternary
                       Spike Eq 6)
:mod:`.membrane`       membrane potential histograms per layer and step (Ternary Spike Fig 2)
:mod:`.figures`        accuracy against T (MT-SNN Fig 3/4), delta sweep figure (Fig 5c)
:mod:`.sweeps`         :func:`delta_sweep` and :func:`placement_ablation` (MT-SNN Fig 5); the
                       caller hands them the training function
:mod:`.firing_rules`   :func:`neuron_table`: the firing rules at work on a fixed input
=====================  ==========================================================================

These take objects. A model measured on a dataset (its energy, its activity figures) is a
workflow: :mod:`multispike.workflows.measure`, which the ``energy`` and ``analyze`` commands
and ``reproduce`` call. The analysis imports neither the training engine nor the workflows.

Example (Ternary Spike Table 5, binary row)::

    >>> from multispike import models
    >>> from multispike.analysis import trace_ops, estimate_energy
    >>> model = models.create("resnet20m", num_classes=10, firing="binary")
    >>> ops = trace_ops(model, (3, 32, 32), timesteps=2)
    >>> report = estimate_energy(ops, 0.1642, 2, "hu2021")
    >>> report.first_layer_flops, round(report.energy_uj, 1)
    (3538944, 50.0)
"""

from multispike.analysis.energy import (
    CMOS45,
    COST_TABLES,
    HU2021,
    CostTable,
    EnergyReport,
    estimate_energy,
    format_report,
    get_cost_table,
    register_cost_table,
)
from multispike.analysis.figures import plot_accuracy_vs_timesteps, plot_delta_sweep
from multispike.analysis.firing_rules import neuron_table
from multispike.analysis.information import (
    capacity_bits,
    entropy_bits,
    entropy_rows,
    plot_entropy,
    spike_bits,
    spike_values,
)
from multispike.analysis.membrane import membrane_histograms, neuron_thresholds, plot_membrane
from multispike.analysis.ops import (
    EventCounts,
    LayerOps,
    ModelOps,
    NeuronLayerOps,
    count_events,
    count_ops,
    trace_ops,
)
from multispike.analysis.stats import (
    MeasuredRates,
    collect_activity,
    firing_rows,
    measure_rates,
    plot_firing_stats,
)
from multispike.analysis.sweeps import delta_sweep, placement_ablation
from multispike.models.profile import conv_macs, linear_macs

__all__ = [
    "CMOS45",
    "COST_TABLES",
    "HU2021",
    "CostTable",
    "EnergyReport",
    "EventCounts",
    "LayerOps",
    "MeasuredRates",
    "ModelOps",
    "NeuronLayerOps",
    "capacity_bits",
    "collect_activity",
    "conv_macs",
    "count_events",
    "count_ops",
    "delta_sweep",
    "entropy_bits",
    "entropy_rows",
    "estimate_energy",
    "firing_rows",
    "format_report",
    "get_cost_table",
    "linear_macs",
    "measure_rates",
    "membrane_histograms",
    "spike_bits",
    "spike_values",
    "neuron_table",
    "neuron_thresholds",
    "placement_ablation",
    "plot_accuracy_vs_timesteps",
    "plot_delta_sweep",
    "plot_entropy",
    "plot_firing_stats",
    "plot_membrane",
    "register_cost_table",
    "trace_ops",
]
