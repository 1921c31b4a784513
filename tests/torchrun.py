"""Launching ``python -m multispike`` under ``torchrun`` with two CPU (gloo) processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def free_port() -> int:
    """A free TCP port on 127.0.0.1: a fixed one may be held by another run."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*argv: str, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node nproc -m multispike ARGV``, one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "multispike",
         *argv], capture_output=True, text=True, env=env, timeout=timeout)
