"""Neuron modules: equal to the equations and the functional path, gradients, dtypes, errors."""

import math
from functools import partial

import pytest
import torch

from multispike.errors import ConfigError, InputError
from multispike.functional import NeuronParams, lif_charge, multistep, plif_charge
from multispike.neurons import IFNode, LIFNode, Neuron, PLIFNode, build_neuron

from .reference import (
    if_reference,
    lif_binary_reference,
    lif_ternary_reference,
    plif_mt_reference,
    ternary_mt_reference,
)

FIRINGS = ["binary", "mt", "ternary", "ternary-mt"]


def _x(*shape, seed=0, scale=1.5, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


# -- equal to the papers' equations ------------------------------------------------------------
def test_plif_initial_tau():
    node = PLIFNode(init_tau=3.0)
    assert node.tau.item() == pytest.approx(3.0)
    assert isinstance(node, Neuron)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("deltas", [None, (-0.5, 0.5), (-0.4, -0.3, 0.3)])
def test_plif_equals_reference(dtype, deltas):
    x = _x(8, 4, 3, 5, dtype=dtype)
    firing = "binary" if deltas is None else "mt"
    node = PLIFNode(init_tau=2.5, firing=firing, deltas=deltas).to(dtype)
    out = node(x)
    assert out.dtype == dtype and out.shape == x.shape
    ref = plif_mt_reference(x, node.tau.detach(), 1.0, deltas or ())
    assert torch.equal(out, ref)


def test_mt_default_deltas_equal_reference():
    x = _x(5, 64)
    out = PLIFNode(firing="mt")(x)
    assert torch.equal(out, plif_mt_reference(x, torch.tensor(2.0), 1.0, (-0.5, 0.5)))


@pytest.mark.parametrize("amplitude", [False, True])
def test_lif_ternary_equals_reference(amplitude):
    x = _x(6, 5, 2, 4, 4, scale=0.8)
    node = LIFNode(firing="ternary", learn_amplitude=amplitude)
    if amplitude:
        with torch.no_grad():
            node.amplitude.fill_(0.6)
    ref = lif_ternary_reference(x, 0.25, 0.5, a=0.6 if amplitude else 1.0)
    assert torch.equal(node(x), ref)


def test_lif_binary_and_if_equal_reference():
    x = _x(7, 3, 50)
    assert torch.equal(LIFNode()(x), lif_binary_reference(x, 0.25, 0.5))
    assert torch.equal(IFNode()(x), if_reference(x, 1.0))


def test_ternary_mt_equals_reference():
    x = _x(6, 3, 50)
    node = LIFNode(decay=0.5, firing="ternary-mt", deltas=(-0.2, 0.3))
    assert torch.equal(node(x), ternary_mt_reference(x, 0.5, 0.5, (-0.2, 0.3)))


# -- functional == module; no state between calls; streaming -----------------------------------
@pytest.mark.parametrize("firing", FIRINGS)
def test_module_equals_functional(firing):
    x = _x(4, 2, 30)
    node = PLIFNode(firing=firing, learn_amplitude=True)
    params = NeuronParams(1.0, rule=node.rule, amplitude=node.amplitude)
    ref, _ = multistep(x, partial(plif_charge, w=node.w), params)
    assert torch.equal(node(x), ref)
    lif = LIFNode(firing=firing)
    ref, _ = multistep(x, partial(lif_charge, decay=0.25), NeuronParams(0.5, rule=lif.rule))
    assert torch.equal(lif(x), ref)


@pytest.mark.parametrize("v_reset", [0.0, 0.2])
@pytest.mark.parametrize("cls", [PLIFNode, LIFNode, IFNode])
def test_no_state_between_calls_and_streaming(cls, v_reset):
    x = _x(5, 3, 16)
    node = cls(firing="mt", v_reset=v_reset)
    first, second = node(x), node(x)
    assert torch.equal(first, second)
    state, outs = None, []
    for t in range(x.shape[0]):
        out, state = node.step(x[t], state)
        outs.append(out)
    assert torch.equal(torch.stack(outs), first)


def test_config_rebuilds_layer():
    node = LIFNode(decay=0.5, firing="ternary-mt", deltas=(0.2,), learn_amplitude=True,
                   surrogate="atan", surrogate_width=3.0, detach_reset=True,
                   reset_grad="spike")
    assert node.config()["reset_grad"] == "spike"
    again = build_neuron(node.config())
    assert again.config() == node.config()
    x = _x(3, 2, 10)
    assert torch.equal(again(x), node(x))


@pytest.mark.parametrize("cls", [PLIFNode, LIFNode, IFNode])
def test_membrane_starts_at_v_reset(cls):
    """The start state is V_reset (SpikingJelly's and Norse's convention), on every path."""
    node = cls(v_reset=0.3, firing="ternary")
    x = torch.zeros(1, 2, 5)
    assert torch.equal(node.init_state(x[0]).v, torch.full((2, 5), 0.3))
    # the first H is the charge of V = 0.3 with no input; it stays below threshold
    expect = node.charge(torch.full((2, 5), 0.3), x[0])
    for backend in ("torch", "fused"):
        node.backend = backend
        assert torch.equal(node(x), torch.zeros_like(x))
    _, state = node.step(x[0])
    assert torch.equal(state.v, expect.detach())
    assert not torch.equal(expect, torch.zeros_like(expect))


# -- gradients -----------------------------------------------------------------------------------
def _rect(x, a=1.0):
    return ((x.abs() <= a / 2).to(x.dtype)) / a


def test_plif_gradients_closed_form_t1():
    """T = 1: H = X/τ, S = Θ(H − V_th); dS/dX = g(H − V_th)/τ and
    dS/dw = g(H − V_th)·X·exp(−w)/τ² (τ = 1 + exp(−w), Eq 7-9)."""
    x = _x(1, 200, dtype=torch.float64).requires_grad_(True)
    node = PLIFNode(init_tau=2.0, firing="mt", deltas=(-0.5, 0.5)).double()
    node(x).sum().backward()
    tau = node.tau.detach()
    h = x.detach() / tau
    g = sum(_rect(h - th) for th in (1.0, 0.5, 1.5))  # summed over every threshold
    torch.testing.assert_close(x.grad, g / tau)
    w = node.w.detach()
    expected_w = (g * x.detach() * torch.exp(-w) / tau**2).sum()
    torch.testing.assert_close(node.w.grad, expected_w)


def test_ternary_amplitude_gradients_closed_form_t1():
    """T = 1: out = a·b, b = Θ(u − V) − Θ(−u − V); d/dx = a·(g(u − V) + g(u + V)), d/da = Σ b."""
    x = _x(1, 300, scale=0.8, dtype=torch.float64).requires_grad_(True)
    node = LIFNode(firing="ternary", learn_amplitude=True).double()
    with torch.no_grad():
        node.amplitude.fill_(0.8)
    out = node(x)
    weights = torch.linspace(-1, 1, 300, dtype=torch.float64)
    (out * weights).sum().backward()
    u = x.detach()
    b = (u >= 0.5).double() - (u <= -0.5).double()
    g = _rect(u - 0.5) + _rect(u + 0.5)
    torch.testing.assert_close(x.grad, weights * 0.8 * g)
    torch.testing.assert_close(node.amplitude.grad, (weights * b).sum())


@pytest.mark.parametrize("firing", FIRINGS)
def test_learnable_parameters_get_gradients(firing):
    x = _x(4, 8, 32, scale=2.0)
    node = PLIFNode(firing=firing, learn_amplitude=True)
    node(x).pow(2).sum().backward()
    for name, p in node.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("surrogate", ["rectangular", "clamp", "sigmoid", "atan"])
def test_surrogate_option_is_used(surrogate):
    x = _x(1, 100, dtype=torch.float64).requires_grad_(True)
    node = IFNode(surrogate=surrogate, surrogate_width=0.7)
    node(x).sum().backward()
    sg = node.surrogate
    torch.testing.assert_close(x.grad, sg.derivative(x.detach() - 1.0))


# -- dtypes ----------------------------------------------------------------------------------------
def test_bfloat16_autocast_forward_backward():
    lin = torch.nn.Linear(16, 16)
    node = PLIFNode(firing="mt", learn_amplitude=True)
    x = _x(3, 4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = node(lin(x))
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert lin.weight.grad is not None and node.w.grad is not None
    assert node.amplitude.grad is not None
    assert set(torch.unique(y.float()).tolist()) <= {0.0, 1.0, 2.0, 3.0}


# -- bad input gets one line naming the fix --------------------------------------------------------
def _one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.randn(5), "time-first input"),
        (torch.ones(2, 3, dtype=torch.int64), "x.float()"),
        (torch.tensor([[0.0, float("nan")]]), "NaN or inf"),
        (torch.tensor([[0.0], [float("inf")]]), "NaN or inf"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_bad_input(x, match):
    with pytest.raises(InputError, match=match) as e:
        PLIFNode()(x)
    _one_line(e)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PLIFNode(v_threshold=0.0), "v_threshold must be > 0"),
        (lambda: LIFNode(v_threshold=-1.0), "v_threshold must be > 0"),
        (lambda: PLIFNode(init_tau=1.0), "init_tau must be > 1"),
        (lambda: PLIFNode(init_tau=0.5), "init_tau must be > 1"),
        (lambda: PLIFNode(firing="mt", deltas=(0.5, -0.5)), "not sorted"),
        (lambda: PLIFNode(firing="mt", deltas=(0.5, 0.5)), "duplicates"),
        (lambda: PLIFNode(firing="mt", deltas=(-1.5,)), "fire at rest"),
        (lambda: PLIFNode(firing="spiky"), "unknown firing rule"),
        (lambda: PLIFNode(surrogate="relu"), "unknown surrogate"),
        (lambda: LIFNode(decay=1.5), "decay must lie in"),
        (lambda: IFNode(v_threshold=float("nan")), "finite number"),
        (lambda: IFNode(v_reset=2.0), "fire forever"),
        (lambda: LIFNode(reset_grad="abs"), "unknown reset_grad"),
    ],
)
def test_bad_options(make, match):
    with pytest.raises(ConfigError, match=match) as e:
        make()
    _one_line(e)


def test_check_input_can_be_disabled():
    node = IFNode(check_input=False)
    out = node(torch.tensor([[float("nan")]]))
    assert out.item() == 0.0
    assert not math.isnan(out.item())
