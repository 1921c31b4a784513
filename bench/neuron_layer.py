"""Neuron layer alone: forward + backward of ``[T, B, C, H, W]``, side by side.

Competitors (each once per round; times are medians over rounds, ratios medians of the
per-round ratios):

- ``loop``: multispike's reference loop (``backend="torch"``, what ``multistep`` runs);
- ``fused``: multispike's fused kernel (``backend="fused"``: C++ on CPU, Triton on CUDA);
- ``inductor``: the reference loop compiled by ``torch.compile`` (inductor's generated C++ or
  Triton; compile time excluded), the other way to fuse it;
- ``sj``: SpikingJelly's multi-step ``LIFNode(step_mode="m")`` (its own CPU/CUDA dispatch);
- ``snntorch``: snnTorch's ``Leaky`` looped over T;
- ``bound``: PyTorch copying tensors of the sizes the fused forward and backward must read and
  write (forward: x → out and x → saved; backward: grad → grad_x, plus reading saved), i.e.
  ``clone()`` of those tensors, which allocates like the kernel does; ``bound_copy`` is the
  same bytes copied into preallocated tensors (``copy_``), a stricter floor.

All neurons are LIF with a hard reset to 0 at threshold 1 and τ = 2 (decay 0.5), the sigmoid
surrogate (SpikingJelly's default) unless the row says otherwise. These competitors are the
kernels themselves (``check_input=False``, in this process's allocator setting). The report's
first table (:mod:`default_path`) is what a user gets instead: ``LIFNode`` with its default
``check_input=True`` in a fresh process with glibc's default allocator, beside the layer as
``multispike train`` runs it, each against SpikingJelly and snnTorch, then the host time per
call of four default layers at a tiny input against one autograd op
(:func:`default_path.host_time`). The last table runs
every firing rule of multispike, fused against its loop; rows marked ``learn θ`` learn their
thresholds (``learn_thresholds=True``) and are also timed side by side with the same layer
with fixed thresholds (``vs fixed``: learned-threshold time over fixed-threshold time, both
fused). Its first rows are the guard (:data:`GUARD`): ``LIFNode`` with its defaults for the
binary, MT, ternary and integer rules and MT with learned thresholds, whose fused kernel must
stay at least :data:`GUARD_X` times faster than its loop (a line under the table says whether
it is; a kernel whose inner loop stops vectorising falls to about the loop's speed, as the C++
kernel did for every rule after the reset options came in: see docs/performance.md). Memory:
bytes autograd saves for the backward per neuron and time step
(``saved_tensors_hooks``).

Run: ``python bench/neuron_layer.py [--quick] [--json]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import default_path  # noqa: E402

#: the rows of the firing-rule table whose fused/loop ratio is guarded, and the floor
GUARD = ("lif binary", "lif mt", "lif ternary", "lif integer", "lif mt learn θ")
GUARD_X = 5.0


def _competitors(shape, device):
    import torch

    from multispike.neurons import LIFNode

    comps = {
        "loop": LIFNode(decay=0.5, v_threshold=1.0, surrogate="sigmoid", backend="torch",
                        check_input=False),
        "fused": LIFNode(decay=0.5, v_threshold=1.0, surrogate="sigmoid", backend="fused",
                         check_input=False),
        "fused_rect": LIFNode(decay=0.5, v_threshold=1.0, backend="fused", check_input=False),
    }
    notes = {}
    try:
        comps["inductor"] = torch.compile(
            LIFNode(decay=0.5, v_threshold=1.0, surrogate="sigmoid", backend="torch",
                    check_input=False)
        )
    except Exception as e:  # noqa: BLE001 - no compiler
        notes["inductor"] = f"torch.compile unavailable: {type(e).__name__}: {e}"
    peers, peer_notes = common.peer_neurons(device)
    comps.update(peers)
    notes.update(peer_notes)
    return comps, notes


def _bound_fns(sizes, device):
    """clone()/copy_() of uint8 tensors of the given byte sizes (one read + one write each)."""
    import torch

    srcs = [torch.ones(n, dtype=torch.uint8, device=device) for n in sizes]
    dsts = [torch.empty_like(s) for s in srcs]

    def clone():
        return [s.clone() for s in srcs]

    def copy():
        for d, s in zip(dsts, srcs, strict=True):
            d.copy_(s)

    return clone, copy


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fns, rounds, device):
    if device.type == "cuda":
        wrapped = {}
        for k, f in fns.items():
            def w(f=f):
                f()
                _sync(device)
            wrapped[k] = w
        fns = wrapped
    return common.side_by_side(fns, rounds=rounds)


def kernel_bytes(numel: int, elem: int, saved_elem: int) -> list[int]:
    """Bytes the fused forward + backward must move, as (read one, write one) pairs."""
    # forward: read x, write out, write saved; backward: read grad and saved, write grad_x
    return [numel * elem, numel * elem, numel * saved_elem]


def run(quick: bool = False, device: str = "cpu") -> dict:
    import torch

    dev = torch.device(device)
    B, C, H, W = (4, 32, 16, 16) if quick else (32, 128, 32, 32)
    Ts = (1, 4) if quick else (1, 2, 4, 8)
    rounds = 3 if quick else 15
    comps, notes = _competitors((B, C, H, W), dev)
    rows = []
    for T in Ts:
        x = torch.randn(T, B, C, H, W, device=dev, requires_grad=True)
        g = torch.randn(T, B, C, H, W, device=dev)
        numel = x.numel()
        fns = {k: common.train_step(f, x, g) for k, f in comps.items()}
        fused_saved = common.saved_bytes(lambda x=x: comps["fused"](x)) / numel
        clone, copy = _bound_fns(kernel_bytes(numel, 4, round(fused_saved)), dev)
        fns["bound"] = clone
        fns["bound_copy"] = copy
        res = _timed(fns, rounds, dev)
        row = {"T": T, "shape": [T, B, C, H, W]}
        for k, r in res.items():
            row[f"{k}_ms"] = r["ms"]
        for k in comps:
            row[f"{k}_saved_B"] = common.saved_bytes(lambda k=k, x=x: comps[k](x)) / numel
        for k in ("loop", "inductor", "sj", "snntorch"):
            row[f"x_{k}"] = common.ratio(res, k, "fused") if k in res else None
        row["bound_frac"] = common.ratio(res, "bound", "fused")
        row["bound_copy_frac"] = common.ratio(res, "bound_copy", "fused")
        rows.append(row)
    rules = _rules(B, C, H, W, 4, rounds, dev)
    # what a user gets (default LIFNode, untuned allocator) and what `multispike train` runs,
    # each in a fresh interpreter (bench/default_path.py)
    paths = default_path.run(quick=quick, device=device)
    return {"name": "neuron_layer", "quick": quick, "device": device, "rows": rows,
            "rules": rules, "notes": notes, "paths": paths}


def _rules(B, C, H, W, T, rounds, dev):
    """Every firing rule: fused against the loop at one T (rectangular surrogate)."""
    import torch

    from multispike.neurons import IFNode, LIFNode, PLIFNode

    configs = [
        # the guard (GUARD): LIFNode's defaults for each rule, and MT with learned thresholds
        # (timed beside "lif mt" with fixed ones)
        ("lif binary", LIFNode, {"firing": "binary"}),
        ("lif mt", LIFNode, {"firing": "mt"}),
        ("lif ternary", LIFNode, {"firing": "ternary"}),
        ("lif integer", LIFNode, {"firing": "integer"}),
        ("lif mt learn θ", LIFNode, {"firing": "mt", "learn_thresholds": True}),
        ("plif binary", PLIFNode, {"firing": "binary"}),
        ("plif mt", PLIFNode, {"firing": "mt"}),
        ("lif ternary +a", LIFNode, {"firing": "ternary", "learn_amplitude": True}),
        ("lif ternary detach", LIFNode, {"firing": "ternary", "detach_reset": True}),
        ("lif mt detach", LIFNode, {"firing": "mt", "detach_reset": True}),
        ("if ternary-mt", IFNode, {"firing": "ternary-mt"}),
        # learned thresholds, each beside its fixed-threshold layer (the row "plif mt" above)
        ("plif mt learn θ", PLIFNode, {"firing": "mt", "learn_thresholds": True}),
        ("lif integer learn θ", LIFNode, {"firing": "integer", "learn_thresholds": True}),
    ]
    x = torch.randn(T, B, C, H, W, device=dev, requires_grad=True)
    g = torch.randn(T, B, C, H, W, device=dev)
    numel = x.numel()
    rows = []
    for name, cls, opts in configs:
        loop = cls(backend="torch", check_input=False, **opts).to(dev)
        fused = cls(backend="fused", check_input=False, **opts).to(dev)
        saved = common.saved_bytes(lambda fused=fused: fused(x)) / numel
        clone, _ = _bound_fns(kernel_bytes(numel, 4, round(saved)), dev)
        fns = {"loop": common.train_step(loop, x, g), "fused": common.train_step(fused, x, g),
               "bound": clone}
        learns = opts.get("learn_thresholds", False)
        if learns:  # the same layer with fixed thresholds, in the same rounds
            fixed_opts = {k: v for k, v in opts.items() if k != "learn_thresholds"}
            fns["fixed"] = common.train_step(
                cls(backend="fused", check_input=False, **fixed_opts).to(dev), x, g)
        res = _timed(fns, rounds, dev)
        rows.append({
            "fixed_ms": res["fixed"]["ms"] if learns else None,
            "x_fixed": common.ratio(res, "fused", "fixed") if learns else None,
            "config": name, "T": T, "guard": name in GUARD,
            "loop_ms": res["loop"]["ms"], "fused_ms": res["fused"]["ms"],
            "bound_ms": res["bound"]["ms"],
            "x_loop": common.ratio(res, "loop", "fused"),
            "bound_frac": common.ratio(res, "bound", "fused"),
            "loop_saved_B": common.saved_bytes(lambda loop=loop: loop(x)) / numel,
            "fused_saved_B": saved,
        })
    return rows


def guard_line(rules: list[dict]) -> str:
    """Whether every guarded row's fused kernel is at least GUARD_X times faster than its loop."""
    rows = [r for r in rules if r.get("guard")]
    if not rows:
        return "guard: no guarded row measured"
    low = [r for r in rows if r.get("x_loop") is None or r["x_loop"] < GUARD_X]
    names = ", ".join(r["config"] for r in rows)
    verdict = "met" if not low else "NOT met: " + ", ".join(
        f"{r['config']} {r['x_loop']:.1f}x" if r.get("x_loop") is not None else
        f"{r['config']} not measured" for r in low)
    worst = min((r["x_loop"] for r in rows if r.get("x_loop") is not None), default=None)
    tail = f" (lowest {worst:.1f}x)" if worst is not None and not low else ""
    return f"guard: fused >= {GUARD_X:g}x its loop for {names}; {verdict}{tail}"


