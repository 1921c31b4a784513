"""Information capacity of spike activations (Ternary Spike Eq 6).

Ternary Spike Eq 6 measures the representation capability of a set ``S`` by its largest
entropy, ``R(S) = max H(S) = log N`` for ``N`` equally likely values (Proposition 1). Per neuron
and time step that bound is

==============================  ====================  ===============
spike                           values ``N``          bound (bits)
==============================  ====================  ===============
binary                          {0, 1}                1
ternary                         {−1, 0, 1}            log2 3 ≈ 1.585
MT with n deltas                {0, …, n+1}           log2 (n + 2)
ternary-MT with n deltas        {−(n+1), …, n+1}      log2 (2n + 3)
integer, levels D               {0, …, D}             log2 (D + 1)
signed integer, levels D        {−D, …, D}            log2 (2D + 1)
==============================  ====================  ===============

:func:`spike_values` gives ``N`` for any rule (its binary planes plus the silent value) and
:func:`spike_bits` the bound.

A trained layer reaches less: its **empirical entropy** ``H = −Σ p(v) log2 p(v)`` over the
fractions ``p(v)`` of neuron-steps emitting each value ``v`` (from
:func:`multispike.monitor.record_activity`). A binary layer firing 16% of the time carries
``H(0.16) ≈ 0.63`` bits per neuron per step, whatever its bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from multispike.analysis._io import new_figure, save_figure, write_csv
from multispike.errors import ConfigError

BINARY_BOUND = 1.0
TERNARY_BOUND = math.log2(3)


def entropy_bits(fractions: Mapping[Any, float] | Iterable[float]) -> float:
    """``H = −Σ p log2 p`` in bits (Ternary Spike Eq 6); zero fractions contribute nothing.

    The fractions are normalised to sum to 1 (so raw counts work too).
    """
    ps = list(fractions.values()) if isinstance(fractions, Mapping) else list(fractions)
    if any((not isinstance(p, (int, float))) or p < 0 or not math.isfinite(p) for p in ps):
        raise ConfigError(f"fractions must be finite numbers >= 0, got {ps}")
    total = float(sum(ps))
    if total <= 0:
        raise ConfigError("fractions sum to 0: no activity recorded")
    h = -sum((p / total) * math.log2(p / total) for p in ps if p > 0)
    return h if h > 0 else 0.0


def capacity_bits(n_values: int) -> float:
    """Ternary Spike Eq 6 / Proposition 1: ``log2 N``, the most bits ``N`` values can carry."""
    if n_values < 1:
        raise ConfigError(f"a spike takes at least one value, got {n_values}")
    return math.log2(n_values)


def spike_values(firing: str, deltas: Sequence[float] | None = None,
                 levels: int | None = None) -> int:
    """How many values a spike of this rule takes (before any amplitude): its binary planes
    plus one (the silent value). Binary 2, MT with n deltas n + 2 (default deltas: 4),
    ternary 3, ternary-MT 2n + 3, integer ``D + 1``, signed integer ``2D + 1``.

    >>> [spike_values(f) for f in ("binary", "mt", "ternary", "ternary-mt")]
    [2, 4, 3, 7]
    >>> spike_values("integer", levels=3), spike_values("signed-integer", levels=2)
    (4, 5)
    """
    from multispike.functional import get_firing

    return len(get_firing(firing, deltas, levels).plane_signs) + 1


def spike_bits(firing: str, deltas: Sequence[float] | None = None,
               levels: int | None = None) -> float | None:
    """``log2`` of :func:`spike_values`: the bits one spike can carry (Ternary Spike Eq 6's
    bound ``log N``): binary 1, ternary ≈ 1.58, MT with 2 deltas and integer with ``D = 3``
    2, integer ``D`` ``log2(D + 1)``. ``None`` for ``"ann"`` (analog activations).

    >>> spike_bits("integer", levels=3), spike_bits("mt"), spike_bits("ann")
    (2.0, 2.0, None)
    """
    if str(firing).lower() == "ann":
        return None
    return math.log2(spike_values(firing, deltas, levels))


def entropy_rows(summary: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per layer: empirical entropy, its bound, their ratio, and the binary/ternary bounds.

    ``summary`` is :meth:`multispike.monitor.ActivityMonitor.summary`; a layer with P binary
    planes emits ``P + 1`` values (binary 1 plane, ternary 2, MT n + 1, ternary-MT 2(n + 1)).
    """
    rows = []
    for r in summary:
        h = entropy_bits(r["value_fractions"])
        planes = len(r.get("plane_rates", [])) or 1
        bound = capacity_bits(planes + 1)
        rows.append(
            {
                "layer": r["layer"],
                "firing": r["firing"],
                "entropy_bits": h,
                "bound_bits": bound,
                "efficiency": h / bound if bound > 0 else 0.0,
                "binary_bound": BINARY_BOUND,
                "ternary_bound": TERNARY_BOUND,
                "rate": float(r["rate"]),
            }
        )
    return rows


def plot_entropy(
    summary: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    title: str = "Information per neuron and time step (Ternary Spike Eq 6)",
) -> dict[str, Path]:
    """Bar chart of each layer's entropy against the binary and ternary bounds; PNG + CSV."""
    if not summary:
        raise ConfigError("no firing statistics to plot (no neuron layer recorded)")
    rows = entropy_rows(summary)
    png = Path(path)
    csv_path = write_csv(rows, png.with_suffix(".csv"))
    x = list(range(len(rows)))
    fig = new_figure(max(6.0, 0.35 * len(rows) + 2), 4.5)
    ax = fig.subplots()
    ax.bar(x, [r["entropy_bits"] for r in rows], color="tab:green", label="empirical H")
    ax.axhline(BINARY_BOUND, color="tab:red", ls="--", lw=1, label="binary bound 1 bit")
    ax.axhline(TERNARY_BOUND, color="tab:purple", ls="--", lw=1,
               label=f"ternary bound {TERNARY_BOUND:.3f} bits")
    others = sorted({round(r["bound_bits"], 6) for r in rows} - {1.0, round(TERNARY_BOUND, 6)})
    for b in others:
        ax.axhline(b, color="tab:orange", ls=":", lw=1, label=f"bound log2 N = {b:.3f} bits")
    ax.set_xticks(x)
    ax.set_xticklabels([r["layer"] or "<neuron>" for r in rows], rotation=70, ha="right",
                       fontsize=7)
    top = max([TERNARY_BOUND] + [r["bound_bits"] for r in rows] + [r["entropy_bits"] for r in rows])
    ax.set_ylim(0, top * 1.3)
    ax.set_ylabel("bits / neuron / step")
    ax.set_title(title)
    ax.legend(loc="upper center", fontsize=7, ncol=2)
    png = save_figure(fig, png)
    return {"png": png, "csv": csv_path}
