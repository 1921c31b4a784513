"""Firing rules: from membrane potential ``H`` to spikes.

A rule is a small frozen record. ``rule.fire(h, v_th, surrogate)`` returns ``(b, s)``:

- ``b``: the spike value the neuron emits before any amplitude, e.g. {0, 1} (binary),
  {0, …, n+1} (multi-threshold), {−1, 0, +1} (ternary), {0, …, D} (integer, SpikeYOLO's
  I-LIF), {−D, …, D} (signed integer);
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

Learned thresholds (``learn_thresholds=True`` on a neuron) pass ``v_threshold`` as a 0-dim
tensor and, for the MT rules, ``learned=`` (every threshold, in the order of
:meth:`FiringRule.thresholds`: main first) as 0-dim tensors that replace ``V_th + Δ_i``
(:func:`learned_thresholds` builds them, ordered and positive by construction); every method
that takes ``v_threshold`` accepts them.

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

from multispike.checks import positive_int
from multispike.errors import ConfigError
from multispike.functional.surrogate import Surrogate, heaviside, round_ste

#: most levels an integer rule takes (its spikes fit 8 bits: see kernels/compact.py)
MAX_LEVELS = 127

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
    #: the construction options the rule takes beyond its name (``deltas``, ``levels``)
    options: tuple[str, ...] = ()
    #: the rule's single-threshold form (an MT rule without its extra thresholds), or None
    #: where it has none; a model's FC slots fall back to it (MT-SNN Fig 5a/b)
    single_threshold: str | None = None

    @classmethod
    def accepts(cls, option: str) -> bool:
        """True where the rule takes the construction option (``"deltas"``, ``"levels"``).

        >>> MultiThreshold.accepts("deltas"), Integer.accepts("deltas")
        (True, False)
        """
        return option in cls.options

    @property
    def multi_plane(self) -> bool:
        """True where a spike needs more than one binary plane per sign (MT, ternary-MT, the
        integer rules with ``levels > 1``): what deployment splits into planes.

        >>> MultiThreshold().multi_plane, Ternary().multi_plane, Integer(levels=1).multi_plane
        (True, False, False)
        """
        return len(self.plane_signs) > (2 if self.signed else 1)

    def thresholds(self, v_threshold: float, learned: Sequence | None = None) -> tuple:
        """The positive thresholds, main threshold first (ternary rules mirror them at −θ).

        ``learned``: a layer's learned thresholds in this order (0-dim tensors), which replace
        the rule's own; returned as they are."""
        return (v_threshold,) if learned is None else tuple(learned)

    def lowest_index(self) -> int:
        """Index in :meth:`thresholds` of the lowest threshold, known without the values (the
        deltas are sorted and keep their signs, learned or not)."""
        return 0

    def resets_at_main(self, reset: str) -> bool:
        """True when the hard reset ``reset`` fires at the main threshold, so that the main
        spike ``s`` of :meth:`fire` is the reset multiplier as it is."""
        return reset == "main" or self.lowest_index() == 0

    def reset_threshold(self, v_threshold: float, reset: str, learned: Sequence | None = None):
        """The threshold ``θ_r`` whose crossing resets the membrane under a hard reset.

        ``"main"``: the main threshold ``V_th`` (MT-SNN Eq 3); ``"any"``: the lowest threshold,
        where the first plane fires (``|b| ≥ 1``; Ternary Spike Eq 7), so that any spike
        resets. Signed rules reset at ``±θ_r``. The two coincide for rules whose lowest
        threshold is the main one (binary, ternary, MT with positive deltas).
        """
        th = self.thresholds(v_threshold, learned)
        return th[0] if reset == "main" else th[self.lowest_index()]

    def spike_at(self, h: Tensor, theta, surrogate: Surrogate, b: Tensor | None = None) -> Tensor:
        """The signed spike of one threshold: ``Θ(H − θ)`` (``− Θ(−H − θ)`` for signed rules),
        each Heaviside through ``surrogate``. ``b`` (the emitted value) serves rules whose
        planes are not Heavisides of ``H`` (the integer rules); threshold rules ignore it."""
        pos = surrogate(h - theta)
        if not self.signed:
            return pos
        return pos - surrogate(-h - theta)

    def reset_spikes(self, h: Tensor, theta, surrogate: Surrogate,
                     b: Tensor | None = None) -> Tensor:
        """The hard reset's multiplier ``S`` in {0, 1} for the threshold ``θ``:
        ``Θ(H − θ)`` (``+ Θ(−H − θ)`` for signed rules), through ``surrogate``; ``b`` as in
        :meth:`spike_at`."""
        pos = surrogate(h - theta)
        if not self.signed:
            return pos
        return pos + surrogate(-h - theta)

    def fire(self, h: Tensor, v_threshold: float, surrogate: Surrogate,
             learned: Sequence | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError  # pragma: no cover - abstract

    @property
    def plane_signs(self) -> tuple[int, ...]:
        """Sign of each plane in :meth:`planes`; ``b = Σ sign_k · plane_k``."""
        return (1,)

    def main_spike(self, h: Tensor, v_threshold: float, surrogate: Surrogate,
                   learned: Sequence | None = None) -> Tensor:
        """The signed main spike ``b_main``: ``Θ(H − V_th)`` (``− Θ(−H − V_th)`` for signed
        rules), each Heaviside through ``surrogate``. Its values satisfy ``|b_main| = s``; the
        reset of ``reset_grad="spike"`` differentiates ``|b_main|`` (zero where none fired).
        """
        return self.spike_at(h, self.reset_threshold(v_threshold, "main", learned), surrogate)

    def planes(self, h: Tensor, v_threshold: float, learned: Sequence | None = None) -> Tensor:
        """Binary planes ``[P, *h.shape]`` (no gradient): one per threshold, and per sign;
        ``Σ_k plane_signs[k]·planes[k] = b`` exactly."""
        with torch.no_grad():
            th = self.thresholds(v_threshold, learned)
            pos = [heaviside(h - t) for t in th]
            if not self.signed:
                return torch.stack(pos)
            neg = [heaviside(-h - t) for t in th]
            return torch.stack(pos + neg)

    def n_planes(self, v_threshold: float) -> int:
        return len(self.thresholds(v_threshold)) * (2 if self.signed else 1)

    def validate(self, v_threshold: float) -> None:
        """Raise :class:`ConfigError` if the rule cannot fire with this threshold."""


@dataclass(frozen=True)
class Binary(FiringRule):
    """MT-SNN Eq 2/4: ``S = Θ(H − V_th)``, ``b = s = S``."""

    name = "binary"

    def fire(self, h: Tensor, v_threshold: float, surrogate: Surrogate,
             learned: Sequence | None = None) -> tuple[Tensor, Tensor]:
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
    options = ("deltas",)
    single_threshold = "binary"

    def __post_init__(self) -> None:
        object.__setattr__(self, "deltas", _check_deltas(self.deltas))

    def thresholds(self, v_threshold: float, learned: Sequence | None = None) -> tuple:
        if learned is not None:
            return tuple(learned)
        deltas = _resolve_deltas(self.deltas, v_threshold)
        return (v_threshold,) + tuple(v_threshold + d for d in deltas)

    def lowest_index(self) -> int:
        first = (DEFAULT_DELTA_FRACTIONS if self.deltas is None else self.deltas)[0]
        return 1 if first < 0 else 0

    @property
    def plane_signs(self) -> tuple[int, ...]:
        n = len(DEFAULT_DELTA_FRACTIONS if self.deltas is None else self.deltas)
        return (1,) * (n + 1)

    def validate(self, v_threshold: float) -> None:
        _check_positive_thresholds(self, v_threshold)

    def fire(self, h: Tensor, v_threshold: float, surrogate: Surrogate,
             learned: Sequence | None = None) -> tuple[Tensor, Tensor]:
        main, *aux = self.thresholds(v_threshold, learned)
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

    def fire(self, h: Tensor, v_threshold: float, surrogate: Surrogate,
             learned: Sequence | None = None) -> tuple[Tensor, Tensor]:
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
    options = ("deltas",)
    single_threshold = "ternary"

    def __post_init__(self) -> None:
        object.__setattr__(self, "deltas", _check_deltas(self.deltas))

    thresholds = MultiThreshold.thresholds
    lowest_index = MultiThreshold.lowest_index

    @property
    def plane_signs(self) -> tuple[int, ...]:
        n = len(DEFAULT_DELTA_FRACTIONS if self.deltas is None else self.deltas) + 1
        return (1,) * n + (-1,) * n

    def validate(self, v_threshold: float) -> None:
        _check_positive_thresholds(self, v_threshold)

    def fire(self, h: Tensor, v_threshold: float, surrogate: Surrogate,
             learned: Sequence | None = None) -> tuple[Tensor, Tensor]:
        main, *aux = self.thresholds(v_threshold, learned)
        pos = surrogate(h - main)
        neg = surrogate(-h - main)
        b = pos - neg
        for th in aux:
            b = b + surrogate(h - th) - surrogate(-h - th)
        return b, pos + neg


def _reciprocal(v_threshold):
    """``1/V_th``: a Python float for a float; for a learned (tensor) threshold computed in
    float64 and rounded once to its dtype, as PyTorch rounds the Python float ``1/V_th``."""
    if isinstance(v_threshold, Tensor):
        return (1 / v_threshold.to(torch.float64)).to(v_threshold.dtype)
    return 1.0 / v_threshold


@dataclass(frozen=True)
class Integer(FiringRule):
    """Integer spikes (SpikeYOLO's I-LIF, ECCV 2024; issue #15):
    ``b = round(clamp(H/V_th, 0, D))`` with ``D = levels``.

    ``H/V_th`` is computed as ``u = H · (1/V_th)`` (the same number for a power-of-two
    ``V_th``), and ``round`` is ``torch.round``, half to even, after the clamp (as SpikeYOLO's
    code and SpikingJelly's ``ILIFNode``): ``u = 0.5 → 0``, ``1.5 → 2``, ``2.5 → 2``.

    Gradient: the rule's own straight-through estimator ``db/dH = 1/V_th`` where
    ``0 <= u <= D`` (bounds included), else 0 (:func:`~multispike.functional.surrogate.
    round_ste`); the layer's ``surrogate`` does not shape it: it is the Heaviside of a hard
    reset only. Default reset ``"soft"`` (``V = H − b·V_th``); ``"main"``: hard reset where
    ``H >= V_th`` (the main spike ``s = Θ(H − V_th)``, as for every rule); ``"any"``: hard
    reset where ``b >= 1`` (its gradient through the surrogate at ``θ = V_th/2``).

    Planes (thermometer): ``[b >= k]`` for ``k = 1 … D``, whose sum is ``b`` exactly, ties
    included. :meth:`thresholds` reports ``(k − ½)·V_th``, where plane ``k`` switches on
    (up to the tie rule: at ``u = k − ½`` exactly, plane ``k`` fires when ``k`` is even).

    >>> rule = Integer(levels=3)
    >>> h = torch.tensor([-0.4, 0.5, 0.51, 1.5, 2.5, 9.0])
    >>> b, s = rule.fire(h, 1.0, None)
    >>> b, s
    (tensor([0., 0., 1., 2., 2., 3.]), tensor([0., 0., 0., 1., 1., 1.]))
    >>> rule.planes(h, 1.0).sum(0)
    tensor([0., 0., 1., 2., 2., 3.])
    """

    levels: int = 4
    name = "integer"
    options = ("levels",)
    default_reset = "soft"

    def __post_init__(self) -> None:
        levels = positive_int("levels", self.levels)
        if levels > MAX_LEVELS:
            raise ConfigError(f"levels must be at most {MAX_LEVELS} (8-bit spikes), got {levels}")
        object.__setattr__(self, "levels", levels)

    def _low(self) -> float:
        return -float(self.levels) if self.signed else 0.0

    def value(self, h: Tensor, v_threshold) -> Tensor:
        """``b`` with its straight-through gradient (no surrogate): ``round(clamp(u, lo, D))``,
        ``u = H·(1/V_th)``, ``lo = 0`` (``−D`` for the signed rule)."""
        return round_ste(h * _reciprocal(v_threshold), self._low(), float(self.levels))

    def thresholds(self, v_threshold: float, learned: Sequence | None = None) -> tuple:
        return tuple((k - 0.5) * v_threshold for k in range(1, self.levels + 1))

    def resets_at_main(self, reset: str) -> bool:
        return reset == "main"

    def reset_threshold(self, v_threshold: float, reset: str, learned: Sequence | None = None):
        """``"main"``: ``V_th``; ``"any"``: ``V_th/2`` (where ``b`` first reaches 1)."""
        return v_threshold if reset == "main" else 0.5 * v_threshold

    def spike_at(self, h: Tensor, theta, surrogate: Surrogate, b: Tensor | None = None) -> Tensor:
        """With ``b``: the values ``sign(b)``, exact at ties, with the gradient of the
        Heavisides at ``±θ``; without: :meth:`FiringRule.spike_at`."""
        y = super().spike_at(h, theta, surrogate)
        if b is None:
            return y
        return y + (torch.sign(b.detach()) - y).detach()

    def reset_spikes(self, h: Tensor, theta, surrogate: Surrogate,
                     b: Tensor | None = None) -> Tensor:
        """With ``b``: the values ``[b != 0]``, with the gradient of the Heavisides at ``±θ``;
        without: :meth:`FiringRule.reset_spikes`."""
        y = super().reset_spikes(h, theta, surrogate)
        if b is None:
            return y
        return y + ((b.detach() != 0).to(y.dtype) - y).detach()

    def fire(self, h: Tensor, v_threshold: float, surrogate: Surrogate | None,
             learned: Sequence | None = None) -> tuple[Tensor, Tensor]:
        """``(b, s)``; ``surrogate=None`` gives the values without a surrogate."""
        b = self.value(h, v_threshold)
        if surrogate is None:
            s = heaviside(h - v_threshold)
            if self.signed:
                s = s + heaviside(-h - v_threshold)
            return b, s
        return b, self.reset_spikes(h, v_threshold, surrogate)

    @property
    def plane_signs(self) -> tuple[int, ...]:
        return (1,) * self.levels + ((-1,) * self.levels if self.signed else ())

    def planes(self, h: Tensor, v_threshold: float, learned: Sequence | None = None) -> Tensor:
        """Thermometer planes ``[b >= k]``, ``k = 1 … D`` (signed: then ``[b <= −k]``)."""
        with torch.no_grad():
            b = self.value(h, v_threshold)
            pos = [(b >= k).to(h.dtype) for k in range(1, self.levels + 1)]
            if not self.signed:
                return torch.stack(pos)
            return torch.stack(pos + [(b <= -k).to(h.dtype) for k in range(1, self.levels + 1)])


@dataclass(frozen=True)
class SignedInteger(Integer):
    """Signed integer spikes (beyond both papers; issue #15):
    ``b = sign(H)·round(clamp(|H|/V_th, 0, D)) = round(clamp(H/V_th, −D, D))`` in {−D, …, D}.
    ``D = 1`` has ternary's values (fired at ``|H| > V_th/2``, where :class:`Ternary` fires
    at ``|H| >= V_th``).

    Straight-through gradient ``1/V_th`` where ``|H|/V_th <= D``; resets and planes as
    :class:`Integer`, mirrored (``D`` positive planes, then ``D`` negative ones).

    >>> b, s = SignedInteger(levels=2).fire(torch.tensor([-3.0, -1.5, -0.5, 0.7]), 1.0, None)
    >>> b + 0.0                      # + 0.0 shows round(−0.5) = −0 as 0
    tensor([-2., -2.,  0.,  1.])
    """

    name = "signed-integer"
    signed = True


FIRING_RULES: dict[str, type[FiringRule]] = {
    "binary": Binary,
    "mt": MultiThreshold,
    "ternary": Ternary,
    "ternary-mt": TernaryMultiThreshold,
    "integer": Integer,
    "signed-integer": SignedInteger,
}


def firing_key(name: str, *, extra: Sequence[str] = (), where: str = "") -> str:
    """The one spelling of a firing name: lower case, ``-`` for ``_`` (``"Ternary_MT"`` →
    ``"ternary-mt"``); a name that is none of :data:`FIRING_RULES` (nor of ``extra``, such
    as a model's ``"ann"``) is a one-line :class:`ConfigError` listing them (``where``
    prefixes it).

    >>> firing_key("Ternary_MT"), firing_key("ann", extra=("ann",))
    ('ternary-mt', 'ann')
    """
    key = str(name).lower().replace("_", "-")
    if key in FIRING_RULES or key in extra:
        return key
    prefix = f"{where}: " if where else ""
    raise ConfigError(f"{prefix}unknown firing {name!r}; choose one of "
                      f"{', '.join([*FIRING_RULES, *extra])}")


def rule_class(name: str) -> type[FiringRule]:
    """The rule class of a firing name (any spelling :func:`firing_key` takes).

    >>> rule_class("mt").single_threshold
    'binary'
    """
    return FIRING_RULES[firing_key(name)]


def get_firing(firing: str | FiringRule, deltas: Sequence[float] | None = None,
               levels: int | None = None) -> FiringRule:
    """Turn a name (``binary``, ``mt``, ``ternary``, ``ternary-mt``, ``integer``,
    ``signed-integer``) into a rule record.

    ``deltas`` applies to the multi-threshold rules only, ``levels`` (default 4) to the integer
    rules only. A record passes through unchanged.

    >>> get_firing("integer", levels=3)
    Integer(levels=3)
    """
    if isinstance(firing, FiringRule):
        if deltas is not None:
            raise ConfigError("deltas given beside a firing-rule object; put them in the object")
        if levels is not None and levels != getattr(firing, "levels", None):
            raise ConfigError(f"levels={levels!r} conflicts with {firing!r}; put them in the "
                              "object")
        return firing
    key = firing_key(firing)
    cls = FIRING_RULES[key]
    check_rule_options(key, deltas=deltas, levels=levels)
    if cls.accepts("deltas"):
        return cls(deltas=deltas)
    if cls.accepts("levels") and levels is not None:
        return cls(levels=levels)
    return cls()


def check_rule_options(firing: str, **options) -> None:
    """Refuse a rule option (``deltas=…``, ``levels=…``) given, not None, to a rule that does
    not take it, in one line naming the rules that do.

    >>> check_rule_options("integer", levels=3, deltas=None)
    >>> check_rule_options("binary", levels=3)
    Traceback (most recent call last):
    ...
    multispike.errors.ConfigError: levels apply to firing 'integer' and 'signed-integer', not ...
    """
    cls = FIRING_RULES.get(firing)
    for option, value in options.items():
        if value is None or cls is None or cls.accepts(option):
            continue
        takers = [name for name, c in FIRING_RULES.items() if c.accepts(option)]
        raise ConfigError(f"{option} apply to firing {' and '.join(map(repr, takers))}, not "
                          f"to {firing!r}; use e.g. firing={takers[0]!r}, {option}={value!r}")


# -- learned thresholds (issue #15 point 2) ------------------------------------------------------
def initial_thresholds(rule: FiringRule, v_threshold: float) -> tuple[tuple[float, ...], int]:
    """The learnable thresholds of a layer at the start, ascending, and the main one's index.

    Binary, ternary and the integer rules learn ``V_th`` only: ``((V_th,), 0)``. The MT rules
    learn every threshold ``V_th + Δ_i`` too: ascending, the main ``V_th`` at the index of the
    first positive delta.

    >>> initial_thresholds(MultiThreshold(deltas=(-0.5, 0.5)), 1.0)
    ((0.5, 1.0, 1.5), 1)
    """
    if not isinstance(rule, (MultiThreshold, TernaryMultiThreshold)):
        return (float(v_threshold),), 0
    deltas = _resolve_deltas(rule.deltas, v_threshold)
    low = tuple(v_threshold + d for d in deltas if d < 0)
    high = tuple(v_threshold + d for d in deltas if d > 0)
    return low + (float(v_threshold),) + high, len(low)


#: the bound of a learned gain: every segment of the thresholds (the lowest threshold and each
#: gap between neighbours) stays within [1/THRESHOLD_BOUND, THRESHOLD_BOUND] times its initial
#: size, whatever the parameter (a floor, a cap and a minimum gap)
THRESHOLD_BOUND = 16.0


def threshold_growth(rho: Tensor) -> Tensor:
    """``e(ρ) = m(ρ) − 1``: the bounded, smooth growth of one learned threshold segment.

    ``m(ρ) = 1 + g`` for ``ρ >= 0`` and ``1/(1 + g)`` for ``ρ < 0``, with
    ``g = |ρ|/(1 + |ρ|/(M − 1))`` and ``M`` = :data:`THRESHOLD_BOUND`: ``m(0) = 1``,
    ``m'(0) = 1`` (like ``exp(ρ)`` near 0), strictly increasing, and ``1/M < m < M`` for every
    ``ρ``, infinities included (NaN counts as 0). Only ``+ − × /``: every implementation (this
    one, the C++ and Triton kernels, plain floats) rounds it alike, so they all read the same
    thresholds.

    >>> [round(float(e), 4) for e in threshold_growth(torch.tensor([-1e30, -1.0, 0.0, 1.0, 1e30]))]
    [-0.9375, -0.4839, 0.0, 0.9375, 15.0]
    """
    r = torch.nan_to_num(rho, nan=0.0)  # ±inf → the dtype's largest finite number
    up = r >= 0
    a = torch.where(up, r, -r)  # |ρ|, with the slope 1 at ρ = 0 (abs() has 0 there)
    g = a / (1 + a / (THRESHOLD_BOUND - 1))
    return torch.where(up, g, -g / (1 + g))


def threshold_rho_for(gain: float) -> float:
    """The ``ρ`` whose segment gain ``m(ρ) = 1 + e(ρ)`` (:func:`threshold_growth`) is
    ``gain``, for ``1/M < gain < M``: set a learning layer's thresholds to chosen multiples of
    the initial ones.

    >>> rho = threshold_rho_for(0.5)
    >>> round(1 + float(threshold_growth(torch.tensor(rho, dtype=torch.float64))), 12)
    0.5
    """
    bound = THRESHOLD_BOUND
    if not 1 / bound < gain < bound:
        raise ConfigError(f"a threshold gain must lie strictly between 1/{bound:g} and "
                          f"{bound:g}, got {gain!r}")
    g = gain - 1 if gain >= 1 else 1 / gain - 1
    a = g / (1 - g / (bound - 1))
    return a if gain >= 1 else -a


def learned_thresholds(rho: Tensor, initial: Sequence[float]) -> tuple[Tensor, ...]:
    """Ordered positive thresholds from the learnable ``ρ`` (``Neuron.threshold_rho``).

    With ``θ⁰`` the initial thresholds (ascending, positive: :func:`initial_thresholds`),
    ``c_0 = θ⁰_0`` and ``c_k = θ⁰_k − θ⁰_{k−1}`` (the lowest threshold and the gaps, all > 0)::

        θ_k = θ⁰_k + Σ_{j<=k} c_j · e(ρ_j)      (= Σ_{j<=k} c_j · m(ρ_j))

    with ``e`` = :func:`threshold_growth`. Each segment ``c_j·m(ρ_j)`` lies strictly between
    ``c_j/M`` and ``M·c_j`` (``M`` = :data:`THRESHOLD_BOUND`), so no parameter value makes a
    threshold 0, infinite or NaN, or ties two neighbours; ``ρ = 0`` gives exactly ``θ⁰``
    (rounded to the dtype). ``rho`` is ``[K]``; returns ``K`` 0-dim tensors;
    ``dθ_k/dρ_j = c_j·e'(ρ_j)`` for ``j <= k``.

    >>> th = learned_thresholds(torch.zeros(3), (0.5, 1.0, 1.5))
    >>> [float(t) for t in th]
    [0.5, 1.0, 1.5]
    >>> [float(t) for t in learned_thresholds(torch.tensor([-1e30, 1e30]), (1.0, 2.0))]
    [0.0625, 16.0625]
    """
    growth = threshold_growth(rho)
    out = []
    acc = None
    prev = 0.0
    for k, th0 in enumerate(initial):
        term = (th0 - prev) * growth[k]
        acc = term if acc is None else acc + term
        out.append(th0 + acc)
        prev = th0
    return tuple(out)


def split_thresholds(thresholds: Sequence[Tensor], main: int) -> tuple[Tensor, tuple | None]:
    """``(V_th, learned)`` from ascending thresholds: ``V_th = θ_main`` and ``learned`` every
    threshold in the order of :meth:`FiringRule.thresholds` (the main one, then ``V_th + Δ_i``
    in the deltas' ascending order), or None where there is one threshold only.

    >>> v, th = split_thresholds(torch.tensor([0.5, 1.0, 1.5]).unbind(), 1)
    >>> float(v), [float(x) for x in th]
    (1.0, [1.0, 0.5, 1.5])
    """
    v = thresholds[main]
    if len(thresholds) == 1:
        return v, None
    return v, (v,) + tuple(t for k, t in enumerate(thresholds) if k != main)
