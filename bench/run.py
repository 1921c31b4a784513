"""Run every benchmark and print its tables (``--json``: one JSON document).

    python bench/run.py                 # full sizes (minutes on 2 CPU cores)
    python bench/run.py --quick         # small sizes, a smoke test
    python bench/run.py --json > bench.json
    python bench/run.py --only neuron_layer inference
    python bench/run.py --report bench.json   # the tables of a saved --json run

Every figure is a ratio measured side by side in the same run (see bench/common.py). Every
competitor runs with the CPU allocator setting ``multispike train`` uses
(:func:`multispike.kernels.allocator.tune_cpu_allocator`: glibc keeps freed large blocks for
reuse instead of page-faulting them in again); ``--no-malloc-tuning`` measures with glibc's
default. ``THP_MEM_ALLOC_ENABLE`` (PyTorch's transparent-huge-page allocation) is left as
the environment sets it.
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
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="leave glibc's allocator at its default (freed large tensors go back "
                         "to the system and are page-faulted in again)")
    ap.add_argument("--report", metavar="JSON",
                    help="print the tables of a saved `--json` run instead of measuring")
    args = ap.parse_args(argv)
    if args.report:
        print(report_file(args.report))
        return
    import common

    common.setup(malloc_tuning=not args.no_malloc_tuning)
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
        print(machine_line(results["machine"]))


def machine_line(m: dict) -> str:
    return (f"machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
            f"torch {m['torch']}, malloc tuning {m.get('malloc_tuning', 'off')}, "
            f"THP_MEM_ALLOC_ENABLE={m['THP_MEM_ALLOC_ENABLE'] or 'unset'}, "
            f"CPU kernel {m['cpu_kernel']}, spikingjelly {m['spikingjelly']}, "
            f"snntorch {m['snntorch']}, load average at start {m['loadavg_1min']}")


def report_file(path: str) -> str:
    """The text tables of a JSON document written by ``run.py --json``."""
    import importlib
    import json

    try:
        with open(path) as f:
            results = json.load(f)
        suites = results["suites"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"run.py: --report {path}: not a `run.py --json` output ({e})", file=sys.stderr)
        raise SystemExit(2) from None
    out = []
    for name, res in suites.items():
        out.append(importlib.import_module(name).report(res))
        out.append(f"[{name}: {res['wall_s']:.0f} s, load average after "
                   f"{res['loadavg_1min_after']}]\n")
    out.append(machine_line(results["machine"]))
    return "\n".join(out)


if __name__ == "__main__":
    main()
