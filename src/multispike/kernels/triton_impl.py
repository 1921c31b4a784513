"""The CUDA kernels, in Triton: one program per block of neurons looping over T.

Forward: each program loads ``BLOCK`` neurons' inputs step by step, keeps the membrane in
registers, writes the spikes and what the backward needs (``H`` or the one-byte code, as on
the CPU: see ``csrc/multistep.cpp`` for the maths). Backward: the reverse loop over T per
block, carrying ``dL/dV``; the learnable scalars' gradients are summed per program and then
over programs in a fixed order (deterministic).

Learned thresholds: the constants tensor is built per call with the layer's current
thresholds (torch ops on the device, :func:`consts_with`), and with ``LEARN`` the backward
sums their gradient (see ``csrc/multistep.cpp``) per program, step by step, into ``KP``
extra entries of its partial sums.

Specialisation: every option that selects code (charge form, K, sign, save mode, surrogate
kind, reset: ``SOFT``/``BYVAL``, ``INTEGER``, ``LEARN``, ``NEED_TAU``, ...) is a
``tl.constexpr``, so each configuration compiles to its own kernel without runtime branches
(the C++ kernel's template instances, see ``csrc/multistep.cpp``); numbers (thresholds,
``1/V_th``, the integer rules' bounds, ``keep``) are arguments or device constants, so a new
``levels`` or threshold value reuses the compiled kernel.

Exactness: the launch sets ``enable_fp_fusion=False`` (no FMA contraction, like PyTorch's
separate eager kernels), divisions use ``div_rn`` (IEEE), and for bfloat16 every forward op
is rounded to nearest even by bit arithmetic, as PyTorch rounds each eager op's result.

Used only when CUDA and Triton are both present (:func:`available`). The same kernels run on
CPU tensors in Triton's interpreter (``TRITON_INTERPRET=1``), which is how tests check them
without a GPU.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from multispike.kernels.record import SAVE_CODE, SAVE_H, SAVE_NONE, Static
from multispike.kernels.record import cast_scalar as _cast

try:  # pragma: no cover - depends on the machine
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice

    HAVE_TRITON = True
except Exception:  # noqa: BLE001 - ImportError, or a broken install
    triton = None
    tl = None
    libdevice = None
    HAVE_TRITON = False

BLOCK = 1024


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Triton importable and a CUDA device present (or Triton's CPU interpreter switched on)."""
    if not HAVE_TRITON:
        return False
    return torch.cuda.is_available() or interpreting()


_ROUND = {torch.float32: 0, torch.float64: 0, torch.bfloat16: 1, torch.float16: 2}


