"""Each surrogate: Heaviside forward, backward equal to autograd of its primitive, gradchecks."""

import math

import pytest
import torch

from multispike.errors import ConfigError
from multispike.functional import (
    SURROGATES,
    ATan,
    ClampSTE,
    Rectangular,
    Sigmoid,
    get_surrogate,
    heaviside,
)

ALL = [Rectangular(), Rectangular(width=0.5), ClampSTE(), ClampSTE(width=2.0), Sigmoid(), ATan()]


def _points(sg, n=400):
    """Random points that avoid the kinks of the window surrogates (measure-zero edges)."""
    torch.manual_seed(0)
    x = torch.randn(n, dtype=torch.float64) * 1.5
    edge = sg.param / 2 if sg.param_name == "width" else 0.5
    return x[(x.abs() - edge).abs() > 1e-3]


@pytest.mark.parametrize("sg", ALL, ids=repr)
def test_forward_is_heaviside(sg):
    x = torch.tensor([-1.0, -1e-7, 0.0, 1e-7, 2.0])
    assert torch.equal(sg(x), heaviside(x))
    assert sg(x).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("sg", ALL, ids=repr)
def test_backward_equals_autograd_of_primitive(sg):
    x = _points(sg).requires_grad_(True)
    (g_fn,) = torch.autograd.grad(sg(x).sum(), x)
    (g_prim,) = torch.autograd.grad(sg.primitive(x).sum(), x)
    torch.testing.assert_close(g_fn, g_prim, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sg", ALL, ids=repr)
def test_gradcheck_primitive_and_backward(sg):
    x = _points(sg, 40).requires_grad_(True)
    # the primitive's autograd derivative agrees with finite differences ...
    assert torch.autograd.gradcheck(sg.primitive, (x,))
    # ... and the surrogate's backward is a correct (linear) function of the upstream gradient
    xd = x.detach().requires_grad_(True)

    def backward_of(grad_out):
        return torch.autograd.grad(sg(xd), xd, grad_out, create_graph=True)[0]

    assert torch.autograd.gradcheck(backward_of, (torch.randn_like(xd).requires_grad_(True),))


def test_rectangular_is_mt_snn_eq9():
    """dS/dH = (1/a) * 1(|H - Vth| <= a/2)."""
    x = torch.tensor([-0.3, -0.2, 0.0, 0.2, 0.3], requires_grad=True)
    Rectangular(width=0.5)(x).sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 2.0, 2.0, 0.0]


def test_clamp_window_has_unit_height():
    x = torch.tensor([-0.6, -0.4, 0.4, 0.6], requires_grad=True)
    ClampSTE(width=1.0)(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_atan_peak():
    x = torch.zeros(1, requires_grad=True)
    ATan(alpha=2.0)(x).sum().backward()
    assert x.grad.item() == pytest.approx(1.0)  # alpha / 2
    assert math.isclose(Sigmoid(alpha=4.0).derivative(torch.zeros(1)).item(), 1.0)


def test_get_surrogate():
    assert set(SURROGATES) == {"rectangular", "clamp", "sigmoid", "atan"}
    assert get_surrogate("atan", alpha=3.0) == ATan(alpha=3.0)
    assert get_surrogate("rectangular") == Rectangular(width=1.0)
    sg = Sigmoid(alpha=2.0)
    assert get_surrogate(sg) is sg
    with pytest.raises(ConfigError, match="unknown surrogate 'tanh'; choose one of"):
        get_surrogate("tanh")
    with pytest.raises(ConfigError, match="positive"):
        Rectangular(width=0.0)
