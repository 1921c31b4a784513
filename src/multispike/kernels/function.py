"""Running a fused neuron layer: the custom ops for the compiled kernels, an autograd Function
for the eager fused path.

The compiled kernels (``"cpu"``: csrc/multistep.cpp, ``"triton"``: CUDA) run as the custom ops
of :mod:`multispike.kernels.custom_ops`, so ``torch.compile`` and CUDA graphs see one call per
layer.
The eager fused path (``"eager"``: torch ops, any rule, surrogate, device) keeps the static part
of the layer in a :class:`Plan` that travels through :class:`FusedMultistep`; the learnable
scalars (``τ`` of PLIF, the amplitude ``a``) and learned thresholds (the vector of
:func:`~multispike.kernels.record.threshold_vector`) are inputs so that autograd carries their
gradients on to ``w``, ``a`` and ``threshold_rho``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from multispike.functional.dynamics import plif_tau
from multispike.kernels import custom_ops, eager
from multispike.kernels.compact import tag
from multispike.kernels.record import SAVE_CODE, SAVE_H, SAVE_NONE, KernelRecord

IMPLS = ("cpu", "triton", "eager")


@dataclass(frozen=True)
class Plan:
    """A record and the implementation that runs it."""

    record: KernelRecord
    impl: str


def save_mode_for(plan: Plan, need_tau: bool) -> int:
    if plan.impl != "eager" and plan.record.code_ok(need_tau):
        return SAVE_CODE
    return SAVE_H


def spike_range(record: KernelRecord) -> tuple[int, int]:
    """Smallest and largest spike value ``b`` the layer's rule emits."""
    k = len(record.thresholds)
    return (-k if record.signed else 0), k


class FusedMultistep(torch.autograd.Function):
    """The eager fused path: ``out = FusedMultistep.apply(x_seq, tau, amp, thr, plan)``.

    ``x_seq`` ``[T, ...]``; ``tau`` (PLIF) and ``amp`` are 0-dim tensors in ``x_seq``'s dtype,
    or ``None``; ``thr`` the learned thresholds' vector, or ``None``.
    """

    @staticmethod
    def forward(ctx, x_seq: Tensor, tau: Tensor | None, amp: Tensor | None,
                thr: Tensor | None, plan: Plan):
        shape = x_seq.shape
        x = x_seq.reshape(shape[0], math.prod(shape[1:])).contiguous()
        out, saved = eager.forward(x, plan.record, tau, amp, True, thr)
        ctx.plan, ctx.shape = plan, shape
        ctx.need_tau = tau is not None and ctx.needs_input_grad[1]
        ctx.need_amp = amp is not None and ctx.needs_input_grad[2]
        ctx.need_thr = thr is not None and ctx.needs_input_grad[3]
        ctx.has_tau, ctx.has_amp, ctx.has_thr = tau is not None, amp is not None, thr is not None
        ctx.save_for_backward(saved, *[t for t in (tau, amp, thr) if t is not None])
        tag(out, amp, *spike_range(plan.record))
        return out.view(shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        shape = ctx.shape
        grad = grad_out.reshape(shape[0], math.prod(shape[1:])).contiguous()
        saved, *rest = ctx.saved_tensors
        tau = rest.pop(0) if ctx.has_tau else None
        amp = rest.pop(0) if ctx.has_amp else None
        thr = rest.pop(0) if ctx.has_thr else None
        gx, g_tau, g_amp, g_thr = eager.backward(
            grad, saved, ctx.plan.record, tau, amp, ctx.need_tau, ctx.need_amp, thr, ctx.need_thr)
        return gx.view(shape), g_tau, g_amp, g_thr, None


def fused(
    x_seq: Tensor,
    plan: Plan,
    w: Tensor | None,
    amp: Tensor | None,
    thr: Tensor | None = None,
    *,
    flag: Tensor | None = None,
    check: bool = False,
    where: str = "neuron",
) -> Tensor:
    """Run a plan on ``x_seq`` ``[T, ...]``, through autograd when a gradient is wanted.

    ``w`` and ``amp``: the layer's parameters (PLIF's ``w``, the amplitude) or None; the
    compiled kernels read them as they are, the eager path computes ``τ = 1 + exp(−w)`` and
    casts to the input's dtype with torch ops. ``check`` (compiled kernels only): look for
    NaN/inf in the kernel's own pass over ``x``; the C++ kernel raises at once, the Triton
    kernel sets ``flag``. ``thr``: the learned thresholds' vector
    (:func:`~multispike.kernels.record.threshold_vector`) where ``plan.record.learned``, else None.
    """
    if x_seq.numel() == 0 and plan.impl != "eager":
        plan = Plan(plan.record, "eager")  # nothing to launch a kernel for
    wants_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x_seq, w, amp, thr)
    )
    shape = x_seq.shape
    if plan.impl == "eager":
        tau = None if w is None else plif_tau(w.to(x_seq.dtype))
        amp = None if amp is None else amp.to(x_seq.dtype)
        if wants_grad:
            return FusedMultistep.apply(x_seq, tau, amp, thr, plan)
        x = x_seq.reshape(shape[0], math.prod(shape[1:])).contiguous()
        out, _ = eager.forward(x, plan.record, tau, amp, False, thr)
        return out.view(shape)
    need_w = wants_grad and w is not None and w.requires_grad
    mode = save_mode_for(plan, need_w) if wants_grad else SAVE_NONE
    x = x_seq.reshape(shape[0], math.prod(shape[1:])).contiguous()
    out = custom_ops.forward(x, plan.record.static, w, amp, thr, save_mode=mode, impl=plan.impl,
                      flag=flag, check=check, where=where)
    if wants_grad and not torch.compiler.is_compiling():
        tag(out, amp, *spike_range(plan.record))  # compact_spikes() may pack them where saved
    return out.view(shape)
