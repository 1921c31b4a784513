"""How many CPU threads a run uses: the cores other processes leave free, at least one.

Threads. PyTorch starts one OpenMP thread per core and keeps that count whatever else runs on
the machine. When another process keeps a core busy, one of those threads shares its core, and
the others spin at the end of every parallel operator waiting for it: on two cores digits
training dropped to 150-350 images/s, 10-30x below its speed with one thread. So ``multispike
train`` and ``demo`` (and ``eval`` where its command applies the policy) choose the count at the
start of each CPU run: the cores this process may use (its CPU affinity, capped by a cgroup CPU
quota) minus the cores' worth of CPU time other processes used in a short sample of
``/proc/stat`` (0.15 s; the 1-minute load average where ``/proc/stat`` is missing), at least 1;
under ``torchrun`` the free cores are shared among the node's processes
(:func:`choose_threads`). A core counts as free when others use at most a quarter of it: one
thread too few costs at most the parallel speed-up, one too many cost 5-30x here. The count is
fixed for the run: a run resumed with ``--resume`` uses the count recorded in its checkpoint
(PyTorch's CPU operators give results that depend in the last bits on the thread count, and a
resumed run must end with the weights of one never stopped); two fresh runs with the same seed
can therefore differ in the last bits when the machine's load differed: set
``MULTISPIKE_THREADS`` for bit-reproducible runs. The neuron kernel, whose results do not depend
on its thread count, also follows load that arrives during a run (:class:`LoadMonitor`).
Overrides win: ``MULTISPIKE_THREADS=N`` (applied with ``torch.set_num_threads``),
``OMP_NUM_THREADS`` (applied by PyTorch itself), or, from Python, a ``torch.set_num_threads``
call to a count other than PyTorch's default (one equal to the default cannot be told apart from
it). The count in force before a run is restored after it.

Wait policy: an idle thread of libgomp (PyTorch's OpenMP runtime on Linux, which the neuron
kernel shares) spins before it sleeps. ``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT`` are read once,
when the runtime loads with ``import torch``; no call changes them afterwards, so the thread
count is the only lever a run has. Spinning is what makes too many threads so slow: with 2
threads on 2 loaded cores, digits training ran at 300-500 images/s with the default policy and
3,000-5,000 with ``OMP_WAIT_POLICY=PASSIVE``. But it is also what makes enough threads fast: on
a nearly idle machine, 2 threads ran at about 12,000 images/s spinning and 5,600 passive (runs
minutes apart on a shared machine; every small operator pays for waking the sleeping thread). So
multispike leaves the policy alone and fits the count instead; the count chosen at the start
does not follow load that arrives during a long run: on a machine shared with jobs that come and
go, export ``OMP_WAIT_POLICY=PASSIVE`` (before starting Python) or fix ``MULTISPIKE_THREADS``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from multispike.cpuload import (  # noqa: F401 - the measuring half, re-exported here
    ENV_VARS,
    SAMPLE_S,
    SLACK,
    LoadMonitor,
    available_cores,
    choose_threads,
    env_threads,
    kernel_monitor,
    measure_busy,
    sample_busy,
    torch_defaults,
    user_override,
)


# -- applying it ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThreadChoice:
    """The thread count of a run and where it came from."""

    threads: int
    source: str  # "policy", "checkpoint", or the override's name
    cores: int
    busy: float | None = None  # cores' worth used by others (None: not measured)


def choose_for_run(processes: int = 1, recorded: int | None = None,
                   interval: float = SAMPLE_S) -> ThreadChoice:
    """The count for a CPU run, without applying it: an override, else the ``recorded`` count
    of a resumed run, else the policy on a fresh load sample."""
    cores = available_cores()
    override = user_override()
    if override == "MULTISPIKE_THREADS" and env_threads() is not None:
        return ThreadChoice(env_threads(), override, cores)
    if override is not None:
        return ThreadChoice(torch.get_num_threads(), override, cores)
    if recorded is not None and int(recorded) > 0:
        return ThreadChoice(int(recorded), "checkpoint", cores)
    busy = measure_busy(interval)
    return ThreadChoice(choose_threads(cores, busy, processes), "policy", cores, busy)


def apply(choice: ThreadChoice) -> ThreadChoice:
    """Set PyTorch's intra-op thread count (the neuron kernel follows it) to the choice."""
    if choice.threads != torch.get_num_threads():
        torch.set_num_threads(choice.threads)
    return choice


def configure(processes: int = 1, recorded: int | None = None,
              interval: float = SAMPLE_S) -> ThreadChoice:
    """:func:`choose_for_run` then :func:`apply`: what a CPU run calls at its start."""
    return apply(choose_for_run(processes, recorded, interval))


@contextlib.contextmanager
def restored() -> Iterator[None]:
    """Put PyTorch's thread count back as it was when the block ends (a run's choice does not
    outlive the run in a library caller's process)."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def local_processes() -> int:
    """Processes of this job on this machine: torchrun's ``LOCAL_WORLD_SIZE`` (else 1)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1