if HAVE_TRITON:

    @triton.jit
    def _rnd(x, ROUND: tl.constexpr):
        """Round float32 ``x`` to the storage dtype (nearest even) and back; identity if none."""
        if ROUND == 1:
            u = x.to(tl.uint32, bitcast=True)
            u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
            r = u.to(tl.float32, bitcast=True)
            return tl.where(x != x, x, r)
        elif ROUND == 2:
            return x.to(tl.float16).to(tl.float32)
        else:
            return x

    @triton.jit
    def _div(a, b, IS64: tl.constexpr):
        """IEEE division (Triton's float32 ``/`` is approximate; float64 ``/`` is exact)."""
        if IS64:
            return a / b
        else:
            return tl.math.div_rn(a, b)

    @triton.jit
    def _sg(d, KIND: tl.constexpr, half, alpha, k, c):
        if KIND <= 1:
            return tl.where(tl.abs(d) <= half, 1.0, 0.0).to(d.dtype)
        elif KIND == 2:
            e = 1.0 / (1.0 + tl.exp(-alpha * d))
            return alpha * e * (1.0 - e)
        else:
            z = k * d
            return c / (1.0 + z * z)

    @triton.jit
    def _round_even(c):
        """``torch.round`` (half to even) of ``c``, whose fraction ``c − floor(c)`` is exact."""
        f = tl.floor(c)
        d = c - f
        odd = (f - 2.0 * tl.floor(f * 0.5)) != 0.0
        return f + tl.where((d > 0.5) | ((d == 0.5) & odd), 1.0, 0.0).to(c.dtype)

    @triton.jit
    def _integer(h, thr_ptr, K: tl.constexpr, ROUND: tl.constexpr):
        """Integer rules: ``(b, u, inv, lo, hi)`` with ``u = H·inv``, ``b = round(clamp(u))``."""
        inv = tl.load(thr_ptr + K + 3)
        lo = tl.load(thr_ptr + K + 4)
        hi = tl.load(thr_ptr + K + 5)
        u = _rnd(h * inv, ROUND)
        c = tl.where(u < lo, lo, tl.where(u > hi, hi, u))
        return _round_even(c), u, inv, lo, hi

    @triton.jit
    def _exp(x, INTERP: tl.constexpr):
        """``exp``: CUDA's (libdevice, as PyTorch's CUDA ``exp``; Triton's ``tl.exp`` is an
        approximation in float32), or the interpreter's."""
        if INTERP:
            return tl.exp(x)
        else:
            return libdevice.exp(x)

    @triton.jit
    def _plif_tau(w_ptr, dtype_like, ROUND: tl.constexpr, INTERP: tl.constexpr):
        """``(τ, e)``: ``e = exp(−w)``, ``τ = 1 + e`` (MT-SNN Eq 7) from PLIF's ``w``, each op
        rounded to the storage dtype as the reference rounds ``1 + exp(−w.to(dtype))``."""
        w = _rnd(tl.load(w_ptr).to(dtype_like.dtype), ROUND)
        e = _rnd(_exp(-w, INTERP), ROUND)
        return _rnd(1.0 + e, ROUND), e

    @triton.jit
    def _coefs(w_ptr, amp_ptr, const_ptr, FORM: tl.constexpr, HAS_AMP: tl.constexpr,
               ROUND: tl.constexpr, IS64: tl.constexpr, INTERP: tl.constexpr):
        """``(A, D, tau, amp)`` of the charge, read on the device (no host round trip).

        PLIF: ``τ = 1 + exp(−w)`` from the layer's ``w``, ``A = 1 − 1/τ`` rounded as the
        reference rounds it in the input's dtype, ``D = τ``; IF/LIF: ``A`` = the decay
        (``const[0]``), ``D = 1``.
        """
        decay = tl.load(const_ptr + 0)
        one = decay * 0.0 + 1.0
        if FORM == 0:
            A = decay
            tau = one
        else:
            tau, _e = _plif_tau(w_ptr, decay, ROUND, INTERP)
            A = _rnd(1.0 - _rnd(_div(one, tau, IS64), ROUND), ROUND)
        if HAS_AMP:
            amp = _rnd(tl.load(amp_ptr).to(decay.dtype), ROUND)  # a.to(dtype), as the reference
        else:
            amp = one
        D = one if FORM == 0 else tau  # dH/dX = 1/τ in both PLIF forms
        return A, D, tau, amp

    @triton.jit
    def _finish_kernel(part_ptr, nprog, w_ptr, const_ptr, gw_ptr, gamp_ptr, rho_ptr, lc_ptr,
                       grho_ptr,
                       STRIDE: tl.constexpr, NEED_TAU: tl.constexpr, NEED_AMP: tl.constexpr,
                       ROUND: tl.constexpr, INTERP: tl.constexpr, RB: tl.constexpr,
                       IS64: tl.constexpr = False, LEARN: tl.constexpr = False,
                       K: tl.constexpr = 1, KP: tl.constexpr = 1, MAIN: tl.constexpr = 0,
                       RS_IDX: tl.constexpr = 0, RS_W: tl.constexpr = 1.0,
                       RHO64: tl.constexpr = False):
        """The parameters' gradients from the backward's per-program sums, in one program,
        each stored in its parameter's dtype: ``gw = dL/dw`` with ``dL/dτ = −Σ/τ`` and
        ``dL/dw = −dL/dτ·exp(−w)``, ``gamp = dL/da``, ``grho = dL/dρ`` by
        :func:`_learned_grad`; the programs' rows are added in a fixed order
        (deterministic)."""
        decay = tl.load(const_ptr + 0)
        acc_tau = tl.zeros([RB], dtype=decay.dtype)
        acc_amp = tl.zeros([RB], dtype=decay.dtype)
        for start in range(0, nprog, RB):
            rows = start + tl.arange(0, RB)
            m = rows < nprog
            acc_tau += tl.load(part_ptr + rows * STRIDE, mask=m, other=0.0)
            acc_amp += tl.load(part_ptr + rows * STRIDE + 1, mask=m, other=0.0)
        if NEED_TAU:
            tau, e = _plif_tau(w_ptr, decay, ROUND, INTERP)
            g_tau = _rnd(_div(-tl.sum(acc_tau, axis=0), tau, IS64), ROUND)
            tl.store(gw_ptr, _rnd(-(g_tau * e), ROUND).to(gw_ptr.dtype.element_ty))
        if NEED_AMP:
            tl.store(gamp_ptr, tl.sum(acc_amp, axis=0).to(gamp_ptr.dtype.element_ty))
        if LEARN:
            _learned_grad(part_ptr, nprog, rho_ptr, lc_ptr, grho_ptr, STRIDE, K, KP, MAIN,
                          RS_IDX, RS_W, RHO64, RB)

    @triton.jit
    def _growth(rho, RHO64: tl.constexpr):
        """``(e, slope)`` of :func:`~multispike.functional.firing.threshold_growth` at ``ρ``
        (each op rounded in ρ's dtype as PyTorch rounds it; the slope for the chain rule)."""
        if RHO64:
            big = tl.full(rho.shape, 1.7976931348623157e308, tl.float64)
        else:
            big = tl.full(rho.shape, 3.4028234663852886e38, tl.float32)
        finite = (rho == rho) & (rho < big) & (rho > -big)
        r = tl.where(rho == rho, rho, 0.0)
        r = tl.minimum(tl.maximum(r, -big), big)  # nan_to_num: ±inf → ±max
        up = r >= 0.0
        a = tl.where(up, r, -r)
        q = 1.0 + _div(a, 15.0 + a * 0.0, RHO64)
        g = _div(a, q, RHO64)
        p = 1.0 + g
        e = tl.where(up, g, -_div(g, p, RHO64))
        slope = tl.where(finite, 1.0 / (q * q), 0.0)
        slope = tl.where(up, slope, slope / (p * p))
        return e, slope

    @triton.jit
    def _learned_consts_kernel(rho_ptr, lc_ptr, c_ptr, out_ptr, K: tl.constexpr,
                               MAIN: tl.constexpr, RS_IDX: tl.constexpr, RS_W: tl.constexpr,
                               SOFT: tl.constexpr, RHO64: tl.constexpr, X64: tl.constexpr,
                               ROUND: tl.constexpr):
        """The layer's constants with its learned thresholds, in one program: ``out`` is
        ``c`` (:func:`consts`) with ``θ_k`` (rule order: the main threshold first), ``θ_r``,
        ``V_th`` and ``1/V_th`` computed from ``ρ`` exactly as
        :func:`~multispike.functional.learned_thresholds` and
        :func:`~multispike.kernels.custom_ops.kernel_thresholds` compute them (``lc``: the segments
        ``c_j`` and initial thresholds ``θ⁰_j`` in ρ's dtype)."""
        tl.store(out_ptr + 0, tl.load(c_ptr + 0))  # decay
        tl.store(out_ptr + K + 1, tl.load(c_ptr + K + 1))  # v_reset
        tl.store(out_ptr + K + 5, tl.load(c_ptr + K + 5))  # the integer rules' bounds
        tl.store(out_ptr + K + 6, tl.load(c_ptr + K + 6))
        zero = tl.load(lc_ptr) * 0.0
        acc = zero
        for kk in tl.static_range(K):
            e, _s = _growth(tl.load(rho_ptr + kk) + zero, RHO64)
            acc = acc + tl.load(lc_ptr + kk) * e
            val = tl.load(lc_ptr + K + kk) + acc
            if X64:
                cx = val.to(tl.float64)
            else:
                cx = _rnd(val.to(tl.float32), ROUND)
            if kk == MAIN:
                tl.store(out_ptr + 1, cx.to(out_ptr.dtype.element_ty))
                inv = (1.0 / val.to(tl.float64)).to(val.dtype)
                tl.store(out_ptr + K + 3, val.to(out_ptr.dtype.element_ty))
                tl.store(out_ptr + K + 4, inv.to(out_ptr.dtype.element_ty))
                if SOFT:
                    tl.store(out_ptr + K + 2, cx.to(out_ptr.dtype.element_ty))
                elif RS_IDX < 0:  # θ_r = 0.5·V_th (integer rules, reset "any")
                    half = val * 0.5
                    if X64:
                        hx = half.to(tl.float64)
                    else:
                        hx = _rnd(half.to(tl.float32), ROUND)
                    tl.store(out_ptr + K + 2, hx.to(out_ptr.dtype.element_ty))
            elif kk < MAIN:
                tl.store(out_ptr + 2 + kk, cx.to(out_ptr.dtype.element_ty))
            else:
                tl.store(out_ptr + 1 + kk, cx.to(out_ptr.dtype.element_ty))
            if not SOFT:
                if kk == RS_IDX:
                    tl.store(out_ptr + K + 2, cx.to(out_ptr.dtype.element_ty))

    @triton.jit
    def _learned_grad(part_ptr, nprog, rho_ptr, lc_ptr, out_ptr, STRIDE: tl.constexpr,
                      K: tl.constexpr, KP: tl.constexpr, MAIN: tl.constexpr,
                      RS_IDX: tl.constexpr, RS_W: tl.constexpr, RHO64: tl.constexpr,
                      RB: tl.constexpr):
        """``dL/dρ`` (``K`` values at ``out``) from the programs' sums of ``dL/d(vector)``
        (columns ``2 … 2 + K + 2`` of ``part``): each entry of the vector back to the
        ascending threshold it is, ``1/V_th`` by ``−1/V_th²``, ``0.5·V_th`` by ``0.5``, then
        ``dθ_k/dρ_j = c_j·e'(ρ_j)`` for ``j <= k``."""
        cols = tl.arange(0, KP)
        acc = tl.zeros([RB, KP], dtype=tl.load(part_ptr).dtype)
        for start in range(0, nprog, RB):
            rows = start + tl.arange(0, RB)
            m = (rows[:, None] < nprog) & (cols[None, :] < K + 3)
            acc += tl.load(part_ptr + rows[:, None] * STRIDE + 2 + cols[None, :], mask=m,
                           other=0.0)
        gvec = tl.sum(acc, axis=0)  # [KP]: dL/d(vector)
        # V_th = θ_MAIN, recomputed as the forward did
        zero = tl.load(lc_ptr) * 0.0
        run = zero
        v = zero
        for kk in tl.static_range(K):
            e, _s = _growth(tl.load(rho_ptr + kk) + zero, RHO64)
            run = run + tl.load(lc_ptr + kk) * e
            if kk == MAIN:
                v = tl.load(lc_ptr + K + kk) + run
        v = v.to(gvec.dtype)
        # which ascending threshold each entry is, and its weight
        src = tl.where(cols == 0, MAIN, tl.where(cols - 1 < MAIN, cols - 1, cols))
        src = tl.where(cols == K, RS_IDX, src)
        src = tl.where(cols >= K + 1, MAIN, src)
        wgt = tl.where(cols == K, RS_W, 1.0)
        wgt = tl.where(cols == K + 2, -1.0 / (v * v), wgt)
        wgt = tl.where(cols < K + 3, wgt, 0.0)
        ks = tl.arange(0, KP)
        hit = src[None, :] == ks[:, None]  # [k, i]
        g_asc = tl.sum(tl.where(hit, (wgt * gvec)[None, :], 0.0), axis=1)  # [KP] by k
        tail = tl.sum(tl.where(ks[None, :] >= ks[:, None], g_asc[None, :], 0.0), axis=1)
        m = ks < K
        rho = tl.load(rho_ptr + ks, mask=m, other=0.0)
        _e, slope = _growth(rho, RHO64)
        seg = tl.load(lc_ptr + ks, mask=m, other=0.0)
        g_rho = seg.to(gvec.dtype) * slope.to(gvec.dtype) * tail
        tl.store(out_ptr + ks, g_rho.to(out_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _forward_kernel(
        x_ptr, out_ptr, saved_ptr, tau_ptr, amp_ptr, const_ptr, flag_ptr, N, T, half,
        pack_ptr, prow, plo,
        FORM: tl.constexpr, K: tl.constexpr, SGN: tl.constexpr, SAVE: tl.constexpr,
        HAS_AMP: tl.constexpr, CHECK: tl.constexpr, SOFT: tl.constexpr,
        ROUND: tl.constexpr, IS64: tl.constexpr, BLOCK: tl.constexpr,
        INTEGER: tl.constexpr = False, BYVAL: tl.constexpr = False, INTERP: tl.constexpr = False,
        PBITS: tl.constexpr = 0, PPER: tl.constexpr = 1,
    ):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        A, D, tau, amp = _coefs(tau_ptr, amp_ptr, const_ptr, FORM, HAS_AMP, ROUND, IS64,
                                INTERP)
        thr_ptr = const_ptr + 1
        th0 = tl.load(thr_ptr + 0)
        vr = tl.load(thr_ptr + K)  # V_reset in the compute dtype (a float argument is fp32)
        rthr = tl.load(thr_ptr + K + 1)  # hard reset: the threshold that resets
        vth = tl.load(thr_ptr + K + 2)  # soft reset: V_th
        v = tl.zeros([BLOCK], dtype=A.dtype) + vr  # the membrane starts at V_reset
        bad = tl.zeros([BLOCK], dtype=tl.int32)
        for t in range(T):
            base = tl.cast(t, tl.int64) * N
            xv = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(A.dtype)
            if CHECK:  # x − x is 0 for every finite x, NaN for NaN and ±inf
                bad = bad | ((xv - xv) != 0.0).to(tl.int32)
            if FORM == 0:
                h = _rnd(_rnd(A * v, ROUND) + xv, ROUND)
            elif FORM == 1:
                h = _rnd(_rnd(A * v, ROUND) + _rnd(_div(xv, D, IS64), ROUND), ROUND)
            else:
                inner = _rnd(xv - _rnd(v - vr, ROUND), ROUND)
                h = _rnd(v + _rnd(_div(inner, tau, IS64), ROUND), ROUND)
            if INTEGER:  # integer rules: b = round(clamp(H·(1/V_th), lo, D))
                b, u, inv, lo, hi = _integer(h, thr_ptr, K, ROUND)
            else:
                p = tl.where(h >= th0, 1.0, 0.0).to(A.dtype)
                if SGN:
                    q = tl.where(h <= -th0, 1.0, 0.0).to(A.dtype)
                else:
                    q = tl.zeros([BLOCK], dtype=A.dtype)
                b = p - q
                for kk in tl.static_range(1, K):
                    thk = tl.load(thr_ptr + kk)
                    b += tl.where(h >= thk, 1.0, 0.0).to(A.dtype)
                    if SGN:
                        b -= tl.where(h <= -thk, 1.0, 0.0).to(A.dtype)
            if SOFT:
                s = tl.zeros([BLOCK], dtype=A.dtype)
            elif BYVAL:  # integer rules, reset="any": where b != 0
                s = tl.where(b != 0.0, 1.0, 0.0).to(A.dtype)
            else:  # the spike that resets, at ±rthr (th0 for reset="main")
                s = tl.where(h >= rthr, 1.0, 0.0).to(A.dtype)
                if SGN:
                    s += tl.where(h <= -rthr, 1.0, 0.0).to(A.dtype)
            o = _rnd(amp * b, ROUND)
            tl.store(out_ptr + base + offs, o.to(out_ptr.dtype.element_ty), mask=mask)
            if PBITS > 0:  # compact_spikes: the codes b − lo, PPER to a byte (compact.py)
                code = tl.where(mask, b.to(tl.int32) - plo, 0) & ((1 << PBITS) - 1)
                shift = (tl.arange(0, PPER) * PBITS)[None, :]
                byte = tl.sum(tl.reshape(code, (BLOCK // PPER, PPER)) << shift, axis=1)
                poffs = pid.to(tl.int64) * (BLOCK // PPER) + tl.arange(0, BLOCK // PPER)
                tl.store(pack_ptr + tl.cast(t, tl.int64) * prow + poffs, byte.to(tl.uint8),
                         mask=poffs < prow)
            if SAVE == 1:
                tl.store(saved_ptr + base + offs, h.to(saved_ptr.dtype.element_ty), mask=mask)
            if SAVE == 2:
                cnt = tl.zeros([BLOCK], dtype=tl.int32)
                for kk in tl.static_range(0, K):
                    thk = tl.load(thr_ptr + kk)
                    cnt += (tl.abs(_rnd(h - thk, ROUND)) <= half).to(tl.int32)
                    if SGN:
                        cnt += (tl.abs(_rnd(-h - thk, ROUND)) <= half).to(tl.int32)
                code = cnt | (s.to(tl.int32) << 3) | ((b.to(tl.int32) + 8) << 4)
                tl.store(saved_ptr + base + offs, code.to(tl.uint8), mask=mask)
            if SOFT:
                v = _rnd(h - _rnd(b * vth, ROUND), ROUND)
            else:
                v = _rnd(_rnd(h * (1.0 - s), ROUND) + _rnd(vr * s, ROUND), ROUND)
        if CHECK:
            nbad = tl.max(tl.where(mask, bad, 0), axis=0)
            tl.atomic_max(flag_ptr, nbad)

    @triton.jit
    def _unpack_kernel(codes_ptr, amp_ptr, out_ptr, N, prow, lo, HAS_AMP: tl.constexpr,
                       PBITS: tl.constexpr, PPER: tl.constexpr, ROUND: tl.constexpr,
                       IS64: tl.constexpr, BLOCK: tl.constexpr):
        """Spikes ``a·(code + lo)`` of one step (program axis 1) from the packed codes the
        forward kernel wrote, rounded as it rounds them."""
        t = tl.program_id(1).to(tl.int64)
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        byte = tl.load(codes_ptr + t * prow + offs // PPER, mask=mask, other=0).to(tl.int32)
        code = (byte >> ((offs % PPER) * PBITS).to(tl.int32)) & ((1 << PBITS) - 1)
        if IS64:
            b = (code + lo).to(tl.float64)
        else:
            b = (code + lo).to(tl.float32)
        if HAS_AMP:
            b = _rnd(_rnd(tl.load(amp_ptr).to(b.dtype), ROUND) * b, ROUND)
        tl.store(out_ptr + t * N + offs, b.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _backward_kernel(
        g_ptr, saved_ptr, gx_ptr, tau_ptr, amp_ptr, const_ptr, part_ptr, N, T, half,
        alpha, sk, sc, scale, keep,
        FORM: tl.constexpr, K: tl.constexpr, SGN: tl.constexpr, KIND: tl.constexpr,
        CODE: tl.constexpr, NEED_TAU: tl.constexpr, HAS_AMP: tl.constexpr,
        SPIKE_RESET: tl.constexpr, SOFT: tl.constexpr, ROUND: tl.constexpr,
        IS64: tl.constexpr, BLOCK: tl.constexpr,
        INTEGER: tl.constexpr = False, BYVAL: tl.constexpr = False,
        LEARN: tl.constexpr = False, KP: tl.constexpr = 1, INTERP: tl.constexpr = False,
    ):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        A, D, tau, amp = _coefs(tau_ptr, amp_ptr, const_ptr, FORM, HAS_AMP, ROUND, IS64,
                                INTERP)
        thr_ptr = const_ptr + 1
        vr = tl.load(thr_ptr + K)
        rthr = tl.load(thr_ptr + K + 1)
        vth = tl.load(thr_ptr + K + 2)
        dv = tl.zeros([BLOCK], dtype=A.dtype)
        acc_tau = tl.zeros([BLOCK], dtype=A.dtype)
        acc_amp = tl.zeros([BLOCK], dtype=A.dtype)
        # learned thresholds: [th_0 .. th_{K-1}, th_r, vth, inv] summed over this block
        acc_thr = tl.zeros([KP], dtype=A.dtype)
        kr = tl.arange(0, KP)
        for i in range(T):
            t = T - 1 - i
            base = tl.cast(t, tl.int64) * N
            go = tl.load(g_ptr + base + offs, mask=mask, other=0.0).to(A.dtype)
            if CODE:
                code = tl.load(saved_ptr + base + offs, mask=mask, other=0).to(tl.int32)
                cnt = (code & 7).to(A.dtype)
                s = ((code >> 3) & 1).to(A.dtype)
                b = ((code >> 4) - 8).to(A.dtype)
                dh = go * amp * cnt / scale + dv * (1.0 - s)
            else:
                h = tl.load(saved_ptr + base + offs, mask=mask, other=0.0).to(A.dtype)
                if LEARN:  # the whole dL/db: the output's and a soft reset's −vth·dv
                    if SOFT:
                        lb = go * amp - keep * (dv * vth)
                    else:
                        lb = go * amp
                    lb = tl.where(mask, lb, 0.0)
                if INTEGER:  # integer rules: db/dH = 1/V_th on [lo, D] (straight through)
                    b, u, inv, lo, hi = _integer(h, thr_ptr, K, ROUND)
                    gsum = tl.where((u >= lo) & (u <= hi), inv, 0.0).to(A.dtype)
                    if LEARN:  # dL/dinv: u = h·inv
                        d_inv = tl.where((u >= lo) & (u <= hi), lb * h, 0.0)
                        acc_thr += tl.where(kr == K + 2, tl.sum(d_inv, axis=0), 0.0)
                else:
                    gsum = tl.zeros([BLOCK], dtype=A.dtype)
                    b = tl.zeros([BLOCK], dtype=A.dtype)
                    for kk in tl.static_range(0, K):
                        thk = tl.load(thr_ptr + kk)
                        gk = _sg(_rnd(h - thk, ROUND), KIND, half, alpha, sk, sc)
                        gsum += gk
                        b += tl.where(h >= thk, 1.0, 0.0).to(A.dtype)
                        dk = -gk  # db/dth_k
                        if SGN:
                            gn = _sg(_rnd(-h - thk, ROUND), KIND, half, alpha, sk, sc)
                            gsum += gn
                            b -= tl.where(h <= -thk, 1.0, 0.0).to(A.dtype)
                            dk += gn
                        if LEARN:
                            if KIND <= 1:
                                dk = dk / scale
                            acc_thr += tl.where(kr == kk, tl.sum(lb * dk, axis=0), 0.0)
                    if KIND <= 1:
                        gsum = gsum / scale
                if SOFT:  # v = h − b·vth: dV/dH = 1 − vth·db/dH
                    dh = go * amp * gsum + dv - keep * (dv * vth * gsum)
                    if LEARN:  # dV/dvth = −b (detach_reset or not)
                        acc_thr += tl.where(kr == K + 1, tl.sum(tl.where(mask, -(dv * b), 0.0),
                                                               axis=0), 0.0)
                else:  # the spike that resets, at ±rthr
                    if BYVAL:  # integer rules, reset="any": where b != 0
                        p0 = tl.where(b > 0.0, 1.0, 0.0).to(A.dtype)
                    else:
                        p0 = tl.where(h >= rthr, 1.0, 0.0).to(A.dtype)
                    gm = _sg(_rnd(h - rthr, ROUND), KIND, half, alpha, sk, sc)
                    s = p0
                    gp = gm
                    if SGN:
                        if BYVAL:
                            q0 = tl.where(b < 0.0, 1.0, 0.0).to(A.dtype)
                        else:
                            q0 = tl.where(h <= -rthr, 1.0, 0.0).to(A.dtype)
                        s += q0
                        gq = _sg(_rnd(-h - rthr, ROUND), KIND, half, alpha, sk, sc)
                        if SPIKE_RESET:  # d|b0|/dH = sign(b0)·(g(h − thr) + g(−h − thr))
                            gm = (p0 - q0) * (gm + gq)
                            gr = (p0 - q0) * (gq - gp)  # dS/dthr
                        else:
                            gm -= gq
                            gr = -(gp + gq)
                    elif SPIKE_RESET:  # d|s|/dH = s·g(h − thr)
                        gm = p0 * gm
                        gr = -(p0 * gp)
                    else:
                        gr = -gp
                    if KIND <= 1:
                        gm = gm / scale
                        gr = gr / scale
                    dh = go * amp * gsum + dv * (1.0 - s) + keep * (dv * (vr - h) * gm)
                    if LEARN:  # dL/dthr through v = h·(1 − S) + vr·S
                        d_r = tl.where(mask, keep * (dv * (vr - h) * gr), 0.0)
                        acc_thr += tl.where(kr == K, tl.sum(d_r, axis=0), 0.0)
                if NEED_TAU:
                    prev = tl.cast(tl.maximum(t - 1, 0), tl.int64) * N  # t = 0: unused
                    hp = tl.load(saved_ptr + prev + offs, mask=mask, other=0.0).to(A.dtype)
                    if INTEGER:
                        bp, _u, _i, _l, _h = _integer(hp, thr_ptr, K, ROUND)
                    else:
                        bp = tl.zeros([BLOCK], dtype=A.dtype)
                        for kk in tl.static_range(0, K):
                            thk = tl.load(thr_ptr + kk)
                            bp += tl.where(hp >= thk, 1.0, 0.0).to(A.dtype)
                            if SGN:
                                bp -= tl.where(hp <= -thk, 1.0, 0.0).to(A.dtype)
                    if SOFT:
                        vprev = _rnd(hp - _rnd(bp * vth, ROUND), ROUND)
                    elif BYVAL:
                        sp = tl.where(bp != 0.0, 1.0, 0.0).to(A.dtype)
                        vprev = _rnd(_rnd(hp * (1.0 - sp), ROUND) + _rnd(vr * sp, ROUND), ROUND)
                    else:
                        sp = tl.where(hp >= rthr, 1.0, 0.0).to(A.dtype)
                        if SGN:
                            sp += tl.where(hp <= -rthr, 1.0, 0.0).to(A.dtype)
                        vprev = _rnd(_rnd(hp * (1.0 - sp), ROUND) + _rnd(vr * sp, ROUND), ROUND)
                    vprev = tl.where(t > 0, vprev, vr)  # t = 0: the start state V_reset
                    acc_tau += dh * (h - vprev)
            acc_amp += go * b
            gxv = _div(dh, D, IS64)
            tl.store(gx_ptr + base + offs, gxv.to(gx_ptr.dtype.element_ty), mask=mask)
            dv = dh * A
        acc_tau = tl.where(mask, acc_tau, 0.0)
        acc_amp = tl.where(mask, acc_amp, 0.0)
        tl.store(part_ptr + pid * (2 + KP) + 0, tl.sum(acc_tau, axis=0))
        tl.store(part_ptr + pid * (2 + KP) + 1, tl.sum(acc_amp, axis=0))
        if LEARN:
            tl.store(part_ptr + pid * (2 + KP) + 2 + kr, acc_thr)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@functools.lru_cache(maxsize=256)
def _static(st: Static, dtype: torch.dtype) -> dict:
    """Scalars of a layer rounded to ``dtype`` (host numbers, computed once per layer kind)."""
    param = st.sg_param  # window width, or sharpness alpha
    return {
        "consts": [_cast(st.decay, dtype)] + [_cast(t, dtype) for t in st.thresholds]
        + [_cast(st.v_reset, dtype), _cast(st.reset_thr, dtype),
           _cast(st.v_th, _compute_dtype(dtype)),  # b·V_th: PyTorch's scalar in compute type
           _cast(st.inv_th, _compute_dtype(dtype)),  # integer rules: H·(1/V_th), the same
           -float(st.levels) if st.signed else 0.0, float(st.levels)],
        "half": _cast(param / 2, dtype),
        "alpha": _cast(param, dtype),
        "sk": _cast(math.pi / 2 * param, dtype),
        "sc": _cast(param / 2, dtype),
        "scale": _cast(param, dtype) if st.sg_kind == 0 else 1.0,
    }


_consts: dict[tuple, Tensor] = {}


def consts(st: Static, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[decay, thresholds..., v_reset, reset_thr, v_th, inv_th, lo, D]`` on ``device`` in the
    compute dtype (``inv_th, lo, D``: the integer rules' ``1/V_th`` and clamp bounds),
    cached: built by one fill per entry on the device (no host→device copy, so nothing
    waits, also on a layer's first call after ``.to()``) the first time a layer kind meets a
    device, reused after."""
    key = (st, dtype, device)
    t = _consts.get(key)
    if t is None:
        values = _static(st, dtype)["consts"]
        t = torch.empty(len(values), dtype=_compute_dtype(dtype), device=device)
        for i, v in enumerate(values):  # fills on the device: no pageable copy, no sync
            t[i].fill_(v)
        _consts[key] = t
    return t


def consts_with(st: Static, dtype: torch.dtype, device: torch.device,
                thr: Tensor | None) -> Tensor:
    """:func:`consts`, with the learned thresholds ``thr`` (``[th_0 … th_{K−1}, th_r, vth,
    inv]`` in the compute dtype, :func:`multispike.kernels.custom_ops.kernel_thresholds`) in place
    of the constant ones: one ``cat`` on the device per call, no host data."""
    c = consts(st, dtype, device)
    if thr is None:
        return c
    k = len(st.thresholds)
    return torch.cat([c[:1], thr[:k], c[k + 1:k + 2], thr[k:], c[k + 5:]])


@functools.lru_cache(maxsize=1024)
def _forward_meta(st: Static, dtype: torch.dtype, save: int, has_amp: bool, check: bool,
                  pbits: int = 0) -> dict:
    """The forward kernel's constexprs for one layer kind and call kind (prepared once);
    ``pbits``: bits per packed spike code (0: none written)."""
    return dict(
        FORM=st.form, K=len(st.thresholds), SGN=st.signed, SAVE=save, HAS_AMP=has_amp,
        CHECK=check, SOFT=st.soft, ROUND=_ROUND[dtype], IS64=dtype == torch.float64,
        BLOCK=BLOCK, INTEGER=st.levels > 0, BYVAL=st.by_value, INTERP=interpreting(),
        PBITS=pbits, PPER=8 // pbits if pbits else 1, enable_fp_fusion=False)


@functools.lru_cache(maxsize=1024)
def _backward_meta(st: Static, dtype: torch.dtype, code: bool, need_tau: bool, has_amp: bool,
                   learn: bool, kp: int) -> dict:
    """The backward kernel's constexprs for one layer kind and call kind (prepared once)."""
    return dict(
        FORM=st.form, K=len(st.thresholds), SGN=st.signed, KIND=st.sg_kind, CODE=code,
        NEED_TAU=need_tau, HAS_AMP=has_amp, SPIKE_RESET=bool(st.reset_grad) and not st.detach,
        SOFT=st.soft, ROUND=_ROUND[dtype], IS64=dtype == torch.float64, BLOCK=BLOCK,
        INTEGER=st.levels > 0, BYVAL=st.by_value, LEARN=learn, KP=kp, INTERP=interpreting(),
        enable_fp_fusion=False)


@functools.lru_cache(maxsize=1024)
def _finish_meta(dtype: torch.dtype, need_w: bool, need_amp: bool, kp: int,
                 plan: LearnedPlan | None, rho_dtype: torch.dtype | None) -> dict:
    """The finishing kernel's constexprs for one call kind (prepared once); ``plan``: the
    learned thresholds' when their gradient is computed in the kernel, else None."""
    extra = {}
    if plan is not None:
        extra = dict(LEARN=True, K=plan.k, KP=kp, MAIN=plan.main, RS_IDX=plan.rs_grad,
                     RS_W=plan.rs_w, RHO64=rho_dtype == torch.float64)
    return dict(STRIDE=2 + kp, NEED_TAU=need_w, NEED_AMP=need_amp, ROUND=_ROUND[dtype],
                INTERP=interpreting(), RB=256, IS64=dtype == torch.float64, **extra,
                enable_fp_fusion=False)


@dataclass(frozen=True, eq=False)  # identity: a launcher keeps its plan, caches key on it
class LearnedPlan:
    """What the in-kernel learned thresholds need of a layer (static): ``k`` thresholds,
    ascending, the main one at ``main``; the hard reset's threshold at ascending index
    ``rs_idx`` (−1: ``0.5·V_th``, the integer rules' reset "any"), ``soft`` reset; for the
    backward, the index ``rs_grad`` and weight ``rs_w`` of ``θ_r``'s gradient; ``initial``
    the initial thresholds."""

    k: int
    main: int
    rs_idx: int
    rs_grad: int
    rs_w: float
    soft: bool
    initial: tuple[float, ...]


def learned_plan(record) -> LearnedPlan:
    """The :class:`LearnedPlan` of a learning layer's
    :class:`~multispike.kernels.record.KernelRecord`."""
    from multispike.functional.firing import initial_thresholds

    initial, main = initial_thresholds(record.rule, record.v_threshold)
    k = len(initial)
    if record.reset == "soft":
        rs = main
    else:
        th = [initial[main]] + [t for i, t in enumerate(initial) if i != main]
        rt = record.rule.reset_threshold(initial[main], record.reset, th if k > 1 else None)
        rs = initial.index(rt) if rt in initial else -1
    return LearnedPlan(k=k, main=main, rs_idx=rs, rs_grad=main if rs < 0 else rs,
                       rs_w=0.5 if rs < 0 else 1.0, soft=record.reset == "soft",
                       initial=tuple(initial))


_lconsts: dict[tuple, Tensor] = {}


def _learned_static(plan: LearnedPlan, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[c_0 … c_{K−1}, θ⁰_0 … θ⁰_{K−1}]`` in ``dtype`` (ρ's) on ``device``: the segments
    and initial thresholds as :func:`~multispike.functional.learned_thresholds` meets them
    (Python floats rounded to the op's compute type); made by fills once, cached."""
    key = (plan.initial, dtype, device)
    t = _lconsts.get(key)
    if t is None:
        prev, values = 0.0, []
        for th0 in plan.initial:
            values.append(th0 - prev)
            prev = th0
        values += list(plan.initial)
        t = torch.empty(len(values), dtype=dtype, device=device)
        for i, v in enumerate(values):  # fills on the device: no pageable copy, no sync
            t[i].fill_(v)
        _lconsts[key] = t
    return t


def learned_consts(st: Static, plan: LearnedPlan, x_dtype: torch.dtype, rho: Tensor) -> Tensor:
    """:func:`consts` with the thresholds learned from ``rho`` (one single-program launch:
    :func:`_learned_consts_kernel`); ``rho`` float32 or float64."""
    c = consts(st, x_dtype, rho.device)
    out = torch.empty_like(c)
    _learned_consts_kernel[(1,)](
        rho, _learned_static(plan, rho.dtype, rho.device), c, out,
        **_learned_meta(plan, rho.dtype, x_dtype))
    return out


@functools.lru_cache(maxsize=256)
def _learned_meta(plan: LearnedPlan, rho_dtype: torch.dtype, x_dtype: torch.dtype) -> dict:
    """:func:`_learned_consts_kernel`'s constexprs for one layer kind (prepared once)."""
    return dict(K=plan.k, MAIN=plan.main, RS_IDX=plan.rs_idx, RS_W=plan.rs_w, SOFT=plan.soft,
                RHO64=rho_dtype == torch.float64, X64=x_dtype == torch.float64,
                ROUND=_ROUND[x_dtype], enable_fp_fusion=False)


def forward(
    st: Static, x: Tensor, w: Tensor | None, amp: Tensor | None, save_mode: int,
    flag: Tensor | None = None, thr: Tensor | None = None, c: Tensor | None = None,
    pack: tuple[Tensor, int, int] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Contiguous ``x`` ``[T, ...]`` → ``(out, saved)`` of its shape, in one launch; ``w``:
    PLIF's parameter (the kernel computes ``τ``), ``amp`` the amplitude (both read on the
    device); with ``flag`` (int32, one element), sets it to 1 when ``x`` holds a NaN or an
    infinity (no host sync); ``thr``: learned thresholds (see :func:`consts_with`), or None;
    ``c``: the constants already made (:func:`learned_consts`), instead; ``pack``: ``(codes,
    bits, lo)``, a buffer (:func:`multispike.kernels.compact.packed_codes`) the kernel writes
    the spikes' codes ``b − lo`` into, ``bits`` each."""
    T = x.shape[0]
    N = x.numel() // T
    sc = _static(st, x.dtype)
    if c is None:
        c = consts_with(st, x.dtype, x.device, thr)
    out = torch.empty_like(x)
    if save_mode == SAVE_H:
        saved = torch.empty_like(x)
    elif save_mode == SAVE_CODE:
        saved = torch.empty_like(x, dtype=torch.uint8)
    else:
        saved = None
    codes, pbits, plo = (out, 0, 0) if pack is None else pack
    meta = _forward_meta(st, x.dtype, save_mode if save_mode != SAVE_NONE else 0,
                         amp is not None, flag is not None, pbits)
    _forward_kernel[((N + BLOCK - 1) // BLOCK,)](
        x, out, saved if saved is not None else out, w if w is not None else c,
        amp if amp is not None else c, c, flag if flag is not None else c, N, T, sc["half"],
        codes, codes.shape[-1] if pbits else 0, plo, **meta)
    return out, saved


def unpack(codes: Tensor, n: int, bits: int, lo: int, amp: Tensor | None,
           dtype: torch.dtype) -> Tensor:
    """The spikes ``[T, n]`` in ``dtype`` from the forward's packed codes ``[T, ceil(n·bits
    / 8)]`` (``amp``: the layer's amplitude, or None), in one launch."""
    T = codes.shape[0]
    out = torch.empty(T, n, dtype=dtype, device=codes.device)
    if out.numel():
        _unpack_kernel[((n + BLOCK - 1) // BLOCK, T)](
            codes, amp if amp is not None else codes, out, n, codes.shape[1], lo,
            HAS_AMP=amp is not None, PBITS=bits, PPER=8 // bits, ROUND=_ROUND[dtype],
            IS64=dtype == torch.float64, BLOCK=BLOCK)
    return out


def backward(
    st: Static, grad: Tensor, saved: Tensor, save_mode: int, w: Tensor | None,
    amp: Tensor | None, need_w: bool, need_amp: bool, thr: Tensor | None = None,
    need_thr: bool = False, c: Tensor | None = None, rho: Tensor | None = None,
    plan: LearnedPlan | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Reverse loop over contiguous ``grad`` ``[T, ...]``; returns ``(grad_x, dL/dw,
    dL/damp, dL/dthr)`` (on the device; the parameter gradients in their parameter's dtype,
    the last with ``thr``'s shape, summed over every neuron and step; with ``rho`` and
    ``plan`` instead: ``dL/dρ``). One launch, and one more (a single program,
    :func:`_finish_kernel`) that adds up the programs' sums where a parameter wants a
    gradient."""
    T = grad.shape[0]
    N = grad.numel() // T
    sc = _static(st, grad.dtype)
    if c is None:
        c = consts_with(st, grad.dtype, grad.device, thr)
    gx = torch.empty_like(grad)
    nprog = (N + BLOCK - 1) // BLOCK
    in_kernel = rho is not None and need_thr
    learn = need_thr and (thr is not None or in_kernel)
    n_thr = len(st.thresholds) + 3
    kp = 1 << (n_thr - 1).bit_length() if learn else 1  # the next power of 2
    parts = torch.empty((nprog, 2 + kp), dtype=c.dtype, device=grad.device)
    meta = _backward_meta(st, grad.dtype, save_mode == SAVE_CODE, need_w, amp is not None,
                          learn, kp)
    _backward_kernel[(nprog,)](
        grad, saved, gx, w if w is not None else c, amp if amp is not None else c, c, parts,
        N, T, sc["half"], sc["alpha"], sc["sk"], sc["sc"], sc["scale"],
        0.0 if st.detach else 1.0, **meta)
    g_w = g_amp = g_thr = None
    if need_w or need_amp or in_kernel:
        # each gradient straight into a tensor of its parameter's shape and dtype (no view, no
        # cast on the host)
        dev = grad.device
        g_w = torch.empty((), dtype=w.dtype, device=dev) if need_w else None
        g_amp = torch.empty((), dtype=amp.dtype, device=dev) if need_amp else None
        g_thr = torch.empty(plan.k, dtype=rho.dtype, device=dev) if in_kernel else None
        _finish_kernel[(1,)](
            parts, nprog, w if w is not None else c, c, c if g_w is None else g_w,
            c if g_amp is None else g_amp, rho if in_kernel else c,
            _learned_static(plan, rho.dtype, rho.device) if in_kernel else c,
            c if g_thr is None else g_thr,
            **_finish_meta(grad.dtype, need_w, need_amp, kp, plan if in_kernel else None,
                           rho.dtype if in_kernel else None))
    if learn and not in_kernel:
        g_thr = parts[:, 2:2 + n_thr].sum(0)
    return gx, g_w, g_amp, g_thr
