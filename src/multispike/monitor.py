"""Opt-in firing statistics and membrane samples, per neuron layer and time step.

Statistics cost nothing unless asked for: a neuron checks one attribute per call. Inside
``with record_activity(model) as mon:`` every :class:`~multispike.neurons.Neuron` of the
model reports each step's membrane ``H`` to the monitor, which counts

- spikes: every non-zero spike counts, −1 included, and a multi-threshold output counts each
  plane that fired (an MT neuron whose three thresholds are crossed fires 3 spikes);
- the rate ``spikes / (neurons × T)`` per layer (it can exceed 1 for MT neurons);
- how often each spike value occurs (−1/0/+1 for ternary, 0…n+1 for MT) and how often each
  plane fires;
- optionally ``membrane_samples`` random samples of ``H`` per layer and time step.

Example::

    >>> with record_activity(model, membrane_samples=1000) as mon:
    ...     model(x)
    >>> for row in mon.summary():
    ...     print(row["layer"], row["rate"])
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from multispike.neurons import Neuron


@dataclass
class LayerActivity:
    """Running counts of one neuron layer."""

    name: str
    firing: str
    plane_signs: tuple[int, ...]
    spikes: float = 0.0
    neuron_steps: int = 0
    spikes_per_t: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    steps_per_t: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    plane_counts: list[float] = field(default_factory=list)
    value_counts: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    membrane: dict[int, list[Tensor]] = field(default_factory=lambda: defaultdict(list))

    @property
    def rate(self) -> float:
        """Spikes per neuron per time step (every plane and every −1 counts)."""
        return self.spikes / max(self.neuron_steps, 1)

    def membrane_samples(self, t: int) -> Tensor:
        """All recorded samples of ``H`` at time step ``t`` (1-D, float32)."""
        parts = self.membrane.get(t, [])
        return torch.cat(parts) if parts else torch.empty(0)


class ActivityMonitor:
    """Collects :class:`LayerActivity` for the neurons of one model (see module docs)."""

    def __init__(self, names: dict[Neuron, str], membrane_samples: int = 0, seed: int = 0) -> None:
        self.names = names
        self.membrane_samples = int(membrane_samples)
        self.layers: dict[str, LayerActivity] = {}
        self._gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def observe(self, neuron: Neuron, t: int, h: Tensor, out: Tensor) -> None:
        """Called by a neuron after step ``t`` with its membrane ``h`` (before firing)."""
        name = self.names.get(neuron, type(neuron).__name__)
        rule = neuron.rule
        layer = self.layers.get(name)
        if layer is None:
            layer = LayerActivity(name, rule.name, tuple(rule.plane_signs))
            layer.plane_counts = [0.0] * len(layer.plane_signs)
            self.layers[name] = layer
        planes = rule.planes(h.float(), neuron.v_threshold)  # [P, B, ...]
        per_plane = planes.flatten(1).sum(1).tolist()
        fired = float(sum(per_plane))
        n = h.numel()
        layer.spikes += fired
        layer.neuron_steps += n
        layer.spikes_per_t[t] += fired
        layer.steps_per_t[t] += n
        for k, c in enumerate(per_plane):
            layer.plane_counts[k] += c
        signs = torch.tensor(layer.plane_signs, dtype=planes.dtype)
        b = torch.tensordot(signs, planes, dims=1)  # [B, ...]: the spike value before amplitude
        values, counts = torch.unique(b, return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist(), strict=True):
            layer.value_counts[int(v)] += c
        if self.membrane_samples > 0:
            flat = h.detach().reshape(-1).float().cpu()
            if flat.numel() > self.membrane_samples:
                idx = torch.randint(flat.numel(), (self.membrane_samples,), generator=self._gen)
                flat = flat[idx]
            layer.membrane[t].append(flat)

    def summary(self) -> list[dict[str, Any]]:
        """One plain dict per layer: name, firing, rate, spikes, neuron_steps, fractions."""
        rows = []
        for layer in self.layers.values():
            total = max(layer.neuron_steps, 1)
            rows.append(
                {
                    "layer": layer.name,
                    "firing": layer.firing,
                    "rate": layer.rate,
                    "spikes": layer.spikes,
                    "neuron_steps": layer.neuron_steps,
                    "rate_per_t": {
                        t: layer.spikes_per_t[t] / max(layer.steps_per_t[t], 1)
                        for t in sorted(layer.spikes_per_t)
                    },
                    "value_fractions": {
                        v: c / total for v, c in sorted(layer.value_counts.items())
                    },
                    "plane_rates": [c / total for c in layer.plane_counts],
                }
            )
        return rows


@contextmanager
def record_activity(
    model: nn.Module, membrane_samples: int = 0, seed: int = 0
) -> Iterator[ActivityMonitor]:
    """Record firing statistics of every neuron layer of ``model`` inside the ``with`` block.

    Layers are named by their path in ``model.named_modules()``; a bare neuron is ``""``.
    The hooks are removed on leaving the block, whatever happens inside it.
    """
    names = {m: name for name, m in model.named_modules() if isinstance(m, Neuron)}
    mon = ActivityMonitor(names, membrane_samples=membrane_samples, seed=seed)
    for m in names:
        m.monitor = mon
    try:
        yield mon
    finally:
        for m in names:
            m.monitor = None
