"""The compiled kernels as ``torch.library`` custom ops: ``multispike::neuron_forward`` and
``multispike::neuron_backward``.

As custom ops with fake (meta) implementations and a registered autograd formula, a fused
neuron layer is one opaque call for autograd, for ``torch.compile`` (``fullgraph=True`` keeps
it as a single node; inductor does not trace the reference loop) and for CUDA graphs
(``mode="reduce-overhead"``). Every argument is a tensor or a plain number: the layer's
:class:`~multispike.kernels.record.Static` record, unpacked.

- ``neuron_forward(x, w, amp, thr, *static, save_mode, impl, check, where)
  -> (out, saved, bad)``: ``x`` ``[T, N]`` contiguous; ``w`` (PLIF's parameter: the kernels
  compute ``τ = 1 + exp(−w)`` themselves) and ``amp`` the layer's parameters or None; ``thr``
  the learned thresholds' vector
  (:func:`~multispike.kernels.record.threshold_vector`, ``[K + 3]``) where the static record
  says ``learned``, else None; ``saved`` is what the backward needs (``H``, the one-byte code,
  or an empty tensor).
  With ``check``, inputs are checked for NaN/inf in the same pass: the C++ kernel raises
  :class:`~multispike.errors.InputError` at once (host memory, no cost); the Triton kernel
  returns ``bad`` (one int32 on the device, 1 if it saw one) and nothing waits for it: the
  layer ORs it into its ``nonfinite`` flag (see :func:`multispike.kernels.raise_on_nonfinite`);
  outside ``torch.compile`` the kernel ORs into the flag itself.
- ``neuron_backward(grad, saved, w, amp, thr, *static, save_mode, impl, need_w, need_amp,
  need_thr) -> (grad_x, grad_w, grad_amp, grad_thr)``; the parameter gradients have their
  parameter's shape and dtype (``grad_thr`` ``thr``'s, summed over every neuron and step on
  the device), each empty when not asked.

Nothing in either op reads a device value on the host: τ, the amplitude and learned
thresholds stay on the device (the Triton kernels load them; the C++ kernel reads the CPU
tensors through their pointers), constants are cached per device.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from multispike.kernels import cpu, host
from multispike.kernels.record import (
    SAVE_CODE,
    SAVE_H,
    SAVE_NONE,
    STATIC_FIELDS,
    Static,
    static_schema,
)


def kernel_thresholds(thr: Tensor, dtype: torch.dtype) -> Tensor:
    """The learned thresholds' vector as the compiled kernels use it, in the compute dtype
    (float64 for float64, else float32): the thresholds and the reset threshold rounded to
    ``dtype`` first (PyTorch rounds a 0-dim tensor to the other operand's dtype in a
    subtraction or comparison), ``V_th`` and ``1/V_th`` not (a product computes in the compute
    dtype). Torch ops on ``thr``'s device; no host read."""
    t = thr.detach()
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    if t.dtype == dtype and dtype in (torch.float32, torch.float64):
        return t.to(compute).contiguous()
    return torch.cat([t[:-2].to(dtype).to(compute), t[-2:].to(compute)])


def _empty_saved(x: Tensor, save_mode: int) -> Tensor:
    if save_mode == SAVE_H:
        return torch.empty_like(x)
    if save_mode == SAVE_CODE:
        return torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    return x.new_empty(0)


_N_STATIC = len(STATIC_FIELDS)
_LIB = torch.library.Library("multispike", "FRAGMENT")  # noqa: TOR901 - ops defined below
_LIB.define(f"neuron_forward(Tensor x, Tensor? w, Tensor? amp, Tensor? thr, {static_schema()}, "
            "int save_mode, str impl, bool check, str where) -> (Tensor, Tensor, Tensor)")
_LIB.define(f"neuron_backward(Tensor grad, Tensor saved, Tensor? w, Tensor? amp, Tensor? thr, "
            f"{static_schema()}, int save_mode, str impl, bool need_w, bool need_amp, "
            "bool need_thr) -> (Tensor, Tensor, Tensor, Tensor)")


def _split(args: tuple, head: int) -> tuple[tuple, Static, tuple]:
    """``(tensors, static record, options)`` of a custom op's arguments: the ``head`` first
    tensors, the :data:`~multispike.kernels.record.STATIC_FIELDS` block, the call's options."""
    return (args[:head], Static.from_args(args[head:head + _N_STATIC]),
            args[head + _N_STATIC:])


