"""What the CPUs offer right now: the cores this process may use, and how busy others keep them.

The measuring half of the thread policy of :mod:`multispike.engine.threads` (which says why a
run fits its thread count to the free cores), kept below every layer so that the CPU neuron
kernel (:mod:`multispike.kernels.cpu`) can follow load that arrives during a run
(:data:`kernel_monitor`) without importing the engine.

- :func:`available_cores`: this process's CPU affinity, capped by a cgroup CPU quota;
- :func:`sample_busy` / :func:`measure_busy`: cores' worth of CPU time other processes use,
  from ``/proc/stat`` (the 1-minute load average where it is missing);
- :func:`choose_threads`: the free cores, shared among a node's processes, at least one;
- :func:`user_override`: which override fixed the count, if any (``MULTISPIKE_THREADS``,
  ``OMP_NUM_THREADS`` or a ``torch.set_num_threads`` call);
- :class:`LoadMonitor`: the free cores now, re-measured between kernel calls without sleeping.

Example::

    >>> choose_threads(cores=4, busy=1.1)     # a core counts as free up to a quarter busy
    3
    >>> choose_threads(cores=4, busy=1.3)
    2
    >>> choose_threads(cores=4, busy=0.2, processes=2)
    2
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time

import torch

#: environment variables that fix the thread count (the user's choice wins)
ENV_VARS = ("MULTISPIKE_THREADS", "OMP_NUM_THREADS")
#: a core counts as free when other processes use at most this fraction of it
SLACK = 0.25
#: seconds of ``/proc/stat`` sampled at the start of a run
SAMPLE_S = 0.15


# -- the policy ----------------------------------------------------------------------------------
def choose_threads(cores: int, busy: float, processes: int = 1) -> int:
    """Threads for one process: the free cores shared by ``processes``, at least 1.

    ``cores``: cores this process may run on; ``busy``: cores' worth of CPU time other
    processes are using (0 = idle, 1.0 = one core fully busy; a NaN counts as 0);
    ``processes``: processes of this job sharing the machine (torchrun's local world size).
    A core counts as free when others use at most :data:`SLACK` of it.
    """
    cores = max(1, int(cores))
    busy = 0.0 if not math.isfinite(busy) else min(max(busy, 0.0), float(cores))
    free = math.floor(cores - busy + SLACK)
    return max(1, min(cores, free // max(1, int(processes))))


# -- what the machine offers ---------------------------------------------------------------------
def _affinity() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cgroup_quota() -> float | None:
    """Cores' worth of CPU time a cgroup CPU quota grants (``None``: no quota)."""
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]  # cgroup v2
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())  # cgroup v1
        period = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota."""
    cores = len(_affinity())
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota - 0.01)))
    return max(1, cores)


def _physical_cores(cpus: list[int]) -> int | None:
    """Cores (not hardware threads) among ``cpus``, from sysfs; ``None`` where unknown."""
    seen = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            seen.add((open(base + "physical_package_id").read().strip(),
                      open(base + "core_id").read().strip()))
        except OSError:
            return None
    return len(seen) or None


def _cpu_times(cpus: set[int]) -> tuple[float, float] | None:
    """``(busy, total)`` jiffies summed over ``cpus`` from ``/proc/stat`` (``None`` if
    unreadable). Busy is everything but idle and iowait (steal included: that time is not
    ours either)."""
    try:
        lines = open("/proc/stat").read().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    found = False
    for line in lines:
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        try:
            if int(name[3:]) not in cpus:
                continue
            values = [float(v) for v in fields[:8]]
        except ValueError:
            continue
        found = True
        idle = values[3] + (values[4] if len(values) > 4 else 0.0)
        total += sum(values)
        busy += sum(values) - idle
    return (busy, total) if found else None


def sample_busy(interval: float = SAMPLE_S) -> float | None:
    """Cores' worth of CPU time other processes used on this process's cores during
    ``interval`` seconds (this process's own CPU time taken out); ``None`` without
    ``/proc/stat``."""
    cpus = set(_affinity())
    before, own0, t0 = _cpu_times(cpus), time.process_time(), time.monotonic()
    if before is None:
        return None
    time.sleep(interval)
    after, own1, t1 = _cpu_times(cpus), time.process_time(), time.monotonic()
    if after is None or after[1] <= before[1]:
        return None
    fraction = (after[0] - before[0]) / (after[1] - before[1])  # of all the sampled cores
    own = (own1 - own0) / max(t1 - t0, 1e-6)  # cores' worth this process used meanwhile
    return max(0.0, fraction * len(cpus) - own)


def measure_busy(interval: float = SAMPLE_S) -> float:
    """:func:`sample_busy`, else the 1-minute load average, else 0 (nothing known)."""
    busy = sample_busy(interval)
    if busy is not None:
        return busy
    try:
        return max(0.0, os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


# -- overrides -----------------------------------------------------------------------------------
def env_threads() -> int | None:
    """``MULTISPIKE_THREADS`` as a positive count (``None`` if unset or not a number)."""
    try:
        n = int(os.environ.get("MULTISPIKE_THREADS", "").strip())
    except ValueError:
        return None
    return n if n > 0 else None


@functools.lru_cache(maxsize=1)
def torch_defaults() -> frozenset[int]:
    """The counts PyTorch may start with here: one per core or per hardware thread."""
    cpus = _affinity()
    counts = {len(cpus), os.cpu_count() or 1}
    physical = _physical_cores(cpus)
    if physical:
        counts.add(physical)
    return frozenset(counts)


def user_override() -> str | None:
    """What fixed the thread count, if the user did: an environment variable's name or
    ``"torch.set_num_threads"``; ``None`` when the count is PyTorch's default."""
    for name in ENV_VARS:
        if os.environ.get(name, "").strip():
            return name
    if torch.get_num_threads() not in torch_defaults():
        return "torch.set_num_threads"
    return None


# -- the neuron kernel's live view -----------------------------------------------------------------
class LoadMonitor:
    """The free cores now, for the CPU neuron kernel: re-measured at most every
    ``min_interval`` seconds from the ``/proc/stat`` difference since the last look (no sleep:
    the window is the time between two kernel calls), this process's own CPU time taken out.

    The kernel's results do not depend on its thread count, so it may follow the load within a
    run; PyTorch's own operators keep the count the run started with.
    """

    def __init__(self, min_interval: float = 0.5):
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._last: tuple[tuple[float, float], float, float] | None = None
        self._free: int | None = None
        self._override = False
        self._checked = -math.inf

    def threads(self, limit: int) -> int:
        """``limit`` (PyTorch's count) lowered to the free cores, unless the user fixed it."""
        now = time.monotonic()
        if now - self._checked >= self.min_interval and self._lock.acquire(blocking=False):
            try:
                self._refresh(now)
            finally:
                self._lock.release()
        if self._override or self._free is None:
            return limit
        return max(1, min(limit, self._free))

    def _refresh(self, now: float) -> None:
        self._checked = now
        self._override = user_override() is not None
        cpus = _affinity()
        times = _cpu_times(set(cpus))
        if times is None:
            self._free = None
            return
        snap = (times, time.process_time(), now)
        if self._last is not None:
            (b0, t0), own0, w0 = self._last
            if times[1] > t0:
                fraction = (times[0] - b0) / (times[1] - t0)
                own = (snap[1] - own0) / max(now - w0, 1e-6)
                busy = max(0.0, fraction * len(cpus) - own)
                self._free = choose_threads(available_cores(), busy)
        self._last = snap


#: the monitor the CPU neuron kernel asks (multispike.kernels.cpu)
kernel_monitor = LoadMonitor()
