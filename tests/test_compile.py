"""Whole-model ``torch.compile``: the fused kernels stay single custom-op calls.

Every registered model compiles with ``fullgraph=True`` (no graph break), its forward graph
holds one ``multispike::neuron_forward`` per neuron layer and its backward graph the matching
``neuron_backward`` calls (nothing traces the reference loop), and outputs and gradients equal
eager mode. A whole training step (forward, backward, optimizer) equals eager mode step by step:
compiled on the CPU, captured in one CUDA graph and replayed on CUDA (``--cuda-graphs``), where
``mode="reduce-overhead"``'s graphs of forward and backward are checked too. Dropout is set to
p = 0 wherever eager and compiled or captured code are compared: they draw different masks.
"""

from __future__ import annotations

from types import SimpleNamespace

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


def _no_dropout(model):
    """Dropout p = 0: eager and compiled (or captured) code draw different masks."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) or type(m).__name__ == "TimeDropout":
            m.p = 0.0
    return model


def _compile_matches_eager(name, **options):
    torch._dynamo.reset()
    model, side = tiny(name, timesteps=2, **options)
    if options.get("learn_thresholds"):
        learning = [m for m in model.modules() if getattr(m, "learn_thresholds", False)]
        assert learning and all(m.path.fused for m in learning)
        with torch.no_grad():
            for i, m in enumerate(learning):
                m.threshold_rho.fill_(0.1 * (i + 1))
    model.train()
    _no_dropout(model)
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
def test_reduce_overhead_forward_and_backward_equal_eager():
    """``torch.compile(mode="reduce-overhead")``: CUDA graphs of the forward and the backward
    (the optimizer is not in them: see the whole-step test below)."""
    torch._dynamo.reset()
    model, side = tiny("vgg9", timesteps=2)
    model = _no_dropout(model).cuda().train()
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


# -- the whole training step: compiled on the CPU, one CUDA graph on CUDA --------------------
def _state(model, opt):
    """Copies of everything a step changes: parameters, buffers, momentum buffers."""
    return ([t.detach().clone() for t in model.state_dict().values()],
            [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()])


def _restore(model, opt, state):
    """Put ``state`` back in place (a CUDA graph keeps reading the same tensors)."""
    tensors, momenta = state
    with torch.no_grad():
        for t, v in zip(model.state_dict().values(), tensors, strict=True):
            t.copy_(v)
        for p, v in zip(model.parameters(), momenta, strict=True):
            opt.state[p]["momentum_buffer"].copy_(v)


def _batches(model, side, device, sizes, classes):
    g = torch.Generator().manual_seed(3)
    return [(torch.rand(n, model.in_channels, side, side, generator=g).to(device),
             torch.randint(0, classes, (n,), generator=g).to(device)) for n in sizes]


def _whole_steps_match_eager(device, make_step, schedule, warmed=None):
    """Run ``schedule`` (``(batch size, lr)`` per step) with the step under test and check each
    step against an eager :class:`TrainStep` from the same state: the returned
    ``[loss, correct, flags]`` and every parameter, buffer and momentum buffer afterwards.

    ``make_step(model, opt)`` builds the step under test; ``warmed(step)`` is called around
    each of its calls (``"before"``/``"after"``) for extra checks. Returns the step under test.
    """
    from multispike.engine.train import TrainStep

    torch._dynamo.reset()
    torch.manual_seed(0)
    model, side = tiny("vgg9", timesteps=2)
    model = _no_dropout(model).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    spec = SimpleNamespace(is_event=False)
    eager = TrainStep(model, opt, spec=spec)
    tested = make_step(model, opt)
    batches = _batches(model, side, device, [4] + [n for n, _ in schedule], model.num_classes)
    eager(*batches[0])  # the momentum buffers exist from here on (a graph reads them in place)
    # CUDA: cuDNN may pick other (TF32) algorithms inside a graph's memory pool
    tol = dict(rtol=1e-3, atol=1e-4) if device == "cuda" else dict(rtol=1e-4, atol=1e-5)
    for (x, y), (_, lr) in zip(batches[1:], schedule, strict=True):
        for group in opt.param_groups:
            group["lr"] = lr
        before = _state(model, opt)
        if warmed:
            warmed(tested, "before")
        row = tested(x, y).clone()
        if warmed:
            warmed(tested, "after")
        after = _state(model, opt)
        _restore(model, opt, before)
        ref = eager(x, y).clone()
        torch.testing.assert_close(row, ref, **tol)
        for got, want in zip(after[0] + after[1], sum(_state(model, opt), []), strict=True):
            torch.testing.assert_close(got, want, **tol)
        assert not torch.equal(after[0][0], before[0][0])  # the step changed the weights
        _restore(model, opt, after)
    return tested


def test_compiled_training_step_equals_eager_on_cpu():
    """The CPU twin of the CUDA-graph test: the same steps, with the model compiled
    (forward and backward graphs of AOT autograd), equal eager steps, dropout at p = 0."""
    from multispike.engine.train import TrainStep

    def compiled(model, opt):
        net = torch.compile(model, backend="aot_eager")
        return TrainStep(net, opt, spec=SimpleNamespace(is_event=False))

    _whole_steps_match_eager("cpu", compiled, [(4, 0.1), (4, 0.1), (3, 0.1), (4, 0.05)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_cuda_graph_captures_the_whole_training_step():
    """:class:`CUDAGraphStep` captures forward, backward and the optimizer step in one graph:
    a replayed step runs no Python forward and no Python ``optimizer.step`` and still changes
    the weights as an eager step does; a smaller batch runs eagerly without dropping the graph,
    and a new learning rate is captured again."""
    from multispike.engine.train import CUDAGraphStep, TrainStep

    calls = {"forward": 0, "optimizer": 0}
    seen = {}

    def graphed(model, opt):
        model.register_forward_pre_hook(lambda *_: calls.__setitem__(
            "forward", calls["forward"] + 1))
        opt.register_step_pre_hook(lambda *_: calls.__setitem__(
            "optimizer", calls["optimizer"] + 1))
        return CUDAGraphStep(TrainStep(model, opt, spec=SimpleNamespace(is_event=False)),
                             warmup=1)

    def watch(step, when):
        now = (dict(calls), step.captures, step.replays)
        if when == "before":
            seen["before"] = now
            return
        (was, captures, replays) = seen["before"]
        if step.replays > replays and step.captures == captures:  # a pure replay
            assert now[0] == was, "a replay ran Python forward or optimizer code"
        seen.setdefault("replays", 0)
        seen["replays"] += step.replays > replays and step.captures == captures

    # warm-up 1: eager, capture, replay, a smaller batch (eager), replay; new lr: eager,
    # capture, replay
    schedule = [(4, 0.1), (4, 0.1), (4, 0.1), (3, 0.1), (4, 0.1), (4, 0.05), (4, 0.05),
                (4, 0.05)]
    step = _whole_steps_match_eager("cuda", graphed, schedule, watch)
    assert (step.captures, step.replays, seen["replays"]) == (2, 5, 3)


def test_cuda_graphs_need_a_cuda_device_one_line(tmp_path, capsys):
    """On the CPU ``--cuda-graphs`` is refused before anything is trained or written."""
    from multispike.cli import main
    from multispike.engine import TrainConfig, train_model
    from multispike.errors import ConfigError

    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="--cuda-graphs needs a CUDA device") as e:
        train_model(TrainConfig(dataset="digits", epochs=1, device="cpu", cuda_graphs=True,
                                progress=False, out=str(out)))
    assert "\n" not in str(e.value) and not out.exists()
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                 "--cuda-graphs", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a CUDA device, but this run trains on cpu" in err
    assert not out.exists()


@pytest.mark.parametrize("options, distributed, text", [
    ({}, True, "drop it under torchrun"),
    ({"compile": "reduce-overhead"}, False, "give one"),
    ({"amp": "fp16"}, False, "--amp bf16 or --amp off"),
])
def test_cuda_graphs_refuse_what_a_graph_cannot_hold(options, distributed, text):
    from multispike.engine import TrainConfig
    from multispike.engine.train import check_cuda_graphs
    from multispike.errors import ConfigError

    cfg = TrainConfig(cuda_graphs=True, **options)
    with pytest.raises(ConfigError, match=text) as e:
        check_cuda_graphs(cfg, torch.device("cuda"), distributed)
    assert "\n" not in str(e.value)
    check_cuda_graphs(TrainConfig(**options), torch.device("cpu"), distributed)  # off: fine


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_train_with_cuda_graphs(tmp_path):
    """A CUDA run with ``cuda_graphs`` trains (12 digits steps: 3 eager, a capture, replays,
    an eager last batch) and writes checkpoints that rebuild the model."""
    from multispike.engine import TrainConfig, load_model, train_model

    out = tmp_path / "run"
    result = train_model(TrainConfig(dataset="digits", epochs=2, batch_size=128, device="cuda",
                                     cuda_graphs=True, progress=False, num_workers=0,
                                     out=str(out)))
    assert result["device"].startswith("cuda:")
    assert result["best_accuracy"] > 0.3  # ten classes: far above chance
    model, ckpt = load_model(out / "last.pt")
    x = torch.rand(4, 1, 8, 8)
    trained = result["model"].cpu().eval()
    assert torch.equal(model.eval()(x), trained(x))  # both on the CPU, float32


@pytest.mark.parametrize("firing, amplitude, learn", [
    ("mt", False, False), ("ternary", True, False), ("mt", True, True),
    ("integer", False, True)])
def test_custom_ops_pass_opcheck(firing, amplitude, learn):
    """torch.library.opcheck: schema, fake implementation, registered autograd, and the
    op as seen by the dispatcher and by AOT autograd; with learned thresholds too."""
    from multispike.kernels.record import SAVE_H, threshold_vector
    from multispike.neurons import PLIFNode

    node = PLIFNode(firing=firing, learn_amplitude=amplitude, learn_thresholds=learn).double()
    record = node.kernel_record
    st = record.static
    assert st.learned == learn
    x = 2 * torch.randn(3, 40, dtype=torch.float64, requires_grad=True)
    w = node.w.detach().clone().requires_grad_(True)  # the kernels compute τ from it
    amp = node.amplitude.detach().clone().requires_grad_(True) if amplitude else None
    thr = None
    if learn:
        with torch.no_grad():
            node.threshold_rho.uniform_(-0.3, 0.3)
        thr = threshold_vector(record, *node.threshold_tensors()).detach().requires_grad_(True)
    args = (x, w, amp, thr, *st.args(), SAVE_H, "cpu", False, "PLIFNode")
    torch.library.opcheck(torch.ops.multispike.neuron_forward.default, args)
    out, saved, _ = torch.ops.multispike.neuron_forward(*args)
    ref = node(x.detach())
    assert torch.equal(out, ref)
