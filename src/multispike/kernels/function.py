"""The fused multi-step autograd Function and the choice of implementation.

One :class:`torch.autograd.Function` serves every (dynamics, rule, surrogate) family: the
static part travels in a :class:`Plan`, the learnable scalars (``τ`` of PLIF, the amplitude
``a``) are inputs so that autograd carries their gradients on to ``w`` and ``a``.
Implementations: ``"cpu"`` (csrc/multistep.cpp), ``"triton"`` (CUDA), ``"eager"`` (torch
ops, anywhere).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from multispike.kernels import cpu, eager
from multispike.kernels.compact import tag
from multispike.kernels.spec import SAVE_CODE, SAVE_H, SAVE_NONE, KernelSpec

IMPLS = ("cpu", "triton", "eager")


@dataclass(frozen=True)
class Plan:
    """A spec and the implementation that runs it."""

    spec: KernelSpec
    impl: str


def _cast(value: float, dtype: torch.dtype) -> float:
    """``value`` rounded to ``dtype``, as PyTorch rounds a Python scalar meeting a tensor."""
    return torch.tensor(value, dtype=dtype).item()


@functools.lru_cache(maxsize=256)
def _static_args(spec: KernelSpec, dtype: torch.dtype) -> cpu.Args:
    a = cpu.Args()
    a.dtype = cpu.DTYPES[dtype]
    # charge form of csrc/multistep.cpp: 0 A*v + x, 1 A*v + x/D, 2 PLIF with V_reset != 0
    a.form = 0 if spec.dynamics != "plif" else (1 if spec.v_reset == 0 else 2)
    a.n_thr = len(spec.thresholds)
    for k, th in enumerate(spec.thresholds):
        a.thr[k] = _cast(th, dtype)
    a.is_signed = int(spec.signed)
    a.sg_kind = spec.sg_kind if spec.sg_kind is not None else -1
    a.detach = int(spec.detach_reset)
    a.vr = _cast(spec.v_reset, dtype)
    width = spec.sg_width
    a.sg_width = _cast(width, dtype)
    a.sg_half = _cast(width / 2, dtype)
    a.sg_k = _cast(math.pi / 2 * width, dtype)
    a.sg_c = _cast(width / 2, dtype)
    a.A, a.D, a.tau, a.amp = 1.0, 1.0, 1.0, 1.0
    if spec.dynamics == "lif":
        a.A = _cast(spec.decay, dtype)
    return a


def _cpu_args(spec: KernelSpec, x: Tensor, tau: Tensor | None, amp: Tensor | None) -> cpu.Args:
    # a fresh struct per call (the cached one stays read-only)
    a = cpu.Args.from_buffer_copy(_static_args(spec, x.dtype))
    a.T, a.N = x.shape[0], x.shape[1]
    if tau is not None:
        a.tau = tau.item()
        a.A = (1 - 1 / tau).item()  # the reference's (1 - 1/tau), rounded in x's dtype
        a.D = a.tau
    if amp is not None:
        a.has_amp = 1
        a.amp = amp.item()
    return a


def save_mode_for(plan: Plan, need_tau: bool) -> int:
    if plan.impl != "eager" and plan.spec.code_ok(need_tau):
        return SAVE_CODE
    return SAVE_H


def run_forward(
    plan: Plan, x: Tensor, tau: Tensor | None, amp: Tensor | None, save_mode: int
) -> tuple[Tensor, Tensor | None, object]:
    """``x`` ``[T, N]`` contiguous → ``(out, saved, args)`` (args: what the backward needs)."""
    if plan.impl == "cpu":
        args = _cpu_args(plan.spec, x, tau, amp)
        args.save_mode = save_mode
        out, saved = cpu.forward(x, args)
        return out, saved, args
    if plan.impl == "triton":
        from multispike.kernels import triton_impl

        out, saved, args = triton_impl.forward(plan.spec, x, tau, amp, save_mode)
        return out, saved, args
    out, saved = eager.forward(x, plan.spec, tau, amp, save_mode != SAVE_NONE)
    return out, saved, None


class FusedMultistep(torch.autograd.Function):
    """``out = FusedMultistep.apply(x_seq, tau, amp, plan)``; ``x_seq`` ``[T, ...]``.

    ``tau`` (PLIF) and ``amp`` are 0-dim tensors in ``x_seq``'s dtype, or ``None``.
    """

    @staticmethod
    def forward(ctx, x_seq: Tensor, tau: Tensor | None, amp: Tensor | None, plan: Plan):
        shape = x_seq.shape
        x = x_seq.reshape(shape[0], math.prod(shape[1:])).contiguous()
        need_tau = tau is not None and ctx.needs_input_grad[1]
        need_amp = amp is not None and ctx.needs_input_grad[2]
        mode = save_mode_for(plan, need_tau)
        out, saved, args = run_forward(plan, x, tau, amp, mode)
        ctx.plan, ctx.args, ctx.shape = plan, args, shape
        ctx.need_tau, ctx.need_amp = need_tau, need_amp
        ctx.has_tau, ctx.has_amp = tau is not None, amp is not None
        to_save = [saved]
        if plan.impl != "cpu":  # the CPU kernel took tau and amp as numbers already
            to_save += [t for t in (tau, amp) if t is not None]
        ctx.save_for_backward(*to_save)
        tag(out, amp)  # spikes: compact_spikes() may store them as int8 where they are saved
        return out.view(shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        plan: Plan = ctx.plan
        shape = ctx.shape
        grad = grad_out.reshape(shape[0], math.prod(shape[1:])).contiguous()
        saved, *rest = ctx.saved_tensors
        g_tau = g_amp = None
        if plan.impl == "cpu":
            args = ctx.args
            args.need_tau, args.need_amp = int(ctx.need_tau), int(ctx.need_amp)
            gx, s_tau, s_amp = cpu.backward(grad, saved, args)
            if ctx.need_tau:
                g_tau = torch.tensor(s_tau, dtype=grad.dtype)
            if ctx.need_amp:
                g_amp = torch.tensor(s_amp, dtype=grad.dtype)
        else:
            tau = rest.pop(0) if ctx.has_tau else None
            amp = rest.pop(0) if ctx.has_amp else None
            if plan.impl == "triton":
                from multispike.kernels import triton_impl

                gx, g_tau, g_amp = triton_impl.backward(
                    plan.spec, grad, saved, ctx.args, ctx.need_tau, ctx.need_amp
                )
            else:
                gx, g_tau, g_amp = eager.backward(
                    grad, saved, plan.spec, tau, amp, ctx.need_tau, ctx.need_amp
                )
        return gx.view(shape), g_tau, g_amp, None


def fused(
    x_seq: Tensor, plan: Plan, tau: Tensor | None, amp: Tensor | None
) -> Tensor:
    """Run a plan: through autograd when a gradient is wanted, else forward only."""
    if x_seq.numel() == 0 and plan.impl != "eager":
        plan = Plan(plan.spec, "eager")  # nothing to launch a kernel for
    wants_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x_seq, tau, amp)
    )
    if wants_grad:
        return FusedMultistep.apply(x_seq, tau, amp, plan)
    shape = x_seq.shape
    x = x_seq.reshape(shape[0], math.prod(shape[1:])).contiguous()
    out, _, _ = run_forward(plan, x, tau, amp, SAVE_NONE)
    return out.view(shape)
