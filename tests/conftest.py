"""Test-wide settings."""

import os

import torch

# Under pytest-xdist every worker would use all cores: with -n 2 on two cores that
# oversubscribes the CPU several times over. One thread per worker is fastest here.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
