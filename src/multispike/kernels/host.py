"""A layer's learnable numbers as host floats, rounded as PyTorch rounds them: the C++ kernel's
view of τ (PLIF), the amplitude and learned thresholds.

On the CPU a parameter's value is a host read away (free: the tensor lives in host memory), so
the C++ kernel takes them as plain numbers instead of tensors built by torch ops each call. This
module computes those numbers from the parameters exactly as the reference functions do in the
tensor's dtype (each ``+ − × /`` rounded to the dtype, Python scalars to the op's compute
type), so that the kernel fires with the same thresholds as the reference loop, and it applies
the chain rule from the kernel's gradients back to the parameters (``w``, ``a``, ``ρ``).

One step is not reproduced bit for bit: ``exp(−w)`` of PLIF's ``τ = 1 + exp(−w)`` comes from the
C library here and from PyTorch's vectorised ``exp`` in the reference; the two differ by at most
one unit in the last place (about 1 % of values in float32), which moves ``τ`` by at most as
much (the tests bound it). ``w = 0`` (``init_tau = 2``) is exact in both.

>>> r = rounder(torch.float32)
>>> r(0.1) == torch.tensor(0.1).item(), rounder(torch.float64)(0.1) == 0.1
(True, True)
>>> plif_scalars(0.0, torch.float32)
(0.5, 2.0, 2.0, 1.0)
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Callable, Sequence
from functools import cache, lru_cache

import torch

from multispike.functional.firing import THRESHOLD_BOUND

_INF = float("inf")


_F32 = struct.Struct("f")


def _f32(v: float) -> float:
    """``v`` rounded to float32 (nearest even); ±inf beyond its range, as a C cast gives."""
    try:
        return _F32.unpack(_F32.pack(v))[0]
    except OverflowError:  # struct refuses what rounds past float32's largest number
        return array("f", (v,))[0]


def _bf16(v: float) -> float:
    f = _f32(v)
    if f != f:
        return f
    u = struct.unpack("<I", struct.pack("<f", f))[0]
    u = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000) & 0xFFFFFFFF
    return struct.unpack("<f", struct.pack("<I", u))[0]


def _f16(v: float) -> float:
    f = _f32(v)
    try:
        return struct.unpack("<e", struct.pack("<e", f))[0]
    except OverflowError:
        return math.copysign(_INF, f)


@cache
def rounder(dtype: torch.dtype) -> Callable[[float], float]:
    """``v`` rounded to ``dtype`` (nearest even), as a Python float."""
    return {torch.float64: float, torch.float32: _f32, torch.bfloat16: _bf16,
            torch.float16: _f16}[dtype]


def compute_rounder(dtype: torch.dtype) -> Callable[[float], float]:
    """Rounding to the compute type of ``dtype``'s ops (float64, else float32): a Python scalar
    meeting a tensor takes it."""
    return float if dtype == torch.float64 else _f32


def plif_scalars(w: float, dtype: torch.dtype) -> tuple[float, float, float, float]:
    """``(A, D, τ, e)`` of PLIF in ``dtype``: ``e = exp(−w)``, ``τ = 1 + e`` (MT-SNN Eq 7),
    ``A = 1 − 1/τ`` (Eq 8's leak) and ``D = τ`` (``dH/dX = 1/D``), each op rounded to
    ``dtype`` as the reference rounds it (``w`` cast to ``dtype`` first)."""
    r = rounder(dtype)
    wv = r(w)
    e = r(math.exp(-wv)) if -wv < 709.0 else _INF
    tau = r(1.0 + e)
    a = r(1.0 - r(1.0 / tau))
    return a, tau, tau, e


def grad_w(g_tau: float, e: float) -> float:
    """``dL/dw = dL/dτ · dτ/dw = −dL/dτ · exp(−w)``."""
    return -g_tau * e


# -- learned thresholds --------------------------------------------------------------------------
def _growth(rho: float, r: Callable[[float], float], big: float) -> tuple[float, float]:
    """:func:`~multispike.functional.firing.threshold_growth` and its slope at one ``ρ``."""
    m1 = THRESHOLD_BOUND - 1
    if rho != rho:
        rho, finite = 0.0, False
    else:
        finite = math.isfinite(rho)
        rho = max(-big, min(big, rho))
    up = rho >= 0
    a = rho if up else -rho
    q = r(1.0 + r(a / m1))
    g = r(a / q)
    slope = 1.0 / (q * q) if finite else 0.0
    if up:
        return g, slope
    p = r(1.0 + g)
    return r(-g / p), slope / (p * p)


@lru_cache(maxsize=512)
def _segments(initial: tuple[float, ...], dtype: torch.dtype
              ) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """``(c, c rounded, θ⁰ rounded)``: the segments ``c_j`` and initial thresholds as the
    reference's Python scalars meet ``dtype`` (rounded to its compute type)."""
    rc = compute_rounder(dtype)
    prev, segs = 0.0, []
    for th0 in initial:
        segs.append(th0 - prev)
        prev = th0
    return tuple(segs), tuple(rc(c) for c in segs), tuple(rc(t) for t in initial)


def learned_values(rho: Sequence[float], initial: tuple[float, ...], dtype: torch.dtype
                   ) -> tuple[list[float], list[float]]:
    """``(θ, dθ/dρ factors)``: :func:`~multispike.functional.learned_thresholds` as floats
    (ascending, rounded to ``dtype`` op by op) and ``c_j·e'(ρ_j)`` for the chain rule."""
    r = rounder(dtype)
    big = torch.finfo(dtype).max
    segs, segs_r, th0_r = _segments(initial, dtype)
    out, slopes = [], []
    acc = None
    for k in range(len(initial)):
        e, slope = _growth(rho[k], r, big)
        term = r(segs_r[k] * e)
        acc = term if acc is None else r(acc + term)
        out.append(r(th0_r[k] + acc))
        slopes.append(segs[k] * slope)
    return out, slopes


class Thresholds:
    """A learning layer's thresholds for one call of the C++ kernel: :attr:`vector` is the
    kernels' ``[θ_0 … θ_{K−1}, θ_r, V_th, 1/V_th]`` (rule order, as
    :func:`~multispike.kernels.record.threshold_vector` and
    :func:`~multispike.kernels.custom_ops.kernel_thresholds` compute it) for input of ``x_dtype``;
    :meth:`grad_rho` chains the kernel's gradient of that vector back to ``ρ``."""

    __slots__ = ("vector", "_src", "_main", "_slopes", "_v")

    def __init__(self, record, rho: Sequence[float], rho_dtype: torch.dtype,
                 x_dtype: torch.dtype, initial: tuple[float, ...], main: int) -> None:
        asc, self._slopes = learned_values(rho, initial, rho_dtype)
        r = rounder(rho_dtype)
        v = asc[main]
        order = [main] + [k for k in range(len(asc)) if k != main]
        learned = [asc[k] for k in order] if len(asc) > 1 else None
        th = learned if learned is not None else [v]
        if record.reset == "soft":
            reset_src, rt = order[0], th[0]
        else:
            rt = record.rule.reset_threshold(v, record.reset, learned)
            reset_src = order[th.index(rt)] if rt in th else None
        inv = r(1.0 / v)
        # kernel_thresholds: the thresholds and θ_r in x's dtype, V_th and 1/V_th in the
        # compute type
        rx, rc = rounder(x_dtype), compute_rounder(x_dtype)
        same = rho_dtype == x_dtype and x_dtype in (torch.float32, torch.float64)
        first = th + [rt]
        if not same:
            first = [rc(rx(t)) for t in first]
        self.vector = first + [rc(v), rc(inv)]
        #: which ascending threshold each entry of the vector is (None: 0.5·V_th of an integer
        #: rule's "any" reset, or 1/V_th)
        self._src = [order[i] for i in range(len(th))] + [reset_src, main, None]
        self._main, self._v = main, v

    def grad_rho(self, g_vec: Sequence[float]) -> list[float]:
        """``dL/dρ`` from ``dL/d(vector)``."""
        k_all = len(self._slopes)
        g_asc = [0.0] * k_all
        for i, src in enumerate(self._src):
            if src is not None:
                g_asc[src] += g_vec[i]
        n = len(self._src)
        if self._src[n - 3] is None:  # θ_r = 0.5·V_th (integer rules, reset "any")
            g_asc[self._main] += 0.5 * g_vec[n - 3]
        g_asc[self._main] -= g_vec[n - 1] / (self._v * self._v)  # 1/V_th
        out, tail = [0.0] * k_all, 0.0
        for j in range(k_all - 1, -1, -1):
            tail += g_asc[j]
            out[j] = self._slopes[j] * tail
        return out
