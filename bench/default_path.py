"""What a library user gets: one LIF layer, forward + backward, against SpikingJelly and snnTorch.

The neuron is ``LIFNode(decay=0.5, v_threshold=1.0, surrogate="sigmoid")``: the neuron
SpikingJelly's ``LIFNode()`` computes (τ = 2, threshold 1, hard reset to 0, its default
sigmoid surrogate), with every argument that decides *how* it runs left at its default
(``check_input=True``, ``backend="auto"``). Two rows, each measured in a fresh interpreter
that times its multispike layer side by side with the peers (ratios within one process):

- ``default (check_input=True, untuned allocator)``: that layer, in a process where
  :func:`multispike.engine.allocator.tune_cpu_allocator` was never called (and
  ``MULTISPIKE_NO_MALLOC_TUNING=1`` is set, so nothing can call it): a user's own script;
- ``as `multispike train` runs it (check_input=False, tuned)``: the same layer with
  ``check_input=False`` (the model builders pass it: the model checks its input once), after
  ``tune_cpu_allocator()``, as ``multispike train`` does on the CPU.

On CUDA the allocator plays no part (``multispike train`` tunes it on the CPU only), the rows
differ by ``check_input`` alone, and SpikingJelly runs once per CUDA implementation: it
picks one when ``spikingjelly._ops.lif`` is imported, from ``$SJ_LIF_CUDA_IMPLEMENTATION``
(``auto``, ``cuda``, ``triton`` or ``torch``; ``auto`` takes the first available of
``cuda``, ``triton``, ``torch``), so each runs in its own process. ``cuda`` (SpikingJelly's
native operators) exists only when SpikingJelly was built from source with
``SJ_BUILD_NATIVE_CUDA=1``; the PyPI wheel has ``triton`` and ``torch``. The ratios on CUDA
are against the fastest implementation that ran.

**Host time per call** (:func:`host_time`; on the CPU only, in this process): the layers of
:data:`HOST_LAYERS`, each with its defaults (``check_input=True``, ``backend="auto"``), at the
tiny input ``[4, 2, 16, 8, 8]`` (4 096 neurons x steps), forward + backward, timed side by side
with one autograd op: ``x * 0.5`` forward + backward on the same input, a single
differentiable elementwise op (one forward kernel, one backward node, the gradient
accumulated into ``x.grad``), the least any layer costs. At this size the work is host work
(Python, dispatch, autograd bookkeeping), which on a GPU bounds the time per call however
fast the kernel is; the goal is at most :data:`HOST_GOAL` times that op. Medians over many
rounds of many calls (:func:`common.timed`); the ratio is the median of per-round ratios.
Two rows: the C++ kernel's path (its kernel runs on the host too, so its compute is in the
figure), and the CUDA path with every Triton launch mocked out (:class:`_MockedTriton`,
where Triton is importable): the glue alone, as a GPU meets it before any kernel runs.

Run: ``python bench/default_path.py [--quick] [--json] [--device cuda]``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

#: the LIF of SpikingJelly's ``LIFNode()``; nothing else is passed to multispike's ``LIFNode``
MATCH = {"decay": 0.5, "v_threshold": 1.0, "surrogate": "sigmoid"}
SHAPE = (4, 32, 128, 32, 32)
QUICK_SHAPE = (4, 4, 32, 16, 16)
LABELS = {
    "cpu": {"default": "default (check_input=True, untuned allocator)",
            "train": "as `multispike train` runs it (check_input=False, tuned)"},
    "cuda": {"default": "default (check_input=True)",
             "train": "as `multispike train` runs it (check_input=False)"},
}
SJ_ENV = "SJ_LIF_CUDA_IMPLEMENTATION"
SJ_CUDA_IMPLS = ("cuda", "triton", "torch")
GOALS = {"cpu": 5.0, "cuda": 3.0}  # default path against SpikingJelly (its fastest on CUDA)
#: the host-time row: input, goal (times one autograd op) and the layers, with their defaults
HOST_SHAPE = (4, 2, 16, 8, 8)
HOST_GOAL = 2.5
HOST_OP = "one autograd op (x * 0.5)"
HOST_LAYERS = {
    "LIFNode()": ("LIFNode", {}),
    'PLIFNode(firing="mt")': ("PLIFNode", {"firing": "mt"}),
    'LIFNode(firing="ternary", learn_amplitude=True)':
        ("LIFNode", {"firing": "ternary", "learn_amplitude": True}),
    'LIFNode(firing="mt", learn_thresholds=True)':
        ("LIFNode", {"firing": "mt", "learn_thresholds": True}),
}


def default_neuron():
    """The layer a user gets: ``LIFNode`` with only the neuron's constants given."""
    from multispike.neurons import LIFNode

    return LIFNode(**MATCH)


