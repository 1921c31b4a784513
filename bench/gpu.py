"""GPU benchmarks (``python bench/run.py --device cuda``): what the fused kernels cost on CUDA.

1. **Per-call overhead**: a tiny input ``[4, 2, 16, 8, 8]``, fused LIF forward + backward,
   time per call over 200 calls between two ``torch.cuda.synchronize()`` (after warm-up;
   median over rounds), for the default layer (``check_input=True``) and the layer as the
   models build it (``check_input=False``), beside the least one autograd op costs
   (``x * 0.5`` forward + backward).
2. **Bandwidth fraction**: at ``[4, 32, 128, 32, 32]`` and ``[8, 128, 128, 32, 32]``, the bytes
   the fused forward + backward must read and write (see :func:`traffic_bytes`) per second,
   against ``copy_()`` of the same bytes (half read, half written) on the same device: the
   fraction of the copy bound (:func:`common.bandwidth`; the fraction is the median of
   per-round ``copy_ms / fused_ms``).
3. **Against SpikingJelly 2.0**, one process per CUDA implementation it has
   (:mod:`default_path`), at ``[4, 32, 128, 32, 32]``, float32, sigmoid surrogate.
4. **Training steps**, batch 128, bf16 autocast, SGD (momentum 0.9): vgg9 MT at T = 2,
   resnet19 ternary at T = 2, resnet20m ternary at T = 4, against T × the ANN twin's step
   (``firing="ann"``: same architecture, ReLU) at batch B, and peak memory
   (``torch.cuda.max_memory_allocated`` during one step, less what was allocated before it:
   parameters and optimizer state) against the ANN twin at batch B × T. Eager here, with the
   forward inside ``compact_spikes()`` as ``multispike train`` runs it (``snn``) and without
   (``snn_plain``); :mod:`gpu_compile` runs the ``snn`` step and the ANN twin's
   ``torch.compile``d, as ``multispike train --compile`` does.
5. **Host time per call** (:func:`default_path.host_time`): on this machine's CPU, the four
   layers of :data:`default_path.HOST_LAYERS` with their defaults at ``[4, 2, 16, 8, 8]``,
   forward + backward, against one autograd op (``x * 0.5``): the host's share of the
   per-call overhead goal.
6. **``multispike train`` end to end** (:func:`train_e2e`): images/s of the second of two
   epochs (the first warms up: kernels compile, the loader starts) of ``multispike train
   --recipe mt-vgg9-cifar10`` (vgg9, MT, PLIF, T = 2) on CIFAR-10 files written in the
   official format by :func:`multispike.data.testing.write_cifar` (5 000 training images),
   batch 128, against the same command for the ANN twin (``--firing ann --timesteps 1``),
   the same loader, files and flags.

They run in the order 1, 5, 2, 3, 4, 6; past ``$BENCH_DEADLINE`` (a time-limited run) the
parts not yet started are skipped and reported as such.

Everything runs on the CPU too (``--device cpu``, memory then from :class:`common.PeakMemory`),
which is how it is smoke-tested; the figures are meant for CUDA.

Run: ``python bench/gpu.py [--quick] [--json] [--device cuda]``;
``python bench/gpu.py --list-cuda-tests [PATHS]`` prints the node ids of the CUDA tests
(:func:`is_cuda_test`), which ``bench/gpu_check.sh`` runs first.
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import io
import math
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import default_path  # noqa: E402
import neuron_layer  # noqa: E402
import train_step  # noqa: E402

OVERHEAD_SHAPE = (4, 2, 16, 8, 8)
BANDWIDTH_SHAPES = ((4, 32, 128, 32, 32), (8, 128, 128, 32, 32))
QUICK_BANDWIDTH_SHAPES = ((2, 4, 32, 16, 16), (4, 8, 32, 16, 16))
#: (model, firing, T) of the training-step table
TRAIN_MODELS = (("vgg9", "mt", 2), ("resnet19", "ternary", 2), ("resnet20m", "ternary", 4))
BATCH = 128
#: the end-to-end row: the recipe, and (training images per CIFAR batch file, batch size)
E2E_RECIPE = "mt-vgg9-cifar10"
E2E_SIZES = (1000, 128)  # 5 files: 5 000 training images (39 steps), 1 000 test images
QUICK_E2E_SIZES = (4, 10)
#: seconds a compiled training row needs before $BENCH_DEADLINE to be started
COMPILE_MARGIN_S = 60.0

GOALS = {
    "overhead_ms": 0.1,        # per call, tiny input
    "x_sj_fastest": default_path.GOALS["cuda"],  # at [4, 32, 128, 32, 32]
    "copy_fraction": 0.60,     # at [8, 128, 128, 32, 32]
    "vgg9_vs_Tann": 1.05,      # vgg9 MT T = 2, batch 128, bf16
    "mem_vs_ann_bt": 1.15,     # peak memory against the ANN twin at B x T
    "train_vs_ann": 0.9,       # `multispike train` images/s, vgg9 MT T = 2, against the ANN
}


def traffic_bytes(sizes: list[int]) -> int:
    """Bytes read plus written by the fused forward + backward, from
    :func:`neuron_layer.kernel_bytes` (each entry is one tensor read and one written)."""
    return 2 * sum(sizes)


def _log(msg: str) -> None:
    print(f"[gpu: {msg}]", file=sys.stderr, flush=True)


# -- 1. per-call overhead -----------------------------------------------------------------------
def overhead(dev, quick: bool = False) -> list[dict]:
    import torch

    x = torch.randn(*OVERHEAD_SHAPE, device=dev, requires_grad=True)
    g = torch.randn(*OVERHEAD_SHAPE, device=dev)
    fns = {c: common.train_step(b().to(dev), x, g)
           for c, b in default_path.BUILDERS.items()}
    fns["torch_op"] = common.train_step(lambda t: t * 0.5, x, g)
    inner = 20 if quick else 200
    res = common.timed(fns, 3 if quick else 15, dev, inner=inner, warmup=2)
    labels = {**default_path.LABELS["cuda"], "torch_op": "one autograd op (x * 0.5), floor"}
    return [{"config": k, "path": labels[k], "shape": list(OVERHEAD_SHAPE), "inner": inner,
             "ms": r["ms"], "min_ms": r["min_ms"], "max_ms": r["max_ms"]}
            for k, r in res.items()]


# -- 2. bandwidth fraction ----------------------------------------------------------------------
def bandwidth_rows(dev, quick: bool = False) -> list[dict]:
    import torch

    rows = []
    for shape in QUICK_BANDWIDTH_SHAPES if quick else BANDWIDTH_SHAPES:
        _log(f"bandwidth at {list(shape)}")
        x = torch.randn(*shape, device=dev, requires_grad=True)
        g = torch.randn(*shape, device=dev)
        nodes = {c: b().to(dev) for c, b in default_path.BUILDERS.items()}
        numel = x.numel()
        saved = common.saved_bytes(lambda x=x, n=nodes["train"]: n(x)) / numel
        sizes = neuron_layer.kernel_bytes(numel, x.element_size(), round(saved))
        traffic = traffic_bytes(sizes)
        copy = neuron_layer._bound_fns(sizes, dev)[1]
        fns = {c: common.train_step(n, x, g) for c, n in nodes.items()}
        fns["copy"] = copy
        inner = 1 if numel >= 1 << 26 or dev.type != "cuda" else 10
        res = common.timed(fns, 3 if quick else 15, dev, inner=inner)
        for c in nodes:
            bw = common.bandwidth(traffic, res[c]["ms"], res["copy"]["ms"])
            rows.append({"shape": list(shape), "config": c,
                         "path": default_path.LABELS["cuda"][c], "saved_B": saved,
                         "fused_ms": res[c]["ms"], "copy_ms": res["copy"]["ms"], **bw,
                         # per-round copy/fused, as every ratio here (common.ratio)
                         "fraction": common.ratio(res, "copy", c)})
        del x, g, nodes, fns, copy
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# -- 4. training steps --------------------------------------------------------------------------
def step_memory(step, dev) -> dict:
    """Peak bytes allocated during one step, above what exists before it (parameters,
    optimizer state; gradients are freed first); on CUDA also the raw peak."""
    import torch

    step()
    common.sync(dev)
    step.opt.zero_grad(set_to_none=True)
    if dev.type != "cuda":
        with common.PeakMemory() as mem:
            step()
        return {"peak_MB": mem.peak / 2**20, "max_allocated_MB": None}
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    step()
    torch.cuda.synchronize(dev)
    peak = torch.cuda.max_memory_allocated(dev)
    return {"peak_MB": (peak - base) / 2**20, "max_allocated_MB": peak / 2**20}


def train_rows(dev, quick: bool = False, compiled: bool = False,
               models=TRAIN_MODELS) -> dict:
    import torch

    create, why = train_step.load_models()
    if create is None:
        return {"skipped": why, "rows": []}
    B = 8 if quick else BATCH
    rounds = 2 if quick else 7
    amp = torch.bfloat16
    rows, errors = [], {}
    for name, firing, T in models:
        # a compiled model takes a minute or so to compile on a cold cache: start none that
        # would be cut off by the time limit
        if common.out_of_time(margin=COMPILE_MARGIN_S if compiled else 0.0):
            errors[name] = f"skipped: past ${common.DEADLINE_ENV}"
            continue
        _log(f"train step {name} {firing} T={T} B={B} bf16 "
             f"{'torch.compile' if compiled else 'eager'}")
        try:
            rows.append(_train_row(create, dev, name, firing, T, B, rounds, amp, compiled))
        except Exception as e:  # noqa: BLE001 - one model failing must not lose the others
            traceback.print_exc()
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return {"rows": rows, "errors": errors, "B": B, "amp": "bf16", "compiled": compiled}


def _train_row(create, dev, name, firing, T, B, rounds, amp, compiled) -> dict:
    import torch

    torch.manual_seed(0)
    snn = create(name, num_classes=10, timesteps=T, firing=firing).to(dev)
    ann = create(name, num_classes=10, firing="ann").to(dev)
    x = torch.randn(B, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (B,), device=dev)
    xb = torch.randn(B * T, 3, 32, 32, device=dev)
    yb = torch.randint(0, 10, (B * T,), device=dev)
    mk = train_step.make_step
    if compiled:
        # as `multispike train --compile` runs it: the compiled model (whose graph keeps the
        # fused kernels as custom ops) with the forward inside compact_spikes(); static
        # shapes, so that the ANN compiles one graph per batch size
        snn_m = torch.compile(snn, dynamic=False)
        ann_m = torch.compile(ann, dynamic=False)
        steps = {"snn": mk(snn_m, x, y, compact=True, amp_dtype=amp),
                 "ann": mk(ann_m, x, y, amp_dtype=amp),
                 "ann_bt": mk(ann_m, xb, yb, amp_dtype=amp)}
    else:
        steps = {"snn": mk(snn, x, y, compact=True, amp_dtype=amp),
                 "snn_plain": mk(snn, x, y, amp_dtype=amp),
                 "ann": mk(ann, x, y, amp_dtype=amp), "ann_bt": mk(ann, xb, yb, amp_dtype=amp)}
    row = {"model": name, "firing": firing, "T": T, "B": B,
           "mode": "compiled" if compiled else "eager",
           "neurons": train_step.neuron_summary(snn)}
    for k, s in steps.items():  # the first call compiles (Triton kernels, or inductor)
        t0 = time.perf_counter()
        s()
        common.sync(dev)
        row[f"{k}_first_s"] = time.perf_counter() - t0
    res = common.timed(steps, rounds, dev)
    for k, r in res.items():
        row[f"{k}_ms"] = r["ms"]
    for k in steps:
        if k.startswith("snn"):
            row[f"{k}_vs_Tann"] = common.ratio(res, k, "ann", scale=T)
            row[f"{k}_vs_ann_bt"] = common.ratio(res, k, "ann_bt")
    row["ann_bt_vs_Tann"] = common.ratio(res, "ann_bt", "ann", scale=T)
    for k in steps:
        if k != "ann":
            for m, v in step_memory(steps[k], dev).items():
                row[f"{k}_{m}"] = v
    for k in steps:
        if k.startswith("snn"):
            row[f"{k}_mem_vs_ann_bt"] = row[f"{k}_peak_MB"] / row["ann_bt_peak_MB"]
    _log(f"{name}: snn/(T*ann) {row['snn_vs_Tann']:.2f}, memory snn/ann_bt "
         f"{row['snn_mem_vs_ann_bt']:.2f}")
    return row


# -- 6. `multispike train` end to end -----------------------------------------------------------
def train_e2e(dev, quick: bool = False, sizes: tuple[int, int] | None = None,
              recipe: str = E2E_RECIPE) -> dict:
    """Images/s of ``multispike train --recipe RECIPE`` (run in this process through the
    command line's ``main``) over its second epoch, for the SNN and its ANN twin
    (``--firing ann --timesteps 1``), on CIFAR-10 files in the official format
    (:func:`multispike.data.testing.write_cifar`). ``sizes``: (training images per batch file,
    of which CIFAR-10 has five, and the batch size). Every other setting is the recipe's or
    the command's default (augmentation, loader workers, mixed precision), the same for both.
    """
    from multispike.cli import main as multispike
    from multispike.data.testing import write_cifar

    per_file, batch = sizes or (QUICK_E2E_SIZES if quick else E2E_SIZES)
    row = {"recipe": recipe, "device": str(dev), "train_images": 5 * per_file,
           "test_images": per_file, "batch_size": batch, "epochs": 2}
    twins = {"snn": ["--timesteps", "2"], "ann": ["--firing", "ann", "--timesteps", "1"]}
    with tempfile.TemporaryDirectory(prefix="multispike-e2e-") as tmp:
        t0 = time.perf_counter()
        write_cifar(Path(tmp) / "data", "cifar10", per_batch=per_file, tarball=False)
        row["write_s"] = time.perf_counter() - t0
        for name, flags in twins.items():
            if common.out_of_time():
                row[f"{name}_error"] = f"skipped: past ${common.DEADLINE_ENV}"
                continue
            _log(f"multispike train --recipe {recipe} {' '.join(flags)} ({dev})")
            out = Path(tmp) / name
            argv = ["train", "--recipe", recipe, "--data-dir", str(Path(tmp) / "data"),
                    "--epochs", "2", "--batch-size", str(batch), "--device", str(dev),
                    "--out", str(out), "--no-progress", *flags]
            row[f"{name}_command"] = "multispike " + " ".join(a.replace(tmp, "$TMP")
                                                              for a in argv)
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):  # keep stdout for --json
                code = multispike(argv)
            row[f"{name}_wall_s"] = time.perf_counter() - t0
            if code != 0:
                row[f"{name}_error"] = f"exit {code} (its message is in the log)"
                continue
            with open(out / "metrics.csv", newline="") as f:
                epochs = list(csv.DictReader(f))
            row[f"{name}_warmup_images_per_s"] = float(epochs[0]["images_per_s"])
            row[f"{name}_images_per_s"] = float(epochs[-1]["images_per_s"])
    if "snn_images_per_s" in row and "ann_images_per_s" in row:
        row["snn_vs_ann"] = row["snn_images_per_s"] / row["ann_images_per_s"]
        _log(f"train e2e: snn/ann images/s {row['snn_vs_ann']:.2f}")
    return row


def e2e_report(row: dict) -> list[str]:
    cols = [("twin", "run", "{}"), ("images_per_s", "images/s (epoch 2)", "{:.1f}"),
            ("warmup", "epoch 1 (warm-up)", "{:.1f}"), ("wall_s", "wall s", "{:.1f}"),
            ("error", "error", "{}")]
    rows = [{"twin": twin, "images_per_s": row.get(f"{key}_images_per_s"),
             "warmup": row.get(f"{key}_warmup_images_per_s"), "wall_s": row.get(f"{key}_wall_s"),
             "error": row.get(f"{key}_error")}
            for key, twin in (("snn", "SNN (vgg9 MT, T=2)"), ("ann", "ANN twin"))]
    out = [f"multispike train end to end ({row['device']}): --recipe {row['recipe']}, "
           f"{row['train_images']} training images (CIFAR-10 format), batch "
           f"{row['batch_size']}, images/s of epoch 2 of 2",
           common.fmt_table(rows, cols)]
    for key in ("snn", "ann"):
        if row.get(f"{key}_command"):
            out.append(f"{key}: {row[f'{key}_command']}")
    if row.get("snn_vs_ann") is not None:
        out.append(f"SNN/ANN images/s: {row['snn_vs_ann']:.2f}")
    return out


def e2e_goal_line(row: dict) -> str:
    goal = GOALS["train_vs_ann"]
    x = row.get("snn_vs_ann")
    verdict = ("not measured" if x is None else
               f"{x:.2f}x, {'met' if x >= goal else 'NOT met'}")
    return (f"goal: multispike train images/s >= {goal}x the ANN twin ({row['recipe']}, batch "
            f"{row['batch_size']}, {row['device']}): {verdict}")


# -- the CUDA tests of bench/gpu_check.sh -------------------------------------------------------
_CUDA = re.compile(r"cuda|gpu", re.IGNORECASE)


def is_cuda_test(item) -> bool:
    """Whether a collected pytest item is one of the CUDA tests (``gpu_check.sh`` runs them
    first): it has a ``skip``/``skipif`` marker (its own, its module's or its parameter's)
    whose reason or condition names CUDA or a GPU, whatever the condition's value, i.e. the
    tests that skip without CUDA; or its node id names CUDA (test name, parameter id); or its
    test function's source mentions CUDA (a test that takes another path where CUDA is
    present, as the Triton checks do)."""
    for mark in item.iter_markers():
        if mark.name in ("skip", "skipif"):
            words = [str(mark.kwargs.get("reason", "")),
                     *(a for a in mark.args if isinstance(a, str))]
            if any(_CUDA.search(w) for w in words):
                return True
    if "cuda" in item.nodeid.lower():
        return True
    try:
        source = inspect.getsource(item.function)
    except (AttributeError, OSError, TypeError):
        return False
    # the body only: a decorator naming CUDA (a parameter of its own) is judged above
    body = re.split(r"^\s*(?:async\s+)?def\s", source, maxsplit=1, flags=re.MULTILINE)[-1]
    return "cuda" in body.lower()


def list_cuda_tests(args: list[str]) -> list[str]:
    """Node ids of the CUDA tests among what ``pytest --collect-only ARGS`` collects."""
    import pytest

    picked: list[str] = []

    class Select:
        def pytest_collection_modifyitems(self, items):
            picked.extend(i.nodeid for i in items if is_cuda_test(i))

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *args],
                           plugins=[Select()])
    if code not in (0, 5):  # collection errors: say so; the ids that did collect still run
        print(buf.getvalue()[-3000:], file=sys.stderr)
    return picked


# -- the suite ----------------------------------------------------------------------------------
def run(quick: bool = False, device: str = "cuda") -> dict:
    import torch

    dev = torch.device(device)
    res = {"name": "gpu", "quick": quick, "device": device, "errors": {}, "goals": GOALS}
    parts = (("overhead", lambda: overhead(dev, quick)),
             ("host", lambda: default_path.host_time(quick, "cpu")),
             ("bandwidth", lambda: bandwidth_rows(dev, quick)),
             ("peers", lambda: default_path.run(quick, device, host=False)),
             ("train", lambda: train_rows(dev, quick)),
             ("train_e2e", lambda: train_e2e(dev, quick)))
    for part, fn in parts:
        if common.out_of_time():
            res["errors"][part] = f"skipped: past ${common.DEADLINE_ENV}"
            continue
        _log(part)
        try:
            res[part] = fn()
        except Exception as e:  # noqa: BLE001 - keep the other parts of a rare GPU run
            traceback.print_exc()
            res["errors"][part] = f"{type(e).__name__}: {e}"
    return res


def goal_lines(res: dict) -> list[str]:
    """One line per goal of docs/performance.md's GPU section that this run measured."""

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    out = []
    for r in res.get("overhead") or []:
        if r["config"] in ("default", "train"):
            out.append(f"goal: per-call overhead <= {GOALS['overhead_ms']} ms ({r['path']}): "
                       f"{r['ms']:.3f} ms, {verdict(r['ms'] <= GOALS['overhead_ms'])}")
    if res.get("host"):
        out += default_path.host_goal_lines(res["host"])
    if res.get("peers"):
        out.append(default_path.goal_line(res["peers"]))
    big = max((r["shape"] for r in res.get("bandwidth") or []), default=None, key=math.prod)
    for r in res.get("bandwidth") or []:
        if r["shape"] == big and r["config"] == "train":
            out.append(f"goal: >= {GOALS['copy_fraction']:.0%} of the copy bound at {big}: "
                       f"{r['fraction']:.0%}, {verdict(r['fraction'] >= GOALS['copy_fraction'])}")
    for r in (res.get("train") or {}).get("rows", []):
        if r["model"] == "vgg9":
            out.append(f"goal: vgg9 {r['firing']} T={r['T']} B={r['B']} bf16 step <= "
                       f"{GOALS['vgg9_vs_Tann']} x T x ANN: {r['snn_vs_Tann']:.2f}, "
                       f"{verdict(r['snn_vs_Tann'] <= GOALS['vgg9_vs_Tann'])}")
        out.append(f"goal: peak memory <= {GOALS['mem_vs_ann_bt']} x ANN at BxT "
                   f"({r['model']}): {r['snn_mem_vs_ann_bt']:.2f}, "
                   f"{verdict(r['snn_mem_vs_ann_bt'] <= GOALS['mem_vs_ann_bt'])}")
    if res.get("train_e2e"):
        out.append(e2e_goal_line(res["train_e2e"]))
    return out


