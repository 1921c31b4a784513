"""Fidelity to the authors' and peer libraries' code: spikes and gradients, not only spikes.

- Ternary Spike (``models/spike_layer.py`` of the authors' code): decay 0.25, fire at
  ``|u| >= 0.5``, straight-through ``clamp(u, -1, 1)``, reset ``u·(1 − |s|)`` through the
  straight-through spike. ``LIFNode(firing="ternary", surrogate="clamp", reset_grad="spike")``
  must give its spikes and its input gradients, on every backend.
- SpikingJelly's ``ParametricLIFNode`` with ``v_reset != 0``: the membrane starts at
  ``V_reset`` there and here (spikes, input and tau gradients).
"""

from __future__ import annotations

import pytest
import torch

from multispike.functional import NeuronState, multistep
from multispike.kernels import cpu, fused_multistep
from multispike.neurons import LIFNode, PLIFNode, build_neuron

#: the reference loop and each fused implementation; the C++ kernel's tests are skipped, saying
#: why, where it cannot be built
BACKENDS = ["torch", "eager",
            pytest.param("cpu", marks=pytest.mark.skipif(
                cpu.library() is None, reason=f"C++ kernel unavailable: {cpu.failure()}"))]


def _x(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# -- Ternary Spike: the authors' neuron ------------------------------------------------------------
def authors_ternary(x: torch.Tensor, decay: float = 0.25, v_th: float = 0.5) -> torch.Tensor:
    """The authors' ternary LIF, written from their code: the reset multiplies the previous
    membrane by ``1 − |s|`` of the straight-through spike (autograd does the rest)."""
    u = torch.zeros_like(x[0])
    s = torch.zeros_like(x[0])
    outs = []
    for t in range(x.shape[0]):
        u = decay * u * (1 - s.abs()) + x[t]
        spike = (u >= v_th).to(x.dtype) - (u <= -v_th).to(x.dtype)
        ste = torch.clamp(u, -1, 1)
        s = (spike - ste).detach() + ste
        outs.append(s)
    return torch.stack(outs)


def _grad(fn, x, weight):
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    (out * weight).sum().backward()
    return out.detach(), x.grad


def _ternary_node(reset_grad: str) -> LIFNode:
    return LIFNode(firing="ternary", surrogate="clamp", reset_grad=reset_grad).double()


def _runner(node, backend):
    if backend == "torch":
        node.backend = "torch"
        return node
    return lambda x: fused_multistep(x, node, impl=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("T", [1, 4, 8])
def test_ternary_spike_reset_matches_authors_code(T, backend):
    x = _x(T, 4, 257, seed=T, scale=0.8)
    weight = _x(*x.shape, seed=100 + T)
    ref_out, ref_gx = _grad(authors_ternary, x, weight)
    out, gx = _grad(_runner(_ternary_node("spike"), backend), x, weight)
    assert torch.equal(out, ref_out)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_surrogate_reset_differs_from_authors_code(backend):
    """The option matters: the default reset passes gradient where no spike fired."""
    x = _x(6, 4, 257, seed=3, scale=0.8)
    weight = _x(*x.shape, seed=4)
    ref_out, ref_gx = _grad(authors_ternary, x, weight)
    out, gx = _grad(_runner(_ternary_node("surrogate"), backend), x, weight)
    assert torch.equal(out, ref_out)  # same spikes
    differ = ((gx - ref_gx).abs() > 1e-9).double().mean().item()
    assert differ > 0.05, differ


def test_reset_grad_in_config_and_record():
    node = _ternary_node("spike")
    cfg = node.config()
    assert cfg["reset_grad"] == "spike"
    again = build_neuron(cfg)
    assert again.reset_grad == "spike" and again.config() == cfg
    assert node.kernel_record.reset_grad == "spike" and node.kernel_record.static.reset_grad == 1
    node.reset_grad = "surrogate"  # options changed after construction refresh the kernel record
    assert node.kernel_record.static.reset_grad == 0
    assert LIFNode().config()["reset_grad"] == "surrogate"


# -- start state: SpikingJelly's PLIF with v_reset != 0 ------------------------------------------
def _sj_plif(x, weight):
    sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
    node = sj_neuron.ParametricLIFNode(
        init_tau=2.0, v_reset=0.2, decay_input=True, detach_reset=False, step_mode="m",
        surrogate_function=sj_surrogate.Sigmoid(alpha=4.0),
    ).to(x.dtype)
    x = x.detach().clone().requires_grad_(True)
    out = node(x)
    (out * weight).sum().backward()
    # SpikingJelly: 1/tau = sigmoid(w); multispike: tau = 1 + exp(-w): the same w
    return out.detach(), x.grad, node.w.grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_plif_with_v_reset_matches_spikingjelly(dtype, backend):
    """Both start the membrane at V_reset (and charge by MT-SNN Eq 6): same spikes, same
    input and tau gradients, on every backend."""
    x = _x(6, 4, 300, seed=0, scale=1.5).to(dtype)
    weight = _x(*x.shape, seed=1).to(dtype)
    ref_out, ref_gx, ref_gw = _sj_plif(x, weight)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    node = PLIFNode(init_tau=2.0, v_reset=0.2, surrogate="sigmoid", surrogate_alpha=4.0).to(
        dtype)
    xm = x.clone().requires_grad_(True)
    out = _runner(node, backend)(xm)
    (out * weight).sum().backward()
    assert torch.equal(out.detach(), ref_out)
    torch.testing.assert_close(xm.grad, ref_gx, rtol=tol, atol=tol)
    torch.testing.assert_close(node.w.grad, ref_gw, rtol=tol, atol=tol)


def test_start_state_matters_for_spikingjelly():
    """Starting from 0 instead of V_reset gives other spikes: the convention is tested."""
    x = _x(6, 4, 300, seed=0, scale=1.5)
    ref_out, _, _ = _sj_plif(x, torch.ones_like(x))
    node = PLIFNode(init_tau=2.0, v_reset=0.2, surrogate="sigmoid", surrogate_alpha=4.0)
    out, _ = multistep(x, node.charge, node.params(x.dtype),
                       state=NeuronState(torch.zeros_like(x[0])))
    assert not torch.equal(out.detach(), ref_out)
