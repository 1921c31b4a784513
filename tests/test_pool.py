"""The CPU kernels' output pool: blocks come back when their tensors die and are reused, the
limit holds, and the pool can be switched off."""

from __future__ import annotations

import gc
import resource

import pytest
import torch

from multispike.kernels import pool

BIG = (4, 1 << 21)  # 32 MiB in float32


@pytest.fixture(autouse=True)
def _empty_pool(monkeypatch):
    monkeypatch.delenv("MULTISPIKE_CPU_POOL_MB", raising=False)
    pool.clear()
    yield
    pool.clear()


def test_small_requests_use_torch_empty():
    t = pool.empty((3, 5), torch.float64)
    assert t.shape == (3, 5) and t.dtype == torch.float64
    del t
    assert pool.held_bytes() == 0


def test_a_block_returns_when_its_tensor_dies_and_is_reused():
    t = pool.empty(BIG, torch.float32)
    assert t.shape == BIG and t.is_contiguous()
    t.fill_(1.5)
    ptr = t.data_ptr()
    view = t[1:3]  # a view keeps the block alive
    del t
    gc.collect()
    assert pool.held_bytes() == 0
    del view
    assert pool.held_bytes() == 4 * BIG[0] * BIG[1]
    u = pool.empty(BIG, torch.float32)
    assert u.data_ptr() == ptr and pool.held_bytes() == 0
    # same bytes, other dtype and shape: the block serves it too
    del u
    w = pool.empty((2, 1 << 23), torch.bfloat16)
    assert w.data_ptr() == ptr


def test_reuse_does_not_page_fault():
    t = pool.empty(BIG, torch.float32)
    t.fill_(0)  # first touch faults the pages in
    del t
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        u = pool.empty(BIG, torch.float32)
        u.fill_(1)
        del u
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # 32 MiB in 4 KiB pages would be 8192 faults per round if freshly mapped
    assert faults < 1000


def test_limit_and_switch_off(monkeypatch):
    monkeypatch.setenv("MULTISPIKE_CPU_POOL_MB", "40")
    a, b = pool.empty(BIG, torch.float32), pool.empty(BIG, torch.float32)
    del a, b  # 64 MiB freed, only 32 MiB fit under the 40 MiB limit
    assert pool.held_bytes() == 32 << 20
    pool.clear()
    monkeypatch.setenv("MULTISPIKE_CPU_POOL_MB", "0")
    c = pool.empty(BIG, torch.float32)
    del c
    assert pool.held_bytes() == 0


def test_kernel_outputs_come_from_the_pool():
    from multispike.neurons import LIFNode

    node = LIFNode(firing="ternary", check_input=False)
    x = torch.randn(4, 1 << 21, requires_grad=True)  # 32 MiB per tensor
    out = node(x)  # spikes and the saved membrane: two blocks
    out.sum().backward()  # the input gradient: a third
    del out
    x.grad = None
    gc.collect()
    block = 4 * x.numel()
    assert pool.held_bytes() == 3 * block
    out = node(x)
    assert pool.held_bytes() == block  # spikes and membrane taken from the pool
    with torch.no_grad():
        assert torch.equal(out.detach(), node(x))
