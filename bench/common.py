"""Shared helpers of the benchmarks: set-up, side-by-side timing, memory accounting, output.

Timing: every competitor of a table runs once per round, in the same order, for several
rounds after a warm-up; the figure is the median over rounds. Competitors are therefore
measured side by side under the same machine load, and ratios are taken within one run: a
ratio is the median over rounds of the per-round ratio (:func:`ratio`), so that a burst of
load from other processes, which slows one round for every competitor, cancels out.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


_MALLOC_TUNED = False


def setup(malloc_tuning: bool = True) -> None:
    """Make ``multispike`` importable from a checkout, use every core for PyTorch and (by
    default) the CPU allocator setting of ``multispike train``, for every competitor alike."""
    global _MALLOC_TUNED
    try:
        import multispike  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT / "src"))
    import torch

    from multispike.engine.allocator import tune_cpu_allocator

    torch.set_num_threads(os.cpu_count() or 1)
    if malloc_tuning:
        _MALLOC_TUNED = tune_cpu_allocator()


def machine() -> dict:
    """What the figures were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda_runtime": torch.version.cuda,
        "malloc_tuning": "on" if _MALLOC_TUNED else "off",
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", ""),
        # other processes compete for the cores: the 1-minute load average when this was taken
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    from multispike.kernels import cpu as cpu_kernel

    info["cpu_kernel"] = "loaded" if cpu_kernel.library() is not None else cpu_kernel.failure()
    for name in ("spikingjelly", "snntorch", "triton"):
        try:
            from importlib.metadata import version

            info[name] = version(name)
        except Exception:  # noqa: BLE001 - not installed
            info[name] = None
    return info


def side_by_side(
    fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1
) -> dict[str, dict[str, float]]:
    """Median (and min, max, every round's) milliseconds per call, interleaved by round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {
        k: {"ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "rounds": len(v),
            "all_ms": v}
        for k, v in times.items()
    }


def sync(device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    import torch

    if getattr(device, "type", str(device).split(":")[0]) == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fns: dict[str, Callable[[], object]], rounds: int, device, inner: int = 1, warmup: int = 1
) -> dict[str, dict[str, float]]:
    """:func:`side_by_side` with each round running ``fn`` ``inner`` times, then waiting for
    the device (CUDA launches are asynchronous); every time is per call (round time / inner)."""

    def wrap(f):
        def run():
            for _ in range(inner):
                f()
            sync(device)

        return run

    res = side_by_side({k: wrap(f) for k, f in fns.items()}, rounds=rounds, warmup=warmup)
    for r in res.values():
        r["all_ms"] = [t / inner for t in r["all_ms"]]
        for k in ("ms", "min_ms", "max_ms"):
            r[k] /= inner
        r["inner"] = inner
    return res


def bandwidth(traffic_bytes: float, kernel_ms: float, copy_ms: float) -> dict[str, float]:
    """Achieved bytes/s of a kernel that moves ``traffic_bytes`` (reads plus writes) in
    ``kernel_ms``, against the device's copy bound: ``copy_()`` of the same bytes (half read,
    half written) in ``copy_ms``. ``fraction`` = achieved / bound = ``copy_ms / kernel_ms``."""
    achieved = traffic_bytes / (kernel_ms * 1e-3)
    bound = traffic_bytes / (copy_ms * 1e-3)
    return {"traffic_MB": traffic_bytes / 1e6, "achieved_GBps": achieved / 1e9,
            "bound_GBps": bound / 1e9, "fraction": achieved / bound}


DEADLINE_ENV = "BENCH_DEADLINE"


def out_of_time(margin: float = 0.0) -> bool:
    """True once the Unix time in ``$BENCH_DEADLINE`` has passed, or will within ``margin``
    seconds (for a part that takes about that long): a time-limited run (bench/gpu_check.sh)
    skips the parts it would not finish and still prints its figures."""
    deadline = os.environ.get(DEADLINE_ENV)
    try:
        return deadline is not None and time.time() + margin > float(deadline)
    except ValueError:
        return False


def time_left() -> float | None:
    """Seconds until ``$BENCH_DEADLINE`` (negative once past), or None without one."""
    deadline = os.environ.get(DEADLINE_ENV)
    try:
        return None if deadline is None else float(deadline) - time.time()
    except ValueError:
        return None


def cuda_required(device: str) -> None:
    """Exit with status 2 and one line when ``device`` is CUDA and no CUDA GPU is visible."""
    if not str(device).startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        print(f"no CUDA GPU visible; --device {device} needs one (torch {torch.__version__}, "
              f"CUDA build {torch.version.cuda or 'none'}); run the CPU benchmarks with "
              "--device cpu", file=sys.stderr)
        raise SystemExit(2)


def ratio(res: dict[str, dict], num: str, den: str, scale: float = 1.0) -> float:
    """Median over rounds of ``num / (scale * den)``, both timed in the same round.

    ``res`` is what :func:`side_by_side` returned. Example: ``ratio(res, "sj", "fused")`` is
    how many times faster ``fused`` ran than ``sj``; ``ratio(res, "snn", "ann", scale=4)`` is
    the SNN step against four ANN steps.
    """
    pairs = zip(res[num]["all_ms"], res[den]["all_ms"], strict=True)
    return statistics.median(a / (scale * b) for a, b in pairs)


def saved_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the tensors autograd saves for the backward while ``fn()`` runs."""
    import torch

    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


