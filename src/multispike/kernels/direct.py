"""Eager calls of the C++ kernel, straight from the layer's parameters to one call per
direction.

A :class:`CpuLauncher` is prepared once per layer, dtype and set of options (the static
arguments, the initial thresholds) and cached on the layer (see
:func:`multispike.kernels.dispatch`). Each call reads the layer's learnable numbers on the
host (``w`` of PLIF, the amplitude ``a``, learned thresholds' ``ρ``: CPU tensors, so a read is
free) and hands them to the kernel as plain numbers (:mod:`multispike.kernels.host`); the
backward returns their gradients directly. No torch op runs besides the kernel's own output
buffers: ``out`` and what the backward keeps, ``grad_x``, and one small tensor per parameter
gradient.

>>> import torch
>>> from multispike.neurons import PLIFNode
>>> node = PLIFNode(firing="mt")
>>> x = torch.rand(4, 2, 8, requires_grad=True)
>>> node(x).sum().backward()
>>> node.w.grad is not None and x.grad.shape == x.shape
True
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

import torch
from torch import Tensor

from multispike.functional.firing import initial_thresholds
from multispike.kernels import cpu, host
from multispike.kernels.compact import bits_for, packed_codes, tag
from multispike.kernels.function import Plan, save_mode_for, spike_range
from multispike.kernels.record import SAVE_NONE, KernelRecord


@lru_cache(maxsize=512)
def _initial(rule, v_threshold: float) -> tuple[tuple[float, ...], int]:
    return initial_thresholds(rule, v_threshold)


def _differentiable_once() -> None:
    """Refuse a backward that builds a graph (``create_graph=True``): the kernels' gradients
    have none, and higher-order gradients would silently be zero."""
    if torch.is_grad_enabled():
        raise RuntimeError("the fused neuron kernels are differentiable once; use "
                           "backend='torch' for higher-order gradients")


class CpuLauncher:
    """The C++ kernel for one layer kind and input dtype, with everything static prepared."""

    __slots__ = ("record", "dtype", "static", "initial", "main", "where", "plif", "learned",
                 "modes", "spikes", "bits")

    def __init__(self, record: KernelRecord, dtype: torch.dtype, where: str) -> None:
        self.record, self.dtype, self.where = record, dtype, where
        self.static = cpu._static_args(record.static, dtype)
        self.initial, self.main = _initial(record.rule, record.v_threshold)
        self.plif, self.learned = record.dynamics == "plif", record.learned
        #: what the forward saves for the backward, without and with a gradient for ``w``
        self.modes = tuple(save_mode_for(Plan(record, "cpu"), need_w) for need_w in (False, True))
        #: the smallest and largest spike value, and the bits of their packed codes (for
        #: compact_spikes)
        self.spikes = spike_range(record)
        self.bits = bits_for(*self.spikes)

    def __reduce__(self):  # copies and pickles of a layer rebuild it (the struct holds pointers)
        return CpuLauncher, (self.record, self.dtype, self.where)

    def __deepcopy__(self, memo) -> CpuLauncher:
        return self  # read-only once built

    def args(self, x: Tensor, w: Tensor | None, amp: Tensor | None, rho: Tensor | None
             ) -> tuple[cpu.Args, float, host.Thresholds | None]:
        """The kernel's arguments for contiguous ``x`` ``[T, ...]``, ``exp(−w)`` and the
        thresholds."""
        a = cpu.Args.from_buffer_copy(self.static)
        a.T = x.shape[0]
        a.N = x.numel() // a.T
        e = 0.0
        if w is not None:
            a.A, a.D, a.tau, e = host.plif_scalars(w.item(), self.dtype)
        if amp is not None:
            a.has_amp = 1
            a.amp = host.rounder(self.dtype)(amp.item())
        thr = None
        if rho is not None:
            thr = host.Thresholds(self.record, rho.tolist(), rho.dtype, self.dtype, self.initial,
                                  self.main)
            buf = (ctypes.c_double * len(thr.vector))(*thr.vector)
            a.lthr = ctypes.addressof(buf)
            a._keep = buf
        return a, e, thr

    def forward(self, a: cpu.Args, x: Tensor, save_mode: int, check: bool
                ) -> tuple[Tensor, Tensor | None]:
        return cpu.checked_forward(x, a, save_mode, check, self.where)

    def __call__(self, x_seq: Tensor, w: Tensor | None, amp: Tensor | None,
                 rho: Tensor | None, save_mode: int, check: bool, pack: bool = False
                 ) -> Tensor:
        """Spikes for ``x_seq`` ``[T, B, ...]`` (any shape with T first; the kernel walks it as
        ``[T, N]``), through autograd unless ``save_mode`` is ``SAVE_NONE``; ``pack``: write
        the packed spike codes too and tag the output with them (inside ``compact_spikes``)."""
        if save_mode != SAVE_NONE:
            return _CpuNeuron.apply(x_seq, w, amp, rho, (self, save_mode, check, pack))
        x = x_seq.contiguous()
        a, _, _ = self.args(x, w, amp, rho)
        return self.forward(a, x, save_mode, check)[0]


class _CpuNeuron(torch.autograd.Function):
    """``out = _CpuNeuron.apply(x, w, amp, rho, (launcher, save_mode, check, pack))``: ``x``
    ``[T, B, ...]``; ``w``, ``amp``, ``rho`` the layer's parameters (or None). One autograd
    node: no reshape or view around it."""

    @staticmethod
    def forward(ctx, x, w, amp, rho, call):
        launcher, save_mode, check, pack = call
        x = x.contiguous()
        a, e, thr = launcher.args(x, w, amp, rho)
        codes = None
        if pack:  # the kernel writes the packed codes beside the spikes
            codes = packed_codes(launcher.bits, a.T, a.N, x.device)
            a.pack, a.pack_bits, a.pack_lo = codes.data_ptr(), launcher.bits, launcher.spikes[0]
        out, saved = launcher.forward(a, x, save_mode, check)
        if codes is not None:
            tag(out, a.amp if a.has_amp else None, *launcher.spikes, codes)
        ctx.a, ctx.e, ctx.thr = a, e, thr
        #: the parameters' dtypes (None for those the layer lacks), or None without any
        ctx.params = None if w is None and amp is None and rho is None else tuple(
            None if p is None else p.dtype for p in (w, amp, rho))
        ctx.save_for_backward(saved)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        _differentiable_once()
        (saved,) = ctx.saved_tensors
        a, params = ctx.a, ctx.params
        if params is None:  # no parameters: the common case, nothing else to work out
            gx, _, _, _ = cpu.backward(grad_out.contiguous(), saved, a)
            return gx, None, None, None, None
        needs = ctx.needs_input_grad
        need_w, need_amp, need_rho = (needs[i] and params[i - 1] is not None for i in (1, 2, 3))
        a.need_tau, a.need_amp = int(need_w), int(need_amp)
        n_thr = len(ctx.thr.vector) if need_rho else 0
        gx, g_tau, g_amp, g_vec = cpu.backward(grad_out.contiguous(), saved, a, n_thr)
        w_dt, amp_dt, rho_dt = params
        g_w = torch.scalar_tensor(host.grad_w(g_tau, ctx.e), dtype=w_dt) if need_w else None
        g_a = torch.scalar_tensor(g_amp, dtype=amp_dt) if need_amp else None
        g_rho = torch.tensor(ctx.thr.grad_rho(g_vec), dtype=rho_dt) if need_rho else None
        return gx, g_w, g_a, g_rho, None


class TritonLauncher:
    """The Triton kernels for one layer kind and input dtype, with everything static prepared:
    one launch per direction (two where the thresholds are learned, or a parameter wants a
    gradient: a single-program launch each), no other device op but the output buffers.
    The kernels read PLIF's ``w``, the amplitude and learned thresholds' ``ρ`` on the device
    (:mod:`multispike.kernels.triton_impl`)."""

    __slots__ = ("record", "dtype", "where", "plif", "learned", "plan", "modes", "spikes",
                 "bits", "impl")

    def __init__(self, record: KernelRecord, dtype: torch.dtype, where: str) -> None:
        from multispike.kernels import triton_impl

        #: the module (imported here, not with the package: it imports Triton), kept so
        #: that a call looks nothing up
        self.impl = triton_impl
        self.record, self.dtype, self.where = record, dtype, where
        self.plif, self.learned = record.dynamics == "plif", record.learned
        self.plan = triton_impl.learned_plan(record) if record.learned else None
        self.modes = tuple(save_mode_for(Plan(record, "triton"), need_w)
                           for need_w in (False, True))
        self.spikes = spike_range(record)
        self.bits = bits_for(*self.spikes)

    def __reduce__(self):  # copies and pickles of a layer rebuild it (it holds a module)
        return TritonLauncher, (self.record, self.dtype, self.where)

    def __deepcopy__(self, memo) -> TritonLauncher:
        return self  # read-only once built

    def __call__(self, x_seq: Tensor, w: Tensor | None, amp: Tensor | None,
                 rho: Tensor | None, save_mode: int, flag: Tensor | None, pack: bool = False
                 ) -> Tensor:
        """Spikes for ``x_seq`` ``[T, B, ...]``; ``flag``: the layer's NaN/inf flag, or None
        (no input check); ``pack``: as :meth:`CpuLauncher.__call__`."""
        if save_mode != SAVE_NONE:
            return _TritonNeuron.apply(x_seq, w, amp, rho, (self, save_mode, flag, pack))
        x = x_seq.contiguous()
        return self.impl.forward(self.record.static, x, w, amp, save_mode, flag,
                                 c=self.constants(x, rho))[0]

    def constants(self, x: Tensor, rho: Tensor | None) -> Tensor | None:
        """The kernels' constants with the thresholds learned from ``rho`` (one launch), or
        None for a layer whose thresholds are fixed (its cached constants serve)."""
        if rho is None:
            return None
        # rho as it is: the kernel only reads it (the callers run without a graph)
        return self.impl.learned_consts(self.record.static, self.plan, x.dtype, rho)


class _TritonNeuron(torch.autograd.Function):
    """``out = _TritonNeuron.apply(x, w, amp, rho, (launcher, save_mode, flag, pack))``: one
    autograd node, the kernels reading the parameters on the device."""

    @staticmethod
    def forward(ctx, x, w, amp, rho, call):
        launcher, save_mode, flag, pack = call
        x = x.contiguous()
        c = launcher.constants(x, rho)
        packed = None
        if pack:  # the kernel writes the packed codes beside the spikes
            codes = packed_codes(launcher.bits, x.shape[0], x.numel() // x.shape[0], x.device)
            packed = (codes, launcher.bits, launcher.spikes[0])
        out, saved = launcher.impl.forward(launcher.record.static, x, w, amp, save_mode, flag,
                                           c=c, pack=packed)
        if packed is not None:
            tag(out, amp, *launcher.spikes, packed[0])
        ctx.launcher, ctx.save_mode = launcher, save_mode
        ctx.has = (w is not None, amp is not None, rho is not None)
        ctx.save_for_backward(saved, w, amp, rho, c)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        _differentiable_once()
        saved, w, amp, rho, c = ctx.saved_tensors
        needs = ctx.needs_input_grad
        need_w, need_amp, need_rho = (needs[i] and ctx.has[i - 1] for i in (1, 2, 3))
        launcher = ctx.launcher
        gx, g_w, g_amp, g_rho = launcher.impl.backward(
            launcher.record.static, grad_out.contiguous(), saved, ctx.save_mode, w, amp, need_w,
            need_amp, need_thr=need_rho, c=c, rho=rho, plan=launcher.plan)
        return gx, g_w, g_amp, g_rho, None
