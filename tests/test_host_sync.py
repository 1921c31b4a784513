"""No host round trips in the neuron hot path.

A neuron layer's forward and backward on the Triton path must not read a device value on the
host (``.item()``, ``bool(t)``, ``.tolist()``: a synchronisation on a GPU) nor build tensors
from Python data per call (a host→device copy). On CUDA this is checked with
``torch.cuda.set_sync_debug_mode("error")`` around a full training step of every registered
model. Without a GPU (CI), the same Triton kernels run on CPU tensors in Triton's interpreter
under a dispatch mode that records scalar reads, tensors made from Python data and copies
between devices.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.test_models import TINY, image, tiny

ROOT = Path(__file__).resolve().parents[1]


class HostTrafficRecorder(TorchDispatchMode):
    """Records ops that read device values on the host or copy host data to a device."""

    SCALAR_READS = {"aten._local_scalar_dense.default", "aten.item.default"}
    FROM_PYTHON = {"aten.lift_fresh.default", "aten.lift_fresh_copy.default"}

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if name in self.SCALAR_READS or name in self.FROM_PYTHON:
            self.events.append(name)
        out = func(*args, **kwargs)
        if name in ("aten._to_copy.default", "aten.copy_.default"):
            src = args[1] if name == "aten.copy_.default" else args[0]
            dst = args[0] if name == "aten.copy_.default" else out
            if isinstance(src, torch.Tensor) and src.device != dst.device:
                self.events.append(f"{name} {src.device}->{dst.device}")
        return out


def _train_step(model, x, opt):
    opt.zero_grad(set_to_none=True)
    out = model(x)
    loss = out.float().mean(0).logsumexp(1).mean()
    loss.backward()
    opt.step()


#: the interpreter runs each Triton program in Python: the small models of each family
INTERPRETED = ("digits_net", "resnet19", "resnet20", "vgg9")


def _learning_layers():
    from multispike.neurons import IFNode, LIFNode

    return {
        "LIFNode(mt, learn_thresholds)": lambda: LIFNode(firing="mt", learn_thresholds=True),
        "IFNode(integer, any, learn_thresholds)": lambda: IFNode(
            firing="integer", reset="any", learn_thresholds=True),
    }


#: layers that learn their thresholds, checked beside the models
LEARNING = _learning_layers()


def triton_host_traffic(device: str = "cpu", names=None) -> dict[str, list[str]]:
    """Host traffic of one training step (after a warm-up step) of the models ``names`` and
    of a default ``LIFNode``, with every neuron forced onto the Triton kernels."""
    from multispike import kernels
    from multispike.neurons import LIFNode

    native = kernels.native_impl
    kernels.native_impl = lambda record, x: "triton" if native(record, x) else None
    found = {}
    try:
        cases = {name: tiny(name, timesteps=2) for name in (names or sorted(TINY))}
        for name, (model, side) in cases.items():
            model = model.to(device).train()
            x = image(model, side, batch=2).to(device)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            _train_step(model, x, opt)  # warm-up: constants cached per device, kernels built
            with HostTrafficRecorder() as rec:
                _train_step(model, x, opt)
            found[name] = rec.events
        x = torch.randn(4, 2, 16, 8, 8, device=device, requires_grad=True)
        # what a library user gets (check_input=True), built, moved and called for the first
        # time inside the recorder, with the kernels' constants not yet made for it
        from multispike.kernels import triton_impl

        triton_impl._consts.clear()
        with HostTrafficRecorder() as rec:
            node = LIFNode().to(device)
            node(x).sum().backward()
            node(x).sum().backward()
        found["LIFNode()"] = rec.events
        # moving a layer without parameters copies nothing (no buffer made on the host)
        for make in (LIFNode, lambda: LIFNode(firing="mt"), lambda: LIFNode(firing="integer")):
            with HostTrafficRecorder() as rec:
                make().to("meta")
            found.setdefault("LIFNode().to(meta)", []).extend(rec.events)
        # a layer that learns its thresholds: they reach the kernels as a device tensor and
        # their gradient comes back reduced on the device
        for key, learner in LEARNING.items():
            learner = learner().to(device)
            learner(x).sum().backward()
            assert learner.path.impl == "triton"
            with HostTrafficRecorder() as rec:
                learner(x).sum().backward()
            assert learner.threshold_rho.grad is not None
            found[key] = rec.events
    finally:
        kernels.native_impl = native
    return found


def triton_nonfinite_report() -> list[str]:
    """What :func:`raise_on_nonfinite` says after a NaN reached one of two layers on the Triton
    path (kernels forced onto Triton), and after the flags were cleared."""
    from multispike import kernels
    from multispike.errors import InputError
    from multispike.neurons import LIFNode, PLIFNode

    native = kernels.native_impl
    kernels.native_impl = lambda record, x: "triton" if native(record, x) else None
    said = []
    try:
        net = torch.nn.Sequential(PLIFNode(firing="mt"), LIFNode(firing="ternary"))
        x = torch.randn(3, 2, 40)
        net(x)  # finite: nothing raised, nothing flagged
        kernels.raise_on_nonfinite(net)
        x[1, 0, 5] = float("nan")
        net[0](x)  # the layer runs on: nothing waits for the flag
        for _ in range(2):
            try:
                kernels.raise_on_nonfinite(net)
                said.append("ok")
            except InputError as e:
                said.append(str(e))
    finally:
        kernels.native_impl = native
    return said


def test_recorder_sees_what_it_must():
    """The recorder itself: a scalar read, a tensor from a list and a device copy are seen."""
    t = torch.ones(3)
    with HostTrafficRecorder() as rec:
        t.sum().item()
        torch.tensor([1.0, 2.0])
        t.to("meta")
    assert any("_local_scalar_dense" in e for e in rec.events)
    assert any("lift_fresh" in e for e in rec.events)
    assert any("cpu->meta" in e for e in rec.events)


def test_moving_a_layer_copies_nothing():
    """A neuron layer without parameters holds no tensor to move: ``.to()`` copies nothing,
    on any device (the NaN flag is made on the input's device at the first call)."""
    from multispike.neurons import IFNode, LIFNode

    for make in (LIFNode, IFNode, lambda: LIFNode(firing="ternary", reset="any")):
        with HostTrafficRecorder() as rec:
            node = make().to("meta")
        assert rec.events == [] and list(node.buffers()) == []


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("triton") is None, reason="triton not installed")
@pytest.mark.skipif(torch.cuda.is_available(),
                    reason="a CUDA GPU runs the real check (test_cuda_training_step_...)")
