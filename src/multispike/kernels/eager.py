"""The eager fused path: the same forward/backward split as the compiled kernels, in torch ops.

It runs anywhere PyTorch runs (any device, any floating dtype, any firing rule, surrogate and
reset) and is the fallback of the compiled kernels. The forward calls the very functions of
:mod:`multispike.functional` (charge, ``rule.fire``, :func:`reset`), so its spikes are
those of the reference loop; it saves only the membrane ``H[t]``. The backward walks T in
reverse and recomputes each step's fire-and-reset from ``H[t]`` under autograd (so any
surrogate works), then applies the charge's derivatives by hand:
``dL/dX = dL/dH / D``, ``dL/dV[t-1] = A · dL/dH``, ``dL/dτ = −Σ dL/dH·(H − V[t−1])/τ``.

Learned thresholds (``record.learned``) come as the vector of
:func:`~multispike.kernels.record.threshold_vector`; the forward fires with ``V_th = thr[0]`` and
the learned thresholds ``thr[:K]`` exactly as the reference loop does (0-dim tensors), and the
backward takes each step's gradient with respect to them too (the other entries of the vector
get 0: the reference functions derive the reset threshold, ``V_th`` and ``1/V_th`` themselves).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from multispike.functional.dynamics import NeuronParams, if_charge, lif_charge, reset
from multispike.kernels.record import KernelRecord


def charge_fn(record: KernelRecord, tau: Tensor | None) -> Callable[[Tensor, Tensor], Tensor]:
    """``h = charge(v, x)`` with the arithmetic of the reference charge functions."""
    if record.dynamics == "plif":
        assert tau is not None
        if record.v_reset == 0:
            c1 = 1 - 1 / tau  # plif_charge, MT-SNN Eq 8
            return lambda v, x: c1 * v + x / tau
        vr = record.v_reset
        return lambda v, x: v + (x - (v - vr)) / tau  # MT-SNN Eq 6
    if record.dynamics == "lif":
        decay = record.decay
        return lambda v, x: lif_charge(v, x, decay)
    return if_charge


def params_of(record: KernelRecord, thr: Tensor | None):
    """What the reference functions read: ``record`` itself, or for learned thresholds a
    :class:`NeuronParams` with ``V_th = thr[0]`` and the rule's thresholds ``thr[:K]``."""
    if thr is None:
        return record
    k = thr.shape[0] - 3
    parts = thr[:k].unbind()
    return NeuronParams(
        v_threshold=parts[0], v_reset=record.v_reset, rule=record.rule, surrogate=record.surrogate,
        detach_reset=record.detach_reset, reset_grad=record.reset_grad, reset=record.reset,
        thresholds=parts if k > 1 else None)


def _fire_reset(record: KernelRecord, h: Tensor, params=None) -> tuple[Tensor, Tensor, Tensor]:
    p = record if params is None else params
    b, s = record.rule.fire(h, p.v_threshold, record.surrogate, getattr(params, "thresholds", None))
    return b, s, reset(h, b, s, p)  # reset, detach_reset, reset_grad: as the reference loop


@torch.no_grad()
def forward(
    x: Tensor, record: KernelRecord, tau: Tensor | None, amp: Tensor | None, save: bool,
    thr: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """``x`` ``[T, N]`` → ``(out, H or None)``; ``thr``: learned thresholds, or None."""
    charge = charge_fn(record, tau)
    params = None if thr is None else params_of(record, thr)
    out = torch.empty_like(x)
    hs = torch.empty_like(x) if save else None
    v = torch.full_like(x[0], record.v_reset)  # the start state, as the reference loop
    for t in range(x.shape[0]):
        h = charge(v, x[t])
        b, _, v = _fire_reset(record, h, params)
        out[t] = b if amp is None else amp * b
        if hs is not None:
            hs[t] = h
    return out, hs


def backward(
    grad: Tensor,
    hs: Tensor,
    record: KernelRecord,
    tau: Tensor | None,
    amp: Tensor | None,
    need_tau: bool,
    need_amp: bool,
    thr: Tensor | None = None,
    need_thr: bool = False,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Reverse loop over the saved ``H``; returns ``(dL/dX, dL/dτ, dL/da, dL/dthr)``."""
    if record.dynamics == "plif":
        assert tau is not None
        tau = tau.detach()
        a_coef: Tensor | float = 1 - 1 / tau
        d_coef: Tensor | float = tau
    else:
        a_coef = record.decay if record.dynamics == "lif" else 1.0
        d_coef = 1.0
    a_leaf = None if amp is None else amp.detach().requires_grad_(need_amp)
    need_thr = need_thr and thr is not None
    t_leaf = None if thr is None else thr.detach().requires_grad_(need_thr)
    fixed = None if thr is None else params_of(record, t_leaf.detach())
    dthr = torch.zeros_like(thr) if need_thr else None
    gx = torch.empty_like(grad)
    dv = torch.zeros_like(grad[0])
    dtau = torch.zeros((), dtype=grad.dtype, device=grad.device) if need_tau else None
    damp = torch.zeros((), dtype=grad.dtype, device=grad.device) if need_amp else None
    for t in range(grad.shape[0] - 1, -1, -1):
        with torch.enable_grad():
            h = hs[t].detach().requires_grad_(True)
            params = None if t_leaf is None else params_of(record, t_leaf)  # a graph per step
            b, _, v = _fire_reset(record, h, params)
            out = b if a_leaf is None else a_leaf * b
            inputs = [h] + ([a_leaf] if need_amp else []) + ([t_leaf] if need_thr else [])
            grads = torch.autograd.grad([out, v], inputs, [grad[t], dv], allow_unused=True)
        dh = grads[0] if grads[0] is not None else torch.zeros_like(h)
        if need_amp and grads[1] is not None:
            damp = damp + grads[1]
        if need_thr and grads[-1] is not None:
            dthr = dthr + grads[-1]
        if need_tau:
            with torch.no_grad():
                if t > 0:
                    v_prev = _fire_reset(record, hs[t - 1], fixed)[2]
                else:
                    v_prev = torch.full_like(h, record.v_reset)
                dtau = dtau - (dh * (hs[t] - v_prev)).sum() / tau
        with torch.no_grad():
            gx[t] = dh / d_coef
            dv = dh * a_coef
    return gx, dtau, damp, dthr
