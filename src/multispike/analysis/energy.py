"""Energy estimates from operation counts, firing rates and a named cost table.

An inference of one sample over T time steps costs (Ternary Spike, "Energy Estimation")::

    E = FLOPs · e_flop  +  MACs_analog · e_mac  +  SOPs · e_sop  +  #Sign · e_spike

with ``FLOPs = 2 × MACs`` of the encoding layer, ``MACs_analog`` of any other layer reading
analog values, and ``#Sign`` one sign operation per spike (two per signed spike). A spiking
layer's SOPs follow one of two conventions (``convention=``): ``"events"`` bills what it reads,
counted exactly from recorded spikes (equal to the addition-only executor's count, layer by
layer); ``"paper"`` (Ternary Spike Table 5) bills ``s × T × A`` at the firing rate ``s`` of the
neuron layer feeding it (the only choice for an assumed rate). The ANN twin (``MACs_total ·
e_mac``) rides along in :class:`EnergyReport`. Every term, both conventions and the Table 5
reproduction: ``docs/analysis.md`` § Definitions, § SOP conventions, § Ternary Spike Table 5.

Example (binary ``resnet20m`` at T = 2 and the assumed rate 0.1642 gives 50.03 µJ against
Table 5's 50.14; ``tests/test_analysis_energy.py`` checks it)::

    >>> import torch
    >>> from multispike.analysis.energy import estimate_energy
    >>> from multispike.analysis.ops import trace_ops
    >>> from multispike.analysis.stats import measure_rates
    >>> from multispike.deploy.testing import exercise
    >>> from multispike.models import create
    >>> x = torch.rand(4, 1, 8, 8)
    >>> model = exercise(create("digits_net", firing="binary"), x)   # random weights that fire
    >>> ops = trace_ops(model, (1, 8, 8), timesteps=2)
    >>> r = estimate_energy(ops, 0.1642, 2, "hu2021")   # an assumed rate: paper convention
    >>> r.convention, round(r.energy_uj, 4), round(r.flops_uj, 4)   # the encoder dominates
    ('paper', 0.2425, 0.2304)
    >>> from multispike.deploy import event_model    # how to deploy it to count its events
    >>> measured = measure_rates(model, [x], events=event_model)   # rates and exact events
    >>> estimate_energy(ops, measured, 2, "hu2021").convention
    'events'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from multispike.analysis.ops import EventCounts, LayerOps, ModelOps, NeuronLayerOps
from multispike.checks import positive_int
from multispike.errors import ConfigError

PJ_PER_UJ = 1e6

#: how a spiking layer's SOPs are billed (see the module docstring)
CONVENTIONS = ("events", "paper")


@dataclass(frozen=True)
class CostTable:
    """Energy per operation, in picojoules.

    Attributes:
        name: registry key.
        flop_pj: one floating-point operation (half a MAC) of the encoding layer.
        mac_pj: one multiply-accumulate on analog values (the ANN twin's unit).
        sop_pj: one synaptic operation (an accumulate triggered by a spike).
        spike_pj: one sign (spike-generation) operation.
        source: where the numbers come from.
    """

    name: str
    flop_pj: float
    mac_pj: float
    sop_pj: float
    spike_pj: float
    source: str = ""

    def __post_init__(self) -> None:
        for key in ("flop_pj", "mac_pj", "sop_pj", "spike_pj"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ConfigError(
                    f"cost table {self.name!r}: {key} must be a number >= 0, got {v!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Ternary Spike's table (after Hu, Tang and Pan 2021): 12.5 pJ per FLOP, 77 fJ per SOP,
#: 3.7 pJ per spike; a MAC is two FLOPs.
HU2021 = CostTable(
    name="hu2021",
    flop_pj=12.5,
    mac_pj=25.0,
    sop_pj=0.077,
    spike_pj=3.7,
    source="Ternary Spike (Guo et al., AAAI 2024), Energy Estimation, after Hu, Tang and Pan "
    "2021: 12.5 pJ/FLOP, 77 fJ/SOP, 3.7 pJ/spike",
)

#: The 45 nm CMOS table (Horowitz, ISSCC 2014, 32-bit float) used by SpikingJelly-based and
#: many other SNN papers: 4.6 pJ per MAC, 0.9 pJ per accumulate; spikes are not billed.
CMOS45 = CostTable(
    name="45nm",
    flop_pj=2.3,
    mac_pj=4.6,
    sop_pj=0.9,
    spike_pj=0.0,
    source="Horowitz, ISSCC 2014, 45 nm 32-bit float: MAC 4.6 pJ (mult 3.7 + add 0.9), "
    "accumulate 0.9 pJ",
)

COST_TABLES: dict[str, CostTable] = {t.name: t for t in (HU2021, CMOS45)}


def register_cost_table(table: CostTable) -> CostTable:
    """Add (or replace) a cost table in the registry under ``table.name``."""
    if not isinstance(table, CostTable):
        raise ConfigError(f"expected a CostTable, got {type(table).__name__}")
    COST_TABLES[table.name] = table
    return table


def get_cost_table(spec: str | CostTable | Mapping[str, Any]) -> CostTable:
    """A cost table from a registry name, a ``CostTable``, a dict, or a JSON file path.

    A dict or JSON file holds ``flop_pj``, ``mac_pj``, ``sop_pj``, ``spike_pj`` (``flop_pj``
    defaults to ``mac_pj / 2``, ``spike_pj`` to 0) and optionally ``name`` and ``source``.
    """
    if isinstance(spec, CostTable):
        return spec
    if isinstance(spec, Mapping):
        return _table_from_dict(dict(spec), "custom")
    key = str(spec)
    if key.lower() in COST_TABLES:
        return COST_TABLES[key.lower()]
    path = Path(key).expanduser()
    if key.endswith(".json") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"cost table file {key!r} does not exist")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"cost table file {key!r} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"cost table file {key!r} must hold a JSON object")
        return _table_from_dict(data, path.stem)
    raise ConfigError(
        f"unknown cost table {key!r}; choose one of {', '.join(COST_TABLES)} or give a JSON file"
    )


def _table_from_dict(data: dict[str, Any], default_name: str) -> CostTable:
    allowed = {"name", "flop_pj", "mac_pj", "sop_pj", "spike_pj", "source"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"cost table: unknown key(s) {', '.join(unknown)}; use {sorted(allowed)}")
    missing = [k for k in ("mac_pj", "sop_pj") if k not in data]
    if missing:
        raise ConfigError(f"cost table: missing {', '.join(missing)} (picojoules per operation)")
    mac = data["mac_pj"]
    return CostTable(
        name=str(data.get("name", default_name)),
        flop_pj=data.get("flop_pj", mac / 2 if isinstance(mac, (int, float)) else mac),
        mac_pj=mac,
        sop_pj=data["sop_pj"],
        spike_pj=data.get("spike_pj", 0.0),
        source=str(data.get("source", "user supplied")),
    )


# -- the estimate ------------------------------------------------------------------------------
@dataclass
class EnergyReport:
    """The energy of one inference of one sample, with the counts behind it.

    Counts are per sample for the whole inference (all T steps) unless named ``*_per_step``.
    Energies are in microjoules. ``convention`` says how the SOPs were billed (``events`` or
    ``paper``, see the module docstring).
    """

    cost_table: str
    timesteps: int
    firing: str
    rate_source: str
    mean_rate: float
    first_layer_macs: int
    first_layer_flops: int
    analog_macs: int
    spiking_macs_per_step: int
    sops: float
    neurons: int
    spikes: float
    signs: float
    energy_uj: float
    flops_uj: float
    macs_uj: float
    sops_uj: float
    signs_uj: float
    ann_macs: int
    ann_energy_uj: float
    convention: str = "paper"
    layers: list[dict[str, Any]] = field(default_factory=list)
    neuron_layers: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ann_ratio(self) -> float:
        """ANN-twin energy over SNN energy (how many times cheaper the SNN is)."""
        return self.ann_energy_uj / self.energy_uj if self.energy_uj > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ann_ratio"] = self.ann_ratio
        meta = d.pop("meta")
        table = meta.pop("cost_table_pj", None)
        layers, neurons = d.pop("layers"), d.pop("neuron_layers")
        return {**meta, **d, "cost_table_pj": table, "layers": layers, "neuron_layers": neurons}


def _runs(layer_runs: int, traced_t: int, timesteps: int) -> int:
    return timesteps if layer_runs == traced_t else layer_runs


def _check_rate(rate: Any, where: str, limit: int) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise ConfigError(f"{where}: firing rate must be a number, got {rate!r}")
    r = float(rate)
    if not 0.0 <= r <= limit:
        raise ConfigError(
            f"{where}: firing rate {r:g} is outside [0, {limit}] (spikes per neuron per step; "
            f"a rate of 16.42% is 0.1642)"
        )
    return r


def estimate_energy(
    ops: ModelOps | Sequence[LayerOps],
    rates: float | Mapping[str, float],
    timesteps: int | None = None,
    cost_table: str | CostTable | Mapping[str, Any] = "hu2021",
    firing: str | None = None,
    *,
    neurons: Sequence[NeuronLayerOps] | None = None,
    static_input: bool | None = None,
    rate_source: str | None = None,
    convention: str | None = None,
    events: EventCounts | Mapping[str, float] | None = None,
) -> EnergyReport:
    """Energy of one inference from operation counts and firing rates.

    Args:
        ops: :func:`~multispike.analysis.ops.trace_ops` output (or its ``layers``, then pass
            ``neurons`` for the spike counts).
        rates: one mean rate ``s`` for every neuron layer (assumed, e.g. Table 5's 0.1642), a
            mapping neuron-layer name → measured rate, or the whole
            :class:`~multispike.analysis.stats.MeasuredRates` of
            :func:`~multispike.analysis.stats.measure_rates` (its rates, and its event counts
            for the ``events`` convention). A layer fed by several neuron layers uses their
            neuron-weighted mean rate (``paper`` convention).
        timesteps: T; default the T the ops were traced with.
        cost_table: a registry name (``hu2021``, ``45nm``), a :class:`CostTable`, a dict or a
            JSON file path.
        firing: label for the report (default: the neuron layers' rules).
        neurons: neuron layers, when ``ops`` is a plain list.
        static_input: the encoder sees a static image (default from ``ops``, else True).
        rate_source: label (``"assumed"`` or ``"measured"``; default from the type of rates).
        convention: ``"events"``: bill each spiking layer from the exact event counts
            (``events``, or those of a ``MeasuredRates``); ``"paper"``: at the rate of the
            neuron feeding it (Ternary Spike Table 5). Default: ``events`` when event counts
            are given, else ``paper`` (an assumed rate has no events to count).
        events: :class:`~multispike.analysis.ops.EventCounts`, or a mapping layer name →
            SOPs of one sample at one time step.

    Raises :class:`~multispike.errors.ConfigError` for ``convention="events"`` without event
    counts, or event counts that miss a spiking layer.
    """
    rates, events, convention = _rates_and_events(rates, events, convention)
    per_step, dense_per_step = _event_sops(events, convention)
    table = get_cost_table(cost_table)
    if isinstance(ops, ModelOps):
        layers = list(ops.layers)
        neuron_layers = list(ops.neurons if neurons is None else neurons)
        traced_t = ops.timesteps
        static = ops.static_input if static_input is None else static_input
    else:
        layers = list(ops)
        neuron_layers = list(neurons or [])
        traced_t = max((layer.runs for layer in layers), default=1)
        static = True if static_input is None else static_input
    t = positive_int("timesteps", traced_t if timesteps is None else timesteps)
    rated = _Rates(rates, neuron_layers, rate_source)
    bill = _Bill(table, traced_t, t)
    for layer in layers:
        bill.layer(layer, static, rated, convention, per_step)
    bill.identities(per_step, dense_per_step, {layer.name for layer in layers})
    for n in neuron_layers:
        bill.neuron(n, rated.per_layer[n.name])
    if firing is None:
        names = sorted({n.firing for n in neuron_layers})
        firing = "+".join(names) if names else "ann"
    return bill.report(firing, rated, neuron_layers, convention, layers)


def _rates_and_events(rates: Any, events: Any, convention: str | None
                      ) -> tuple[float | Mapping[str, float], Any, str]:
    """The edge of :func:`estimate_energy`: a :class:`MeasuredRates` split into its rates and
    its event counts, and the convention resolved (``events`` where counts are given)."""
    if events is None and isinstance(getattr(rates, "events", None), EventCounts):
        events = rates.events
    if not isinstance(rates, (int, float, Mapping)) and isinstance(
        getattr(rates, "rates", None), Mapping
    ):
        rates = rates.rates
    if convention is None:
        convention = "events" if events is not None else "paper"
    if convention not in CONVENTIONS:
        raise ConfigError(
            f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}"
        )
    return rates, events, convention


def _event_sops(events: Any, convention: str) -> tuple[dict[str, float], dict[str, float]]:
    """``(SOPs per step, dense MACs per step)`` per layer from the event counts (empty for
    the paper convention)."""
    if convention != "events":
        return {}, {}
    if events is None:
        raise ConfigError(
            "convention 'events' bills each layer from recorded spikes: measure them "
            "(measure_rates on a zoo model, or --checkpoint with data); an assumed rate "
            "can only be billed with convention 'paper'"
        )
    if not isinstance(events, EventCounts):
        return {str(k): float(v) for k, v in events.items()}, {}
    dense = {k: v / events.rows for k, v in events.dense.items()} if events.rows else {}
    return events.per_step(), dense


class _Rates:
    """The firing rates of the neuron layers: one assumed rate for all (``uniform``), or a
    measured one per layer, each checked against what the layer can emit."""

    def __init__(self, rates: float | Mapping[str, float],
                 neuron_layers: Sequence[NeuronLayerOps], rate_source: str | None) -> None:
        self.by_name = {n.name: n for n in neuron_layers}
        limit = max((n.max_spikes for n in neuron_layers), default=1)
        self.uniform: float | None = None
        if isinstance(rates, Mapping):
            self.per_layer = {}
            for name, r in rates.items():
                lim = self.by_name[name].max_spikes if name in self.by_name else limit
                self.per_layer[str(name)] = _check_rate(r, f"neuron layer {name!r}", lim)
            missing = [n.name for n in neuron_layers if n.name not in self.per_layer]
            if missing:
                raise ConfigError(
                    f"no firing rate for neuron layer(s) {', '.join(missing[:5])}")
            self.source = rate_source or "measured"
        else:
            self.uniform = _check_rate(rates, "energy estimate", limit)
            self.per_layer = {n.name: self.uniform for n in neuron_layers}
            self.source = rate_source or "assumed"

    def of(self, names: Sequence[str]) -> float:
        """The rate feeding a layer: the neuron-weighted mean of its source layers' rates."""
        if self.uniform is not None:
            return self.uniform
        known = [n for n in names if n in self.per_layer]
        if not known:
            raise ConfigError(f"no firing rate for neuron layer(s) {', '.join(names)}")
        weights = [self.by_name[n].neurons if n in self.by_name else 1 for n in known]
        return sum(self.per_layer[n] * w for n, w in zip(known, weights, strict=True)) / sum(
            weights)


class _Bill:
    """The running totals of one estimate: a row per layer and per neuron layer."""

    def __init__(self, table: CostTable, traced_t: int, t: int) -> None:
        self.table, self.traced_t, self.t = table, traced_t, t
        self.rows: list[dict[str, Any]] = []
        self.neuron_rows: list[dict[str, Any]] = []
        self.flops = self.analog_macs = self.first_macs = self.spiking_per_step = 0
        self.sops = self.spikes = self.signs = 0.0

    def _uj(self, count: float, pj: float) -> float:
        return count * pj / PJ_PER_UJ

    def layer(self, layer: LayerOps, static: bool, rated: _Rates, convention: str,
              per_step: Mapping[str, float]) -> None:
        """Bill one conv/linear layer: FLOPs (the encoder), SOPs (spiking) or MACs."""
        runs = _runs(layer.runs, self.traced_t, self.t)
        row: dict[str, Any] = {
            "name": layer.name, "kind": layer.kind, "macs": layer.macs, "role": "",
            "sources": list(layer.sources), "rate": None, "flops": 0, "analog_macs": 0,
            "sops": 0.0, "energy_uj": 0.0,
        }
        if layer.encoder:
            n = 1 if static else runs
            row["role"], row["flops"] = "encoder", 2 * layer.macs * n
            self.first_macs += layer.macs * n
            self.flops += row["flops"]
            row["energy_uj"] = self._uj(row["flops"], self.table.flop_pj)
        elif layer.spiking:
            r = rated.of(layer.sources)
            row["role"], row["source_rate"] = "spiking", r
            if convention == "events":
                if layer.name not in per_step:
                    raise ConfigError(
                        f"no event count for spiking layer {layer.name!r}; count the events "
                        "of the same model (or use convention 'paper')"
                    )
                row["sops"] = per_step[layer.name] * runs
                r = per_step[layer.name] / layer.macs if layer.macs else 0.0
            else:
                row["sops"] = r * runs * layer.macs
            row["rate"] = r
            self.sops += row["sops"]
            self.spiking_per_step += layer.macs
            row["energy_uj"] = self._uj(row["sops"], self.table.sop_pj)
        else:
            row["role"], row["analog_macs"] = "analog", layer.macs * runs
            self.analog_macs += row["analog_macs"]
            row["energy_uj"] = self._uj(row["analog_macs"], self.table.mac_pj)
        self.rows.append(row)

    def identities(self, per_step: Mapping[str, float], dense_per_step: Mapping[str, float],
                   known: set[str]) -> None:
        """Identity shortcuts: one addition per event (and pooled cell) into a receiving
        current."""
        for name, sops_step in per_step.items():
            if name in known or not name.endswith(".identity"):
                continue
            dense = dense_per_step.get(name, 0.0)
            sops = sops_step * self.t
            self.rows.append({
                "name": name, "kind": "identity", "macs": int(round(dense)), "role": "spiking",
                "sources": [], "rate": sops_step / dense if dense else None, "flops": 0,
                "analog_macs": 0, "sops": sops, "energy_uj": self._uj(sops, self.table.sop_pj),
            })
            self.sops += sops

    def neuron(self, n: NeuronLayerOps, r: float) -> None:
        """Bill one neuron layer's spikes (a signed spike carries its sign too)."""
        sp = r * _runs(n.runs, self.traced_t, self.t) * n.neurons
        sg = sp * (2 if n.signed else 1)
        self.spikes += sp
        self.signs += sg
        self.neuron_rows.append({
            "name": n.name, "firing": n.firing, "neurons": n.neurons, "rate": r,
            "spikes": sp, "signs": sg, "energy_uj": self._uj(sg, self.table.spike_pj),
        })

    def report(self, firing: str, rated: _Rates, neuron_layers: Sequence[NeuronLayerOps],
               convention: str, layers: Sequence[LayerOps]) -> EnergyReport:
        table, t = self.table, self.t
        neuron_steps = sum(n.neurons * _runs(n.runs, self.traced_t, t) for n in neuron_layers)
        mean_rate = rated.uniform if rated.uniform is not None else (
            self.spikes / neuron_steps if neuron_steps else 0.0)
        flops_uj = self._uj(self.flops, table.flop_pj)
        macs_uj = self._uj(self.analog_macs, table.mac_pj)
        sops_uj = self._uj(self.sops, table.sop_pj)
        signs_uj = self._uj(self.signs, table.spike_pj)
        ann_macs = sum(layer.macs for layer in layers)
        return EnergyReport(
            cost_table=table.name, timesteps=t, firing=firing, rate_source=rated.source,
            mean_rate=float(mean_rate), first_layer_macs=int(self.first_macs),
            first_layer_flops=int(self.flops), analog_macs=int(self.analog_macs),
            spiking_macs_per_step=int(self.spiking_per_step), sops=float(self.sops),
            neurons=int(sum(n.neurons for n in neuron_layers)), spikes=float(self.spikes),
            signs=float(self.signs), energy_uj=flops_uj + macs_uj + sops_uj + signs_uj,
            flops_uj=flops_uj, macs_uj=macs_uj, sops_uj=sops_uj, signs_uj=signs_uj,
            ann_macs=int(ann_macs), ann_energy_uj=self._uj(ann_macs, table.mac_pj),
            convention=convention, layers=self.rows, neuron_layers=self.neuron_rows,
            meta={"cost_table_pj": table.to_dict()},
        )


def format_report(report: EnergyReport) -> str:
    """A per-layer table and the totals, for the terminal."""
    lines = [
        f"{'layer':<28}{'role':<9}{'MACs/step':>13}{'rate':>8}{'FLOPs':>12}{'SOPs':>13}"
        f"{'µJ':>9}"
    ]
    for r in report.layers:
        rate = "" if r["rate"] is None else f"{r['rate']:.4f}"
        lines.append(
            f"{r['name'][:27]:<28}{r['role']:<9}{r['macs']:>13,}{rate:>8}"
            f"{r['flops']:>12,}{r['sops']:>13,.0f}{r['energy_uj']:>9.3f}"
        )
    m = 1e6
    lines += [
        "",
        f"cost table {report.cost_table}, T = {report.timesteps}, firing {report.firing}, "
        f"rate {report.mean_rate:.4f} ({report.rate_source}), SOPs billed by the "
        f"{report.convention} convention",
        f"#FLOPs {report.first_layer_flops / m:.2f}M   #SOPs {report.sops / m:.2f}M   "
        f"#Sign {report.signs / m:.3f}M   (spikes {report.spikes / m:.3f}M, "
        f"neurons {report.neurons:,})",
        f"energy {report.energy_uj:.2f} µJ = FLOPs {report.flops_uj:.2f} + MACs "
        f"{report.macs_uj:.2f} + SOPs {report.sops_uj:.2f} + signs {report.signs_uj:.2f}",
        f"ANN twin: {report.ann_macs / m:.2f}M MACs, {report.ann_energy_uj:.2f} µJ "
        f"({report.ann_ratio:.1f}x the SNN)",
    ]
    return "\n".join(lines)
