"""Firing rules: from membrane potential ``H`` to spikes.

A rule is a small frozen record. ``rule.fire(h, v_th, surrogate)`` returns ``(b, s)``:

- ``b``: the spike value the neuron emits before any amplitude, e.g. {0, 1} (binary),
  {0, …, n+1} (multi-threshold), {−1, 0, +1} (ternary);
- ``s``: the *main* spike, in {0, 1}: ``Θ(H − V_th)`` (``+ Θ(−H − V_th)`` for signed rules),
  which resets the membrane under the hard reset ``reset="main"`` (MT-SNN Eq 3).

Which spike resets is the neuron's ``reset`` choice (see
:func:`multispike.functional.dynamics.reset`); each rule names its default,
:attr:`FiringRule.default_reset`, today's behaviour of that rule, and
:meth:`FiringRule.reset_threshold` says where a hard reset fires.

Every Heaviside is taken through ``surrogate(H − θ)``, so the backward sums the surrogate over
every threshold θ the rule has. ``rule.planes(h, v_th)`` returns the binary spike planes
whose signed sum is ``b``: MT-SNN Eq 12 computes one convolution per plane, and the firing
statistics count every plane that fires.

Shapes: ``h`` is any shape; ``b`` and ``s`` have its shape; ``planes`` returns
``[n_planes, *h.shape]``.

Example::

    >>> import torch
    >>> from multispike.functional import MultiThreshold, Rectangular
    >>> rule = MultiThreshold(deltas=(-0.5, 0.5))
    >>> h = torch.tensor([0.4, 0.6, 1.2, 1.7])
    >>> b, s = rule.fire(h, 1.0, Rectangular())
    >>> b, s
    (tensor([0., 1., 2., 3.]), tensor([0., 0., 1., 1.]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from multispike.errors import ConfigError
from multispike.functional.surrogate import Surrogate, heaviside

#: MT-SNN Fig 5c: both signs of delta work best and accuracy levels off once |Δ| >= 0.3 at
#: V_th = 1. The default deltas are these fractions of the threshold: (−0.5, +0.5) at V_th = 1.
DEFAULT_DELTA_FRACTIONS: tuple[float, ...] = (-0.5, 0.5)


class FiringRule:
    """Base of the firing rules. Subclasses are frozen dataclasses."""

    name: str = ""
    #: True where the rule emits negative spikes
    signed: bool = False
    #: the reset a neuron with this rule takes when given ``reset=None``: ``"main"`` (hard
    #: reset by the main spike), ``"any"`` (hard reset by any spike) or ``"soft"``
    default_reset: str = "main"

    def thresholds(self, v_threshold: float) -> tuple[float, ...]:
        """The positive thresholds, main threshold first (ternary rules mirror them at −θ)."""
        return (v_threshold,)

    def reset_threshold(self, v_threshold: float, reset: str) -> float:
        """The threshold ``θ_r`` whose crossing resets the membrane under a hard reset.

        ``"main"``: the main threshold ``V_th`` (MT-SNN Eq 3); ``"any"``: the lowest threshold,
        where the first plane fires (``|b| ≥ 1``; Ternary Spike Eq 7), so that any spike
        resets. Signed rules reset at ``±θ_r``. The two coincide for rules whose lowest
        threshold is the main one (binary, ternary, MT with positive deltas).
        """
        th = self.thresholds(v_threshold)
        return th[0] if reset == "main" else min(th)

    def spike_at(self, h: Tensor, theta: float, surrogate: Surrogate) -> Tensor:
        """The signed spike of one threshold: ``Θ(H − θ)`` (``− Θ(−H − θ)`` for signed rules),
        each Heaviside through ``surrogate``."""
        pos = surrogate(h - theta)
        if not self.signed:
            return pos
        return pos - surrogate(-h - theta)

    def reset_spikes(self, h: Tensor, theta: float, surrogate: Surrogate) -> Tensor:
        """The hard reset's multiplier ``S`` in {0, 1} for the threshold ``θ``:
        ``Θ(H − θ)`` (``+ Θ(−H − θ)`` for signed rules), through ``surrogate``."""
        pos = surrogate(h - theta)
        if not self.signed:
            return pos
        return pos + surrogate(-h - theta)

    def fire(self, h: Tensor, v_threshold: float, surrogate: Surrogate) -> tuple[Tensor, Tensor]:
        raise NotImplementedError  # pragma: no cover - abstract

    @property
    def plane_signs(self) -> tuple[int, ...]:
        """Sign of each plane in :meth:`planes`; ``b = Σ sign_k · plane_k``."""
        return (1,)

    def main_spike(self, h: Tensor, v_threshold: float, surrogate: Surrogate) -> Tensor:
        """The signed main spike ``b_main``: ``Θ(H − V_th)`` (``− Θ(−H − V_th)`` for signed
        rules), each Heaviside through ``surrogate``. Its values satisfy ``|b_main| = s``; the
        reset of ``reset_grad="spike"`` differentiates ``|b_main|`` (zero where none fired).
        """
        return self.spike_at(h, self.thresholds(v_threshold)[0], surrogate)

    def planes(self, h: Tensor, v_threshold: float) -> Tensor:
        """Binary planes ``[P, *h.shape]`` (no gradient): one per threshold, and per sign."""
        with torch.no_grad():
            pos = [heaviside(h - th) for th in self.thresholds(v_threshold)]
            if not self.signed:
                return torch.stack(pos)
            neg = [heaviside(-h - th) for th in self.thresholds(v_threshold)]
            return torch.stack(pos + neg)

    def n_planes(self, v_threshold: float) -> int:
        return len(self.thresholds(v_threshold)) * (2 if self.signed else 1)

    def validate(self, v_threshold: float) -> None:
        """Raise :class:`ConfigError` if the rule cannot fire with this threshold."""


@dataclass(frozen=True)
class Binary(FiringRule):
    """MT-SNN Eq 2/4: ``S = Θ(H − V_th)``, ``b = s = S``."""

    name = "binary"

    def fire(self, h: Tensor, v_threshold: float, surrogate: Surrogate) -> tuple[Tensor, Tensor]:
        s = surrogate(h - v_threshold)
        return s, s


def _resolve_deltas(deltas: Sequence[float] | None, v_threshold: float) -> tuple[float, ...]:
    if deltas is None:
        return tuple(f * v_threshold for f in DEFAULT_DELTA_FRACTIONS)
    return tuple(deltas)


def _check_deltas(deltas: Sequence[float] | None) -> tuple[float, ...] | None:
    if deltas is None:
        return None
    if isinstance(deltas, (int, float)):
        deltas = (deltas,)
    try:
        out = tuple(float(d) for d in deltas)
    except (TypeError, ValueError):
        raise ConfigError(f"deltas must be a sequence of numbers, got {deltas!r}") from None
    if not out:
        raise ConfigError("deltas is empty; give at least one delta, e.g. deltas=(-0.5, 0.5)")
    if any(not math.isfinite(d) for d in out):
        raise ConfigError(f"deltas must be finite numbers, got {out}")
    if any(d == 0 for d in out):
        raise ConfigError(f"deltas {out} contain 0, which repeats the main threshold; drop it")
    if len(set(out)) != len(out):
        raise ConfigError(f"deltas {out} contain duplicates; give each auxiliary threshold once")
    if list(out) != sorted(out):
        raise ConfigError(f"deltas {out} are not sorted; give them ascending: {tuple(sorted(out))}")
    return out


def _check_positive_thresholds(rule: FiringRule, v_threshold: float) -> None:
    low = min(rule.thresholds(v_threshold))
    if low <= 0:
        raise ConfigError(
            f"{rule.name} threshold V_th + delta = {low:g} <= 0 would fire at rest; "
            f"keep every delta above -v_threshold ({-v_threshold:g})"
        )


@dataclass(frozen=True)
class MultiThreshold(FiringRule):
    """MT-SNN Eq 10-11: ``S_Δi = Θ(H − V_th − Δi)``, ``b = S + Σ S_Δi``; by default reset by
    ``S`` only (MT-SNN Eq 3: ``reset="main"``).

    ``deltas=None`` means :data:`DEFAULT_DELTA_FRACTIONS` times ``V_th``.
    """

    deltas: tuple[float, ...] | None = None
    name = "mt"

    def __post_init__(self) -> None:
        object.__setattr__(self, "deltas", _check_deltas(self.deltas))

    def thresholds(self, v_threshold: float) -> tuple[float, ...]:
        deltas = _resolve_deltas(self.deltas, v_threshold)
        return (v_threshold,) + tuple(v_threshold + d for d in deltas)

    @property
    def plane_signs(self) -> tuple[int, ...]:
        n = len(DEFAULT_DELTA_FRACTIONS if self.deltas is None else self.deltas)
        return (1,) * (n + 1)

    def validate(self, v_threshold: float) -> None:
        _check_positive_thresholds(self, v_threshold)

    def fire(self, h: Tensor, v_threshold: float, surrogate: Surrogate) -> tuple[Tensor, Tensor]:
        main, *aux = self.thresholds(v_threshold)
        s = surrogate(h - main)
        b = s
        for th in aux:
            b = b + surrogate(h - th)
        return b, s


@dataclass(frozen=True)
class Ternary(FiringRule):
    """Ternary Spike Eq 8: ``b = +1 if H >= V_th, −1 if H <= −V_th, else 0``; reset ``|b|``
    (Eq 7: ``reset="any"``, the default, which equals ``"main"`` for this rule)."""

    name = "ternary"
    signed = True
    default_reset = "any"  # Ternary Eq 7, u·(1 − |b|); the same as "main" (one threshold pair)

    @property
    def plane_signs(self) -> tuple[int, ...]:
        return (1, -1)

    def fire(self, h: Tensor, v_threshold: float, surrogate: Surrogate) -> tuple[Tensor, Tensor]:
        pos = surrogate(h - v_threshold)
        neg = surrogate(-h - v_threshold)
        return pos - neg, pos + neg


@dataclass(frozen=True)
class TernaryMultiThreshold(FiringRule):
    """Ternary and multi-threshold combined (beyond both papers).

    Symmetric thresholds ``±θ_k`` with ``θ_0 = V_th`` and ``θ_i = V_th + Δi``:
    ``b = Σ_k [Θ(H − θ_k) − Θ(−H − θ_k)]`` takes values in {−(n+1), …, n+1}; by default the
    main pair ``±V_th`` resets the membrane (``reset="main"``, as MT-SNN Eq 3 for MT;
    ``reset="any"`` resets at the lowest pair instead). Every ``θ_k`` must stay positive.
    """

    deltas: tuple[float, ...] | None = None
    name = "ternary-mt"
    signed = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "deltas", _check_deltas(self.deltas))

    thresholds = MultiThreshold.thresholds

    @property
    def plane_signs(self) -> tuple[int, ...]:
        n = len(DEFAULT_DELTA_FRACTIONS if self.deltas is None else self.deltas) + 1
        return (1,) * n + (-1,) * n

    def validate(self, v_threshold: float) -> None:
        _check_positive_thresholds(self, v_threshold)

    def fire(self, h: Tensor, v_threshold: float, surrogate: Surrogate) -> tuple[Tensor, Tensor]:
        main, *aux = self.thresholds(v_threshold)
        pos = surrogate(h - main)
        neg = surrogate(-h - main)
        b = pos - neg
        for th in aux:
            b = b + surrogate(h - th) - surrogate(-h - th)
        return b, pos + neg


FIRING_RULES: dict[str, type[FiringRule]] = {
    "binary": Binary,
    "mt": MultiThreshold,
    "ternary": Ternary,
    "ternary-mt": TernaryMultiThreshold,
}


def get_firing(firing: str | FiringRule, deltas: Sequence[float] | None = None) -> FiringRule:
    """Turn a name (``binary``, ``mt``, ``ternary``, ``ternary-mt``) into a rule record.

    ``deltas`` applies to the multi-threshold rules only. A record passes through unchanged.
    """
    if isinstance(firing, FiringRule):
        if deltas is not None:
            raise ConfigError("deltas given beside a firing-rule object; put them in the object")
        return firing
    key = str(firing).lower().replace("_", "-")
    cls = FIRING_RULES.get(key)
    if cls is None:
        raise ConfigError(
            f"unknown firing rule {firing!r}; choose one of {', '.join(FIRING_RULES)}"
        )
    if cls in (MultiThreshold, TernaryMultiThreshold):
        return cls(deltas=deltas)
    if deltas is not None:
        raise ConfigError(f"deltas apply to the mt and ternary-mt rules, not to {key!r}")
    return cls()
