"""Neuron dynamics as pure functions: charge, fire, reset, one step, and the loop over T.

Notation follows MT-SNN: ``V[t-1]`` is the membrane after the previous reset, ``X[t]`` the
input current, ``H[t]`` the membrane after charging (before firing).

- charge: :func:`if_charge` (MT-SNN Eq 5), :func:`lif_charge` (Ternary Spike Eq 4/7),
  :func:`plif_charge` (MT-SNN Eq 6-8);
- fire: a :class:`~multispike.functional.firing.FiringRule`;
- reset: :func:`hard_reset` (MT-SNN Eq 3), its multiplier from :func:`reset_spike`;
- :func:`step` = charge → fire → amplitude → reset, with explicit state;
- :func:`multistep` loops :func:`step` over the time-first input ``[T, B, ...]``.

Nothing here holds state between calls: the state goes in and comes out. The membrane starts
at ``V[−1] = V_reset`` (0 by default), as in SpikingJelly and Norse.

Example::

    >>> from functools import partial
    >>> import torch
    >>> from multispike.functional import NeuronParams, Ternary, lif_charge, multistep
    >>> params = NeuronParams(v_threshold=0.5, rule=Ternary())
    >>> x = torch.tensor([[0.6], [-0.2], [-0.5]])           # [T=3, B=1]
    >>> out, state = multistep(x, partial(lif_charge, decay=0.25), params)
    >>> out.flatten()                  # u = 0.6 fires, resets; −0.2; 0.25·(−0.2) − 0.5 = −0.55
    tensor([ 1.,  0., -1.])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from multispike.functional.firing import Binary, FiringRule
from multispike.functional.surrogate import Rectangular, Surrogate

#: values of ``NeuronParams.reset_grad`` (see :func:`reset_spike`)
RESET_GRADS = ("surrogate", "spike")

Charge = Callable[[Tensor, Tensor], Tensor]
"""``h = charge(v, x)``: membrane after charging, from membrane ``v`` and input ``x``."""


class NeuronState(NamedTuple):
    """The state one neuron layer carries from step to step: its membrane ``v`` (after reset)."""

    v: Tensor


class NeuronParams(NamedTuple):
    """Everything :func:`step` needs besides the charge function.

    Attributes:
        v_threshold: firing threshold ``V_th`` (membrane units, > 0).
        v_reset: potential the membrane is reset to where the main spike fires.
        rule: the firing rule (binary, MT, ternary, ternary-MT).
        surrogate: surrogate gradient of each Heaviside.
        detach_reset: cut the gradient through the reset (``S`` treated as a constant there).
        amplitude: the learnable layer-wise amplitude ``a`` of Ternary Spike Eq 13-14, or None.
        reset_grad: the gradient of the reset multiplier ``S`` (same values either way), see
            :func:`reset_spike`: ``"surrogate"`` (default) or ``"spike"`` (the Ternary Spike
            code's ``|b|``). Ignored with ``detach_reset``.
    """

    v_threshold: float = 1.0
    v_reset: float = 0.0
    rule: FiringRule = Binary()
    surrogate: Surrogate = Rectangular()
    detach_reset: bool = False
    amplitude: Tensor | None = None
    reset_grad: str = "surrogate"


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


def hard_reset(h: Tensor, s: Tensor, v_reset: float = 0.0) -> Tensor:
    """MT-SNN Eq 3: ``V[t] = H[t]·(1 − S[t]) + V_reset·S[t]``, ``S`` the main spike in {0, 1}."""
    return h * (1 - s) + v_reset * s


def reset_spike(h: Tensor, s: Tensor, params: NeuronParams) -> Tensor:
    """The multiplier ``S`` of :func:`hard_reset`: the main spike ``s`` of ``rule.fire``, its
    values unchanged, with the gradient ``params`` ask for.

    - ``detach_reset``: no gradient (``s`` detached);
    - ``reset_grad="surrogate"``: ``s`` itself, ``dS/dH = g(H − V_th)`` (``− g(−H − V_th)``
      for signed rules), nonzero wherever ``H`` is near a main threshold, fired or not;
    - ``reset_grad="spike"``: ``S = |b_main|`` with ``b_main`` the signed main spike
      (:meth:`~multispike.functional.firing.FiringRule.main_spike`), so
      ``dS/dH = sign(b_main)·db_main/dH``: ``sign(b_main)·(g(H − V_th) + g(−H − V_th))`` for
      signed rules, ``s·g(H − V_th)`` for unsigned ones; zero where no main spike fired. This is
      the reset of the Ternary Spike code, ``u·(1 − |s|)`` through its straight-through spike.

    ``params`` may be any record with the attributes of :class:`NeuronParams` used here
    (``rule``, ``v_threshold``, ``surrogate``, ``detach_reset``, ``reset_grad``).
    """
    if params.detach_reset:
        return s.detach()
    if params.reset_grad == "spike" and h.requires_grad:  # same values: no gradient, no work
        return params.rule.main_spike(h, params.v_threshold, params.surrogate).abs()
    return s


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
        the membrane ``H[t]`` before firing. The reset uses the main spike ``s``, never ``a·b``.
    """
    h = charge(state.v, x)
    b, s = params.rule.fire(h, params.v_threshold, params.surrogate)
    v = hard_reset(h, reset_spike(h, s, params), params.v_reset)
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
