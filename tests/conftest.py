"""Test-wide settings."""

import os

import torch

# Under pytest-xdist every worker would use all cores: with -n 2 on two cores that
# oversubscribes the CPU several times over. One thread per worker is fastest here.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    # and the runs the tests start choose one thread too, whatever the load: two fresh runs
    # compared bit for bit must not pick different thread counts (engine/threads.py)
    os.environ.setdefault("MULTISPIKE_THREADS", "1")


def pytest_configure(config):
    """Build (or load) the C++ kernel before any test runs: on a fresh machine its one-time
    build announces itself on stderr, which a test asserting a command's single stderr line
    must not see."""
    from multispike.kernels import cpu

    cpu.library()
