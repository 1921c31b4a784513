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


# -- bench/gpu_check.sh: the GPU check fits a short GPU slot ---------------------------------------
GPU_CHECK = BENCH / "gpu_check.sh"
#: the script's parts, in the order they must run, and the most seconds and files it may take
GPU_CHECK_PARTS = ["wheels", "env", "cuda_tests", "suite", "bench"]
GPU_CHECK_BUDGET_S = 420
GPU_CHECK_FILES = 8


def test_gpu_check_script_fits_its_budget():
    import re

    assert subprocess.run(["bash", "-n", str(GPU_CHECK)]).returncode == 0
    text = GPU_CHECK.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    limits = {k: int(v) for k, v in re.findall(r'^(\w+_S)="\$\{\1:-(\d+)\}"$', code, re.M)}
    calls = re.findall(r'^\s*part (\w+) "\$(\w+_S)" (\w+)', code, re.M)
    # every part, in order, under a limit of its own; the limits fit the budget
    assert [name for name, _, _ in calls] == GPU_CHECK_PARTS
    assert sorted(var for _, var, _ in calls) == sorted(limits)
    assert sum(limits.values()) <= GPU_CHECK_BUDGET_S, limits
    # every command that may take long runs inside a part (under `timeout`)
    assert 'term=$(( secs > 10 ? secs - 5 : secs ))' in code  # SIGKILL within the limit
    assert 'timeout -k 5 "$term" bash -c "$fn"' in code
    for _, _, fn in calls:
        assert re.search(rf"^{fn}\(\) \{{", code, re.M), fn
    assert "export -f" in code
    # the files it writes under $OUT
    files = set(re.findall(r'\$OUT/([\w.-]+)', code)) | set(re.findall(r'"\$OUT"/([\w.-]+)', code))
    assert len(files) <= GPU_CHECK_FILES, sorted(files)
    assert {"env.txt", "cuda_tests.txt", "suite.txt", "summary.txt"} <= files


STUB_PYTHON = r'''#!/usr/bin/env bash
# a stand-in for python3: records each call, answers as the real commands would
echo "python $*" >> "$CALLS"
case "$*" in
  *"bench/gpu.py --list-cuda-tests"*)
    printf '%s\n' 'tests/test_a.py::test_cuda' 'tests/test_b.py::test_x[cuda]' ;;
  *"-m pytest"*) echo "1 passed in 0.01s" ;;
  *"bench/run.py"*) echo "goal: a stand-in goal: 1.00x, met"; echo "{}" > "${@: -1}" ;;
  *"-c"*) echo "pytest-xdist 3.8.0"; echo "pytest-timeout 2.3.1" ;;
esac
'''


def test_gpu_check_runs_its_parts_in_order_into_few_files(tmp_path):
    # the whole script with stand-ins for python3 and nvidia-smi: seconds, and no GPU needed
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "python3").write_text(STUB_PYTHON)
    (stubs / "nvidia-smi").write_text("#!/bin/sh\necho 'a stand-in GPU'\n")
    for f in stubs.iterdir():
        f.chmod(0o755)
    out, calls = tmp_path / "out", tmp_path / "calls.txt"
    env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}", OUT=str(out),
               CALLS=str(calls), TMPDIR=str(tmp_path))
    env.pop("PYTHON", None)
    p = subprocess.run(["bash", str(GPU_CHECK)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    written = sorted(f.name for f in out.iterdir())
    assert len(written) <= GPU_CHECK_FILES, written
    summary = (out / "summary.txt").read_text().splitlines()
    parts = [line.split(":")[0] for line in summary if ": exit " in line]
    wheels = any((BENCH.parent / "wheels").glob("*.whl"))  # installed by the stand-in pip
    assert parts == [p for p in GPU_CHECK_PARTS if wheels or p != "wheels"]
    assert all(": exit 0 after " in line for line in summary if ": exit " in line)
    assert "goal: a stand-in goal: 1.00x, met" in summary
    assert "  1 passed in 0.01s" in summary
    pytest_calls = [c for c in calls.read_text().splitlines() if "-m pytest" in c]
    assert len(pytest_calls) == 2
    cuda, suite = pytest_calls
    assert "-rfE --tb=short" in cuda and "-n 4 --timeout=120" in cuda
    assert cuda.endswith("tests/test_a.py::test_cuda tests/test_b.py::test_x[cuda]")
    assert "-n 8 --timeout=120 tests" in suite
    assert "2 CUDA tests" in (out / "cuda_tests.txt").read_text()
    assert "a stand-in GPU" in (out / "env.txt").read_text()


CUDA_SELECTION = '''
import pytest

GPU = pytest.mark.skipif(False, reason="needs a CUDA GPU")


@GPU
def test_skips_without_cuda():
    pass


@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu0", marks=GPU)])
def test_parametrised(device):
    pass


def test_cuda_in_its_name():
    pass


def test_branches_on_cuda():
    device = "cuda"
    assert device


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_device(device):
    pass


@pytest.mark.skipif(True, reason="nir not installed")
def test_other_skip():
    pass


def test_plain():
    pass
'''


def test_cuda_tests_are_those_that_skip_without_cuda_or_name_it(tmp_path):
    (tmp_path / "test_sel.py").write_text(CUDA_SELECTION)
    p = subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--list-cuda-tests",
                        "test_sel.py"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [f"test_sel.py::{t}" for t in (
        "test_skips_without_cuda", "test_parametrised[gpu0]", "test_cuda_in_its_name",
        "test_branches_on_cuda", "test_device[cuda]")]


def test_host_time_row_puts_each_layer_beside_one_autograd_op():
    host = default_path.host_time(rounds=2, inner=2)
    assert [r["layer"] for r in host["rows"]] == list(default_path.HOST_LAYERS)
    assert host["shape"] == [4, 2, 16, 8, 8] and host["op_us"] > 0
    for r in host["rows"]:
        assert r["us"] > 0 and r["x_op"] > 0
    lines = default_path.host_goal_lines(host)
    assert len(lines) == 4
    assert all(line.startswith("goal: host time per call <= 2.5x one autograd op (x * 0.5)")
               for line in lines)
    assert "LIFNode(firing=\"mt\", learn_thresholds=True)" in default_path.host_report(host)


def test_train_e2e_row_runs_multispike_train_on_the_cpu():
    # the `multispike train` row with tiny sizes: 5 CIFAR-format images, one step per epoch
    row = gpu.train_e2e(torch.device("cpu"), sizes=(1, 5))
    for twin in ("snn", "ann"):
        assert row[f"{twin}_images_per_s"] > 0, row.get(f"{twin}_error")
        assert row[f"{twin}_command"].startswith("multispike train --recipe mt-vgg9-cifar10")
    assert "--firing ann --timesteps 1" in row["ann_command"]
    assert row["snn_vs_ann"] == pytest.approx(row["snn_images_per_s"] / row["ann_images_per_s"])
    line = gpu.e2e_goal_line(row)
    assert line.startswith("goal: multispike train images/s >= 0.9x the ANN twin")
    assert line in gpu.report({"device": "cpu", "train_e2e": row, "errors": {}})
