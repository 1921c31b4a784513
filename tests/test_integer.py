"""Integer spikes (issue #15 point 1): SpikeYOLO's I-LIF and its signed twin, against golden
values from the equations, the reference loops of tests/reference.py, finite differences and
SpikingJelly 2.0's ILIFNode."""

from __future__ import annotations

import pytest
import torch

from multispike.errors import ConfigError
from multispike.functional import Integer, Rectangular, SignedInteger, get_firing, round_ste
from multispike.monitor import record_activity
from multispike.neurons import IFNode, LIFNode, PLIFNode, build_neuron
from tests.reference import integer_reference, straight_through_reference

DYNAMICS = {"plif": PLIFNode, "lif": LIFNode, "if": IFNode}
RULES = ["integer", "signed-integer"]


def _x(*shape, seed=0, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


# -- golden values -------------------------------------------------------------------------------
@pytest.mark.parametrize("v_th", [1.0, 0.5, 2.0])
def test_integer_golden_values(v_th):
    """Ties at .5 go to the even integer (after the clamp), the clamp at D, 0 below zero."""
    u = torch.tensor([-3.0, -0.5, 0.0, 0.49, 0.5, 0.51, 1.5, 2.5, 3.49, 3.5, 4.0, 4.5, 9.0],
                     dtype=torch.float64)
    b, s = Integer(levels=4).fire(u * v_th, v_th, Rectangular())
    assert b.tolist() == [0, 0, 0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4]
    assert s.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]  # main spike: H >= V_th
    b, s = SignedInteger(levels=4).fire(u * v_th, v_th, Rectangular())
    assert b.tolist() == [-3, 0, 0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4]
    assert (-SignedInteger(levels=4).fire(-u * v_th, v_th, Rectangular())[0]).tolist() == \
        b.tolist()
    assert SignedInteger(levels=2).fire(torch.tensor([-7.0, -2.5, -1.5]) * v_th, v_th,
                                        Rectangular())[0].tolist() == [-2, -2, -2]