class PeakMemory:
    """Peak bytes of tensor storages alive at once while the ``with`` block runs.

    A ``TorchDispatchMode`` sees every tensor an op returns (forward, backward and optimizer
    ops alike); each new storage counts from its creation until it is freed. Storages that
    existed before the block (parameters, optimizer state, inputs) are not counted, and
    neither is scratch memory inside a kernel (oneDNN workspaces). CPU and CUDA alike.
    """

    def __init__(self) -> None:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        tracker = self
        self.live = 0
        self.peak = 0
        self._seen: dict[int, int] = {}

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_leaves(out):
                    if isinstance(t, torch.Tensor):
                        tracker._track(t)
                return out

        self._mode = _Mode()

    def _track(self, t) -> None:
        st = t.untyped_storage()
        key, n = st.data_ptr(), st.nbytes()
        if n == 0 or key in self._seen:
            return
        self._seen[key] = n
        self.live += n
        self.peak = max(self.peak, self.live)
        weakref.finalize(st, self._free, key, n)

    def _free(self, key: int, n: int) -> None:
        if self._seen.pop(key, None) is not None:
            self.live -= n

    def __enter__(self) -> PeakMemory:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


def suite_main(
    doc: str,
    run: Callable[..., dict],
    report: Callable[[dict], str],
    argv: list[str] | None = None,
    quick_help: str = "small sizes, few rounds",
    extra: dict[str, dict] | None = None,
    device: str = "cpu",
) -> None:
    """The command line of one suite script: ``--quick``, ``--json``, ``--device`` (default
    ``device``) and the suite's own options (``extra``: flag → ``add_argument`` keywords,
    passed on to ``run``). A CUDA device without a visible GPU exits 2 (:func:`cuda_required`)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--json", action="store_true", help="print JSON instead of tables")
    ap.add_argument("--device", default=device)
    dests = [ap.add_argument(flag, **options).dest for flag, options in (extra or {}).items()]
    args = ap.parse_args(argv)
    cuda_required(args.device)
    # the allocator setting of `multispike train`, which sets it on the CPU only
    setup(malloc_tuning=args.device == "cpu")
    res = run(quick=args.quick, device=args.device, **{d: getattr(args, d) for d in dests})
    res["machine"] = machine()
    print(dump(res) if args.json else report(res))


def fmt_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A plain-text table; columns are (key, header, format)."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        line = []
        for key, _, f in columns:
            v = r.get(key)
            line.append("-" if v is None else (f.format(v) if f else str(v)))
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    out = []
    for j, c in enumerate(cells):
        out.append("  ".join(s.rjust(w) if j and i else s.ljust(w)
                             for i, (s, w) in enumerate(zip(c, widths, strict=True))))
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def dump(obj: object) -> str:
    return json.dumps(obj, indent=2, default=str)


# -- shared by the neuron-layer benchmarks ------------------------------------------------------
def peer_neurons(device):
    """SpikingJelly's multi-step ``LIFNode`` (``sj``) and snnTorch's ``Leaky`` looped over T
    (``snntorch``), each the same LIF as multispike's rows (τ = 2, i.e. decay 0.5, threshold
    1, hard reset to 0), with each library's default surrogate (SpikingJelly: sigmoid, as
    multispike's rows; snnTorch: arctangent), as ``x -> spikes`` callables. Competitors that
    do not import are left out with a note."""
    import torch

    comps, notes = {}, {}
    try:
        from spikingjelly.activation_based import neuron as sj_neuron

        sj = sj_neuron.LIFNode(tau=2.0, v_threshold=1.0, v_reset=0.0, step_mode="m").to(device)

        def run_sj(x, sj=sj):
            sj.reset()
            return sj(x)

        comps["sj"] = run_sj
    except Exception as e:  # noqa: BLE001 - optional extra
        notes["sj"] = f"SpikingJelly unavailable: {type(e).__name__}: {e}"
    try:
        import snntorch as snn

        leaky = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero").to(device)

        def run_snntorch(x, leaky=leaky):
            mem = leaky.init_leaky()
            outs = []
            for t in range(x.shape[0]):
                spk, mem = leaky(x[t], mem)
                outs.append(spk)
            return torch.stack(outs)

        comps["snntorch"] = run_snntorch
    except Exception as e:  # noqa: BLE001 - optional extra
        notes["snntorch"] = f"snnTorch unavailable: {type(e).__name__}: {e}"
    return comps, notes


def train_step(fn, x, g):
    """``x.grad`` cleared, then ``fn(x)`` forward and backward with ``g``: one training-style
    call."""
    def step():
        x.grad = None
        fn(x).backward(g)

    return step
