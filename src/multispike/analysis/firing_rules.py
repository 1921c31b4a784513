"""The firing rules at work on a fixed input: how many inputs each rule tells apart.

:func:`neuron_table` drives one neuron per constant input current through PLIF (MT-SNN
defaults) and LIF (Ternary Spike defaults) neurons with each firing rule, and summarises what
each emits (``multispike neurons`` prints it).

    >>> rows = neuron_table(timesteps=4)
    >>> [(r["neuron"], r["firing"]) for r in rows[:4]]
    [('plif', 'binary'), ('plif', 'mt'), ('plif', 'ternary'), ('plif', 'ternary-mt')]
    >>> by = {(r["neuron"], r["firing"]): r for r in rows}
    >>> by["lif", "ternary-mt"]["distinct_codes"] >= by["lif", "binary"]["distinct_codes"]
    True
"""

from __future__ import annotations

from typing import Any


def neuron_table(timesteps: int = 8) -> list[dict[str, Any]]:
    """Drive one neuron per constant input current and summarise what each rule emits.

    Input: ``x[t] = c`` for 41 currents c from −2 to 2, for ``timesteps`` steps, through PLIF
    (MT-SNN defaults) and LIF (Ternary Spike defaults) neurons with each firing rule.
    Returns one row per (neuron, rule): the spike-value histogram, spikes per neuron-step,
    and the entropy of the per-neuron output codes (how many distinct inputs it can tell apart).
    """
    import torch

    from multispike.functional import FIRING_RULES  # every rule (integer ones at D = 4)
    from multispike.monitor import record_activity
    from multispike.neurons import LIFNode, PLIFNode

    currents = torch.linspace(-2.0, 2.0, 41)
    x = currents.expand(timesteps, -1).contiguous()  # [T, B=41]
    rows = []
    for node_cls in (PLIFNode, LIFNode):
        for firing in FIRING_RULES:
            node = node_cls(firing=firing)
            with record_activity(node) as mon, torch.no_grad():
                out = node(x)  # [T, 41]
            (stats,) = mon.summary()
            codes = {tuple(col.tolist()) for col in out.T}  # distinct output trains
            rows.append(
                {
                    "neuron": node.dynamics,
                    "firing": firing,
                    "values": {str(k): round(v, 4) for k, v in stats["value_fractions"].items()},
                    "spikes_per_step": round(stats["rate"], 4),
                    "distinct_codes": len(codes),
                    "code_bits": round(float(torch.log2(torch.tensor(float(len(codes))))), 3),
                }
            )
    return rows
