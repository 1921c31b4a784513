"""The GPU training steps of :mod:`gpu` with the SNN and its ANN twin ``torch.compile``d.

vgg9 MT at T = 2, resnet19 ternary at T = 2, resnet20m ternary at T = 4; batch 128, bf16
autocast, SGD; ``torch.compile(model, dynamic=False)`` (inductor; the fused neuron kernels
stay custom ops in the graph), the SNN's forward inside ``compact_spikes()``, as ``multispike
train --compile`` runs it. Ratios: the compiled SNN step against T × the compiled ANN step
at batch B, and peak memory against the compiled ANN at batch B × T.
Compile time is excluded from the step times and reported as each step's first call.

A suite of its own so that a time-limited GPU run can bound the compiling separately
(``bench/gpu_check.sh``).

Run: ``python bench/gpu_compile.py [--quick] [--json] [--device cuda]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import gpu  # noqa: E402


def run(quick: bool = False, device: str = "cuda") -> dict:
    import torch

    return {"name": "gpu_compile", "quick": quick, "device": device,
            "train": gpu.train_rows(torch.device(device), quick, compiled=True)}


def report(res: dict) -> str:
    return "\n".join(gpu.train_report(res["train"], res["device"]))


def main(argv=None) -> None:
    common.suite_main(__doc__, run, report, argv, device="cuda")


if __name__ == "__main__":
    main()