def train_neuron():
    """The same layer as the model builders make it (``check_input=False``)."""
    from multispike.neurons import LIFNode

    return LIFNode(**MATCH, check_input=False)


BUILDERS = {"default": default_neuron, "train": train_neuron}


# -- one fresh process --------------------------------------------------------------------------
def measure(device: str, shape, rounds: int, configs, inner: int = 1) -> dict:
    """Time the multispike ``configs`` side by side with the peers at ``shape`` (this process)."""
    import torch

    from multispike.engine import allocator

    dev = torch.device(device)
    x = torch.randn(*shape, device=dev, requires_grad=True)
    g = torch.randn(*shape, device=dev)
    comps = {c: BUILDERS[c]().to(dev) for c in configs}
    peers, notes = common.peer_neurons(dev)
    comps.update(peers)
    fns = {}
    for name, f in comps.items():
        step = common.train_step(f, x, g)
        try:  # a SpikingJelly implementation that is not there fails on its first call
            step()
            common.sync(dev)
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            notes[name] = f"{name} failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            continue
        fns[name] = step
    res = common.timed(fns, rounds, dev, inner=inner)
    out = {"device": device, "shape": list(shape), "rounds": rounds, "inner": inner,
           "ms": {k: r["ms"] for k, r in res.items()},
           "min_ms": {k: r["min_ms"] for k, r in res.items()},
           "ratios": {}, "notes": notes,
           "allocator_tuned": bool(allocator._state),
           "sj_requested": os.environ.get(SJ_ENV, "auto")}
    for c in configs:
        for peer in ("sj", "snntorch"):
            if c in res and peer in res:
                out["ratios"][f"{c}_vs_{peer}"] = common.ratio(res, peer, c)
    if "sj" in fns and dev.type == "cuda":
        try:
            from spikingjelly._ops.lif import _selection

            out["sj_selected"] = _selection.diagnostics(dev)["implementation"]
        except Exception as e:  # noqa: BLE001 - a private API: say so, keep the figures
            out["sj_selected"] = f"unknown ({type(e).__name__})"
    return out


def child_main(args) -> None:
    # untuned: never call tune_cpu_allocator in this process (setup() calls it only when asked)
    common.setup(malloc_tuning=args.tuned)
    res = measure(args.device, args.shape, args.rounds, args.configs, args.inner)
    res["machine"] = common.machine()
    Path(args.out).write_text(common.dump(res))


def spawn(device: str, shape, rounds: int, configs, *, tuned: bool, inner: int = 1,
          sj_impl: str | None = None, timeout: float = 600) -> dict:
    """:func:`measure` in a fresh interpreter; its result, or ``{"error": ...}``."""
    env = dict(os.environ)
    if tuned:
        env.pop("MULTISPIKE_NO_MALLOC_TUNING", None)
    else:
        env["MULTISPIKE_NO_MALLOC_TUNING"] = "1"
    if sj_impl is None:
        env.pop(SJ_ENV, None)
    else:
        env[SJ_ENV] = sj_impl
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "res.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--out", str(out),
               "--device", device, "--rounds", str(rounds), "--inner", str(inner),
               "--shape", *map(str, shape), "--configs", *configs]
        if tuned:
            cmd.append("--tuned")
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if p.returncode != 0 or not out.exists():
            lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
            return {"error": f"exit {p.returncode}: {lines[-1] if lines else 'no output'}"}
        return json.loads(out.read_text())


