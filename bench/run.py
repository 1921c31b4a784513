"""Run every benchmark and print its tables (``--json``: one JSON document).

    python bench/run.py                 # full sizes (minutes on 2 CPU cores)
    python bench/run.py --quick         # small sizes, a smoke test
    python bench/run.py --json > bench.json
    python bench/run.py --only neuron_layer inference
    python bench/run.py --report bench.json   # the tables of a saved --json run

    python bench/run.py --device cuda   # the GPU suites (exits 2 when no GPU is visible)
    python bench/run.py --device cuda --json-out bench.json   # tables on stdout, and the
                                        # JSON document rewritten after every suite

Every figure is a ratio measured side by side in the same run (see bench/common.py). On the
CPU every competitor runs with the allocator setting ``multispike train`` uses
(:func:`multispike.engine.allocator.tune_cpu_allocator`: glibc keeps freed large blocks for
reuse instead of page-faulting them in again); ``--no-malloc-tuning`` measures with glibc's
default. The exception is the neuron-layer table's "default" row (bench/default_path.py): it
is measured in a fresh interpreter that never tunes the allocator, as a user's own script
runs, and its "as `multispike train` runs it" row in another fresh interpreter that does.
``THP_MEM_ALLOC_ENABLE`` (PyTorch's transparent-huge-page allocation) is left as the
environment sets it.

Suites: on the CPU ``neuron_layer``, ``train_step``, ``inference``; with ``--device cuda``
``gpu`` and ``gpu_compile`` (bench/gpu.py, bench/gpu_compile.py). ``--only`` picks any of
them on either device.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CPU_SUITES = ("neuron_layer", "train_step", "inference", "cpu_load")
CUDA_SUITES = ("gpu", "gpu_compile")
SUITES = CPU_SUITES + CUDA_SUITES


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="multispike benchmarks")
    ap.add_argument("--quick", action="store_true", help="small sizes, few rounds")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--only", nargs="+", choices=SUITES, default=None,
                    help=f"default: {' '.join(CPU_SUITES)} on the CPU, {' '.join(CUDA_SUITES)} "
                         "with --device cuda")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="leave glibc's allocator at its default (freed large tensors go back "
                         "to the system and are page-faulted in again)")
    ap.add_argument("--json-out", metavar="FILE",
                    help="also write the JSON document to FILE, rewritten after every suite "
                         "(a run stopped by a time limit keeps the suites that finished)")
    ap.add_argument("--report", metavar="JSON",
                    help="print the tables of a saved `--json` run instead of measuring")
    args = ap.parse_args(argv)
    if args.report:
        print(report_file(args.report))
        return
    import common

    common.cuda_required(args.device)  # exits 2 with one line when no GPU is visible
    cuda = args.device.startswith("cuda")
    suites = args.only or (CUDA_SUITES if cuda else CPU_SUITES)
    # `multispike train` tunes the allocator on the CPU only
    common.setup(malloc_tuning=not args.no_malloc_tuning and not cuda)
    import importlib
    import traceback

    results = {"machine": common.machine(), "suites": {}}
    for name in suites:
        mod = importlib.import_module(name)
        t0 = time.perf_counter()
        try:
            res = mod.run(quick=args.quick, device=args.device)
        except Exception as e:  # noqa: BLE001 - keep the other suites' figures
            traceback.print_exc()
            res = {"name": name, "error": f"{type(e).__name__}: {e}"}
        res["wall_s"] = time.perf_counter() - t0
        res["loadavg_1min_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        results["suites"][name] = res
        if args.json_out:
            write_atomic(args.json_out, common.dump(results))
        if not args.json:
            print(suite_report(name, res))
            print(flush=True)
    if args.json:
        print(common.dump(results))
    else:
        print(machine_line(results["machine"]))


def write_atomic(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` in one step (a reader never sees half a document)."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def suite_report(name: str, res: dict) -> str:
    """A suite's tables (or its error) and the line with its wall time."""
    import importlib

    text = (f"{name}: failed: {res['error']}" if "error" in res
            else importlib.import_module(name).report(res))
    return (f"{text}\n[{name}: {res['wall_s']:.0f} s, load average after "
            f"{res['loadavg_1min_after']}]")


def machine_line(m: dict) -> str:
    gpu = f"GPU {m['cuda']} (CUDA {m.get('cuda_runtime')}), " if m.get("cuda") else ""
    return (f"machine: {gpu}{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
            f"torch {m['torch']}, malloc tuning {m.get('malloc_tuning', 'off')}, "
            f"THP_MEM_ALLOC_ENABLE={m['THP_MEM_ALLOC_ENABLE'] or 'unset'}, "
            f"CPU kernel {m['cpu_kernel']}, spikingjelly {m['spikingjelly']}, "
            f"snntorch {m['snntorch']}, triton {m.get('triton')}, "
            f"load average at start {m['loadavg_1min']}")


def report_file(path: str) -> str:
    """The text tables of a JSON document written by ``run.py --json``."""
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
        out.append(suite_report(name, res) + "\n")
    out.append(machine_line(results["machine"]))
    return "\n".join(out)


if __name__ == "__main__":
    main()
