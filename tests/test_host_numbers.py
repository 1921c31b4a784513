"""The C++ kernel's host numbers (multispike.kernels.host) against PyTorch's own arithmetic:
rounding to each dtype, PLIF's τ, learned thresholds and their chain rule."""

from __future__ import annotations

import math
import random

import pytest
import torch

from multispike.functional import learned_thresholds, split_thresholds
from multispike.kernels import host
from multispike.kernels.record import record_of, threshold_vector
from multispike.neurons import IFNode, LIFNode

DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rounding_equals_torch(dtype):
    rng = random.Random(0)
    r = host.rounder(dtype)
    for _ in range(5000):
        v = rng.uniform(-10, 10) * 10.0 ** rng.randint(-6, 4)
        assert r(v) == torch.tensor(v, dtype=dtype).item()
    for v in (0.0, -0.0, float("inf"), -float("inf"), 1e300):
        assert r(v) == torch.tensor(v, dtype=dtype).item()
    assert math.isnan(r(float("nan")))


@pytest.mark.parametrize("dtype", (torch.float64, torch.float32, torch.bfloat16))
def test_plif_tau_within_one_ulp_of_torch(dtype):
    """τ = 1 + exp(−w) from the C library's exp against PyTorch's: equal, or one unit in the
    last place apart (the two exps differ that much on about 1 % of values); exact at w = 0."""
    rng = random.Random(1)
    differ = 0
    for i in range(3000):
        w = 0.0 if i == 0 else rng.uniform(-6, 6)
        w = torch.tensor(w).item()  # a float32 parameter, as a layer's w is
        wt = torch.tensor(w).to(dtype)
        ref_tau = 1 + torch.exp(-wt)
        ref_a = 1 - 1 / ref_tau
        a, d, tau, _ = host.plif_scalars(w, dtype)
        ulp = torch.finfo(dtype).eps * abs(ref_tau.item())
        assert abs(tau - ref_tau.item()) <= ulp, (w, tau, ref_tau.item())
        if tau == ref_tau.item():
            assert a == ref_a.item() and d == tau
        else:
            differ += 1
        if i == 0:
            assert (a, tau) == (ref_a.item(), ref_tau.item()) == (0.5, 2.0)
    assert differ < 0.05 * 3000


@pytest.mark.parametrize("make", [
    lambda: LIFNode(firing="mt", deltas=(-0.3, 0.2, 0.45), learn_thresholds=True),
    lambda: LIFNode(firing="ternary-mt", learn_thresholds=True, reset="any"),
    lambda: IFNode(firing="integer", reset="any", learn_thresholds=True),
    lambda: IFNode(firing="signed-integer", learn_thresholds=True),
    lambda: LIFNode(firing="binary", learn_thresholds=True, reset="soft"),
])
@pytest.mark.parametrize("x_dtype", (torch.float32, torch.float64, torch.bfloat16))
def test_learned_thresholds_equal_the_reference_vector(make, x_dtype):
    """The kernels' threshold vector from host floats equals threshold_vector of the torch
    reference, bit for bit (incl. the rounding to the input's dtype), for extreme ρ too; the
    chain rule to ρ equals autograd's."""
    from multispike.kernels.custom_ops import kernel_thresholds
    from multispike.kernels.direct import _initial

    node = make()
    record = record_of(node)
    g = torch.Generator().manual_seed(2)
    for scale in (0.0, 0.3, 3.0, 1e6):
        rho = (scale * torch.randn(node.threshold_rho.shape, generator=g)).requires_grad_(True)
        initial, main = _initial(record.rule, record.v_threshold)
        v, learned = split_thresholds(learned_thresholds(rho, initial), main)
        vec = threshold_vector(record, v, learned)
        want = kernel_thresholds(vec, x_dtype).tolist()
        thr = host.Thresholds(record, rho.tolist(), rho.dtype, x_dtype, initial, main)
        assert thr.vector == want, (scale, thr.vector, want)
        g_vec = torch.randn(vec.shape, generator=g, dtype=torch.float64)
        (vec.double() * g_vec).sum().backward()
        got = thr.grad_rho(g_vec.tolist())
        torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), rho.grad.double(),
                                   rtol=1e-5, atol=1e-6)