def train_report(train: dict, device: str) -> list[str]:
    if train.get("skipped"):
        return [f"training steps: skipped: {train['skipped']}"]
    mode = "torch.compile" if train.get("compiled") else "eager"
    snns = ["snn"] if train.get("compiled") else ["snn", "snn_plain"]
    cols = [("model", "model", "{}"), ("firing", "firing", "{}"), ("T", "T", "{}"),
            ("B", "B", "{}")]
    cols += [(f"{k}_ms", f"{k} ms", "{:.1f}") for k in snns]
    cols += [("ann_ms", "ANN(B) ms", "{:.1f}"), ("ann_bt_ms", "ANN(BxT) ms", "{:.1f}")]
    cols += [(f"{k}_vs_Tann", f"{k}/(T*ANN)", "{:.2f}") for k in snns]
    cols += [(f"{k}_vs_ann_bt", f"{k}/ANN(BxT)", "{:.2f}") for k in snns]
    cols += [("ann_bt_vs_Tann", "ANN(BxT)/(T*ANN)", "{:.2f}")]
    mem = [("model", "model", "{}")]
    mem += [(f"{k}_peak_MB", f"{k} MB", "{:.0f}") for k in snns]
    mem += [("ann_bt_peak_MB", "ANN(BxT) MB", "{:.0f}")]
    mem += [(f"{k}_mem_vs_ann_bt", f"{k}/ANN(BxT)", "{:.2f}") for k in snns]
    mem += [(f"{k}_max_allocated_MB", f"{k} max alloc MB", "{:.0f}") for k in snns]
    mem += [("ann_bt_max_allocated_MB", "ANN(BxT) max alloc MB", "{:.0f}")]
    first = [("model", "model", "{}")] + [(f"{k}_first_s", f"{k} first call s", "{:.1f}")
                                          for k in [*snns, "ann", "ann_bt"]]
    out = [f"Training steps ({device}, {mode}), bf16 autocast, SGD; median ms per step; "
           "snn = forward inside compact_spikes() (multispike train's path)",
           common.fmt_table(train["rows"], cols),
           "", "Peak memory of one step above parameters and optimizer state "
           "(torch.cuda.max_memory_allocated; PeakMemory on the CPU)",
           common.fmt_table(train["rows"], mem),
           "", "First call (compiles)", common.fmt_table(train["rows"], first)]
    for r in train["rows"]:
        out.append(f"{r['model']}: {r['neurons']}")
    for name, err in (train.get("errors") or {}).items():
        out.append(f"error: {name}: {err}")
    return out


