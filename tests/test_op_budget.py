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
    assert ops == ["aten.empty.memory_format"] * 3, ops


def test_recorder_counts_what_it_must():
    """The recorder itself: an elementwise op counts, a view and a host read do not."""
    t = torch.ones(3)
    with OpRecorder() as rec:
        t.view(3, 1)
        (t * 2).sum().item()
    assert rec.ops == ["aten.mul.Tensor", "aten.sum.default"]
