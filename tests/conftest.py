"""Test-wide settings."""

import os
import sys
from pathlib import Path

import torch

# bench/common.py's measuring helpers (saved_bytes, PeakMemory) serve the tests too
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

# Under pytest-xdist every worker would use all cores: with -n 2 on two cores that
# oversubscribes the CPU several times over. One thread per worker is fastest here.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
