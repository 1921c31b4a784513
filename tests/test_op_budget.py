"""Op budgets of one neuron call, forward + backward, on the default CPU path.

Each aten op a layer runs besides its kernel is host work on the CPU and a launch on a GPU, so
these counts are the CPU's hold on the GPU goal (one launch per direction): a dispatch-mode
recorder counts every op of a training-style call (gradients set to None first, as
``zero_grad`` does), leaving out views (``view``, ``detach``, ...: no data, no launch) and host
scalar reads (free on the CPU, where the C++ kernel reads the parameters). What remains is
the kernel's own buffers (``out``, what the backward keeps, ``grad_x``) and one small tensor per
parameter gradient.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from multispike.kernels import cpu
from multispike.neurons import IFNode, LIFNode, PLIFNode

pytestmark = pytest.mark.skipif(cpu.library() is None,
                                reason=f"C++ kernel unavailable: {cpu.failure()}")

HOST_READS = {"aten._local_scalar_dense.default", "aten.item.default"}


class OpRecorder(TorchDispatchMode):
    """Names of the ops that run, views and host scalar reads left out."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if not func.is_view and name not in HOST_READS:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


#: layer, budget: aten ops per forward + backward (issue figures before the direct path:
#: 5, 16, 6 and 53)
BUDGETS = {
    "LIFNode()": (lambda: LIFNode(), 4),
    'PLIFNode(firing="mt")': (lambda: PLIFNode(firing="mt"), 5),
    'LIFNode(firing="ternary", learn_amplitude=True)':
        (lambda: LIFNode(firing="ternary", learn_amplitude=True), 5),
    'LIFNode(firing="mt", learn_thresholds=True)':
        (lambda: LIFNode(firing="mt", learn_thresholds=True), 8),
    'IFNode(firing="integer", reset="any", learn_thresholds=True)':
        (lambda: IFNode(firing="integer", reset="any", learn_thresholds=True), 8),
}


def ops_of_one_call(node: torch.nn.Module, shape=(4, 2, 16, 8, 8)) -> list[str]:
    """The ops of ``node``'s forward + backward on a fresh input (after a warm-up call)."""
    x = torch.randn(shape, requires_grad=True)
    node(x).sum().backward()  # warm-up: the kernel library loaded, the launcher cached
    node.zero_grad(set_to_none=True)
    y = torch.randn(shape).requires_grad_(True)
    grad = torch.randn(shape)
    with OpRecorder() as rec:
        out = node(y)
        out.backward(grad)
    assert y.grad is not None
    assert all(p.grad is not None for p in node.parameters())
    return rec.ops


@pytest.mark.parametrize("name", list(BUDGETS))
def test_neuron_call_within_op_budget(name):
    make, budget = BUDGETS[name]
    node = make()
    assert node.path.impl == "cpu"
    ops = ops_of_one_call(node)
    assert len(ops) <= budget, ops


def test_plain_layer_runs_nothing_but_its_buffers():
    """LIF without parameters: ``out``, the saved code or membrane, ``grad_x``; nothing else."""
    ops = ops_of_one_call(LIFNode())
    assert ops == ["aten.empty_like.default"] * 3, ops


def test_recorder_counts_what_it_must():
    """The recorder itself: an elementwise op counts, a view and a host read do not."""
    t = torch.ones(3)
    with OpRecorder() as rec:
        t.view(3, 1)
        (t * 2).sum().item()
    assert rec.ops == ["aten.mul.Tensor", "aten.sum.default"]


# -- the Triton path: launches and device ops, counted on the CPU --------------------------------
ALLOCATIONS = {"aten.empty.memory_format", "aten.empty_like.default", "aten.new_empty.default",
               "aten.empty_strided.default"}


class _Launches:
    """Stands in for a Triton kernel: ``kernel[grid](...)`` records the launch, runs nothing."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.log.append(self.name)


TRITON_LAYERS = {
    "LIFNode()": (lambda: LIFNode(), 1, 1),
    'LIFNode(firing="ternary")': (lambda: LIFNode(firing="ternary"), 1, 1),
    'IFNode(firing="integer")': (lambda: IFNode(firing="integer"), 1, 1),
    'LIFNode(firing="ternary", learn_amplitude=True)':
        (lambda: LIFNode(firing="ternary", learn_amplitude=True), 1, 2),
    'PLIFNode(firing="mt")': (lambda: PLIFNode(firing="mt"), 1, 2),
    # the thresholds from ρ in one single-program launch, dL/dρ in the backward's second
    'LIFNode(firing="mt", learn_thresholds=True)':
        (lambda: LIFNode(firing="mt", learn_thresholds=True), 2, 2),
    'IFNode(firing="integer", reset="any", learn_thresholds=True)':
        (lambda: IFNode(firing="integer", reset="any", learn_thresholds=True), 2, 2),
}


@pytest.mark.parametrize("name", list(TRITON_LAYERS))
def test_triton_path_launches_and_nothing_else(name, monkeypatch):
    """The CUDA path's budget with the kernels mocked out: per direction one launch (the
    backward a second, single-program one where a parameter wants a gradient; learned
    thresholds a single-program one in the forward too), and no device op besides the
    kernels' output buffers: no torch op on τ, the amplitude, the thresholds, the NaN flag or
    the gradients' sums."""
    from multispike import kernels
    from multispike.kernels import triton_impl

    launches: list[str] = []
    for kernel in ("_forward_kernel", "_backward_kernel", "_finish_kernel",
                   "_learned_consts_kernel"):
        monkeypatch.setattr(triton_impl, kernel, _Launches(kernel, launches), raising=False)
    native = kernels.native_impl
    monkeypatch.setattr(kernels, "native_impl",
                        lambda record, x: "triton" if native(record, x) else None)
    node = TRITON_LAYERS[name][0]()
    assert node.path.impl == "triton"
    x = torch.randn(4, 2, 16, 8, 8, requires_grad=True)
    node(x).sum().backward()  # warm-up: constants made on the device, flag made
    node.zero_grad(set_to_none=True)
    y, grad = torch.randn(x.shape, requires_grad=True), torch.ones(x.shape)
    launches.clear()
    with OpRecorder() as fwd:
        out = node(y)
    n_fwd = len(launches)
    with OpRecorder() as bwd:
        out.backward(grad)
    _, want_fwd, want_bwd = TRITON_LAYERS[name]
    assert (n_fwd, len(launches) - n_fwd) == (want_fwd, want_bwd), launches
    others = [op for op in fwd.ops + bwd.ops if op not in ALLOCATIONS]
    assert others == [], others


def test_compact_spikes_costs_two_ops_with_the_kernel():
    """Inside compact_spikes a convolution after the neuron keeps the kernel's packed codes:
    one op more in the forward (the codes' buffer) and one in the backward (the rebuild),
    where packing in tensor ops took 7 and unpacking 4 to 5 more."""
    from multispike.kernels import compact_spikes

    node, conv = PLIFNode(firing="mt"), torch.nn.Conv2d(16, 16, 3, padding=1)

    def ops(compact: bool) -> list[str]:
        x = torch.randn(4, 2, 16, 8, 8, requires_grad=True)
        node.zero_grad(set_to_none=True)
        conv.zero_grad(set_to_none=True)
        with OpRecorder() as rec:
            with compact_spikes() if compact else torch.enable_grad():
                y = conv(node(x).flatten(0, 1))
            y.sum().backward()
        return rec.ops

    ops(True)  # warm-up
    plain, packed = ops(False), ops(True)
    extra = list(packed)
    for op in plain:
        extra.remove(op)
    assert sorted(extra) == ["aten.empty.memory_format"] * 2, extra