def report(res: dict) -> str:
    cols = [("T", "T", "{}"), ("loop_ms", "loop ms", "{:.1f}"), ("fused_ms", "fused ms", "{:.1f}"),
            ("fused_rect_ms", "fused(rect) ms", "{:.1f}"), ("inductor_ms", "inductor ms", "{:.1f}"),
            ("sj_ms", "SJ ms", "{:.1f}"),
            ("snntorch_ms", "snnTorch ms", "{:.1f}"), ("bound_ms", "bound ms", "{:.1f}"),
            ("x_loop", "vs loop", "{:.1f}x"), ("x_inductor", "vs inductor", "{:.1f}x"),
            ("x_sj", "vs SJ", "{:.1f}x"),
            ("x_snntorch", "vs snnTorch", "{:.1f}x"), ("bound_frac", "bound/fused", "{:.2f}"),
            ("bound_copy_frac", "copy_/fused", "{:.2f}")]
    shape = res["rows"][0]["shape"][1:] if res["rows"] else []
    out = [default_path.report(res["paths"]), ""] if res.get("paths") else []
    out += [f"Neuron layer, forward + backward, input [T, {', '.join(map(str, shape))}] "
           f"({res['device']}), median ms per iteration", common.fmt_table(res["rows"], cols)]
    mem = [("T", "T", "{}"), ("loop_saved_B", "loop", "{:.1f}"),
           ("fused_saved_B", "fused", "{:.1f}"),
           ("fused_rect_saved_B", "fused(rect)", "{:.1f}"),
           ("inductor_saved_B", "inductor", "{:.1f}"), ("sj_saved_B", "SJ", "{:.1f}"),
           ("snntorch_saved_B", "snnTorch", "{:.1f}")]
    out += ["", "Bytes saved for the backward per neuron and time step",
            common.fmt_table(res["rows"], mem)]
    rcols = [("config", "config", "{}"), ("loop_ms", "loop ms", "{:.1f}"),
             ("fused_ms", "fused ms", "{:.1f}"), ("x_loop", "vs loop", "{:.1f}x"),
             ("fixed_ms", "fixed-θ ms", "{:.1f}"), ("x_fixed", "vs fixed", "{:.2f}"),
             ("bound_ms", "bound ms", "{:.1f}"), ("bound_frac", "bound/fused", "{:.2f}"),
             ("loop_saved_B", "loop B/elem", "{:.1f}"), ("fused_saved_B", "fused B/elem", "{:.1f}")]
    if res["rules"]:
        out += ["", f"Firing rules at T = {res['rules'][0]['T']} (rectangular surrogate)",
                common.fmt_table(res["rules"], rcols), guard_line(res["rules"])]
    for note in res["notes"].values():
        out.append(f"note: {note}")
    return "\n".join(out)


def main(argv=None) -> None:
    common.suite_main(__doc__, run, report, argv)

if __name__ == "__main__":
    main()
