"""The CPU thread policy: the pure choice, the overrides, and that a CPU training applies it."""

from __future__ import annotations

import math

import pytest
import torch

from multispike.engine import TrainConfig, threads, train_model
from multispike.engine import train as train_mod
from multispike.kernels import cpu as cpu_kernel


@pytest.mark.parametrize(
    ("cores", "busy", "processes", "expected"),
    [
        (2, 0.0, 1, 2),  # idle: every core
        (2, 0.2, 1, 2),  # a little background load is not a busy core
        (2, 0.3, 1, 1),  # more than a quarter of a core taken: that core is not free
        (2, 1.0, 1, 1),  # one core kept busy (the measured 15x case)
        (2, 2.0, 1, 1),  # everything busy: still one thread
        (2, 7.5, 1, 1),  # more busy than cores (load average over the core count)
        (2, -0.1, 1, 2),  # measurement noise below zero
        (2, math.nan, 1, 2),  # nothing known: every core
        (1, 0.0, 1, 1),
        (16, 0.0, 1, 16),
        (16, 3.1, 1, 13),  # the 13th core is 90% free
        (16, 3.8, 1, 12),
        (16, 0.0, 2, 8),  # torchrun, two processes per node share the cores
        (16, 4.0, 4, 3),
        (2, 0.0, 2, 1),
        (2, 0.0, 8, 1),  # more processes than cores: one thread each
        (0, 0.0, 1, 1),
    ],
)
def test_choose_threads_table(cores, busy, processes, expected):
    assert threads.choose_threads(cores, busy, processes) == expected


def test_choose_threads_never_more_than_cores_nor_below_one():
    for cores in range(1, 9):
        for tenths in range(0, 100):
            n = threads.choose_threads(cores, tenths / 10)
            assert 1 <= n <= cores


def test_sample_busy_is_a_core_count():
    busy = threads.sample_busy(0.05)
    if busy is None:
        pytest.skip("no /proc/stat here")
    assert 0.0 <= busy <= threads.available_cores() + 0.5


@pytest.fixture
def plain_env(monkeypatch):
    """No thread override in the environment, PyTorch at its default count, load measured as
    idle unless a test says otherwise; PyTorch's count restored afterwards."""
    for name in threads.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    default = max(threads.torch_defaults())
    torch.set_num_threads(default)
    monkeypatch.setattr(threads, "available_cores", lambda: default)
    monkeypatch.setattr(threads, "measure_busy", lambda interval=threads.SAMPLE_S: 0.0)
    yield default
    torch.set_num_threads(before)


def test_no_override_by_default(plain_env):
    assert threads.user_override() is None
    choice = threads.choose_for_run()
    assert (choice.threads, choice.source) == (plain_env, "policy")


@pytest.mark.parametrize("name", threads.ENV_VARS)
def test_environment_overrides_win(plain_env, monkeypatch, name):
    monkeypatch.setattr(threads, "measure_busy", lambda interval=threads.SAMPLE_S: 100.0)
    monkeypatch.setenv(name, "3")
    assert threads.user_override() == name
    choice = threads.choose_for_run()
    assert choice.source == name
    # MULTISPIKE_THREADS is applied by multispike, OMP_NUM_THREADS by PyTorch at start-up
    assert choice.threads == (3 if name == "MULTISPIKE_THREADS" else torch.get_num_threads())


def test_set_num_threads_overrides(plain_env, monkeypatch):
    monkeypatch.setattr(threads, "measure_busy", lambda interval=threads.SAMPLE_S: 100.0)
    torch.set_num_threads(max(threads.torch_defaults()) + 3)  # no default PyTorch picks
    assert threads.user_override() == "torch.set_num_threads"
    assert threads.choose_for_run().threads == max(threads.torch_defaults()) + 3


def test_recorded_count_of_a_resumed_run_wins_over_the_load(plain_env, monkeypatch):
    monkeypatch.setattr(threads, "measure_busy", lambda interval=threads.SAMPLE_S: 100.0)
    choice = threads.choose_for_run(recorded=2)
    assert (choice.threads, choice.source) == (2, "checkpoint")
    assert threads.choose_for_run().threads == 1  # a fresh run follows the load


QUICK = dict(dataset="digits", epochs=1, batch_size=256, progress=False, num_workers=0,
             device="cpu")


def test_train_model_applies_the_policy_and_restores(plain_env, monkeypatch):
    seen = []
    real_train_one_epoch = train_mod.train_one_epoch

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_train_one_epoch(*args, **kwargs)

    monkeypatch.setattr("multispike.engine.train.train_one_epoch", spy)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.setattr(threads, "measure_busy", lambda interval=threads.SAMPLE_S: 2.6)
    before = torch.get_num_threads()
    result = train_model(TrainConfig(**QUICK))
    assert seen == [1] and result["threads"] == 1 and result["rank"] == 0
    assert torch.get_num_threads() == before  # the caller's count is back


def test_train_model_keeps_a_users_count(plain_env, monkeypatch, tmp_path):
    monkeypatch.setattr(threads, "measure_busy", lambda interval=threads.SAMPLE_S: 100.0)
    monkeypatch.setenv("MULTISPIKE_THREADS", "2")
    result = train_model(TrainConfig(**QUICK, out=str(tmp_path / "run")))
    assert result["threads"] == 2
    # recorded: resuming it without the variable, on a loaded machine, keeps 2 threads
    from multispike.engine import load_checkpoint

    assert load_checkpoint(tmp_path / "run" / "last.pt")["threads"] == 2
    monkeypatch.delenv("MULTISPIKE_THREADS")
    resumed = train_model(TrainConfig(**QUICK, out=str(tmp_path / "run"), resume=True))
    assert resumed["threads"] == 2


def test_kernel_threads_follow_the_monitor_unless_overridden(plain_env, monkeypatch):
    class Fixed:
        def threads(self, limit):
            return 1

    monkeypatch.setattr(cpu_kernel, "_monitor", Fixed())
    assert cpu_kernel._threads(1 << 20) == 1
    assert cpu_kernel._threads(1000) == 1  # small arrays: one thread anyway
    monitor = threads.LoadMonitor(min_interval=0.0)
    monitor._free = 1
    monitor._checked = math.inf  # no re-measuring in this test
    assert monitor.threads(2) == 1
    monitor._override = True
    assert monitor.threads(2) == 2


def test_load_monitor_measures_without_sleeping():
    monitor = threads.LoadMonitor(min_interval=0.0)
    n = monitor.threads(2)  # first look: nothing to compare yet
    assert n == 2 or threads.user_override() is not None
    sum(range(200_000))
    assert 1 <= monitor.threads(2) <= 2