# -- host time per call ------------------------------------------------------------------------
def _layer_step(node, x, g):
    """One training-style call: the layer's gradients set to None first (as an optimizer's
    ``zero_grad`` does), forward, backward."""
    params = list(node.parameters())

    def step():
        x.grad = None
        for p in params:
            p.grad = None
        node(x).backward(g)

    return step


class _MockedTriton:
    """The CUDA path on the CPU with every Triton launch a no-op: what remains is the path's
    host work (Python, dispatch, autograd, the output buffers), the issue's way of measuring
    it without a GPU. Needs Triton importable."""

    KERNELS = ("_forward_kernel", "_backward_kernel", "_finish_kernel",
               "_learned_consts_kernel")

    def __enter__(self):
        from multispike import kernels
        from multispike.kernels import triton_impl

        def no_launch(*args, **kwargs):
            return None

        class Kernel:
            def __getitem__(self, grid):
                return no_launch

        self.saved = [(triton_impl, k, getattr(triton_impl, k)) for k in self.KERNELS]
        self.saved.append((kernels, "native_impl", kernels.native_impl))
        native = kernels.native_impl
        for _, name, _ in self.saved[:-1]:
            setattr(triton_impl, name, Kernel())
        kernels.native_impl = lambda record, x: "triton" if native(record, x) else None
        return self

    def __exit__(self, *exc):
        for mod, name, value in self.saved:
            setattr(mod, name, value)


def host_time(quick: bool = False, device: str = "cpu", rounds: int | None = None,
              inner: int | None = None, mocked_triton: bool = False) -> dict:
    """Time per call of each layer of :data:`HOST_LAYERS` and of one autograd op, forward +
    backward at :data:`HOST_SHAPE`, side by side in this process; the ratio per layer.

    ``mocked_triton``: the layers take the CUDA path (:class:`_MockedTriton`) instead of
    the C++ kernel."""
    import torch

    from multispike import neurons

    dev = torch.device(device)
    x = torch.randn(*HOST_SHAPE, device=dev, requires_grad=True)
    g = torch.randn(*HOST_SHAPE, device=dev)
    rounds = rounds or (5 if quick else 41)
    inner = inner or (10 if quick else 100)
    with _MockedTriton() if mocked_triton else contextlib.nullcontext():
        fns = {}
        for label, (cls, opts) in HOST_LAYERS.items():
            fns[label] = _layer_step(getattr(neurons, cls)(**opts).to(dev), x, g)
        fns["torch_op"] = common.train_step(lambda t: t * 0.5, x, g)
        res = common.timed(fns, rounds, dev, inner=inner, warmup=2)
    rows = [{"layer": label, "us": res[label]["ms"] * 1e3, "min_us": res[label]["min_ms"] * 1e3,
             "op_us": res["torch_op"]["ms"] * 1e3, "x_op": common.ratio(res, label, "torch_op")}
            for label in HOST_LAYERS]
    return {"device": device, "shape": list(HOST_SHAPE), "rounds": rounds, "inner": inner,
            "op": HOST_OP, "op_us": res["torch_op"]["ms"] * 1e3, "goal_x_op": HOST_GOAL,
            "threads": torch.get_num_threads(), "rows": rows,
            "path": "CUDA path, Triton launches mocked" if mocked_triton else
            "C++ kernel (runs on the host)"}


