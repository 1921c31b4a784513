"""The benchmark helpers the figures in docs/performance.md rest on (bench/common.py).

Nothing here times anything: these check the arithmetic of the ratios and of the bandwidth
fraction, the memory accounting behind the "peak training memory" goal, what the "default"
row builds, and the command's handling of a bad saved report and of a missing GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import common  # bench/common.py: tests/__init__.py puts bench/ on the path
import default_path
import gpu
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


def test_report_reprints_the_tables_of_a_saved_run(tmp_path):
    machine = {"cpu": "test cpu", "cores": 2, "torch_threads": 2, "torch": "2.x",
               "malloc_tuning": "on", "THP_MEM_ALLOC_ENABLE": "", "cpu_kernel": "loaded",
               "spikingjelly": None, "snntorch": None, "loadavg_1min": 0.5}
    layer = [{"impl": "fused", "ms": 2.0, "Mneuron_steps_per_s": 500.0, "x_fused": 1.0},
             {"impl": "loop", "ms": 12.5, "Mneuron_steps_per_s": 80.0, "x_fused": 6.25}]
    suite = {"name": "inference", "device": "cpu", "shape": [4, 2, 8, 4, 4], "layer": layer,
             "models": [], "notes": {}, "wall_s": 3.0, "loadavg_1min_after": 0.7}
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps({"machine": machine, "suites": {"inference": suite}}))
    p = subprocess.run([sys.executable, str(BENCH / "run.py"), "--report", str(saved)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "Neuron layer forward, no gradient, [T=4, 2, 8, 4, 4] (cpu)" in p.stdout
    rows = {line.split()[0]: line.split() for line in p.stdout.splitlines() if line.strip()}
    assert rows["loop"][1:] == ["12.5", "80", "6.2x"]
    assert "[inference: 3 s, load average after 0.7]" in p.stdout
    assert "machine: test cpu, 2 cores" in p.stdout and "malloc tuning on" in p.stdout


def test_timed_runs_inner_calls_per_round_and_reports_per_call():
    calls = []
    res = common.timed({"a": lambda: calls.append(1)}, rounds=2, device="cpu", inner=5)
    assert len(calls) == (1 + 2) * 5  # one warm-up round, two timed, five calls each
    r = res["a"]
    assert r["inner"] == 5 and len(r["all_ms"]) == 2
    assert r["min_ms"] <= r["ms"] <= r["max_ms"]


def test_bandwidth_fraction_arithmetic():
    # 2 GB moved in 2 ms is 1000 GB/s; copy_() of the same bytes in 1 ms is 2000 GB/s
    bw = common.bandwidth(2e9, kernel_ms=2.0, copy_ms=1.0)
    assert bw["achieved_GBps"] == pytest.approx(1000.0)
    assert bw["bound_GBps"] == pytest.approx(2000.0)
    assert bw["fraction"] == pytest.approx(0.5)
    assert bw["traffic_MB"] == pytest.approx(2000.0)
    # the fused forward + backward: read x, write out and the saved value; read the gradient
    # and the saved value, write the input gradient: twice the bytes of kernel_bytes
    assert gpu.traffic_bytes(neuron_layer.kernel_bytes(10, 4, 1)) == 2 * (40 + 40 + 10)


def test_default_row_builds_lifnode_with_its_defaults(monkeypatch):
    import multispike.neurons as neurons

    seen = []

    class Recording(neurons.LIFNode):
        def __init__(self, **kwargs):
            seen.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(neurons, "LIFNode", Recording)
    node = default_path.default_neuron()
    # only the neuron's constants (those of SpikingJelly's LIFNode()) are passed: everything
    # that decides how the layer runs is LIFNode's own default
    assert seen == [{"decay": 0.5, "v_threshold": 1.0, "surrogate": "sigmoid"}]
    assert node.check_input is True and node.backend == "auto"
    assert node.config() == neurons.LIFNode(decay=0.5, v_threshold=1.0,
                                            surrogate="sigmoid").config()
    train = default_path.train_neuron()
    assert seen[-1] == {**seen[0], "check_input": False}
    assert train.check_input is False and train.backend == "auto"


def test_default_row_runs_in_an_untuned_process(monkeypatch):
    # the parent asks for a fresh interpreter with the tuning switched off, the tuned row not
    runs = []

    def fake_run(cmd, env, **kwargs):
        runs.append((cmd, env))
        return subprocess.CompletedProcess(cmd, 1, "", "boom\n")

    monkeypatch.setattr(default_path.subprocess, "run", fake_run)
    assert default_path.spawn("cpu", (1, 1), 1, ["default"], tuned=False) == {
        "error": "exit 1: boom"}
    default_path.spawn("cpu", (1, 1), 1, ["train"], tuned=True)
    (cmd0, env0), (cmd1, env1) = runs
    assert env0["MULTISPIKE_NO_MALLOC_TUNING"] == "1" and "--tuned" not in cmd0
    assert "MULTISPIKE_NO_MALLOC_TUNING" not in env1 and "--tuned" in cmd1


def test_out_of_time(monkeypatch):
    monkeypatch.delenv(common.DEADLINE_ENV, raising=False)
    assert not common.out_of_time()
    monkeypatch.setenv(common.DEADLINE_ENV, "1")
    assert common.out_of_time()
    monkeypatch.setenv(common.DEADLINE_ENV, "99999999999")
    assert not common.out_of_time()


@pytest.mark.parametrize("script", ["run.py", "gpu.py"])
def test_device_cuda_without_a_gpu_exits_2_with_one_line(script):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no GPU visible, even on a GPU machine
    p = subprocess.run([sys.executable, str(BENCH / script), "--device", "cuda"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("no CUDA GPU visible; "), p.stderr


def test_cpu_load_report_puts_the_policy_beside_torchs_default():
    import cpu_load

    def res(slow, threads):
        return {"threads_fixed": threads, "cores": 2, "batch_size": 64, "rounds": 1,
                "loadavg_1min": 1.0, "idle_images_per_s": 4000.0, "busy_images_per_s":
                4000.0 / slow, "idle_threads": [2], "busy_threads": [1], "slowdown": slow}

    text = cpu_load.report({**res(1.2, None), "torch_default": res(14.0, 2)})
    assert "chosen by multispike" in text and "2 (fixed)" in text
    assert "14.00x" in text and "goal: one busy core costs at most 2x (here 1.20x" in text
