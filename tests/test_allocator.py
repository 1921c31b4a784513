"""``tune_cpu_allocator``: large freed tensors are reused instead of page-faulted in again.

Each case runs in a fresh interpreter: the setting is process-wide and must not leak into the
other tests. Page faults and the resident size are counted by the kernel (``getrusage``);
nothing is timed.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

GLIBC = platform.libc_ver()[0] == "glibc"

# a training-like step on 32 MiB activations (above the largest mmap threshold glibc picks by
# itself): clone, batch norm, ReLU, pooling, backward; the same allocations every step
SCRIPT = r"""
import resource, sys
import torch
import torch.nn.functional as F
from multispike.engine.allocator import tune_cpu_allocator

tuned = False
if sys.argv[1] == "on":
    tuned = tune_cpu_allocator()
    assert tune_cpu_allocator() == tuned  # idempotent
torch.set_num_threads(1)
usage = lambda: resource.getrusage(resource.RUSAGE_SELF)
x0 = torch.randn(128, 64, 32, 32)
w = torch.ones(64, requires_grad=True)

def step():
    x = x0.clone().requires_grad_()
    y = F.relu(F.batch_norm(x, None, None, w, None, training=True))
    F.avg_pool2d(y, 2).mean().backward()

for _ in range(8):  # warm-up: the heap reaches its steady size
    step()
f0 = usage().ru_minflt
for _ in range(4):
    step()
print(tuned, usage().ru_minflt - f0, usage().ru_maxrss)
"""


def run(mode: str, **env) -> tuple[str, int, int]:
    e = dict(os.environ, **env)
    e.pop("THP_MEM_ALLOC_ENABLE", None)
    p = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                       env=e, timeout=300)
    assert p.returncode == 0, p.stderr
    tuned, faults, maxrss = p.stdout.split()
    return tuned, int(faults), int(maxrss)


@pytest.mark.skipif(not GLIBC, reason="the tuning is glibc's mallopt")
def test_steady_training_steps_stop_page_faulting():
    tuned, on, rss_on = run("on")
    assert tuned == "True"
    _, off, rss_off = run("off")
    # glibc's default maps every 32 MiB activation afresh: ~50 000 faults per step here
    # (4 KiB pages; fewer with system-wide huge pages). Tuned, the heap blocks are reused;
    # now and then the heap still grows by one block (8192 faults) while it settles
    assert off > 8 * max(on, 8192), (on, off)
    # the price: freed blocks stay with the process (fragmentation between same-size blocks)
    assert rss_on < 2 * rss_off, (rss_on, rss_off)


def test_environment_switches_it_off():
    tuned, _, _ = run("on", MULTISPIKE_NO_MALLOC_TUNING="1")
    assert tuned == "False"
