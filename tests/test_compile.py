"""Whole-model ``torch.compile``: the fused kernels stay single custom-op calls.

Every registered model compiles with ``fullgraph=True`` (no graph break), its forward graph
holds one ``multispike::neuron_forward`` per neuron layer and its backward graph the matching
``neuron_backward`` calls (nothing traces the reference loop), and outputs and gradients equal
eager mode. On CUDA, a CUDA-graph training step (``mode="reduce-overhead"``) equals eager.
"""

from __future__ import annotations

import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

from multispike.neurons import LIFNode, Neuron
from tests.test_models import TINY, image, tiny


def _recording_backend():
    seen = {"forward": [], "backward": []}

    def record(kind):
        def compiler(gm, _inputs):
            seen[kind] += [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
            return make_boxed_func(gm.forward)

        return compiler

    return aot_autograd(fw_compiler=record("forward"), bw_compiler=record("backward")), seen


def _step(model, x, weight, run=None):
    """Output and gradients of one step of ``run`` (default: ``model``, else its compiled
    wrapper)."""
    model.zero_grad(set_to_none=True)
    out = (model if run is None else run)(x)
    (out.float() * weight).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", sorted(TINY))
def test_fullgraph_compile_keeps_kernels_and_matches_eager(name):
    _compile_matches_eager(name)


@pytest.mark.parametrize("firing", ["mt", "integer"])
def test_fullgraph_compile_with_learned_thresholds(firing):
    """A model whose neurons learn their thresholds: still one custom op per layer, the
    thresholds' gradients equal eager mode's."""
    _compile_matches_eager("digits_net", firing=firing, learn_thresholds=True)


def _compile_matches_eager(name, **options):
    torch._dynamo.reset()
    model, side = tiny(name, timesteps=2, **options)
    if options.get("learn_thresholds"):
        learning = [m for m in model.modules() if getattr(m, "learn_thresholds", False)]
        assert learning and all(m.path.fused for m in learning)
        with torch.no_grad():
            for i, m in enumerate(learning):
                m.threshold_log_gains.fill_(0.1 * (i + 1))
    model.train()
    for m in model.modules():  # eager and compiled code draw dropout masks differently
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) or type(m).__name__ == "TimeDropout":
            m.p = 0.0
    x = image(model, side, batch=2)
    weight = torch.randn(2, 2, model.num_classes, generator=torch.Generator().manual_seed(1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ref_out, ref_grads = _step(model, x, weight)
    model.load_state_dict(state)  # BN running statistics as before the eager step
    backend, seen = _recording_backend()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    out, grads = _step(model, x, weight, compiled)
    n_neurons = sum(isinstance(m, Neuron) for m in model.modules())
    fwd = [t for t in seen["forward"] if "multispike" in t]
    bwd = [t for t in seen["backward"] if "multispike" in t]
    assert fwd == ["multispike.neuron_forward.default"] * n_neurons
    assert bwd == ["multispike.neuron_backward.default"] * n_neurons
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for key, g in grads.items():
        torch.testing.assert_close(g, ref_grads[key], rtol=1e-4, atol=1e-5, msg=key)


def test_inductor_compile_of_a_neuron_layer_equals_eager():
    """Inductor itself (generated C++ around the custom op), on one small layer stack."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), LIFNode(firing="ternary",
                                                               learn_amplitude=True))
    x = torch.randn(3, 4, 16)
    ref = net(x)
    ref.square().sum().backward()
    ref_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    compiled = torch.compile(net, fullgraph=True)
    out = compiled(x)
    out.square().sum().backward()
    assert torch.equal(out, ref)
    for g, r in zip([p.grad for p in net.parameters()], ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


def test_compiled_layer_still_checks_its_input():
    torch._dynamo.reset()
    node = LIFNode(firing="ternary")
    compiled = torch.compile(node, fullgraph=True, backend="aot_eager")
    compiled(torch.randn(2, 3, 8))
    from multispike.errors import InputError

    with pytest.raises(InputError, match="NaN or inf"):
        compiled(torch.full((2, 3, 8), float("nan")))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_cuda_graph_training_step_equals_eager():
    torch._dynamo.reset()
    model, side = tiny("vgg9", timesteps=2)
    model = model.cuda().train()
    x = image(model, side, batch=4).cuda()
    weight = torch.randn(2, 4, model.num_classes, device="cuda")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ref_out, ref_grads = _step(model, x, weight)
    compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True)
    for _ in range(3):  # warm-up runs, then the recorded graph replays
        model.load_state_dict(state)
        out, grads = _step(model, x, weight, compiled)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)
    for key, g in grads.items():
        torch.testing.assert_close(g, ref_grads[key], rtol=1e-3, atol=1e-4, msg=key)


@pytest.mark.parametrize("firing, amplitude, learn", [
    ("mt", False, False), ("ternary", True, False), ("mt", True, True),
    ("integer", False, True)])
def test_custom_ops_pass_opcheck(firing, amplitude, learn):
    """torch.library.opcheck: schema, fake implementation, registered autograd, and the
    op as seen by the dispatcher and by AOT autograd; with learned thresholds too."""
    from multispike.kernels.spec import SAVE_H, threshold_vector
    from multispike.neurons import PLIFNode

    node = PLIFNode(firing=firing, learn_amplitude=amplitude, learn_thresholds=learn).double()
    spec = node.kernel_spec
    st = spec.static
    assert st.learned == learn
    x = 2 * torch.randn(3, 40, dtype=torch.float64, requires_grad=True)
    tau = node.tau.detach().clone().requires_grad_(True)
    amp = node.amplitude.detach().clone().requires_grad_(True) if amplitude else None
    thr = None
    if learn:
        with torch.no_grad():
            node.threshold_log_gains.uniform_(-0.3, 0.3)
        thr = threshold_vector(spec, *node.threshold_tensors()).detach().requires_grad_(True)
    args = (x, tau, amp, thr, *st.args(), SAVE_H, "cpu", False, "PLIFNode")
    torch.library.opcheck(torch.ops.multispike.neuron_forward.default, args)
    out, saved, _ = torch.ops.multispike.neuron_forward(*args)
    ref = node(x.detach())
    assert torch.equal(out, ref)
