"""Device-agnostic code: what runs on CPU tensors runs on CUDA tensors and gives the same result.

Every test that takes ``device`` runs on ``cpu`` and, where a GPU is visible, on ``cuda``
(skipped otherwise, with the reason printed); on ``cuda`` it compares against the CPU result.
Models are float64 there: no TF32 and rounding differences of 1e-16, so no spike flips.

The classic bug — a tensor made on the default device (``torch.zeros(n)``, ``torch.tensor(...)``
without ``device=``) meeting data on the GPU — cannot show on a CPU-only machine, where the
default device is the data's device. :class:`FactoryCalls` catches it there: it records every
tensor factory call made without a device from the monitor, the analysis and the deploy code
while their GPU paths run; :func:`test_no_factory_call_without_a_device` demands none.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import multispike
from multispike.analysis.membrane import membrane_histograms
from multispike.analysis.ops import trace_ops
from multispike.analysis.stats import collect_activity
from multispike.cli import analysis as analysis_commands
from multispike.deploy import (
    AdditionOnlyExecutor,
    export_nir,
    fold_amplitudes,
    run_nir,
    split_planes,
)
from multispike.deploy.testing import exercise
from multispike.engine import distributed
from multispike.errors import ConfigError
from multispike.models.base import TERNARY_DEFAULTS
from multispike.models.resnet import ResNet, ResNetLayout
from multispike.monitor import record_activity
from multispike.neurons import IFNode, LIFNode
from tests.test_deploy import build

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA,
                                                                  reason="needs a CUDA GPU"))]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


def _neurons() -> nn.Module:
    """Every firing rule; IF and LIF only (no exp: bit-equal membranes on every device)."""
    return nn.Sequential(IFNode(firing="mt", deltas=(-0.4, 0.3)), LIFNode(firing="ternary"),
                         IFNode(firing="ternary-mt"), LIFNode())


def _input(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype, device="cpu") * 1.5


def _monitor(model: nn.Module, x: torch.Tensor, samples: int = 0):
    with torch.no_grad(), record_activity(model, membrane_samples=samples, seed=1) as mon:
        model(x)
    return mon


# -- the monitor -----------------------------------------------------------------------------
def test_monitor_on_the_device_equals_cpu(device):
    model, x = _neurons(), _input(3, 4, 60)
    ref = _monitor(model, x, samples=50)
    mon = _monitor(copy.deepcopy(model).to(device), x.to(device), samples=50)
    assert mon.summary() == ref.summary()
    for name, layer in ref.layers.items():
        for t in layer.membrane:
            got = mon.layers[name].membrane_samples(t)
            assert got.device.type == "cpu"  # samples are kept on the host
            assert torch.equal(got, layer.membrane_samples(t))


def test_monitor_counts_half_precision_membranes(device):
    """A bf16 membrane (mixed precision) is counted in float32, cached signs per dtype."""
    node = LIFNode(firing="ternary")
    x = _input(2, 3, 40)
    ref = _monitor(node, x.bfloat16())
    mon = _monitor(copy.deepcopy(node).to(device), x.bfloat16().to(device))
    assert mon.summary() == ref.summary()


def test_rates_pass_of_eval_on_the_device(device):
    """The firing-rate pass of ``multispike eval`` (where the GPU crash was reported)."""
    from multispike.data import get_spec
    from multispike.engine.evaluate import _rates
    from multispike.models import create

    torch.manual_seed(0)
    model = create("digits_net", firing="ternary", timesteps=2).double()
    loader = [(_input(8, 1, 8, 8, seed=s, dtype=torch.float64), torch.zeros(8)) for s in range(3)]
    spec = get_spec("digits")
    ref = _rates(model, loader, spec, None, torch.device("cpu"), 2)
    got = _rates(copy.deepcopy(model).to(device), loader, spec, None, device, 2)
    assert set(got["firing_rates"]) == set(ref["firing_rates"])
    for k, v in ref["firing_rates"].items():
        assert got["firing_rates"][k] == pytest.approx(v, abs=1e-3)
    assert got["mean_firing_rate"] == pytest.approx(ref["mean_firing_rate"], abs=1e-3)
    assert ref["mean_firing_rate"] > 0


# -- analysis --------------------------------------------------------------------------------
def test_collect_activity_and_membrane_histograms_on_the_device(device):
    model, x = build("digits_net", batch=4, firing="mt")
    loader = [(x, 0), (x.flip(0), 0)]
    ref = collect_activity(model, loader, membrane_samples=30)
    model_d = copy.deepcopy(model).to(device)
    mon = collect_activity(model_d, loader, membrane_samples=30)  # runs on the model's device
    assert [r["layer"] for r in mon.summary()] == [r["layer"] for r in ref.summary()]
    for a, b in zip(mon.summary(), ref.summary(), strict=True):
        assert a["rate"] == pytest.approx(b["rate"], abs=1e-3)
    hist = membrane_histograms(mon, bins=10)
    assert sum(hist["layers"][0]["steps"][0]["counts"]) > 0
    ops = trace_ops(model_d, (1, 8, 8), model_d.timesteps)
    assert [(o.name, o.macs) for o in ops.layers] == [
        (o.name, o.macs) for o in trace_ops(model, (1, 8, 8), model.timesteps).layers]


def test_energy_from_a_checkpoint_on_the_device(device, tmp_path):
    from multispike.engine import save_checkpoint

    model, _ = build("digits_net", firing="ternary")
    model = model.float()
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, {"model_args": model.model_args, "model": model.state_dict()})

    def report(dev: str):
        args = argparse.Namespace(
            checkpoint=str(ckpt), dataset="digits", data_dir=None, timesteps=2,
            cost_table="hu2021", firing_rate=None, batches=1, batch_size=32, model=None,
            firing=None, device=dev)
        return analysis_commands.energy_report(args).to_dict()

    ref, got = report("cpu"), report(device.type)
    assert got["rate_source"].startswith("measured")
    assert got["sops"] == pytest.approx(ref["sops"], rel=1e-2)
    assert got["energy_uj"] == pytest.approx(ref["energy_uj"], rel=1e-2)


def test_device_flag_of_the_analysis_commands():
    parser = argparse.ArgumentParser()
    analysis_commands.register(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["energy"]).device == "auto"
    assert parser.parse_args(["analyze", "--device", "cpu"]).device == "cpu"
    from multispike.engine.device import pick_device

    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        pick_device("gpu0")


# -- deploy ----------------------------------------------------------------------------------
#: resnet20m's layout (Sengupta stem with average pooling, spike-level blocks, identity and
#: average-pool-down shortcuts) at a width and depth that run in a second
TINY_RESNET = ResNetLayout("tiny-resnet", "sengupta", 8, (8, 16), (1, 1), (1, 2), "spike",
                         avg_down=True, input_size=8, defaults=dict(TERNARY_DEFAULTS))


def tiny_resnet(firing: str, batch: int = 2, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    model = ResNet(TINY_RESNET, firing=firing, learn_amplitude=True).double()
    x = _input(batch, 3, 8, 8, seed=seed, dtype=torch.float64).abs()
    return exercise(model, x, seed=seed), x


DEPLOY_CASES = [
    ("digits_net", {"firing": "binary"}),
    ("digits_net", {"firing": "ternary", "norm": "per-step"}),  # a weight table per step
    ("digits_net", {"firing": "mt", "pool": "avg", "mt_on_fc": True, "output": "vote"}),
    ("digits_net", {"firing": "ternary-mt", "neuron": "lif"}),
    ("tiny_resnet", {"firing": "ternary"}),  # identity shortcuts through average pooling
]


def _build(name: str, **kw) -> tuple[nn.Module, torch.Tensor]:
    return tiny_resnet(**kw) if name == "tiny_resnet" else build(name, **kw)


@pytest.mark.parametrize(("name", "kw"), DEPLOY_CASES)
def test_fold_split_and_executor_on_the_device_equal_cpu(device, name, kw):
    model, x = _build(name, **kw)
    ref = split_planes(fold_amplitudes(model))
    ref_rep = AdditionOnlyExecutor(ref).run(x)

    dep = split_planes(fold_amplitudes(copy.deepcopy(model).to(device)))
    assert {t.device.type for t in dep.state_dict().values()} == {device.type}
    xd = x.to(device)
    torch.testing.assert_close(dep(xd).cpu(), ref(x), rtol=0, atol=1e-10)
    rep, diff = AdditionOnlyExecutor(dep).verify(xd)
    assert rep.output.device.type == device.type
    assert diff <= 1e-10 * max(1.0, float(ref_rep.output.abs().max()))
    torch.testing.assert_close(rep.output.cpu(), ref_rep.output, rtol=0, atol=1e-10)
    assert rep.sops == ref_rep.sops and rep.events == ref_rep.events
    assert rep.summary() == ref_rep.summary()


def test_executor_refuses_an_input_on_another_device():
    model, x = build("digits_net", firing="binary")
    ex = AdditionOnlyExecutor(fold_amplitudes(model))
    with pytest.raises(ConfigError, match="input is on meta but the model on cpu"):
        ex.run(x.to("meta"))


def test_nir_export_and_run_from_the_device(device):
    pytest.importorskip("nir")
    pytest.importorskip("nirtorch")
    model, x = build("digits_net", firing="binary", neuron="plif", timesteps=2)
    dep = fold_amplitudes(copy.deepcopy(model).to(device))
    graph = export_nir(dep, input_shape=tuple(x.shape[1:]))
    ref = export_nir(fold_amplitudes(model), input_shape=tuple(x.shape[1:]))
    for name, node in ref.nodes.items():
        if hasattr(node, "weight"):
            assert (graph.nodes[name].weight == node.weight).all(), name
    xd = x.to(device)
    out = run_nir(graph, xd, dep.timesteps)  # the graph runs on the CPU, returns on x's device
    assert out.device.type == device.type
    torch.testing.assert_close(out, dep(xd), rtol=0, atol=1e-10)


def test_deploy_checkpoint_on_the_device(device, tmp_path):
    from multispike.deploy import load_deployed
    from multispike.engine import save_checkpoint
    from multispike.workflows.deploy_checkpoint import deploy_checkpoint

    model, _ = build("digits_net", firing="binary", neuron="lif")
    model = model.float()
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, {"model_args": model.model_args, "model": model.state_dict()})
    ref = deploy_checkpoint(str(ckpt), str(tmp_path / "cpu"), executor=True)
    got = deploy_checkpoint(str(ckpt), str(tmp_path / "dev"), executor=True, device=device)
    assert got["verification"]["passed"]
    assert got["verification"]["max_abs_diff_float64"] <= 1e-10
    assert got["executor"]["total_sops"] == ref["executor"]["total_sops"]
    assert got["nir"].get("written") == ref["nir"].get("written")
    a, b = load_deployed(tmp_path / "cpu"), load_deployed(tmp_path / "dev")
    for k, v in a.state_dict().items():  # written as CPU tensors from either device
        torch.testing.assert_close(b.state_dict()[k], v, rtol=1e-6, atol=1e-6)


# -- the CPU-only check for tensors made on the default device ------------------------------
AUDITED = tuple(
    str(Path(multispike.__file__).parent / p)
    for p in ("monitor.py", "analysis" + os.sep, "deploy" + os.sep)
)
#: factory functions that put their result on the default device unless given ``device=``
try:
    from torch.utils._device import _device_constructors

    FACTORIES = frozenset(_device_constructors())
except ImportError:  # pragma: no cover - a torch without it: the common ones
    FACTORIES = frozenset((torch.tensor, torch.as_tensor, torch.zeros, torch.ones, torch.empty,
                           torch.full, torch.arange, torch.linspace, torch.eye, torch.rand,
                           torch.randn, torch.randint, torch.randperm))
_COPIES = (torch.tensor, torch.as_tensor, getattr(torch, "asarray", None))


class FactoryCalls(TorchFunctionMode):
    """Records ``file:line function`` of each tensor factory call that names no device, made
    directly from source under ``paths`` outside a module's ``__init__`` (parameters made at
    construction follow the module's ``.to()``). ``torch.tensor(t)`` / ``as_tensor(t)`` of a
    tensor keep its device and are not recorded."""

    def __init__(self, paths: tuple[str, ...] = AUDITED) -> None:
        super().__init__()
        self.paths = paths
        self.calls: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None and not (
            func in _COPIES and args and isinstance(args[0], torch.Tensor)
        ):
            frame = sys._getframe(1)
            code = frame.f_code
            if code.co_filename.startswith(self.paths) and code.co_name != "__init__":
                self.calls.add(f"{code.co_filename}:{frame.f_lineno} {func.__name__}")
        return func(*args, **kwargs)


def _audited_paths(x_mt: torch.Tensor, mt: nn.Module, resnet: nn.Module, x_r: torch.Tensor,
                   binary: nn.Module, x_b: torch.Tensor, ckpt: Path) -> None:
    from multispike.workflows.deploy_checkpoint import deploy_checkpoint

    mon = collect_activity(mt, [(x_mt, 0)], membrane_samples=5)  # the monitor and analysis
    membrane_histograms(mon, bins=4)
    trace_ops(mt, tuple(x_mt.shape[1:]), mt.timesteps)
    # deploy: fold, planes, verification and the executor on the MT model (average pooling,
    # flatten, linear, voting) and on a ResNet (identity shortcuts)
    deploy_checkpoint(str(ckpt), str(ckpt.parent / "deployed"), executor=True, nir=False)
    AdditionOnlyExecutor(split_planes(fold_amplitudes(resnet))).verify(x_r)
    try:
        import nir  # noqa: F401
        import nirtorch  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        return
    run_nir(export_nir(binary), x_b, binary.timesteps)


def test_no_factory_call_without_a_device(tmp_path):
    from multispike.engine import save_checkpoint

    mt, x_mt = build("digits_net", batch=2, firing="mt", pool="avg", mt_on_fc=True,
                     output="vote")
    resnet, x_r = tiny_resnet("ternary-mt")
    binary, x_b = build("digits_net", firing="binary", timesteps=1)
    ckpt = tmp_path / "mt.pt"
    save_checkpoint(ckpt, {"model_args": mt.model_args, "model": mt.float().state_dict()})
    mt.double()
    rec = FactoryCalls()
    with rec:
        _audited_paths(x_mt, mt, resnet, x_r, binary, x_b, ckpt)
    assert not rec.calls, "tensors made on the default device, not the data's:\n" + "\n".join(
        sorted(rec.calls))


def test_the_factory_check_catches_a_tensor_made_on_the_default_device():
    """The check is not vacuous: the bug class it looks for, in this file, is recorded."""

    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("w", torch.ones(3))  # construction: follows .to(), fine

        def forward(self, x):
            signs = torch.tensor([1.0, -1.0, 1.0], dtype=x.dtype)  # the bug: on the CPU always
            return x * self.w * signs + torch.zeros_like(x) + x.new_zeros(3)

    bad, x = Bad(), torch.ones(2, 3)
    rec = FactoryCalls(paths=(__file__,))
    with rec:
        bad(x)
    (call,) = rec.calls
    assert call.endswith(" tensor") and "test_devices.py" in call


# -- torchrun: the device picks the backend --------------------------------------------------
@pytest.fixture
def fake_torchrun(monkeypatch):
    """Rank 1 of 2 launched by torchrun, with the process group and CUDA calls recorded."""
    calls: dict[str, object] = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend: calls.__setitem__("backend", backend))
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.__setitem__("gpu", i))

    def gpus(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return calls, gpus


def test_torchrun_device_cpu_is_gloo_even_with_gpus(fake_torchrun):
    calls, gpus = fake_torchrun
    gpus(1)
    ctx = distributed.setup("cpu")
    assert ctx.enabled and ctx.device == torch.device("cpu") and ctx.world_size == 2
    assert calls == {"backend": "gloo"}


def test_torchrun_cuda_is_nccl_on_the_local_rank_gpu(fake_torchrun):
    calls, gpus = fake_torchrun
    gpus(2)
    for name in ("auto", "cuda", "cuda:0", torch.device("cuda")):
        calls.clear()
        ctx = distributed.setup(name)
        assert ctx.device == torch.device("cuda", 1)
        assert calls == {"backend": "nccl", "gpu": 1}


def test_torchrun_device_errors_are_one_line(fake_torchrun):
    calls, gpus = fake_torchrun
    gpus(1)  # two ranks, one GPU
    with pytest.raises(ConfigError, match="LOCAL_RANK 1 has no GPU of its own.*--device cpu"):
        distributed.setup("auto")
    gpus(0)
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        distributed.setup("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        distributed.setup("gpu")
    assert calls == {}
    assert distributed.setup("auto").device == torch.device("cpu")  # no GPU: gloo
    assert calls == {"backend": "gloo"}