def host_report(host: dict) -> str:
    cols = [("layer", "layer (defaults: check_input=True, backend='auto')", "{}"),
            ("us", "us per call", "{:.1f}"), ("min_us", "min", "{:.1f}"),
            ("op_us", "one op us", "{:.1f}"), ("x_op", "vs one op", "{:.2f}x")]
    return "\n".join([
        f"Host time per call ({host.get('path', 'C++ kernel')}), forward + backward, input "
        f"{host['shape']} ({host['device']}, "
        f"{host['threads']} threads), median of {host['rounds']} rounds of {host['inner']} "
        f"calls, beside {host['op']} forward + backward",
        common.fmt_table(host["rows"], cols), *host_goal_lines(host)])


def host_goal_lines(host: dict) -> list[str]:
    goal = host["goal_x_op"]
    return [f"goal: host time per call <= {goal:g}x {host['op']} at {host['shape']} "
            f"({host['device']}), {r['layer']}: {r['x_op']:.2f}x "
            f"({r['us']:.0f} us against {r['op_us']:.0f} us), "
            f"{'met' if r['x_op'] <= goal else 'NOT met'}" for r in host["rows"]]


# -- the table ----------------------------------------------------------------------------------
def run(quick: bool = False, device: str = "cpu", host: bool = True) -> dict:
    """The table; on the CPU also the host-time row (``host``; bench/gpu.py measures that
    row as a part of its own)."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    shape = QUICK_SHAPE if quick else SHAPE
    rounds = 3 if quick else 15
    inner = 1 if kind == "cpu" else (2 if quick else 10)
    res = {"name": "default_path", "device": device, "shape": list(shape), "rows": [],
           "sj_impls": [], "notes": {}, "goal_x_sj": GOALS[kind]}
    if kind == "cpu":
        children = {"default": spawn(device, shape, rounds, ["default"], tuned=False),
                    "train": spawn(device, shape, rounds, ["train"], tuned=True)}
        for path, child in children.items():
            res["rows"].append(_row(kind, path, child, child))
        if host:
            res["host"] = host_time(quick, device)
            if importlib.util.find_spec("triton") is not None:
                res["host_cuda_path"] = host_time(quick, device, mocked_triton=True)
        return res
    for impl in SJ_CUDA_IMPLS:
        if common.out_of_time():
            res["sj_impls"].append({"impl": impl, "error": f"skipped: past ${common.DEADLINE_ENV}"})
            continue
        print(f"[default_path: SpikingJelly {SJ_ENV}={impl} ...]", file=sys.stderr, flush=True)
        left = common.time_left()  # a time-limited run: no process outlives the deadline
        child = spawn(device, shape, rounds, ["default", "train"], tuned=False, inner=inner,
                      sj_impl=impl, timeout=600 if left is None else max(10.0, min(600, left)))
        child["impl"] = impl
        res["sj_impls"].append(child)
    ran = [c for c in res["sj_impls"] if "sj" in c.get("ms", {})]
    fastest = min(ran, key=lambda c: c["ms"]["sj"]) if ran else None
    res["sj_fastest"] = fastest["impl"] if fastest else None
    # every multispike figure from the process that ran the fastest SpikingJelly
    src = fastest or next((c for c in res["sj_impls"] if "ms" in c), {})
    for path in ("default", "train"):
        res["rows"].append(_row(kind, path, src, src))
    return res


def _row(kind: str, path: str, child: dict, peers: dict) -> dict:
    row = {"path": LABELS[kind][path], "config": path}
    if "error" in child or "ms" not in child:
        row["error"] = child.get("error", "no measuring process finished")
        return row
    row["allocator"] = "tuned" if child.get("allocator_tuned") else "untuned"
    row["ms"] = child["ms"].get(path)
    row["sj_ms"] = peers["ms"].get("sj")
    row["snntorch_ms"] = peers["ms"].get("snntorch")
    row["x_sj"] = peers["ratios"].get(f"{path}_vs_sj")
    row["x_snntorch"] = peers["ratios"].get(f"{path}_vs_snntorch")
    row["sj_impl"] = peers.get("impl", "cpu" if kind == "cpu" else None)
    row["notes"] = child.get("notes", {})
    return row


def goal_line(res: dict) -> str:
    """The goal of the default path against SpikingJelly, with this run's figures."""
    kind = "cuda" if res["device"].startswith("cuda") else "cpu"
    goal = res["goal_x_sj"]
    x = {r["config"]: r.get("x_sj") for r in res["rows"]}
    what = ("SpikingJelly on CPU" if kind == "cpu" else
            f"SpikingJelly 2.0's fastest CUDA implementation ({res.get('sj_fastest')})")
    if x.get("default") is None:
        verdict = "not measured"
    else:
        verdict = f"measured {x['default']:.1f}x: {'met' if x['default'] >= goal else 'NOT met'}"
    if x.get("train") is not None:
        verdict += f" (train path {x['train']:.1f}x)"
    return f"goal: default path >= {goal:g}x {what} at {res['shape']}; {verdict}"


