"""Fused multi-step kernels against the reference loop: spikes, gradients, dtypes, memory."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from common import saved_bytes  # bench/common.py (tests/__init__.py puts bench/ on the path)

from multispike import kernels
from multispike.errors import ConfigError
from multispike.functional import plif_tau
from multispike.kernels import (
    _scalars,
    _thresholds,
    compact_spikes,
    cpu,
    fused_multistep,
    record_of,
)
from multispike.kernels.function import Plan, fused
from multispike.monitor import record_activity
from multispike.neurons import IFNode, LIFNode, PLIFNode

DYNAMICS = {"plif": PLIFNode, "lif": LIFNode, "if": IFNode}
FIRINGS = ["binary", "mt", "ternary", "ternary-mt"]
INTEGER_RULES = ["integer", "signed-integer"]
HAS_CPU_KERNEL = cpu.library() is not None
#: every test of the C++ kernel is collected, and skipped (saying why) where it cannot be built
needs_cpu_kernel = pytest.mark.skipif(not HAS_CPU_KERNEL,
                                      reason=f"C++ kernel unavailable: {cpu.failure()}")
IMPLS = ["eager", pytest.param("cpu", marks=needs_cpu_kernel)]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _x(*shape, seed=0, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def _node(dynamics, firing, amplitude=False, detach=False, dtype=torch.float64, **kw):
    cls = DYNAMICS[dynamics]
    node = cls(firing=firing, learn_amplitude=amplitude, detach_reset=detach, **kw).to(dtype)
    with torch.no_grad():
        if amplitude:
            node.amplitude.fill_(0.7)
        if dynamics == "plif":
            node.w.fill_(0.4)
    return node


def _scale(node):
    # inputs around the thresholds, so that every window and spike value occurs
    return 1.2 * node.v_threshold if node.dynamics != "plif" else 2.4 * node.v_threshold


def _run(node, x, weight, impl=None):
    """Spikes and gradients (input, w, amplitude) of the reference (impl=None) or a kernel."""
    node.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    if impl is None:
        node.backend = "torch"
        out = node(x)
    else:
        out = fused_multistep(x, node, impl=impl)
    (out * weight).sum().backward()
    grads = [x.grad] + [p.grad for p in node.parameters()]
    return out.detach(), grads


def _compare(node, x, impl, tol):
    weight = _x(*x.shape, seed=7, dtype=x.dtype)
    ref_out, ref_grads = _run(node, x, weight)
    out, grads = _run(node, x, weight, impl)
    assert out.dtype == ref_out.dtype
    assert torch.equal(out, ref_out)
    assert len(grads) == len(ref_grads)
    for g, r in zip(grads, ref_grads, strict=True):
        assert g is not None and g.dtype == r.dtype
        torch.testing.assert_close(g, r, rtol=tol, atol=tol)


# -- every dynamics x rule x amplitude x detach_reset, float64, several T ------------------------
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("amplitude", [False, True])
@pytest.mark.parametrize("firing", FIRINGS)
@pytest.mark.parametrize("dynamics", list(DYNAMICS))
def test_fused_equals_reference_float64(dynamics, firing, amplitude, detach, impl):
    node = _node(dynamics, firing, amplitude, detach)
    for T in (1, 3, 8):
        x = _x(T, 3, 67, seed=T, scale=_scale(node))
        _compare(node, x, impl, TOL[torch.float64])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("surrogate", ["rectangular", "clamp", "sigmoid", "atan"])
@pytest.mark.parametrize("firing", FIRINGS)
@pytest.mark.parametrize("dynamics", list(DYNAMICS))
def test_spike_reset_grad_equals_reference(dynamics, firing, surrogate, impl):
    """reset_grad="spike" (the reset's gradient through |b| of the main spike)."""
    node = _node(dynamics, firing, True, False, surrogate=surrogate, reset_grad="spike")
    for T in (1, 4):
        x = _x(T, 2, 53, seed=T, scale=_scale(node))
        _compare(node, x, impl, TOL[torch.float64])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("surrogate", ["rectangular", "clamp", "sigmoid", "atan"])
@pytest.mark.parametrize("firing", ["mt", "ternary-mt"])
def test_surrogates_and_widths(surrogate, firing, impl):
    for dynamics, detach in (("plif", False), ("lif", True), ("if", False)):
        option = "surrogate_alpha" if surrogate in ("sigmoid", "atan") else "surrogate_width"
        node = _node(dynamics, firing, True, detach, surrogate=surrogate, **{option: 0.7})
        _compare(node, _x(5, 2, 45, seed=3, scale=_scale(node)), impl, TOL[torch.float64])


RESETS = ["main", "any", "soft"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("firing", FIRINGS)
@pytest.mark.parametrize("dynamics", list(DYNAMICS))
def test_reset_choice_equals_reference_float64(dynamics, firing, reset, impl):
    """Every rule x dynamics x reset (issue #15): spikes and gradients of the kernels equal the
    reference loop's, with and without detach_reset and an amplitude, and for hard resets
    with reset_grad="spike". MT rules take deltas (−0.4, 0.3) so that "any" (lowest
    threshold) and "main" differ."""
    deltas = {"deltas": (-0.4, 0.3)} if firing in ("mt", "ternary-mt") else {}
    cases = [(False, False, "surrogate"), (True, True, "surrogate"), (True, False, "surrogate")]
    if reset != "soft":
        cases.append((True, False, "spike"))
    for amplitude, detach, reset_grad in cases:
        node = _node(dynamics, firing, amplitude, detach, reset=reset, reset_grad=reset_grad,
                     **deltas)
        assert node.kernel_record.native and node.kernel_record.reset == reset
        for T in (1, 5):
            x = _x(T, 3, 61, seed=T, scale=_scale(node))
            _compare(node, x, impl, TOL[torch.float64])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reset", RESETS)
def test_reset_choice_surrogates_float32_and_v_reset(reset, impl):
    """The other surrogates (sigmoid, atan, clamp) and float32 with each reset; hard resets
    also with v_reset != 0 (a soft reset refuses one)."""
    for dynamics, firing, surrogate in (("plif", "mt", "sigmoid"), ("lif", "ternary-mt", "atan"),
                                        ("if", "ternary", "clamp"), ("plif", "binary", "atan")):
        for dtype in (torch.float64, torch.float32):
            kw = {"reset": reset, "surrogate": surrogate}
            if reset != "soft":
                kw["v_reset"] = -0.2
            node = _node(dynamics, firing, True, False, dtype=dtype, **kw)
            x = _x(5, 2, 47, seed=2, scale=_scale(node), dtype=dtype)
            _compare(node, x, impl, TOL[dtype])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("firing", INTEGER_RULES)
@pytest.mark.parametrize("dynamics", list(DYNAMICS))
def test_integer_rules_equal_reference(dynamics, firing, reset, impl):
    """Integer rules (issue #15): every dynamics x reset, with and without an amplitude and
    detach_reset, hard resets also with reset_grad="spike", another surrogate and v_reset;
    float64 gradients to 1e-10, float32 to 1e-5. V_th = 0.7 is not a power of two."""
    for amplitude, detach, surrogate, reset_grad, v_reset, _ in INTEGER_CASES:
        if reset == "soft" and (reset_grad == "spike" or v_reset or surrogate != "rectangular"):
            continue
        if dynamics == "plif":
            v_reset = 0.0
        for dtype in (torch.float64, torch.float32):
            node = _node(dynamics, firing, amplitude, detach, dtype=dtype, reset=reset,
                         surrogate=surrogate, reset_grad=reset_grad, v_reset=v_reset,
                         levels=3, v_threshold=0.7)
            assert node.kernel_record.native and node.kernel_record.static.levels == 3
            for T in (1, 6):
                x = _x(T, 3, 57, seed=T, scale=2.5, dtype=dtype)
                _compare(node, x, impl, TOL[dtype])


#: learned thresholds: (amplitude, detach, surrogate, reset_grad) per reset
LEARNED_CASES = (
    (True, False, "rectangular", "surrogate"),
    (False, True, "rectangular", "surrogate"),
    (True, False, "sigmoid", "spike"),
    (False, False, "atan", "surrogate"),
    (True, False, "clamp", "spike"),
)


def _learned_cases(dynamics, firing, reset, dtype=torch.float64):
    """Layers of every rule that learn their thresholds (perturbed from the start, so that
    every threshold differs from its initial value), with the options of LEARNED_CASES that
    the rule and reset accept."""
    opts = ({"deltas": (-0.4, 0.3, 0.7)} if firing in ("mt", "ternary-mt") else
            {"levels": 3, "v_threshold": 0.7} if firing in INTEGER_RULES else {})
    for amplitude, detach, surrogate, reset_grad in LEARNED_CASES:
        if reset == "soft" and reset_grad == "spike":
            continue
        if firing in INTEGER_RULES and (reset == "soft" or detach) and surrogate != "rectangular":
            continue
        node = _node(dynamics, firing, amplitude, detach, dtype=dtype, reset=reset,
                     surrogate=surrogate, reset_grad=reset_grad, learn_thresholds=True, **opts)
        g = torch.Generator().manual_seed(len(firing) + 3 * len(reset))
        with torch.no_grad():
            rho = node.threshold_rho
            rho.copy_(0.3 * torch.randn(rho.shape, generator=g, dtype=torch.float64))
        yield node


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("firing", FIRINGS + INTEGER_RULES)
@pytest.mark.parametrize("dynamics", list(DYNAMICS))
def test_learned_thresholds_equal_reference(dynamics, firing, reset, impl):
    """learn_thresholds=True on the fused paths: spikes equal the reference loop's, and the
    gradients of the input, τ, the amplitude and threshold_rho (the kernels' sum of
    dL/dθ over every neuron and step, chained by autograd) agree to 1e-10 in float64."""
    for node in _learned_cases(dynamics, firing, reset):
        record = node.kernel_record
        assert record.learned and record.native and record.static.learned
        for T in (1, 5):
            x = _x(T, 3, 61, seed=T, scale=1.2 if dynamics != "plif" else 2.4)
            _compare(node, x, impl, TOL[torch.float64])
            assert node.threshold_rho.grad.abs().sum() > 0


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("firing", FIRINGS + INTEGER_RULES)
def test_learned_thresholds_float32(firing, impl):
    for dynamics, reset in (("plif", "main"), ("lif", "soft"), ("if", "any")):
        for node in _learned_cases(dynamics, firing, reset, dtype=torch.float32):
            x = _x(4, 4, 8, 9, seed=11, scale=1.5, dtype=torch.float32)
            _compare(node, x, impl, TOL[torch.float32])


@pytest.mark.parametrize("impl", IMPLS)
def test_learned_thresholds_bfloat16_spikes(impl):
    """bfloat16 input, float32 thresholds (autocast): spikes equal the reference loop's (the
    thresholds rounded to bfloat16 where PyTorch rounds them, V_th and 1/V_th not)."""
    for dynamics, firing, reset in itertools.product(DYNAMICS, FIRINGS + INTEGER_RULES, RESETS):
        opts = ({"deltas": (-0.13, 0.1, 0.23)} if firing in ("mt", "ternary-mt") else
                {"levels": 3} if firing in INTEGER_RULES else {})
        node = _node(dynamics, firing, True, False, dtype=torch.float32, reset=reset,
                     v_threshold=0.3, learn_thresholds=True, **opts)
        with torch.no_grad():
            node.threshold_rho.uniform_(-0.3, 0.3)
        x = _x(5, 3, 200, seed=3, dtype=torch.bfloat16)
        node.backend = "torch"
        with torch.no_grad():
            ref = node(x)
            out = fused_multistep(x, node, impl=impl)
        assert torch.equal(out, ref), (dynamics, firing, reset)


def test_learning_layer_runs_fused():
    """A learning layer takes the fused path its constant copy would, and says so; its
    thresholds reach the kernels as a tensor (no record change when they move)."""
    node = PLIFNode(firing="mt", learn_thresholds=True)
    assert node.path.impl == node.fixed().path.impl
    if HAS_CPU_KERNEL:
        assert node.path.impl == "cpu" and "learned thresholds" in node.path.reason
    record = node.kernel_record
    with torch.no_grad():
        node.threshold_rho.add_(0.2)
    assert node.kernel_record is record
    node.backend = "fused"
    assert node.path.fused


@needs_cpu_kernel
@pytest.mark.parametrize("firing", INTEGER_RULES)
def test_integer_rules_bfloat16(firing):
    """bfloat16: the C++ kernel's spikes equal the reference's (u = H·(1/V_th) rounded as
    PyTorch rounds it), its gradients as accurate as the reference's."""
    for dynamics, reset in itertools.product(DYNAMICS, RESETS):
        node = _node(dynamics, firing, True, False, dtype=torch.float32, reset=reset,
                     levels=4, v_threshold=0.3)
        x = _x(5, 4, 80, seed=21, scale=1.5, dtype=torch.bfloat16)
        weight = _x(*x.shape, seed=22, dtype=torch.bfloat16)
        truth = _oracle(node, x, weight)
        ref_out, ref = _run(node, x, weight)
        out, got = _run(node, x, weight, "cpu")
        assert torch.equal(out, ref_out), (dynamics, reset)
        for g, r, t in zip(got, ref, truth, strict=True):
            err, ref_err = (g.double() - t).norm(), (r.double() - t).norm()
            assert err <= 1.5 * ref_err + 0.01 * t.norm(), (dynamics, reset, err, ref_err)


def test_integer_rules_ties_and_record():
    """Ties at k + 1/2 (V_th a power of two): the kernels round half to even like torch.round;
    the backward keeps H (no one-byte code), and the spikes pack in ceil(log2(D + 1)) bits."""
    u = torch.tensor([0.5, 1.5, 2.5, 3.5, 4.5, -0.5, -1.5, -2.5, 0.49, 7.0])
    for firing in INTEGER_RULES:
        node = IFNode(firing=firing, levels=4, v_threshold=0.5, detach_reset=True)
        x = (u * 0.5).reshape(1, 1, -1)
        want = torch.round(torch.clamp(u, -4 if firing != "integer" else 0, 4))
        impls = ["eager"] + (["cpu"] if HAS_CPU_KERNEL else [])
        for impl in impls:
            assert torch.equal(fused_multistep(x, node, impl=impl).flatten(), want)
        record = record_of(node)
        assert not record.code_ok(False) and record.static.thresholds == (0.5,)
        assert record.thresholds == (0.25, 0.75, 1.25, 1.75)


@pytest.mark.parametrize("reset", RESETS)
def test_reset_choice_gradcheck_of_the_fused_backward(reset):
    """fp64 gradcheck of the fused backward as a function of the upstream gradient: it is the
    linear map the reference loop's autograd applies (checked by finite differences on both)."""
    impls = ["eager"] + (["cpu"] if HAS_CPU_KERNEL else [])
    node = _node("lif", "mt", True, False, reset=reset, surrogate="sigmoid")
    x = _x(4, 2, 9, seed=4, scale=_scale(node)).requires_grad_(True)
    node.backend = "torch"
    ref = node(x)

    def ref_backward(g):
        return torch.autograd.grad(ref, x, g, create_graph=True)[0]

    g0 = _x(*x.shape, seed=8).requires_grad_(True)
    assert torch.autograd.gradcheck(ref_backward, (g0,))
    for impl in impls:
        out = fused_multistep(x, node, impl=impl)
        assert torch.equal(out, ref)
        got = torch.autograd.grad(out, x, g0.detach(), retain_graph=True)[0]
        torch.testing.assert_close(got, ref_backward(g0.detach()), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
def test_nonzero_reset_and_deltas(impl):
    cases = [
        _node("plif", "mt", True, False, v_reset=-0.2, deltas=(-0.4, 0.3, 0.6)),
        _node("lif", "ternary-mt", False, False, v_reset=0.1, deltas=(0.25,), decay=0.6),
        _node("if", "ternary", True, True, v_reset=-0.3, v_threshold=0.8),
        _node("plif", "binary", False, True, init_tau=3.0, v_reset=0.25),
        _node("plif", "ternary-mt", True, False, v_reset=-0.2, reset_grad="spike"),
        _node("if", "mt", False, False, v_reset=0.3, reset_grad="spike"),
    ]
    for node in cases:
        _compare(node, _x(6, 2, 50, seed=5, scale=_scale(node)), impl, TOL[torch.float64])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("firing", FIRINGS)
def test_float32(firing, impl):
    for dynamics in DYNAMICS:
        for detach, reset_grad in ((False, "surrogate"), (True, "surrogate"), (False, "spike")):
            node = _node(dynamics, firing, True, detach, dtype=torch.float32,
                         reset_grad=reset_grad)
            x = _x(4, 4, 8, 9, seed=11, scale=_scale(node), dtype=torch.float32)
            _compare(node, x, impl, TOL[torch.float32])


@pytest.mark.parametrize("firing", FIRINGS)
def test_bfloat16_autocast(firing):
    """Under CPU bf16 autocast the kernels see bfloat16: same spikes, close gradients."""
    for dynamics, detach in (("plif", False), ("lif", True), ("if", False)):
        lin = torch.nn.Linear(24, 24)
        node = _node(dynamics, firing, True, detach, dtype=torch.float32)
        x = _x(4, 6, 24, seed=13, scale=1.5, dtype=torch.float32)
        results = []
        for backend in ("torch", "fused"):
            node.backend = backend
            lin.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = node(lin(x))
            assert y.dtype == torch.bfloat16
            (y.float() * torch.linspace(-1, 1, 24)).sum().backward()
            results.append((y, lin.weight.grad))
        (ref, ref_grad), (out, grad) = results
        assert torch.equal(out, ref)
        assert (grad - ref_grad).norm() <= 0.05 * ref_grad.norm()


def _oracle(node, x, weight):
    """float64 gradients of the very bfloat16 trajectory (the membranes the bf16 run saw)."""
    from multispike.kernels import eager

    record = record_of(node)
    tau = plif_tau(node.w.detach().to(x.dtype)) if node.dynamics == "plif" else None
    amp = node.amplitude.detach().to(x.dtype)
    _, hs = eager.forward(x.reshape(x.shape[0], -1), record, tau, amp, save=True)
    d = torch.float64
    grads = eager.backward(
        weight.double().reshape(x.shape[0], -1), hs.double(), record,
        None if tau is None else tau.double(), amp.double(), tau is not None, True,
    )
    gx, gtau, gamp, _ = grads
    out = [gx.view(x.shape)]
    if tau is not None:  # dL/dw = dL/dtau * dtau/dw, tau = 1 + exp(-w)
        out.append(gtau * -torch.exp(-node.w.detach().to(d)))
    return out + [gamp]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("firing", FIRINGS)
def test_bfloat16_gradients_as_accurate_as_reference(firing, impl):
    """bfloat16 gradients are rounded by nature: the kernels must be no further from the exact
    gradient of the same trajectory than the reference loop is."""
    for dynamics, detach in (("plif", False), ("lif", True), ("if", False)):
        node = _node(dynamics, firing, True, detach, dtype=torch.float32)
        x = _x(4, 6, 40, seed=19, scale=_scale(node), dtype=torch.bfloat16)
        weight = _x(*x.shape, seed=23, dtype=torch.bfloat16)
        truth = _oracle(node, x, weight)
        _, ref = _run(node, x, weight)
        _, got = _run(node, x, weight, impl)
        for g, r, t in zip(got, ref, truth, strict=True):
            err, ref_err = (g.double() - t).norm(), (r.double() - t).norm()
            assert err <= 1.5 * ref_err + 0.01 * t.norm(), (dynamics, err, ref_err)


@needs_cpu_kernel
def test_cpu_kernel_bfloat16_matches_eager():
    """bfloat16 tensors: the C++ kernel rounds every forward op like eager PyTorch does."""
    for dynamics in DYNAMICS:
        node = _node(dynamics, "ternary-mt", True, False, dtype=torch.bfloat16)
        x = _x(5, 3, 300, seed=17, scale=_scale(node), dtype=torch.bfloat16)
        node.backend = "torch"
        with torch.no_grad():
            ref = node(x)
            out = fused_multistep(x, node, impl="cpu")
        assert torch.equal(out, ref)
    # every reset; V_th = 0.3 is not a bfloat16 number: the soft reset's b·V_th is rounded as
    # PyTorch rounds it (V_th in float, the product to bfloat16)
    for dynamics, firing, reset in itertools.product(DYNAMICS, FIRINGS, ["main", "any", "soft"]):
        node = _node(dynamics, firing, True, False, dtype=torch.bfloat16, reset=reset,
                     v_threshold=0.3)
        x = _x(6, 3, 200, seed=3, scale=_scale(node), dtype=torch.bfloat16)
        node.backend = "torch"
        with torch.no_grad():
            ref = node(x)
            out = fused_multistep(x, node, impl="cpu")
        assert torch.equal(out, ref), (dynamics, firing, reset)


@needs_cpu_kernel
def test_cpu_kernel_gradients_do_not_depend_on_threads():
    """dL/dτ and dL/da are summed per chunk of neurons, then over chunks in order: the same
    bits with 1 thread as with several (float32, many chunks, a ragged last chunk)."""
    node = _node("plif", "ternary-mt", amplitude=True, dtype=torch.float32)
    x = _x(4, 8, 3001, seed=5, scale=_scale(node), dtype=torch.float32)
    weight = _x(*x.shape, seed=6, dtype=torch.float32)
    before = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            runs.append(_run(node, x, weight, impl="cpu"))
    finally:
        torch.set_num_threads(before)
    (out1, grads1), *others = runs
    assert all(g is not None for g in grads1) and len(grads1) == 3  # x, w (τ), amplitude
    for out, grads in others:
        assert torch.equal(out, out1)
        for g, g1 in zip(grads, grads1, strict=True):
            assert torch.equal(g, g1)


# -- dispatch ------------------------------------------------------------------------------------
def test_backend_option_and_auto_dispatch():
    node = PLIFNode(firing="mt")
    assert node.backend == "auto" and "backend" not in node.config()
    x = _x(3, 2, 20, dtype=torch.float32, scale=2.0)
    ref = PLIFNode(firing="mt", backend="torch")(x)
    assert torch.equal(node(x), ref)
    assert torch.equal(PLIFNode(firing="mt", backend="fused")(x), ref)
    with pytest.raises(ConfigError, match="unknown backend"):
        PLIFNode(backend="cuda")


def test_monitor_uses_reference_path():
    node = LIFNode(firing="ternary", backend="fused")
    x = _x(4, 2, 30, dtype=torch.float32)
    with record_activity(node) as mon:
        out = node(x)
    assert mon.summary()[0]["neuron_steps"] == x.numel()
    node.backend = "torch"
    assert torch.equal(out, node(x))


def test_no_grad_inference_path():
    node = PLIFNode(firing="ternary-mt", learn_amplitude=True)
    x = _x(4, 3, 40, dtype=torch.float32, scale=2.0)
    with torch.no_grad():
        out = node(x)
    node.backend = "torch"
    assert torch.equal(out, node(x).detach())


def test_custom_charge_falls_back():
    class Doubled(IFNode):
        def charge(self, v, x):
            return v + 2 * x

    node = Doubled(backend="fused")
    assert record_of(node) is None
    x = _x(3, 2, 10, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = node(x)
    node.backend = "torch"
    assert torch.equal(out, node(x))
    with pytest.raises(ConfigError, match="no fused kernel"):
        fused_multistep(x, node)


def test_fake_tensors_take_the_reference_path():
    from torch._subclasses.fake_tensor import FakeTensorMode

    node = LIFNode(firing="ternary", backend="fused", check_input=False)
    with FakeTensorMode():
        out = node(torch.empty(3, 2, 8))  # no storage: a kernel call would fail
    assert out.shape == (3, 2, 8)


def test_empty_batch():
    node = PLIFNode(firing="mt", backend="fused")
    x = torch.zeros(3, 0, 5, requires_grad=True)
    out = node(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("impl", IMPLS)
def test_non_contiguous_input_and_shapes(impl):
    node = LIFNode(firing="mt", learn_amplitude=True)
    base = _x(2, 5, 4, 3, dtype=torch.float32, scale=1.0)
    x = base.permute(1, 0, 2, 3)  # [T=5, B=2, 4, 3], not contiguous
    _compare(node, x, impl, TOL[torch.float32])


# -- memory: what the backward keeps ---------------------------------------------------------------
@needs_cpu_kernel
@pytest.mark.parametrize(
    "cls, options, per_element",
    [
        (PLIFNode, {"firing": "mt"}, 4),  # H in float32
        (LIFNode, {"firing": "ternary", "learn_amplitude": True}, 4),
        (LIFNode, {"firing": "ternary", "detach_reset": True}, 1),  # one byte per neuron-step
        (IFNode, {"firing": "ternary-mt", "detach_reset": True}, 1),
    ],
)
def test_fused_saves_fewer_bytes(cls, options, per_element):
    x = _x(8, 4, 256, dtype=torch.float32).requires_grad_(True)
    ref = saved_bytes(lambda: cls(backend="torch", check_input=False, **options)(x))
    fused = saved_bytes(lambda: cls(backend="fused", check_input=False, **options)(x))
    assert fused < ref
    assert fused <= per_element * x.numel() + 64  # one value per neuron-step (+ 0-dim scalars)


@pytest.mark.parametrize("amplitude", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compact_spikes_exact_and_smaller(amplitude, dtype):
    """Spikes saved by the next layer as int8: identical gradients, a quarter of the bytes."""
    torch.manual_seed(0)
    # the fused path: the C++ kernel, or the eager one where it cannot be built
    node = LIFNode(firing="ternary-mt", learn_amplitude=amplitude, check_input=False,
                   backend="fused").to(dtype)
    if amplitude:
        with torch.no_grad():
            node.amplitude.fill_(0.37)
    conv = torch.nn.Conv2d(6, 5, 3, padding=1).to(dtype)
    x = _x(3, 2, 6, 8, 8, dtype=dtype, scale=1.5).requires_grad_(True)

    def loss():
        s = node(x)  # [T, B, C, H, W] spikes
        return conv(s.flatten(0, 1)).square().sum()

    results = []
    for compact in (False, True):
        for p in [x, *node.parameters(), *conv.parameters()]:
            p.grad = None
        with compact_spikes() if compact else contextlib.nullcontext():
            loss_value = loss()
        loss_value.backward()
        results.append([x.grad, *[p.grad for p in node.parameters()], conv.weight.grad])
    for g, r in zip(*results, strict=True):
        assert torch.equal(g, r)
    # bytes kept: count what compact_spikes' pack hook returns (hooks do not stack)
    from multispike.kernels import compact

    kept = {"plain": 0, "packed": 0}

    def pack(t):
        p = compact._pack(t)
        q = p.q if isinstance(p, compact._Packed) else p.codes if isinstance(
            p, compact._Codes) else p
        kept["packed"] += q.numel() * q.element_size()
        kept["plain"] += t.numel() * t.element_size()
        return p

    # compact_spikes (the C++ kernel writes the codes inside it), seen through a recorder
    with compact_spikes(), torch.autograd.graph.saved_tensors_hooks(pack, compact._unpack):
        loss()
    spikes = x.numel() * x.element_size()
    # ternary-mt with 3 thresholds: values -3..3, 4 bits each
    assert kept["plain"] - kept["packed"] == spikes - x.numel() // 2


def test_kernel_module_surface():
    assert set(kernels.BACKENDS) == {"auto", "torch", "fused"}
    record = record_of(PLIFNode(firing="ternary-mt"))
    assert record is not None and record.native and record.signed
    assert record.thresholds == (1.0, 0.5, 1.5)


# -- Triton: on CUDA when a device is present, else in Triton's CPU interpreter -----------------
HAS_TRITON = importlib.util.find_spec("triton") is not None
#: every variant of a check on CUDA too (default there: the sample of :func:`_sampled`)
TRITON_FULL_ENV = "MULTISPIKE_TRITON_FULL"
TRITON_DTYPES = (torch.float64, torch.float32, torch.bfloat16)
#: triton_check's option sets: amplitude, detach, surrogate, reset_grad, v_reset, reset
TRITON_CASES = (
    (True, False, "rectangular", "surrogate", 0.0, None),
    (False, True, "sigmoid", "surrogate", 0.0, None),
    (True, True, "clamp", "surrogate", 0.0, None),
    (True, False, "atan", "spike", 0.2, None),
    (False, False, "sigmoid", "surrogate", -0.3, None),
    (True, False, "rectangular", "surrogate", 0.0, "soft"),
    (False, True, "clamp", "surrogate", 0.0, "soft"),
    (True, False, "sigmoid", "spike", 0.1, "any"),
)


def _sample_on(device: str) -> bool:
    """Whether a check on ``device`` runs the sample: on CUDA, unless ``$MULTISPIKE_TRITON_FULL``
    is ``1``; in the interpreter (``"cpu"``) every variant, always."""
    return device != "cpu" and os.environ.get(TRITON_FULL_ENV) != "1"


def _sampled(groups, n: int, sample: bool):
    """``(group, j)`` for each group and each of its ``n`` option sets: all of them, or, with
    ``sample``, one per group: the ``g``-th group takes option set ``(g + g // n) % n``.

    The sample is fixed (no randomness: the same variants run on every machine). Each group
    (a rule x dynamics x dtype, or rule x dynamics for the learned thresholds) is checked
    once, and the option sets rotate over the groups, shifted by one every ``n`` groups, so
    that each option set meets several rules, dynamics and dtypes. On CUDA every variant
    compiles kernels of its own (its options are ``tl.constexpr``), a second or so each on a
    cold cache: all of them took minutes, the sample keeps each test well under a minute;
    the interpreter on the CPU still checks every variant (``_run_triton_check``).
    """
    for g, group in enumerate(groups):
        for j in range(n):
            if not sample or j == (g + g // n) % n:
                yield group, j


def triton_variants(sample: bool) -> list[tuple]:
    """``(dynamics, firing, dtype, option set)`` checked by :func:`triton_check`."""
    groups = itertools.product(DYNAMICS, FIRINGS, TRITON_DTYPES)
    return [(*group, TRITON_CASES[j]) for group, j in _sampled(groups, len(TRITON_CASES), sample)]


def triton_check(device: str, sample: bool | None = None) -> None:
    """Triton kernels against the reference on ``device`` (called in-process on CUDA, in a
    subprocess with ``TRITON_INTERPRET=1`` on CPU): every dynamics x rule x dtype with the
    option sets of :data:`TRITON_CASES`, all of them (the interpreter) or the sample of
    :func:`_sampled` (``sample``; default: on CUDA, see :func:`_sample_on`)."""
    sample = _sample_on(device) if sample is None else sample
    for dynamics, firing, dtype, case in triton_variants(sample):
        amplitude, detach, surrogate, reset_grad, v_reset, reset = case
        mt = firing in ("mt", "ternary-mt")
        deltas = {"deltas": (-0.4, 0.3)} if mt and reset is not None else {}
        node = _node(dynamics, firing, amplitude, detach, dtype=dtype, reset=reset,
                     surrogate=surrogate, reset_grad=reset_grad, v_reset=v_reset,
                     **deltas).to(device)
        for T in (1, 5):
            x = _x(T, 3, 41, seed=T, scale=_scale(node), dtype=dtype).to(device)
            weight = _x(*x.shape, seed=7, dtype=dtype).to(device)
            ref_out, ref_grads = _run(node, x, weight)
            record = record_of(node)
            node.zero_grad(set_to_none=True)
            xi = x.clone().requires_grad_(True)
            w, amp = _scalars(node, record)
            out = fused(xi, Plan(record, "triton"), w, amp)
            (out * weight).sum().backward()
            grads = [xi.grad] + [p.grad for p in node.parameters()]
            assert torch.equal(out.detach(), ref_out), (dynamics, firing, dtype, T, case)
            if dtype != torch.bfloat16:
                for g, r in zip(grads, ref_grads, strict=True):
                    torch.testing.assert_close(g, r, rtol=TOL[dtype], atol=TOL[dtype])
            elif amplitude:  # as accurate as the reference (see the bfloat16 test above)
                truth = _oracle(node, x, weight)
                for g, r, t in zip(grads, ref_grads, truth, strict=True):
                    err, ref_err = (g.double() - t).norm(), (r.double() - t).norm()
                    assert err <= 1.5 * ref_err + 0.01 * t.norm(), (dynamics, firing, T, case)


INTEGER_CASES = (  # amplitude, detach, surrogate, reset_grad, v_reset, reset
    (True, False, "rectangular", "surrogate", 0.0, "soft"),
    (False, True, "rectangular", "surrogate", 0.0, "soft"),
    (True, False, "sigmoid", "surrogate", -0.2, "main"),
    (False, False, "clamp", "spike", 0.0, "main"),
    (True, False, "atan", "surrogate", 0.1, "any"),
    (True, False, "rectangular", "spike", 0.0, "any"),
)


def _triton_compare(node, x, weight, dtype):
    ref_out, ref_grads = _run(node, x, weight)
    record = record_of(node)
    node.zero_grad(set_to_none=True)
    xi = x.clone().requires_grad_(True)
    w, amp = _scalars(node, record)
    out = fused(xi, Plan(record, "triton"), w, amp, _thresholds(node, record))
    (out * weight).sum().backward()
    grads = [xi.grad] + [p.grad for p in node.parameters()]
    assert len(grads) == len(ref_grads) and all(g is not None for g in grads)
    assert torch.equal(out.detach(), ref_out), (node, dtype)
    if dtype != torch.bfloat16:
        for g, r in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(g, r, rtol=TOL[dtype], atol=TOL[dtype])
    elif node.amplitude is not None and not node.learn_thresholds:  # as accurate as the ref
        truth = _oracle(node, x, weight)
        for g, r, t in zip(grads, ref_grads, truth, strict=True):
            err, ref_err = (g.double() - t).norm(), (r.double() - t).norm()
            assert err <= 1.5 * ref_err + 0.01 * t.norm(), (node, err, ref_err)


def triton_integer_variants(sample: bool) -> list[tuple]:
    """``(dynamics, firing, dtype, option set)`` checked by :func:`triton_integer_check`."""
    groups = itertools.product(DYNAMICS, INTEGER_RULES, TRITON_DTYPES)
    return [(*group, INTEGER_CASES[j])
            for group, j in _sampled(groups, len(INTEGER_CASES), sample)]


def triton_integer_check(device: str, sample: bool | None = None) -> None:
    """The Triton kernels for the integer rules, every dynamics x reset, three dtypes (with
    ``sample``, default on CUDA: one option set of :data:`INTEGER_CASES` per rule x dynamics x
    dtype, see :func:`_sampled`)."""
    sample = _sample_on(device) if sample is None else sample
    for dynamics, firing, dtype, case in triton_integer_variants(sample):
        amplitude, detach, surrogate, reset_grad, v_reset, reset = case
        if dynamics == "plif" and v_reset:
            v_reset = 0.0
        node = _node(dynamics, firing, amplitude, detach, dtype=dtype, reset=reset,
                     surrogate=surrogate, reset_grad=reset_grad, v_reset=v_reset,
                     levels=3, v_threshold=0.7).to(device)
        for T in (1, 5):
            x = _x(T, 3, 41, seed=T, scale=2.5, dtype=dtype).to(device)
            weight = _x(*x.shape, seed=7, dtype=dtype).to(device)
            _triton_compare(node, x, weight, dtype)


def triton_learned_variants(sample: bool) -> list[tuple]:
    """``(dynamics, firing, reset, k)`` checked in float64 by :func:`triton_learned_check`:
    the ``k``-th layer of ``_learned_cases(dynamics, firing, reset)``. All of them, or, with
    ``sample``, one per rule x dynamics: the reset :func:`_sampled` picks (every rule and every
    dynamics meets each reset) and, in turn, one of the layers that reset accepts."""
    out = []
    groups = itertools.product(DYNAMICS, FIRINGS + INTEGER_RULES)
    for g, ((dynamics, firing), j) in enumerate(_sampled(groups, len(RESETS), sample)):
        n = sum(1 for _ in _learned_cases(dynamics, firing, RESETS[j]))
        out += [(dynamics, firing, RESETS[j], k) for k in ([g % n] if sample else range(n))]
    return out


def triton_learned_check(device: str, sample: bool | None = None) -> None:
    """The Triton kernels with learned thresholds: every rule x dynamics x reset (float64,
    gradients of threshold_rho included; with ``sample``, default on CUDA, the variants of
    :func:`triton_learned_variants`), and float32 / bfloat16 spikes (always all eight)."""
    sample = _sample_on(device) if sample is None else sample
    for dynamics, firing, reset, k in triton_learned_variants(sample):
        node = next(itertools.islice(_learned_cases(dynamics, firing, reset), k, None))
        node = node.to(device)
        for T in (1, 4):
            x = _x(T, 3, 41, seed=T, scale=_scale(node), dtype=torch.float64).to(device)
            weight = _x(*x.shape, seed=7, dtype=torch.float64).to(device)
            _triton_compare(node, x, weight, torch.float64)
    for dtype in (torch.float32, torch.bfloat16):
        for dynamics, firing, reset in (("plif", "mt", "main"), ("lif", "ternary-mt", "soft"),
                                        ("if", "integer", "any"), ("lif", "signed-integer",
                                                                   "soft")):
            node = next(_learned_cases(dynamics, firing, reset, dtype=torch.float32)).to(device)
            x = _x(5, 3, 41, seed=2, scale=1.5, dtype=dtype).to(device)
            weight = _x(*x.shape, seed=7, dtype=dtype).to(device)
            _triton_compare(node, x, weight, dtype)


def _run_triton_check(name: str) -> None:
    """``name('cpu')``, every variant, in Triton's interpreter in a fresh interpreter process
    (``TRITON_INTERPRET`` must be set before triton is imported)."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), str(root), env.get("PYTHONPATH", "")])
    code = f"from tests.test_kernels import {name}; {name}('cpu')"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
def test_triton_learned_thresholds_equal_reference():
    if torch.cuda.is_available():
        triton_learned_check("cuda")  # the sample (see _sampled); every variant on the CPU
        return
    _run_triton_check("triton_learned_check")


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
def test_triton_integer_kernels_equal_reference():
    if torch.cuda.is_available():
        triton_integer_check("cuda")  # the sample (see _sampled); every variant on the CPU
        return
    _run_triton_check("triton_integer_check")


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
def test_triton_kernels_equal_reference():
    if torch.cuda.is_available():
        triton_check("cuda")  # the sample (see _sampled); every variant on the CPU
        return
    _run_triton_check("triton_check")


def test_triton_cuda_sample_covers_every_rule_dynamics_and_dtype(monkeypatch):
    # what the CUDA runs of the three checks above compile: a fixed eighth to sixth of the
    # variants, each rule x dynamics x dtype at least once, and every option set somewhere
    monkeypatch.delenv(TRITON_FULL_ENV, raising=False)
    assert _sample_on("cuda") and not _sample_on("cpu")
    monkeypatch.setenv(TRITON_FULL_ENV, "1")
    assert not _sample_on("cuda")
    for variants, dtypes, cases, n_full in (
        (triton_variants, TRITON_DTYPES, TRITON_CASES, 288),
        (triton_integer_variants, TRITON_DTYPES, INTEGER_CASES, 108),
    ):
        full, sample = variants(False), variants(True)
        rules = {v[1] for v in full}
        assert len(full) == n_full and len(set(full)) == n_full
        assert set(sample) < set(full) and sample == variants(True)
        assert {v[:3] for v in sample} == set(itertools.product(DYNAMICS, rules, dtypes))
        assert len(sample) == len(full) // len(cases)
        assert {v[3] for v in sample} == set(cases)
    full, sample = triton_learned_variants(False), triton_learned_variants(True)
    assert len(full) == sum(1 for d, f, r in itertools.product(
        DYNAMICS, FIRINGS + INTEGER_RULES, RESETS) for _ in _learned_cases(d, f, r))
    assert set(sample) < set(full) and len(sample) == len(DYNAMICS) * 6 <= len(full) // 4
    assert {v[:2] for v in sample} == set(itertools.product(DYNAMICS, FIRINGS + INTEGER_RULES))
    assert {(v[1], v[2]) for v in sample} == set(itertools.product(FIRINGS + INTEGER_RULES,
                                                                   RESETS))
    assert {(v[0], v[2]) for v in sample} == set(itertools.product(DYNAMICS, RESETS))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_dispatch_uses_fused_path():
    node = PLIFNode(firing="ternary-mt", learn_amplitude=True).cuda()
    x = _x(4, 8, 300, dtype=torch.float32, scale=2.0).cuda()
    out = node(x)
    node.backend = "torch"
    assert torch.equal(out, node(x))
