"""Neuron dynamics as pure functions: charge, fire, reset, one step, and the loop over T.

Notation follows MT-SNN: ``V[t-1]`` is the membrane after the previous reset, ``X[t]`` the
input current, ``H[t]`` the membrane after charging (before firing).

- charge: :func:`if_charge` (MT-SNN Eq 5), :func:`lif_charge` (Ternary Spike Eq 4/7),
  :func:`plif_charge` (MT-SNN Eq 6-8); the records :class:`IF`, :class:`LIF` and
  :class:`PLIF` name a neuron's dynamics and its options as data;
- fire: a :class:`~multispike.functional.firing.FiringRule`;
- reset (:func:`reset`, chosen by ``NeuronParams.reset``): :func:`hard_reset` (MT-SNN Eq 3)
  with its multiplier from :func:`reset_spike` (``"main"``, ``"any"``), or :func:`soft_reset`
  (``"soft"``);
- :func:`step` = charge → fire → amplitude → reset, with explicit state;
- :func:`multistep` loops :func:`step` over the time-first input ``[T, B, ...]``.

A neuron is described completely by two records: its dynamics (:class:`IF`, :class:`LIF`,
:class:`PLIF`) and its :class:`NeuronParams` (threshold, reset, firing rule, surrogate).

Nothing here holds state between calls: the state goes in and comes out. The membrane starts
at ``V[−1] = V_reset`` (0 by default), as in SpikingJelly and Norse.

Example::

    >>> from functools import partial
    >>> import torch
    >>> from multispike.functional import LIF, NeuronParams, Ternary, lif_charge, multistep
    >>> params = NeuronParams(v_threshold=0.5, rule=Ternary())
    >>> x = torch.tensor([[0.6], [-0.2], [-0.5]])           # [T=3, B=1]
    >>> out, state = multistep(x, partial(lif_charge, decay=0.25), params)
    >>> out.flatten()                  # u = 0.6 fires, resets; −0.2; 0.25·(−0.2) − 0.5 = −0.55
    tensor([ 1.,  0., -1.])
    >>> lif = LIF(decay=0.25)                               # the same dynamics as a record
    >>> out, state = multistep(x, lif.charge, params._replace(reset="soft"))
    >>> out.flatten(), state.v   # soft: 0.6 − 0.5 = 0.1; 0.025 − 0.2; −0.04375 − 0.5 + 0.5
    (tensor([ 1.,  0., -1.]), tensor([-0.0437]))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from multispike.checks import finite_number
from multispike.errors import ConfigError
from multispike.functional.firing import Binary, FiringRule
from multispike.functional.surrogate import Rectangular, Surrogate

#: values of ``NeuronParams.reset_grad`` (see :func:`reset_spike`)
RESET_GRADS = ("surrogate", "spike")
#: values of ``NeuronParams.reset`` (see :func:`reset`); ``None`` means the rule's default
RESETS = ("main", "any", "soft")

Charge = Callable[[Tensor, Tensor], Tensor]
"""``h = charge(v, x)``: membrane after charging, from membrane ``v`` and input ``x``."""


class NeuronState(NamedTuple):
    """The state one neuron layer carries from step to step: its membrane ``v`` (after reset)."""

    v: Tensor


class NeuronParams(NamedTuple):
    """Everything :func:`step` needs besides the charge function.

    Attributes:
        v_threshold: firing threshold ``V_th`` (membrane units, > 0); a 0-dim tensor where the
            layer learns its thresholds (``learn_thresholds=True``).
        v_reset: potential the membrane is reset to where the main spike fires.
        rule: the firing rule (binary, MT, ternary, ternary-MT).
        surrogate: surrogate gradient of each Heaviside.
        detach_reset: cut the gradient through the reset (``S`` treated as a constant there).
        amplitude: the learnable layer-wise amplitude ``a`` of Ternary Spike Eq 13-14, or None.
        reset_grad: the gradient of the reset multiplier ``S`` (same values either way), see
            :func:`reset_spike`: ``"surrogate"`` (default) or ``"spike"`` (the Ternary Spike
            code's ``|b|``). Ignored with ``detach_reset``; hard resets only.
        reset: which reset follows the spike (:func:`reset`): ``"main"`` (hard reset by the
            main spike, MT-SNN Eq 3), ``"any"`` (hard reset by any spike, Ternary Spike Eq 7),
            ``"soft"`` (``V = H − b·V_th``), or ``None`` for the rule's
            :attr:`~multispike.functional.firing.FiringRule.default_reset`.
        thresholds: learned thresholds of an MT rule (0-dim tensors in the order of
            ``rule.thresholds()``: main first) that replace ``V_th + Δ_i``, or None
            (:func:`~multispike.functional.firing.learned_thresholds`).
    """

    v_threshold: float | Tensor = 1.0
    v_reset: float = 0.0
    rule: FiringRule = Binary()
    surrogate: Surrogate = Rectangular()
    detach_reset: bool = False
    amplitude: Tensor | None = None
    reset_grad: str = "surrogate"
    reset: str | None = None
    thresholds: tuple[Tensor, ...] | None = None


def if_charge(v: Tensor, x: Tensor) -> Tensor:
    """MT-SNN Eq 5 (IF): ``H[t] = V[t−1] + X[t]``."""
    return v + x


def lif_charge(v: Tensor, x: Tensor, decay: float | Tensor = 0.25) -> Tensor:
    """Ternary Spike Eq 4/7 (LIF): ``u[t] = decay · u[t−1] + x[t]``.

    The paper writes the reset into the charge, ``decay·u[t−1]·(1 − |b[t−1]|)``; here ``v`` is
    already reset by :func:`hard_reset`, which gives the same membrane for ``v_reset = 0``.
    """
    return decay * v + x


def plif_tau(w: Tensor) -> Tensor:
    """MT-SNN Eq 7: ``τ = 1 + exp(−w)`` ∈ (1, ∞), from the learnable ``w``."""
    return 1 + torch.exp(-w)


def plif_charge(v: Tensor, x: Tensor, w: Tensor, v_reset: float = 0.0) -> Tensor:
    """MT-SNN Eq 8 (PLIF, ``V_reset = 0``): ``H[t] = (1 − 1/τ)·V[t−1] + X[t]/τ``.

    With ``v_reset != 0`` it is Eq 6: ``H[t] = V[t−1] + (X[t] − (V[t−1] − V_reset))/τ``.
    ``τ`` comes from ``w`` by Eq 7 (:func:`plif_tau`).
    """
    tau = plif_tau(w)
    if v_reset == 0:
        return (1 - 1 / tau) * v + x / tau
    return v + (x - (v - v_reset)) / tau


# -- dynamics records ---------------------------------------------------------------------------
class Dynamics:
    """Base of the dynamics records: how a neuron charges, as data (a frozen dataclass).

    ``record.charge(v, x, w=..., v_reset=...)`` is one step of the charge; :meth:`options` the
    record's fields as the neuron modules' keyword options (what ``config()`` stores). The
    fused kernels implement the three records here; they read the record, not the module's
    class (:func:`multispike.kernels.record_of`).
    """

    #: registry key (``"if"``, ``"lif"``, ``"plif"``), the ``dynamics`` of the neuron modules
    name: ClassVar[str] = ""
    #: True where the charge has a learnable scalar ``w`` (PLIF's τ, MT-SNN Eq 7)
    learnable: ClassVar[bool] = False

    def charge(self, v: Tensor, x: Tensor, *, w: Tensor | None = None,
               v_reset: float = 0.0) -> Tensor:
        """``H[t]`` from ``V[t−1]`` and ``X[t]`` (any equal shapes)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def options(self) -> dict[str, Any]:
        """The record's fields as keyword options of its neuron module."""
        return {}


@dataclass(frozen=True)
class IF(Dynamics):
    """Integrate-and-fire (MT-SNN Eq 5): ``H[t] = V[t−1] + X[t]``, no leak.

    >>> IF().charge(torch.tensor([0.5]), torch.tensor([0.25]))
    tensor([0.7500])
    """

    name = "if"

    def charge(self, v: Tensor, x: Tensor, *, w: Tensor | None = None,
               v_reset: float = 0.0) -> Tensor:
        return if_charge(v, x)


@dataclass(frozen=True)
class LIF(Dynamics):
    """Leaky integrate-and-fire of Ternary Spike (Eq 4/7): ``H[t] = decay·V[t−1] + X[t]``.

    ``decay`` in [0, 1]; the paper and its code use 0.25.

    >>> LIF(decay=0.5).charge(torch.tensor([0.5]), torch.tensor([0.25]))
    tensor([0.5000])
    """

    decay: float = 0.25
    name = "lif"

    def __post_init__(self) -> None:
        decay = finite_number("decay", self.decay)
        if not 0 <= decay <= 1:
            raise ConfigError(f"decay must lie in [0, 1], got {decay}; the paper uses 0.25")
        object.__setattr__(self, "decay", decay)

    def charge(self, v: Tensor, x: Tensor, *, w: Tensor | None = None,
               v_reset: float = 0.0) -> Tensor:
        return lif_charge(v, x, self.decay)

    def options(self) -> dict[str, Any]:
        return {"decay": self.decay}


@dataclass(frozen=True)
class PLIF(Dynamics):
    """Parametric LIF of MT-SNN (Eq 6-8): ``H[t] = (1 − 1/τ)·V[t−1] + X[t]/τ``.

    ``τ = 1 + exp(−w)`` (Eq 7) with one learnable ``w`` per layer, which the neuron module
    holds, initialised to :meth:`init_w` so that ``τ = init_tau`` (> 1; MT-SNN uses 2).

    >>> plif = PLIF(init_tau=2.0)
    >>> plif.charge(torch.tensor([0.5]), torch.tensor([1.0]), w=torch.tensor(plif.init_w()))
    tensor([0.7500])
    """

    init_tau: float = 2.0
    name = "plif"
    learnable = True

    def __post_init__(self) -> None:
        init_tau = finite_number("init_tau", self.init_tau)
        if init_tau <= 1:
            raise ConfigError(f"init_tau must be > 1 (τ = 1 + exp(-w) > 1), got {init_tau}")
        object.__setattr__(self, "init_tau", init_tau)

    def init_w(self) -> float:
        """The ``w`` whose ``τ = 1 + exp(−w)`` is ``init_tau``: ``−log(init_tau − 1)``."""
        return -math.log(self.init_tau - 1.0)

    def charge(self, v: Tensor, x: Tensor, *, w: Tensor | None = None,
               v_reset: float = 0.0) -> Tensor:
        if w is None:
            raise ConfigError("PLIF.charge needs the learnable w (tau = 1 + exp(-w)); pass w=")
        return plif_charge(v, x, w, v_reset)

    def options(self) -> dict[str, Any]:
        return {"init_tau": self.init_tau}


#: the dynamics records by name
DYNAMICS: dict[str, type[Dynamics]] = {cls.name: cls for cls in (PLIF, LIF, IF)}


# -- reset -------------------------------------------------------------------------------------
def resolve_reset(rule: FiringRule, reset: str | None) -> str:
    """``reset``, or the rule's default for ``None``; :class:`ConfigError` for another name."""
    if reset is None:
        return rule.default_reset
    if reset not in RESETS:
        raise ConfigError(f"unknown reset {reset!r}; choose one of {', '.join(RESETS)}")
    return reset


def hard_reset(h: Tensor, s: Tensor, v_reset: float = 0.0) -> Tensor:
    """MT-SNN Eq 3: ``V[t] = H[t]·(1 − S[t]) + V_reset·S[t]``, ``S`` in {0, 1} the spike that
    resets (the main spike for ``reset="main"``, any spike for ``"any"``: :func:`reset_spike`).

    >>> hard_reset(torch.tensor([0.3, 1.2]), torch.tensor([0.0, 1.0]))
    tensor([0.3000, 0.0000])
    """
    return h * (1 - s) + v_reset * s


def soft_reset(h: Tensor, b: Tensor, v_threshold: float) -> Tensor:
    """Reset by subtraction (``reset="soft"``, beyond both papers): ``V[t] = H[t] − b[t]·V_th``.

    ``b`` is the emitted value before any amplitude (e.g. 0…n+1 for MT, −1/0/+1 for ternary),
    so the membrane keeps what exceeds the spikes it paid for. Shapes: ``h`` and ``b`` alike.

    >>> soft_reset(torch.tensor([0.3, 1.2, 2.7, -1.1]), torch.tensor([0.0, 1.0, 2.0, -1.0]), 1.0)
    tensor([ 0.3000,  0.2000,  0.7000, -0.1000])
    """
    return h - b * v_threshold


def reset_spike(h: Tensor, s: Tensor, params: NeuronParams, b: Tensor | None = None) -> Tensor:
    """The multiplier ``S`` of :func:`hard_reset`, values in {0, 1}, with the gradient
    ``params`` ask for.

    Which spike: ``reset="main"`` (and ``None`` where the rule's default is ``"main"``) uses the
    main spike ``s`` of ``rule.fire`` as it is; ``"any"`` the spike at the rule's lowest
    threshold ``θ_r`` (:meth:`~multispike.functional.firing.FiringRule.reset_threshold`),
    which is ``s`` again where ``θ_r = V_th``. For the integer rules ``"any"`` is ``b != 0``,
    read from the emitted ``b`` (exact at ties), its gradient from the surrogate at
    ``±θ_r = ±V_th/2``. Its gradient (``g`` the surrogate derivative):

    - ``detach_reset``: none (``S`` detached);
    - ``reset_grad="surrogate"``: ``dS/dH = g(H − θ_r)`` (``− g(−H − θ_r)`` for signed rules),
      nonzero wherever ``H`` is near ``±θ_r``, fired or not;
    - ``reset_grad="spike"``: ``S = |b_r|`` with ``b_r = Θ(H − θ_r) − Θ(−H − θ_r)`` the signed
      spike at ``θ_r`` (:meth:`~multispike.functional.firing.FiringRule.spike_at`), so
      ``dS/dH = sign(b_r)·(g(H − θ_r) + g(−H − θ_r))`` for signed rules, ``S·g(H − θ_r)``
      for unsigned ones; zero where it did not fire. This is the reset of the Ternary Spike
      code, ``u·(1 − |s|)`` through its straight-through spike.

    ``params`` may be any record with the attributes of :class:`NeuronParams` used here
    (``rule``, ``v_threshold``, ``surrogate``, ``detach_reset``, ``reset_grad``, ``reset``,
    ``thresholds``).
    """
    rule, v_th = params.rule, params.v_threshold
    learned = getattr(params, "thresholds", None)
    kind = resolve_reset(rule, getattr(params, "reset", None))
    at_main = rule.resets_at_main(kind)
    if not at_main:
        s = rule.reset_spikes(h, rule.reset_threshold(v_th, kind, learned), params.surrogate, b)
    if params.detach_reset:
        return s.detach()
    if params.reset_grad == "spike" and h.requires_grad:  # same values: no gradient, no work
        theta = rule.reset_threshold(v_th, kind, learned)
        return rule.spike_at(h, theta, params.surrogate, None if at_main else b).abs()
    return s


def reset(h: Tensor, b: Tensor, s: Tensor, params: NeuronParams) -> Tensor:
    """The membrane after the spikes: ``V[t]`` from ``H[t]``, the emitted ``b`` and the main
    spike ``s`` of ``rule.fire``, by ``params.reset`` (``None``: the rule's default).

    - ``"main"``, ``"any"``: :func:`hard_reset` with ``S`` from :func:`reset_spike`;
    - ``"soft"``: :func:`soft_reset`, ``V = H − b·V_th`` (``V_reset`` must be 0). Its gradient
      is the spike's own: ``dV/dH = 1 − V_th·db/dH`` (the surrogate at every threshold), or 1
      with ``detach_reset``; ``reset_grad="spike"`` is the gradient of a hard reset's ``|b|``
      and has no soft counterpart (:class:`ConfigError`).
    """
    if resolve_reset(params.rule, getattr(params, "reset", None)) == "soft":
        if params.detach_reset:
            return soft_reset(h, b.detach(), params.v_threshold)
        if params.reset_grad == "spike":
            raise ConfigError(SOFT_SPIKE_GRAD)
        return soft_reset(h, b, params.v_threshold)
    return hard_reset(h, reset_spike(h, s, params, b), params.v_reset)


SOFT_SPIKE_GRAD = ("reset_grad='spike' is the gradient of a hard reset's |b|; a soft reset "
                   "subtracts b·V_th through the spike's surrogate: use reset_grad='surrogate' "
                   "or detach_reset=True")
SOFT_V_RESET = ("reset='soft' subtracts b·V_th and never sets the membrane to v_reset={v_reset}; "
                "use v_reset=0 or a hard reset ('main' or 'any')")


def check_reset(rule: FiringRule, reset: str | None, v_reset: float, reset_grad: str,
                detach_reset: bool) -> str:
    """The resolved reset of a neuron, after the checks that need the other options.

    >>> check_reset(Binary(), None, 0.0, "surrogate", False)
    'main'
    """
    kind = resolve_reset(rule, reset)
    if kind == "soft":
        if v_reset != 0:
            raise ConfigError(SOFT_V_RESET.format(v_reset=v_reset))
        if reset_grad == "spike" and not detach_reset:
            raise ConfigError(SOFT_SPIKE_GRAD)
    return kind


def check_surrogate(rule: FiringRule, surrogate: Surrogate, reset: str,
                    detach_reset: bool) -> None:
    """Refuse a surrogate that nothing uses: the integer rules' spike has its own
    straight-through gradient, so their ``surrogate`` shapes a hard reset's Heaviside only;
    with a soft reset or ``detach_reset`` anything but the default is a :class:`ConfigError`.

    >>> from multispike.functional.firing import Integer
    >>> check_surrogate(Integer(), Rectangular(), "soft", False)
    """
    if not hasattr(rule, "levels") or surrogate == Rectangular():
        return
    if reset == "soft" or detach_reset:
        why = "a soft reset" if reset == "soft" else "detach_reset=True"
        raise ConfigError(
            f"surrogate {surrogate!r} has no effect on firing={rule.name!r} with {why}: its "
            "spike has its own straight-through gradient (1/V_th on [0, D]); drop the "
            "surrogate options or use reset='main'/'any'"
        )


def step(
    x: Tensor, state: NeuronState, charge: Charge, params: NeuronParams
) -> tuple[Tensor, NeuronState, Tensor]:
    """One time step: charge, fire, scale by the amplitude, reset.

    Args:
        x: input current ``X[t]``, any shape ``[B, ...]``.
        state: :class:`NeuronState` with ``v`` of the same shape (``V_reset`` at t = 0).
        charge: ``h = charge(v, x)``, e.g. ``partial(plif_charge, w=w)``.
        params: :class:`NeuronParams`.

    Returns:
        ``(out, new_state, h)``: ``out = a·b`` (or ``b`` without amplitude), the new state, and
        the membrane ``H[t]`` before firing. The reset (:func:`reset`) uses ``s`` or ``b``,
        never ``a·b``.
    """
    h = charge(state.v, x)
    b, s = params.rule.fire(h, params.v_threshold, params.surrogate, params.thresholds)
    v = reset(h, b, s, params)
    out = b if params.amplitude is None else params.amplitude * b
    return out, NeuronState(v), h


Observer = Callable[[int, Tensor, Tensor], None]
"""``observe(t, h, out)`` is called after each step when statistics are recorded."""


def multistep(
    x_seq: Tensor,
    charge: Charge,
    params: NeuronParams,
    state: NeuronState | None = None,
    observe: Observer | None = None,
) -> tuple[Tensor, NeuronState]:
    """Run :func:`step` over the time-first input.

    Args:
        x_seq: ``[T, B, ...]`` input currents.
        charge, params: as in :func:`step`.
        state: initial state; ``None`` starts from ``v = V_reset`` (0 by default, where MT-SNN
            and Ternary Spike start; SpikingJelly and Norse start at ``V_reset`` too).
        observe: optional ``observe(t, h, out)`` callback (statistics); ``None`` costs nothing.

    Returns:
        ``(out_seq, state)`` with ``out_seq`` ``[T, B, ...]`` and the state after step T.
    """
    if state is None:
        state = NeuronState(torch.full_like(x_seq[0], params.v_reset))
    outs = []
    for t in range(x_seq.shape[0]):
        out, state, h = step(x_seq[t], state, charge, params)
        if observe is not None:
            observe(t, h, out)
        outs.append(out)
    return torch.stack(outs), state
