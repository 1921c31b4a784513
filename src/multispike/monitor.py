"""Opt-in firing statistics and membrane samples, per neuron layer and time step.

Inside ``with record_activity(model) as mon:`` every :class:`~multispike.neurons.Neuron` of the
model reports each step's membrane ``H`` to an :class:`ActivityMonitor` (and so runs the
reference loop meanwhile: the fused kernels keep ``H`` to themselves). Per layer it counts
spikes (every non-zero spike, −1 included, each fired plane of a multi-level spike), the rate
``spikes / (neurons × T)``, the frequency of each spike value and plane, and optionally random
samples of ``H``; outside the block a neuron checks one attribute per call. It runs on any
device. What is counted, and how: ``docs/analysis.md`` § Firing statistics ("What the monitor
counts", "On a GPU").

Example::

    >>> import torch
    >>> from multispike.models import create
    >>> from multispike.monitor import record_activity
    >>> model = create("digits_net", firing="ternary")
    >>> x = torch.rand(4, 1, 8, 8)
    >>> with record_activity(model, membrane_samples=1000) as mon:
    ...     out = model(x)
    >>> for row in mon.summary():        # also "spikes", "rate_per_t", "value_fractions", ...
    ...     print(row["layer"], row["firing"], row["neuron_steps"], 0 <= row["rate"] <= 1)
    stem_act ternary 8192 True
    features.0.act ternary 16384 True
    fc1_act ternary 512 True
    >>> mon.layers["stem_act"].membrane_samples(0).shape     # H samples of step t = 0
    torch.Size([1000])
    >>> with record_activity(model):
    ...     model.stem_act.path.reason
    "a recording monitor (record_activity) needs every step's membrane: the reference loop runs"
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
    #: the rule's positive thresholds, main first (plane k fires at the k-th; signed rules
    #: mirror them at −θ; integer rules: ``(k − ½)·V_th``); learned ones as first observed
    thresholds: tuple[float, ...] = ()
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
        return torch.cat(parts) if parts else torch.empty(0, device="cpu")


class ActivityMonitor:
    """Collects :class:`LayerActivity` for the neurons of one model (see module docs)."""

    def __init__(self, names: dict[Neuron, str], membrane_samples: int = 0, seed: int = 0) -> None:
        self.names = names
        self.membrane_samples = int(membrane_samples)
        self.layers: dict[str, LayerActivity] = {}
        # on the CPU whatever the model's device: the same samples everywhere
        self._gen = torch.Generator(device="cpu").manual_seed(seed)
        self._signs: dict[tuple[tuple[int, ...], torch.device, torch.dtype], Tensor] = {}

    def _signs_like(self, signs: tuple[int, ...], like: Tensor) -> Tensor:
        """The plane signs as a tensor on ``like``'s device and dtype (made once, cached)."""
        key = (signs, like.device, like.dtype)
        t = self._signs.get(key)
        if t is None:
            t = torch.tensor(signs, dtype=like.dtype, device=like.device)
            self._signs[key] = t
        return t

    @torch.no_grad()
    def observe(self, neuron: Neuron, t: int, h: Tensor, out: Tensor) -> None:
        """Called by a neuron after step ``t`` with its membrane ``h`` (before firing)."""
        name = self.names.get(neuron, type(neuron).__name__)
        rule = neuron.rule
        layer = self.layers.get(name)
        learns = getattr(neuron, "learn_thresholds", False)
        if layer is None:
            # learned thresholds: their values when the layer is first observed (a host read)
            v_now, rule_now = neuron.fixed_firing() if learns else (neuron.v_threshold, rule)
            layer = LayerActivity(name, rule.name, tuple(rule.plane_signs),
                                  tuple(float(t) for t in rule_now.thresholds(v_now)))
            layer.plane_counts = [0.0] * len(layer.plane_signs)
            self.layers[name] = layer
        v_th, learned = neuron.threshold_tensors() if learns else (neuron.v_threshold, None)
        planes = rule.planes(h.float(), v_th, learned)  # [P, B, ...] on h's device
        signs = self._signs_like(layer.plane_signs, planes)
        b = torch.tensordot(signs, planes, dims=1)  # [B, ...]: the spike value before amplitude
        # every count on the device (exact integers), then one transfer to the host
        low = -sum(1 for s in layer.plane_signs if s < 0)
        high = sum(1 for s in layer.plane_signs if s > 0)
        per_plane = torch.count_nonzero(planes.flatten(1), dim=1)  # [P]
        per_value = torch.stack([torch.count_nonzero(b == v) for v in range(low, high + 1)])
        counts = torch.cat([per_plane, per_value]).tolist()
        n_planes = len(layer.plane_signs)
        fired = float(sum(counts[:n_planes]))
        n = h.numel()
        layer.spikes += fired
        layer.neuron_steps += n
        layer.spikes_per_t[t] += fired
        layer.steps_per_t[t] += n
        for k, c in enumerate(counts[:n_planes]):
            layer.plane_counts[k] += c
        for v, c in zip(range(low, high + 1), counts[n_planes:], strict=True):
            if c:
                layer.value_counts[v] += c
        if self.membrane_samples > 0:
            flat = h.detach().reshape(-1)
            if flat.numel() > self.membrane_samples:
                idx = torch.randint(flat.numel(), (self.membrane_samples,), generator=self._gen,
                                    device="cpu")
                flat = flat[idx.to(flat.device)]  # gather where H lives, move the samples only
            layer.membrane[t].append(flat.float().cpu())

    def summary(self) -> list[dict[str, Any]]:
        """One plain dict per layer: name, firing, rate, spikes, neuron_steps, fractions,
        thresholds."""
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
                    "thresholds": list(layer.thresholds),
                }
            )
        return rows


@contextmanager
def record_activity(
    model: nn.Module, membrane_samples: int = 0, seed: int = 0
) -> Iterator[ActivityMonitor]:
    """Record firing statistics of every neuron layer of ``model`` inside the ``with`` block.

    Layers are named by their path in ``model.named_modules()``; a bare neuron is ``""``.
    Inside the block the neurons run the reference loop (the monitor needs every step's
    ``H``; see ``Neuron.path``). The hooks are removed on leaving the block, whatever happens
    inside it, and the layers' fused paths come back.
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