def test_triton_path_has_no_host_round_trips_in_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    code = ("import json; from tests.test_host_sync import INTERPRETED, triton_host_traffic, "
            "triton_nonfinite_report as nf; "
            "print(json.dumps([triton_host_traffic('cpu', INTERPRETED), nf()]))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    found, nonfinite = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(found) == set(INTERPRETED) | {"LIFNode()", "LIFNode().to(meta)"} | set(LEARNING)
    assert {k: v for k, v in found.items() if v} == {}
    # the in-kernel input check: the flagged layer is named once, then the flags are clear
    assert nonfinite == ["NaN or inf reached neuron layer 0; check the layer before it or the "
                         "data", "ok"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", sorted(TINY))
def test_cuda_training_step_does_not_synchronise(name):
    from multispike.neurons import LIFNode

    model, side = tiny(name, timesteps=2)
    model = model.cuda().train()
    x = image(model, side, batch=2).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    _train_step(model, x, opt)
    learners = [make().cuda() for make in LEARNING.values()]
    xl = torch.randn(4, 2, 16, 8, 8, device="cuda", requires_grad=True)
    for learner in learners:  # warm-up: constants cached per device
        learner(xl).sum().backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _train_step(model, x, opt)
        node = LIFNode().cuda()  # built, moved and first called here: none of it may sync
        xn = torch.randn(4, 2, 16, 8, 8, device="cuda", requires_grad=True)
        node(xn).sum().backward()
        for learner in learners:
            learner(xl).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
