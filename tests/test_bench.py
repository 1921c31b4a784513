"""The benchmark helpers the figures in docs/performance.md rest on (bench/common.py).

Nothing here times anything: these check the arithmetic of the ratios, the memory accounting
behind the "peak training memory" goal, and the command's handling of a bad saved report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import common  # bench/common.py: conftest.py puts bench/ on the path
import neuron_layer
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_ratio_is_the_median_of_per_round_ratios():
    # per-round ratios 2, 4, 1 -> 2; the ratio of medians would be 30 / 10 = 3
    res = {"a": {"all_ms": [10.0, 40.0, 30.0]}, "b": {"all_ms": [5.0, 10.0, 30.0]}}
    assert common.ratio(res, "a", "b") == pytest.approx(2.0)
    assert common.ratio(res, "a", "b", scale=4) == pytest.approx(0.5)


def test_side_by_side_interleaves_rounds_after_warmup():
    calls = []
    fns = {"x": lambda: calls.append("x"), "y": lambda: calls.append("y")}
    res = common.side_by_side(fns, rounds=3, warmup=1)
    assert calls == ["x", "y"] * 4
    assert set(res) == {"x", "y"}
    for r in res.values():
        assert r["rounds"] == 3 and len(r["all_ms"]) == 3
        assert r["min_ms"] <= r["ms"] <= r["max_ms"]


def test_peak_memory_counts_storages_alive_at_once():
    before = torch.ones(1 << 20, dtype=torch.uint8)  # exists before: not counted
    mib = 1 << 20
    with common.PeakMemory() as mem:
        a = torch.empty(mib, dtype=torch.uint8)
        b = torch.empty(2 * mib, dtype=torch.uint8)
        view = b[:10]  # a view shares its storage: counted once
        del a
        c = torch.empty(mib // 2, dtype=torch.uint8)
        _ = before + 1  # a temporary of 1 MiB, freed at once, while b and c are alive
    assert mem.peak == 2 * mib + mib // 2 + mib
    del b, c, view


def test_peak_memory_sees_the_backward():
    w = torch.randn(256, 256, requires_grad=True)
    x = torch.randn(64, 256)
    with common.PeakMemory() as mem:
        (x @ w).relu().sum().backward()
    # at least the activation [64, 256] and the weight gradient [256, 256] in float32
    assert mem.peak >= (64 * 256 + 256 * 256) * 4


def test_saved_bytes_counts_what_autograd_keeps():
    x = torch.randn(1000, requires_grad=True)
    y = torch.randn(1000, requires_grad=True)
    assert common.saved_bytes(lambda: x * y) == 2 * 1000 * 4
    assert common.saved_bytes(lambda: x + y) == 0


def test_kernel_bytes():
    # forward reads x and writes out and the saved value; the backward mirrors it
    assert neuron_layer.kernel_bytes(10, 4, 1) == [40, 40, 10]


def test_report_of_a_bad_file_exits_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    p = subprocess.run([sys.executable, str(BENCH / "run.py"), "--report", str(bad)],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert "not a `run.py --json` output" in p.stderr
    assert "Traceback" not in p.stderr