def report(res: dict) -> str:
    out = []
    if res.get("overhead"):
        cols = [("path", "layer", "{}"), ("ms", "ms per call", "{:.4f}"),
                ("min_ms", "min", "{:.4f}"), ("max_ms", "max", "{:.4f}")]
        out += [f"Per-call overhead, forward + backward, input {list(OVERHEAD_SHAPE)} "
                f"({res['device']}), {res['overhead'][0]['inner']} calls per round",
                common.fmt_table(res["overhead"], cols), ""]
    if res.get("host"):
        out += [default_path.host_report(res["host"]), ""]
    if res.get("bandwidth"):
        cols = [("shape", "input", "{}"), ("path", "layer", "{}"),
                ("fused_ms", "fused ms", "{:.3f}"), ("copy_ms", "copy_ ms", "{:.3f}"),
                ("traffic_MB", "traffic MB", "{:.0f}"),
                ("achieved_GBps", "fused GB/s", "{:.0f}"), ("bound_GBps", "copy GB/s", "{:.0f}"),
                ("fraction", "of copy bound", "{:.0%}")]
        out += [f"Bandwidth, forward + backward ({res['device']}): bytes read + written per "
                "second against copy_() of the same bytes",
                common.fmt_table(res["bandwidth"], cols), ""]
    if res.get("peers"):
        out += [default_path.report(res["peers"]), ""]
    if res.get("train"):
        out += [*train_report(res["train"], res["device"]), ""]
    if res.get("train_e2e"):
        out += [*e2e_report(res["train_e2e"]), ""]
    out += goal_lines(res)
    for part, err in (res.get("errors") or {}).items():
        out.append(f"error: {part}: {err}")
    return "\n".join(out)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--list-cuda-tests"]:  # bench/gpu_check.sh: one node id a line
        ids = list_cuda_tests(argv[1:])
        print("\n".join(ids))
        raise SystemExit(0 if ids else 5)
    common.suite_main(__doc__, run, report, argv, device="cuda")


if __name__ == "__main__":
    main()