def test_signed_integer_with_one_level_has_ternary_values():
    h = _x(1000, scale=2.0)
    b, _ = SignedInteger(levels=1).fire(h, 1.0, Rectangular())
    assert set(b.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert torch.equal(b, torch.where(h > 0.5, 1.0, torch.where(h < -0.5, -1.0, 0.0)).double())


@pytest.mark.parametrize("v_th", [1.0, 0.5])
def test_straight_through_gradient_window_inclusive(v_th):
    u = torch.tensor([-0.01, 0.0, 0.5, 2.0, 4.0, 4.01], dtype=torch.float64)
    h = (u * v_th).requires_grad_(True)
    b, _ = Integer(levels=4).fire(h, v_th, Rectangular())
    b.sum().backward()
    assert (h.grad * v_th).tolist() == [0, 1, 1, 1, 1, 0]
    h = (torch.cat([-u, u]) * v_th).requires_grad_(True)
    SignedInteger(levels=4).fire(h, v_th, Rectangular())[0].sum().backward()
    assert (h.grad * v_th).tolist() == [1, 1, 1, 1, 1, 0] * 2  # |H|/V_th <= D
    x = torch.tensor([-1.0, 0.3, 5.0], requires_grad=True)
    round_ste(x, 0.0, 4.0).sum().backward()
    assert x.grad.tolist() == [0, 1, 0]


def test_straight_through_gradient_against_finite_differences():
    """db/dH is the derivative of clamp(H/V_th, lo, D): checked by central differences."""
    v_th = 0.7
    for rule in (Integer(levels=3), SignedInteger(levels=3)):
        h = _x(200, seed=3, scale=2.5).requires_grad_(True)
        w = _x(200, seed=4)
        (rule.fire(h, v_th, Rectangular())[0] * w).sum().backward()
        eps = 1e-6
        lo = -3.0 if rule.signed else 0.0

        def prim(z, lo=lo, w=w):
            return (torch.clamp(z / v_th, lo, 3.0) * w).detach()

        fd = (prim(h + eps) - prim(h - eps)) / (2 * eps)
        away = ((h / v_th - lo).abs() > 1e-4) & ((h / v_th - 3.0).abs() > 1e-4)
        torch.testing.assert_close(h.grad[away], fd[away], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("firing", RULES)
def test_planes_are_a_thermometer_that_sums_to_b(firing):
    rule = get_firing(firing, levels=3)
    h = torch.cat([_x(500, scale=4.0), torch.arange(-4, 4.5, 0.5, dtype=torch.float64)])
    b, _ = rule.fire(h, 1.0, Rectangular())
    planes = rule.planes(h, 1.0)
    assert planes.shape == (rule.n_planes(1.0), h.numel())
    assert len(rule.plane_signs) == rule.n_planes(1.0) == (6 if rule.signed else 3)
    signs = torch.tensor(rule.plane_signs, dtype=h.dtype)
    assert torch.equal(torch.tensordot(signs, planes, dims=1), b)  # ties included
    for k in range(1, 4):
        assert torch.equal(planes[k - 1], (b >= k).double())
    assert rule.thresholds(1.0) == (0.5, 1.5, 2.5)


# -- neurons against the reference loop ---------------------------------------------------------
@pytest.mark.parametrize("reset", ["soft", "main", "any"])
@pytest.mark.parametrize("firing", RULES)
@pytest.mark.parametrize("dynamics", list(DYNAMICS))
def test_neuron_equals_reference_loop(dynamics, firing, reset):
    kw = {"decay": 0.5} if dynamics == "lif" else {}
    v_reset = 0.0 if reset == "soft" or dynamics == "plif" else -0.25  # the loop: Eq 8 only
    node = DYNAMICS[dynamics](firing=firing, levels=3, v_threshold=0.5, reset=reset,
                              v_reset=v_reset, backend="torch", **kw).double()
    x = _x(7, 4, 33, seed=1, scale=1.5)
    # ties at .5 on purpose: V_th = 0.5 is a power of two, so H/V_th is exact
    x[0, 0, :8] = torch.tensor([0.25, 0.75, 1.25, 1.75, -0.25, -0.75, 2.0, -9.0])
    tau = None
    if dynamics == "plif":
        tau = float(node.tau.detach())
    ref = integer_reference(x, 0.5, 3, signed=firing == "signed-integer", reset=reset,
                            decay=0.5 if dynamics == "lif" else 1.0, tau=tau, v_reset=v_reset)
    assert torch.equal(node(x), ref)


@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("reset", ["soft", "main", "any"])
@pytest.mark.parametrize("firing", RULES)
def test_gradients_equal_straight_through_reference(firing, reset, detach):
    """Input gradients of the library against a loop written from the equations (float64)."""
    v_th = 0.8
    node = LIFNode(decay=0.6, firing=firing, levels=3, v_threshold=v_th, reset=reset,
                   detach_reset=detach, backend="torch").double()
    x = _x(6, 3, 29, seed=2, scale=1.8).requires_grad_(True)
    w = _x(6, 3, 29, seed=5)
    (node(x) * w).sum().backward()
    xr = x.detach().clone().requires_grad_(True)
    ref = straight_through_reference(xr, (torch.tensor(v_th, dtype=torch.float64),),
                                     signed=firing == "signed-integer", reset=reset, decay=0.6,
                                     detach_reset=detach, levels=3)
    (ref * w).sum().backward()
    assert torch.equal(node(x).detach(), ref.detach())
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-10, atol=1e-10)


# -- options -------------------------------------------------------------------------------------
def test_options_and_errors():
    node = LIFNode(firing="integer")
    assert node.rule == Integer(levels=4) and node.reset == "soft"
    assert LIFNode(firing="signed-integer", levels=2).rule.levels == 2
    for bad in (0, -1, 1.5, True, 128, "3"):
        with pytest.raises(ConfigError, match="levels") as e:
            LIFNode(firing="integer", levels=bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="levels apply to firing 'integer'"):
        LIFNode(firing="mt", levels=3)
    with pytest.raises(ConfigError, match="deltas apply"):
        LIFNode(firing="integer", deltas=(0.5,))
    with pytest.raises(ConfigError, match="no effect on firing='integer'"):
        LIFNode(firing="integer", surrogate="sigmoid")
    with pytest.raises(ConfigError, match="detach_reset"):
        LIFNode(firing="integer", reset="main", detach_reset=True, surrogate_width=0.5)
    LIFNode(firing="integer", reset="main", surrogate="atan")  # shapes the hard reset
    with pytest.raises(ConfigError, match="soft"):
        LIFNode(firing="integer", v_reset=-0.1)
    cfg = LIFNode(firing="signed-integer", levels=5, reset="any").config()
    assert cfg["levels"] == 5 and cfg["firing"] == "signed-integer"
    again = build_neuron(cfg)
    assert again.rule == SignedInteger(levels=5) and again.config() == cfg
    assert "levels" not in LIFNode(firing="mt").config()


def test_monitor_counts_each_level():
    node = IFNode(firing="integer", levels=3, backend="fused")
    x = torch.tensor([[[0.4, 0.6, 1.6, 2.6, 9.0, -1.0]]])  # [T=1, B=1, 6]
    with record_activity(node) as mon:
        out = node(x)
    assert out.flatten().tolist() == [0, 1, 2, 3, 3, 0]
    row = mon.summary()[0]
    layer = mon.layers[row["layer"]]
    assert dict(layer.value_counts) == {0: 2, 1: 1, 2: 1, 3: 2}
    assert layer.spikes == 9 and layer.plane_counts == [4, 3, 2]
    assert row["firing"] == "integer"


# -- SpikingJelly 2.0's ILIFNode -----------------------------------------------------------------
@pytest.mark.parametrize("detach", [False, True])
def test_matches_spikingjelly_ilif(detach):
    """LIFNode(decay=0.25, v_threshold=1.0, firing="integer", levels=4) (soft reset, the
    default) is SpikingJelly 2.0's ILIFNode(tau=4/3, v_threshold=1.0,
    surrogate_function=MultiLevelSpikeCount(4)): same spikes, same input gradients."""
    pytest.importorskip("spikingjelly")
    try:
        from spikingjelly.activation_based.neuron import ILIFNode
        from spikingjelly.activation_based.surrogate import MultiLevelSpikeCount
    except ImportError as e:  # an older SpikingJelly: no ILIFNode
        pytest.skip(f"SpikingJelly without ILIFNode: {e}")
    for dtype in (torch.float32, torch.float64):
        x = _x(8, 4, 50, seed=9, scale=2.0, dtype=dtype)
        w = _x(8, 4, 50, seed=10, dtype=dtype)
        grads, outs = [], []
        for make in (
            lambda dtype=dtype: LIFNode(decay=0.25, v_threshold=1.0, firing="integer",
                                        levels=4, detach_reset=detach).to(dtype),
            lambda: ILIFNode(tau=4 / 3, v_threshold=1.0, detach_reset=detach,
                             surrogate_function=MultiLevelSpikeCount(4), step_mode="m"),
        ):
            xi = x.clone().requires_grad_(True)
            out = make()(xi)
            (out * w).sum().backward()
            outs.append(out.detach())
            grads.append(xi.grad)
        assert torch.equal(outs[0].to(dtype), outs[1].to(dtype)), dtype
        tol = 1e-5 if dtype == torch.float32 else 1e-10
        torch.testing.assert_close(grads[0], grads[1].to(dtype), rtol=tol, atol=tol)
