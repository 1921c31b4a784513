"""Learnable thresholds (issue #15 point 2): ordered and positive by construction, exact at
the start, gradients against a reference loop and finite differences, constant after fixed()."""

from __future__ import annotations

import math

import pytest
import torch

from multispike.errors import ConfigError
from multispike.functional import (
    MultiThreshold,
    initial_thresholds,
    learned_thresholds,
    threshold_growth,
    threshold_rho_for,
)
from multispike.neurons import IFNode, LIFNode, PLIFNode, build_neuron, fix_thresholds
from tests.reference import straight_through_reference

RULES = ["binary", "mt", "ternary", "ternary-mt", "integer", "signed-integer"]
MT = ("mt", "ternary-mt")


def _x(*shape, seed=0, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def _opts(firing):
    if firing in MT:
        return {"deltas": (-0.4, 0.3, 0.7)}
    if "integer" in firing:
        return {"levels": 3}
    return {}


def _perturb(node, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        node.threshold_rho.copy_(0.3 * torch.randn(node.threshold_rho.shape,
                                                         generator=g))


def _gain(rho):
    """m(ρ) written out from its definition: 1 + g for ρ >= 0, 1/(1 + g) below, with
    g = |ρ|/(1 + |ρ|/15)."""
    a = rho.abs()
    g = a / (1 + a / 15)
    return torch.where(rho >= 0, 1 + g, 1 / (1 + g))


def test_construction_is_ordered_positive_and_exact_at_zero():
    initial = (0.6, 1.0, 1.3, 1.7)
    for dtype in (torch.float32, torch.float64):
        th = learned_thresholds(torch.zeros(4, dtype=dtype), initial)
        assert [t.item() for t in th] == [torch.tensor(v, dtype=dtype).item() for v in initial]
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        rho = 4 * torch.randn(4, generator=g, dtype=torch.float64)
        th = torch.stack(learned_thresholds(rho, initial))
        assert (th > 0).all() and (th.diff() > 0).all()
        # the closed form θ_k = Σ_{j<=k} c_j·m(ρ_j), m written out from its definition
        c = torch.tensor([0.6, 0.4, 0.3, 0.4], dtype=torch.float64)
        m = _gain(rho)
        assert ((m > 1 / 16) & (m < 16)).all()
        torch.testing.assert_close(th, torch.cumsum(c * m, 0), rtol=1e-12, atol=1e-12)
    rho = (0.2 * torch.randn(4, generator=g, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda r: torch.stack(learned_thresholds(r, initial)), rho)


def test_initial_thresholds_and_main_index():
    assert initial_thresholds(MultiThreshold(deltas=(-0.4, 0.3)), 1.0) == ((0.6, 1.0, 1.3), 1)
    assert initial_thresholds(MultiThreshold(deltas=(0.3, 0.5)), 2.0) == ((2.0, 2.3, 2.5), 0)
    node = LIFNode(firing="ternary-mt", deltas=(-0.2, 0.25), learn_thresholds=True)
    assert node.threshold_rho.shape == (3,)
    assert LIFNode(firing="integer", learn_thresholds=True).threshold_rho.shape == (1,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("firing", RULES)
def test_starts_at_exactly_the_given_thresholds(firing, dtype):
    for cls in (PLIFNode, LIFNode, IFNode):
        fixed = cls(firing=firing, backend="torch", **_opts(firing)).to(dtype)
        learn = cls(firing=firing, learn_thresholds=True, **_opts(firing)).to(dtype)
        v, rule = learn.fixed_firing()
        r = fixed.rule
        want = r.thresholds(fixed.v_threshold)
        got = rule.thresholds(v)
        assert [torch.tensor(t, dtype=dtype).item() for t in want] == list(got)  # in the dtype
        assert v == fixed.v_threshold and type(rule) is type(r)  # deltas: θ − V_th, rounded
        x = _x(5, 3, 40, seed=1, scale=1.5, dtype=dtype)
        assert torch.equal(learn(x), fixed(x))


@pytest.mark.parametrize("backend", ["torch", "auto", "fused"])
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("reset", ["main", "any", "soft"])
@pytest.mark.parametrize("firing", RULES)
def test_gradients_equal_reference_loop(firing, reset, detach, backend):
    """dL/dx and dL/dρ of a learned layer (float64) against the loop of tests/reference.py
    fed with θ_k = Σ c_j·m(ρ_j) (the closed form): every threshold's surrogate and, for a
    soft reset, b·V_th carry the gradient. The layer's reference loop (backend="torch") and
    its fused path (the C++ kernel, or the eager fused path where it cannot be built)."""
    node = LIFNode(decay=0.5, firing=firing, learn_thresholds=True, reset=reset,
                   detach_reset=detach, backend=backend, **_opts(firing)).double()
    assert node.path.fused == (backend != "torch") or backend == "auto"
    _perturb(node, seed=3)
    initial, main = initial_thresholds(node.rule, node.v_threshold)
    x = _x(6, 3, 31, seed=4, scale=1.6).requires_grad_(True)
    w = _x(6, 3, 31, seed=5)
    out = node(x)
    (out * w).sum().backward()

    rho = node.threshold_rho.detach().clone().requires_grad_(True)
    c = torch.tensor([initial[0]] + [b - a for a, b in zip(initial, initial[1:], strict=False)],
                     dtype=torch.float64)
    th = torch.cumsum(c * _gain(rho), 0)
    xr = x.detach().clone().requires_grad_(True)
    levels = node.rule.levels if "integer" in firing else None
    ref = straight_through_reference(xr, th.unbind(), main=main, signed=node.rule.signed,
                                     reset=reset, decay=0.5, detach_reset=detach, levels=levels)
    (ref * w).sum().backward()
    assert torch.equal(out.detach(), ref.detach())
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(node.threshold_rho.grad, rho.grad, rtol=1e-9, atol=1e-9)
    assert rho.grad.abs().sum() > 0


@pytest.mark.parametrize("firing", RULES)
def test_threshold_gradient_against_finite_differences(firing):
    """One step (T = 1, no state): the straight-through gradient of every threshold is the
    derivative of the surrogate's primitive (rectangular: clamp(x + 1/2, 0, 1); integer:
    clamp(H/V_th, lo, D)), which central differences check in float64."""
    node = IFNode(firing=firing, learn_thresholds=True, **_opts(firing)).double()
    _perturb(node, seed=7)
    x = _x(1, 400, seed=8, scale=1.5)
    w = _x(1, 400, seed=9)
    (node(x) * w).sum().backward()
    initial, main = initial_thresholds(node.rule, node.v_threshold)
    signed = node.rule.signed

    def relaxed(rho):
        th = learned_thresholds(rho, initial)
        h = x[0]
        if "integer" in firing:
            lo = -node.rule.levels if signed else 0
            return (torch.clamp(h / th[main], lo, node.rule.levels) * w).sum()
        prim = sum(torch.clamp(h - t + 0.5, 0, 1) for t in th)
        if signed:
            prim = prim - sum(torch.clamp(-h - t + 0.5, 0, 1) for t in th)
        return (prim * w).sum()

    rho = node.threshold_rho.detach()
    eps = 1e-6
    fd = torch.stack([
        (relaxed(rho + eps * e) - relaxed(rho - eps * e)) / (2 * eps)
        for e in torch.eye(len(rho), dtype=rho.dtype)
    ])
    torch.testing.assert_close(node.threshold_rho.grad, fd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("firing", RULES)
def test_fixed_layer_gives_identical_outputs_and_runs_fused(firing, dtype):
    for cls in (PLIFNode, LIFNode, IFNode):
        node = cls(firing=firing, learn_thresholds=True, learn_amplitude=True,
                   **_opts(firing)).to(dtype)
        _perturb(node, seed=11)
        const = node.fixed()
        # the learning layer runs the same path as its constant copy (fused where a kernel is)
        assert node.path.impl == const.path.impl
        assert not node.path.fused or "learned thresholds" in node.path.reason
        assert not const.learn_thresholds and const.threshold_rho is None
        assert node.learn_thresholds  # the original is unchanged
        v, rule = node.fixed_firing()
        assert const.v_threshold == v and const.rule == rule and v != node.v_threshold
        assert const.kernel_record is not None
        x = _x(6, 2, 45, seed=12, scale=1.5, dtype=dtype)
        ref = node(x)
        for backend in ("torch", "auto", "fused"):
            const.backend = backend
            assert torch.equal(const(x), ref), (cls, backend)
        again = build_neuron(const.config())
        again.load_state_dict(const.state_dict())
        again.to(dtype)
        assert torch.equal(again(x), ref)


def test_config_and_state_dict_round_trip():
    node = PLIFNode(firing="ternary-mt", deltas=(-0.3, 0.4), learn_thresholds=True)
    _perturb(node, seed=1)
    cfg = node.config()
    assert cfg["learn_thresholds"] is True and cfg["deltas"] == [-0.3, 0.4]
    again = build_neuron(cfg)
    again.load_state_dict(node.state_dict())
    x = _x(4, 2, 30, seed=2, scale=2.0, dtype=torch.float32)
    assert torch.equal(again(x), node(x))
    assert again.fixed_firing() == node.fixed_firing()
    assert "learn_thresholds" not in PLIFNode().config()


def test_fix_thresholds_on_a_model_and_errors():
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), LIFNode(firing="mt", learn_thresholds=True),
                              torch.nn.Linear(8, 8), IFNode(firing="integer"))
    _perturb(net[1], seed=5)
    x = _x(3, 2, 8, seed=6, dtype=torch.float32)
    ref = net(x)
    out = fix_thresholds(net)
    assert out is net and not net[1].learn_thresholds and torch.equal(net(x), ref)
    with pytest.raises(ConfigError, match="does not learn"):
        IFNode().threshold_tensors()


def test_thresholds_stay_ordered_while_training():
    torch.manual_seed(0)
    node = IFNode(firing="ternary-mt", deltas=(-0.5, 0.5), learn_thresholds=True)
    opt = torch.optim.SGD(node.parameters(), lr=5.0)
    for _ in range(20):
        x = torch.randn(4, 16, 32) * 2
        loss = (node(x) - 3.0).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    v, rule = node.fixed_firing()
    th = sorted(rule.thresholds(v))
    assert all(t > 0 and math.isfinite(t) for t in th) and th == sorted(set(th))
    assert v != 1.0


def test_monitor_uses_the_learned_thresholds():
    from multispike.monitor import record_activity

    node = IFNode(firing="mt", deltas=(-0.5, 0.5), learn_thresholds=True)
    with torch.no_grad():
        node.threshold_rho.fill_(threshold_rho_for(0.5))  # thresholds 0.25, 0.5, 0.75
    x = torch.tensor([[[0.3, 0.6, 0.8, 0.1]]])
    with record_activity(node) as mon:
        out = node(x)
    assert out.flatten().tolist() == [1, 2, 3, 0]
    layer = next(iter(mon.layers.values()))
    assert layer.spikes == 6 and layer.thresholds == pytest.approx((0.5, 0.25, 0.75), abs=1e-6)


def _check_thresholds(node):
    """Finite, positive and strictly ordered, and fixed() builds the constant layer."""
    initial, main = initial_thresholds(node.rule, node.v_threshold)
    th = torch.stack(learned_thresholds(node.threshold_rho.detach(), initial))
    assert torch.isfinite(th).all() and (th > 0).all() and (th.diff() > 0).all(), th
    const = node.fixed()
    v, rule = const.v_threshold, const.rule
    assert math.isfinite(v) and v > 0 and not const.learn_thresholds
    assert sorted(set(rule.thresholds(v))) == sorted(rule.thresholds(v))


@pytest.mark.parametrize("dynamics", [PLIFNode, LIFNode, IFNode])
@pytest.mark.parametrize("firing", RULES)
def test_no_update_breaks_the_thresholds(dynamics, firing):
    """One SGD step at lr ±1000 (either sign of the gradient) or Adam at lr 10, several
    steps: outputs and thresholds stay finite, thresholds positive and strictly ordered, and
    fixed() works after every step (the bounded gains of threshold_growth)."""
    for opt_of in (lambda p: torch.optim.SGD(p, lr=1000.0),
                   lambda p: torch.optim.SGD(p, lr=1000.0, maximize=True),  # the other sign
                   lambda p: torch.optim.Adam(p, lr=10.0)):
        node = dynamics(firing=firing, learn_thresholds=True, **_opts(firing))
        opt = opt_of([node.threshold_rho])
        for step in range(7):
            x = _x(4, 2, 64, seed=step, scale=2.0, dtype=torch.float32)
            out = node(x)
            assert torch.isfinite(out).all()
            opt.zero_grad()
            (out * _x(4, 2, 64, seed=50 + step, dtype=torch.float32)).sum().backward()
            opt.step()
            _check_thresholds(node)
        assert torch.isfinite(node(_x(4, 2, 64, seed=99, dtype=torch.float32))).all()


def test_extreme_parameters_keep_the_bounds():
    """ρ = ±inf, NaN and ±1e30 in float32: every segment within [c/16, 16·c], so thresholds
    are finite, positive and strictly ordered; the layer at rest does not fire."""
    node = IFNode(firing="mt", deltas=(-0.5, 0.5, 1.0), learn_thresholds=True)
    for value in (float("inf"), float("-inf"), float("nan"), 1e30, -1e30):
        with torch.no_grad():
            node.threshold_rho.fill_(value)
        _check_thresholds(node)
        assert node(torch.zeros(3, 2, 8)).abs().sum() == 0
    initial, _ = initial_thresholds(node.rule, node.v_threshold)
    low = learned_thresholds(torch.full((4,), -1e30), initial)
    high = learned_thresholds(torch.full((4,), 1e30), initial)
    assert float(low[0]) == pytest.approx(initial[0] / 16)
    assert float(high[-1]) == pytest.approx(initial[-1] * 16)


def test_threshold_rho_for_inverts_the_gain():
    for gain in (0.07, 0.5, 1.0, 2.0, 15.5):
        rho = torch.tensor(threshold_rho_for(gain), dtype=torch.float64)
        assert 1 + float(threshold_growth(rho)) == pytest.approx(gain, rel=1e-12)
    with pytest.raises(ConfigError, match="strictly between"):
        threshold_rho_for(16.0)
