"""Inference throughput: the neuron layer forward alone, and whole models (no gradient).

1. Neuron layer ``[T, B, C, H, W]`` forward under ``torch.no_grad()``: multispike's loop,
   the fused kernel (which saves nothing without a gradient), SpikingJelly, snnTorch;
   millions of neuron-steps per second.
2. Models (when :mod:`multispike.models` imports): images per second of vgg9 and resnet20m,
   SNN at T with fused neurons and with the loop, and the ANN twin, batch B.

Run: ``python bench/inference.py [--quick] [--json]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import neuron_layer  # noqa: E402
import train_step  # noqa: E402


def run(quick: bool = False, device: str = "cpu") -> dict:
    import torch

    dev = torch.device(device)
    B, C, H, W = (4, 32, 16, 16) if quick else (32, 128, 32, 32)
    T = 4
    rounds = 3 if quick else 15
    comps, notes = neuron_layer._competitors((B, C, H, W), dev)
    x = torch.randn(T, B, C, H, W, device=dev)

    def fwd(f):
        def call():
            with torch.no_grad():
                f(x)
        return call

    res = neuron_layer._timed({k: fwd(f) for k, f in comps.items()}, rounds, dev)
    n = x.numel()
    layer = [{"impl": k, "ms": r["ms"], "Mneuron_steps_per_s": n / r["ms"] / 1e3,
              "x_fused": common.ratio(res, k, "fused")} for k, r in res.items()]
    out = {"name": "inference", "quick": quick, "device": device, "shape": [T, B, C, H, W],
           "layer": layer, "models": [], "notes": notes}

    create, why = train_step.load_models()
    if create is None:
        out["models_skipped"] = why
        return out
    Bm = 4 if quick else 32
    for name in train_step.MODELS:
        torch.manual_seed(0)
        snn = create(name, num_classes=10, timesteps=T).to(dev).eval()
        loop = create(name, num_classes=10, timesteps=T).to(dev).eval()
        loop.load_state_dict(snn.state_dict())
        train_step.set_backend(snn, "fused")
        train_step.set_backend(loop, "torch")
        ann = create(name, num_classes=10, firing="ann").to(dev).eval()
        xi = torch.randn(Bm, 3, 32, 32, device=dev)
        fns = {"snn": fwd_model(snn, xi), "snn_loop": fwd_model(loop, xi),
               "ann": fwd_model(ann, xi)}
        r = neuron_layer._timed(fns, 2 if quick else 5, dev)
        row = {"model": name, "B": Bm, "T": T}
        for k, v in r.items():
            row[f"{k}_img_s"] = Bm / v["ms"] * 1e3
        # throughput ratios = inverse time ratios, per round
        row["snn_vs_loop"] = common.ratio(r, "snn_loop", "snn")
        row["snn_vs_ann"] = common.ratio(r, "ann", "snn")
        out["models"].append(row)
    return out


def fwd_model(model, x):
    import torch

    def call():
        with torch.no_grad():
            model(x)

    return call


def report(res: dict) -> str:
    T, *rest = res["shape"]
    cols = [("impl", "implementation", "{}"), ("ms", "ms", "{:.1f}"),
            ("Mneuron_steps_per_s", "M neuron-steps/s", "{:.0f}"),
            ("x_fused", "time / fused", "{:.1f}x")]
    out = [f"Neuron layer forward, no gradient, [T={T}, {', '.join(map(str, rest))}] "
           f"({res['device']})", common.fmt_table(res["layer"], cols)]
    if res.get("models_skipped"):
        out.append(f"models: skipped: {res['models_skipped']}")
    elif res["models"]:
        mcols = [("model", "model", "{}"), ("B", "B", "{}"), ("T", "T", "{}"),
                 ("snn_img_s", "SNN fused img/s", "{:.1f}"),
                 ("snn_loop_img_s", "SNN loop img/s", "{:.1f}"),
                 ("ann_img_s", "ANN img/s", "{:.1f}"), ("snn_vs_loop", "fused/loop", "{:.2f}"),
                 ("snn_vs_ann", "SNN/ANN", "{:.2f}")]
        out += ["", "Model inference throughput (images per second)",
                common.fmt_table(res["models"], mcols)]
    for note in res["notes"].values():
        out.append(f"note: {note}")
    return "\n".join(out)


def main(argv=None) -> None:
    common.suite_main(__doc__, run, report, argv)

if __name__ == "__main__":
    main()
