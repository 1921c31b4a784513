"""Run every benchmark and print its tables (``--json``: one JSON document).

    python bench/run.py                 # full sizes (minutes on 2 CPU cores)
    python bench/run.py --quick         # small sizes, a smoke test
    python bench/run.py --json > bench.json
    python bench/run.py --only neuron_layer inference

Every figure is a ratio measured side by side in the same run (see bench/common.py). Before
PyTorch is imported this sets ``THP_MEM_ALLOC_ENABLE=1`` (PyTorch's CPU allocator then backs
large tensors with transparent huge pages, which removes most page-fault cost of fresh
allocations for every competitor alike) unless the variable is already set; pass
``--no-thp`` to measure with the allocator's default.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SUITES = ("neuron_layer", "train_step", "inference")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="multispike benchmarks")
    ap.add_argument("--quick", action="store_true", help="small sizes, few rounds")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--only", nargs="+", choices=SUITES, default=list(SUITES))
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--no-thp", action="store_true",
                    help="leave PyTorch's CPU allocator at its default (no huge pages)")
    args = ap.parse_args(argv)
    if not args.no_thp:
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

    import common

    common.setup()
    import importlib

    results = {"machine": common.machine(), "suites": {}}
    for name in args.only:
        mod = importlib.import_module(name)
        t0 = time.perf_counter()
        res = mod.run(quick=args.quick, device=args.device)
        res["wall_s"] = time.perf_counter() - t0
        res["loadavg_1min_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        results["suites"][name] = res
        if not args.json:
            print(mod.report(res))
            print(f"[{name}: {res['wall_s']:.0f} s, load average after "
                  f"{res['loadavg_1min_after']}]\n", flush=True)
    if args.json:
        print(common.dump(results))
    else:
        m = results["machine"]
        print(f"machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
              f"torch {m['torch']}, THP_MEM_ALLOC_ENABLE={m['THP_MEM_ALLOC_ENABLE'] or 'unset'}, "
              f"CPU kernel {m['cpu_kernel']}, spikingjelly {m['spikingjelly']}, "
              f"snntorch {m['snntorch']}, load average at start {m['loadavg_1min']}")


if __name__ == "__main__":
    main()