@torch.library.impl("multispike::neuron_forward", "CompositeExplicitAutograd")
def neuron_forward(*args) -> tuple[Tensor, Tensor, Tensor]:
    """``neuron_forward(x, w, amp, thr, *static, save_mode, impl, check, where)``."""
    (x, w, amp, thr), st, (save_mode, impl, check, where) = _split(args, 4)
    return forward_impl(x, w, amp, thr, st, save_mode, impl, check, where)


def forward_impl(x: Tensor, w: Tensor | None, amp: Tensor | None, thr: Tensor | None,
                 st: Static, save_mode: int, impl: str, check: bool, where: str,
                 flag: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The body of :func:`neuron_forward`: ``(out, saved, bad)``. With ``flag`` (Triton,
    ``check``) the kernel ORs its NaN/inf finding straight into it and ``bad`` is empty."""
    kthr = None if thr is None else kernel_thresholds(thr, x.dtype)
    if impl == "cpu":
        args = cpu.make_args(st, x, w, amp, kthr)
        out, saved = cpu.checked_forward(x, args, save_mode, check, where)
        bad = x.new_empty(0, dtype=torch.int32)
    else:
        from multispike.kernels import triton_impl

        if check and flag is not None:
            bad = x.new_empty(0, dtype=torch.int32)
            out, saved = triton_impl.forward(st, x, w, amp, save_mode, flag, kthr)
        else:
            bad = torch.zeros(1 if check else 0, dtype=torch.int32, device=x.device)
            out, saved = triton_impl.forward(st, x, w, amp, save_mode,
                                             bad if check else None, kthr)
    return out, saved if saved is not None else x.new_empty(0), bad


@torch.library.register_fake("multispike::neuron_forward")
def _(*args):
    (x, _w, _amp, _thr), _st, (save_mode, impl, check, _where) = _split(args, 4)
    n = 1 if check and impl != "cpu" else 0
    return torch.empty_like(x), _empty_saved(x, save_mode), x.new_empty(n, dtype=torch.int32)


@torch.library.impl("multispike::neuron_backward", "CompositeExplicitAutograd")
def neuron_backward(*args) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``neuron_backward(grad, saved, w, amp, thr, *static, save_mode, impl, need_w, need_amp,
    need_thr)``."""
    (grad, saved, w, amp, thr), st, (save_mode, impl, need_w, need_amp, need_thr) = _split(
        args, 5)
    gx, g_w, g_amp, g_thr = backward_impl(grad, saved, w, amp, thr, st, save_mode, impl,
                                          need_w, need_amp, need_thr)
    return (gx, g_w if g_w is not None else grad.new_empty(0),
            g_amp if g_amp is not None else grad.new_empty(0),
            g_thr if g_thr is not None else grad.new_empty(0))


def backward_impl(grad: Tensor, saved: Tensor, w: Tensor | None, amp: Tensor | None,
                  thr: Tensor | None, st: Static, save_mode: int, impl: str, need_w: bool,
                  need_amp: bool, need_thr: bool = False,
                  ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """The body of :func:`neuron_backward`; gradients not asked for are ``None``."""
    need_thr = need_thr and thr is not None
    kthr = None if thr is None else kernel_thresholds(thr, grad.dtype)
    if impl == "cpu":
        args = cpu.make_args(st, grad, w, amp, kthr)
        args.save_mode = save_mode
        args.need_tau, args.need_amp = int(need_w), int(need_amp)
        gx, s_tau, s_amp, s_thr = cpu.backward(grad, saved, args,
                                               kthr.shape[0] if need_thr else 0)
        g_w = None
        if need_w:  # dL/dw = dL/dτ · dτ/dw, exp(−w) as the forward took it
            e = host.plif_scalars(w.item(), grad.dtype)[3]
            g_w = torch.tensor(host.grad_w(s_tau, e), dtype=w.dtype)
        g_amp = torch.tensor(s_amp, dtype=amp.dtype) if need_amp else None
        g_thr = torch.tensor(s_thr, dtype=thr.dtype) if need_thr else None
        return gx, g_w, g_amp, g_thr
    from multispike.kernels import triton_impl

    gx, g_w, g_amp, g_thr = triton_impl.backward(st, grad, saved, save_mode, w, amp,
                                                   need_w, need_amp, kthr, need_thr)
    return gx, g_w, g_amp, (g_thr.to(thr.dtype) if g_thr is not None else None)


@torch.library.register_fake("multispike::neuron_backward")
def _(*args):
    (grad, _saved, w, amp, thr), _st, (_mode, _impl, need_w, need_amp, need_thr) = _split(
        args, 5)
    g_w = torch.empty_like(w) if need_w and w is not None else grad.new_empty(0)
    g_amp = torch.empty_like(amp) if need_amp and amp is not None else grad.new_empty(0)
    g_thr = torch.empty_like(thr) if need_thr and thr is not None else grad.new_empty(0)
    return torch.empty_like(grad), g_w, g_amp, g_thr


def _setup_context(ctx, inputs, output) -> None:
    x, w, amp, thr = inputs[:4]
    ctx.static = inputs[4:4 + _N_STATIC]
    ctx.save_mode, ctx.impl = inputs[4 + _N_STATIC], inputs[5 + _N_STATIC]
    ctx.has_w, ctx.has_amp, ctx.has_thr = w is not None, amp is not None, thr is not None
    saved = output[1]
    ctx.save_for_backward(saved, w, amp, thr)


def _backward(ctx, grad_out: Tensor, _grad_saved: Tensor, _grad_bad: Tensor):
    saved, w, amp, thr = ctx.saved_tensors
    need_w = ctx.has_w and ctx.needs_input_grad[1]
    need_amp = ctx.has_amp and ctx.needs_input_grad[2]
    need_thr = ctx.has_thr and ctx.needs_input_grad[3]
    gx, g_w, g_amp, g_thr = torch.ops.multispike.neuron_backward(
        grad_out.contiguous(), saved, w, amp, thr, *ctx.static, ctx.save_mode, ctx.impl,
        need_w, need_amp, need_thr)
    rest = [None] * (_N_STATIC + 4)  # the static record, save_mode, impl, check, where
    return (gx, g_w if need_w else None, g_amp if need_amp else None,
            g_thr if need_thr else None, *rest)


torch.library.register_autograd("multispike::neuron_forward", _backward,
                                setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """Outside ``torch.compile``: the same implementations through a plain autograd Function,
    without the custom-op dispatcher's per-call cost (argument defaults, schema checks)."""

    @staticmethod
    def forward(ctx, x, w, amp, thr, st, save_mode, impl, check, where, flag):
        out, saved, _ = forward_impl(x, w, amp, thr, st, save_mode, impl, check, where, flag)
        ctx.st, ctx.save_mode, ctx.impl = st, save_mode, impl
        ctx.has_w, ctx.has_amp, ctx.has_thr = w is not None, amp is not None, thr is not None
        ctx.save_for_backward(saved, w, amp, thr)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        saved, w, amp, thr = ctx.saved_tensors
        need_w = ctx.has_w and ctx.needs_input_grad[1]
        need_amp = ctx.has_amp and ctx.needs_input_grad[2]
        need_thr = ctx.has_thr and ctx.needs_input_grad[3]
        gx, g_w, g_amp, g_thr = backward_impl(grad_out.contiguous(), saved, w, amp, thr,
                                                ctx.st, ctx.save_mode, ctx.impl, need_w,
                                                need_amp, need_thr)
        return gx, g_w, g_amp, g_thr, None, None, None, None, None, None


def forward(
    x: Tensor, st: Static, w: Tensor | None, amp: Tensor | None, thr: Tensor | None = None,
    *, save_mode: int, impl: str, flag: Tensor | None = None, check: bool = False,
    where: str = "neuron",
) -> Tensor:
    """Spikes of the compiled kernel ``impl`` for ``x`` ``[T, N]`` contiguous.

    Inside ``torch.compile`` this is the custom op :func:`neuron_forward` (one node in the
    graph); in eager mode the same implementation runs through a lighter autograd Function.
    With ``check`` on the Triton path, the kernel's NaN/inf finding is ORed into ``flag`` (on
    the device, no sync).
    """
    if torch.compiler.is_compiling():
        out, _, bad = torch.ops.multispike.neuron_forward(
            x, w, amp, thr, *st.args(), save_mode, impl, check, where)
        if flag is not None and bad.numel():
            flag.bitwise_or_(bad.view(()))
        return out
    flag = flag if check else None  # the kernel ORs into it: no extra output, no extra op
    if save_mode == SAVE_NONE:  # no gradient wanted: no autograd node at all
        out, _, _ = forward_impl(x, w, amp, thr, st, save_mode, impl, check, where, flag)
        return out
    return _Eager.apply(x, w, amp, thr, st, save_mode, impl, check, where, flag)


__all__ = ["SAVE_NONE", "forward", "neuron_backward", "neuron_forward"]