def report(res: dict) -> str:
    cols = [("path", "path", "{}"), ("allocator", "allocator", "{}"),
            ("ms", "multispike ms", "{:.2f}"), ("sj_ms", "SJ ms", "{:.2f}"),
            ("snntorch_ms", "snnTorch ms", "{:.2f}"), ("x_sj", "vs SJ", "{:.1f}x"),
            ("x_snntorch", "vs snnTorch", "{:.1f}x")]
    if res["device"].startswith("cuda"):
        cols = [c for c in cols if c[0] != "allocator"]
    out = [f"What a user gets: LIFNode(decay=0.5, v_threshold=1.0, surrogate='sigmoid'), "
           f"forward + backward, input {res['shape']} ({res['device']}), median ms; each row "
           "timed side by side with SpikingJelly LIFNode(step_mode='m') and snnTorch Leaky in "
           "one fresh process", common.fmt_table(res["rows"], cols), goal_line(res)]
    if res.get("sj_impls"):
        icols = [("impl", f"{SJ_ENV}", "{}"), ("selected", "SJ ran", "{}"),
                 ("sj_ms", "SJ ms", "{:.3f}"), ("default_ms", "default ms", "{:.3f}"),
                 ("train_ms", "train-path ms", "{:.3f}"),
                 ("x_default", "default vs SJ", "{:.1f}x"),
                 ("x_train", "train-path vs SJ", "{:.1f}x"), ("error", "error", "{}")]
        irows = []
        for c in res["sj_impls"]:
            ms = c.get("ms", {})
            irows.append({"impl": c["impl"], "selected": c.get("sj_selected"),
                          "sj_ms": ms.get("sj"), "default_ms": ms.get("default"),
                          "train_ms": ms.get("train"),
                          "x_default": c.get("ratios", {}).get("default_vs_sj"),
                          "x_train": c.get("ratios", {}).get("train_vs_sj"),
                          "error": c.get("error") or c.get("notes", {}).get("sj")})
        out += ["", "SpikingJelly's CUDA implementations (one process each, multispike timed "
                "beside each)", common.fmt_table(irows, icols)]
    for key in ("host", "host_cuda_path"):
        if res.get(key):
            out += ["", host_report(res[key])]
    for r in res["rows"]:
        if r.get("error"):
            out.append(f"note: {r['path']}: {r['error']}")
        for note in r.get("notes", {}).values():
            out.append(f"note: {r['path']}: {note}")
    return "\n".join(out)


def main(argv=None) -> None:
    import argparse

    if argv is None:
        argv = sys.argv[1:]
    if "--child" in argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--child", action="store_true")
        ap.add_argument("--out", required=True)
        ap.add_argument("--device", default="cpu")
        ap.add_argument("--shape", nargs="+", type=int, default=list(SHAPE))
        ap.add_argument("--rounds", type=int, default=15)
        ap.add_argument("--inner", type=int, default=1)
        ap.add_argument("--configs", nargs="+", choices=list(BUILDERS), default=list(BUILDERS))
        ap.add_argument("--tuned", action="store_true")
        child_main(ap.parse_args(argv))
        return
    common.suite_main(__doc__, run, report, argv)


if __name__ == "__main__":
    main()
