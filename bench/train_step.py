"""Whole training steps of vgg9 and resnet20m: the SNN at T against its ANN twin.

For each model, side by side (median ms per step: zero_grad, forward, cross-entropy on the
time-averaged output, backward, SGD step):

- ``snn``: the SNN at T with fused neurons (``backend="fused"``), ``snn_compact`` the same
  inside ``multispike.kernels.compact_spikes()`` (saved spikes kept as int8), and
  ``snn_loop`` with the reference loop (``backend="torch"``), batch B;
- ``ann``: the ANN twin (``firing="ann"``: same architecture, ReLU) at batch B, and
  ``ann_bt`` at batch B × T.

Ratios: ``snn / (T × ann)`` (1.0 is ideal: the convolutions are the same work) and peak
training memory ``snn / ann_bt``. Peak memory is measured by :class:`common.PeakMemory`: the
most bytes of tensors alive at once during one step (activations, gradients, temporaries;
parameters and optimizer state that exist before the step are not counted).

Needs :mod:`multispike.models` (``create(name, num_classes=..., timesteps=..., firing=...)``);
prints a skip message when it does not import.

Run: ``python bench/train_step.py [--quick] [--json]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

MODELS = ("vgg9", "resnet20m")


def load_models():
    """``multispike.models.create`` or the reason it is unavailable."""
    try:
        from multispike.models import create
    except ImportError as e:  # a partial checkout: say so instead of failing the whole run
        return None, f"multispike.models does not import ({e})"
    return create, None


def set_backend(model, backend: str) -> int:
    from multispike.neurons import Neuron

    n = 0
    for m in model.modules():
        if isinstance(m, Neuron):
            m.backend = backend
            n += 1
    return n


def neuron_summary(model) -> str:
    from multispike.neurons import Neuron

    kinds = sorted({f"{type(m).__name__}({m.rule.name}, detach_reset={m.detach_reset})"
                    for m in model.modules() if isinstance(m, Neuron)})
    return ", ".join(kinds)


def make_step(model, x, y, lr=0.01, compact=False, amp_dtype=None):
    """One SGD training step as a closure (``step.opt`` is its optimizer); ``amp_dtype``: run
    the forward under ``torch.autocast`` in that dtype, as ``multispike train`` does on GPUs."""
    import contextlib

    import torch
    import torch.nn.functional as F

    from multispike.kernels import compact_spikes

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=amp_dtype)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(), compact_spikes() if compact else contextlib.nullcontext():
            out = model(x)
            logits = out.mean(0) if out.dim() == 3 else out
            loss = F.cross_entropy(logits, y)
        loss.backward()
        opt.step()

    step.opt = opt
    return step


def peak_bytes(step) -> int:
    step()  # optimizer state exists before the measured step
    with common.PeakMemory() as mem:
        step()
    return mem.peak


def run(quick: bool = False, device: str = "cpu", models=MODELS) -> dict:
    import torch

    create, why = load_models()
    if create is None:
        return {"name": "train_step", "skipped": why, "rows": []}
    dev = torch.device(device)
    B, T = (4, 2) if quick else (32, 4)
    rounds = 2 if quick else 7
    rows = []
    for name in models:
        print(f"[train_step: {name}, B={B}, T={T} ...]", file=sys.stderr, flush=True)
        torch.manual_seed(0)
        snn = create(name, num_classes=10, timesteps=T).to(dev)
        snn_loop = create(name, num_classes=10, timesteps=T).to(dev)
        snn_loop.load_state_dict(snn.state_dict())
        n_neurons = set_backend(snn, "fused")
        set_backend(snn_loop, "torch")
        ann = create(name, num_classes=10, firing="ann").to(dev)
        x = torch.randn(B, 3, 32, 32, device=dev)
        y = torch.randint(0, 10, (B,), device=dev)
        xb = torch.randn(B * T, 3, 32, 32, device=dev)
        yb = torch.randint(0, 10, (B * T,), device=dev)
        steps = {
            "snn": make_step(snn, x, y),
            "snn_compact": make_step(snn, x, y, compact=True),
            "snn_loop": make_step(snn_loop, x, y),
            "ann": make_step(ann, x, y),
            "ann_bt": make_step(ann, xb, yb),
        }
        res = common.side_by_side(steps, rounds=rounds)
        row = {"model": name, "B": B, "T": T, "neurons": neuron_summary(snn),
               "neuron_layers": n_neurons}
        for k, r in res.items():
            row[f"{k}_ms"] = r["ms"]
        # per-round ratios (common.ratio), and the same from each competitor's fastest round
        # (other processes only ever add time: the minimum is the least disturbed figure)
        for k, tag in (("snn", "snn"), ("snn_compact", "compact"), ("snn_loop", "loop")):
            row[f"{tag}_vs_Tann"] = common.ratio(res, k, "ann", scale=T)
            row[f"{tag}_vs_Tann_min"] = res[k]["min_ms"] / (T * res["ann"]["min_ms"])
        row["snn_vs_ann_bt"] = common.ratio(res, "snn", "ann_bt")
        row["compact_vs_ann_bt"] = common.ratio(res, "snn_compact", "ann_bt")
        row["ann_bt_vs_Tann"] = common.ratio(res, "ann_bt", "ann", scale=T)
        for k in ("snn", "snn_compact", "snn_loop", "ann_bt"):
            row[f"{k}_peak_MB"] = peak_bytes(steps[k]) / 2**20
        row["mem_snn_vs_ann_bt"] = row["snn_peak_MB"] / row["ann_bt_peak_MB"]
        row["mem_compact_vs_ann_bt"] = row["snn_compact_peak_MB"] / row["ann_bt_peak_MB"]
        row["mem_loop_vs_ann_bt"] = row["snn_loop_peak_MB"] / row["ann_bt_peak_MB"]
        rows.append(row)
    return {"name": "train_step", "quick": quick, "device": device, "rows": rows}


def report(res: dict) -> str:
    if res.get("skipped"):
        return f"train_step: skipped: {res['skipped']}"
    cols = [("model", "model", "{}"), ("B", "B", "{}"), ("T", "T", "{}"),
            ("snn_ms", "SNN fused ms", "{:.0f}"), ("snn_compact_ms", "+compact ms", "{:.0f}"),
            ("snn_loop_ms", "SNN loop ms", "{:.0f}"),
            ("ann_ms", "ANN(B) ms", "{:.0f}"), ("ann_bt_ms", "ANN(BxT) ms", "{:.0f}"),
            ("snn_vs_Tann", "fused/(T*ANN)", "{:.2f}"),
            ("compact_vs_Tann", "compact/(T*ANN)", "{:.2f}"),
            ("loop_vs_Tann", "loop/(T*ANN)", "{:.2f}"),
            ("snn_vs_ann_bt", "fused/ANN(BxT)", "{:.2f}"),
            ("compact_vs_ann_bt", "compact/ANN(BxT)", "{:.2f}")]
    best = [("model", "model", "{}"), ("snn_vs_Tann_min", "fused/(T*ANN)", "{:.2f}"),
            ("compact_vs_Tann_min", "compact/(T*ANN)", "{:.2f}"),
            ("loop_vs_Tann_min", "loop/(T*ANN)", "{:.2f}"),
            ("ann_bt_vs_Tann", "ANN(BxT)/(T*ANN) (median)", "{:.2f}")]
    mem = [("model", "model", "{}"), ("snn_peak_MB", "SNN fused MB", "{:.0f}"),
           ("snn_compact_peak_MB", "+compact MB", "{:.0f}"),
           ("snn_loop_peak_MB", "SNN loop MB", "{:.0f}"),
           ("ann_bt_peak_MB", "ANN(BxT) MB", "{:.0f}"),
           ("mem_snn_vs_ann_bt", "fused/ANN", "{:.2f}"),
           ("mem_compact_vs_ann_bt", "compact/ANN", "{:.2f}"),
           ("mem_loop_vs_ann_bt", "loop/ANN", "{:.2f}")]
    out = [f"Training step ({res['device']}), median ms per step; ratios: median of per-round "
           "ratios",
           common.fmt_table(res["rows"], cols),
           "", "The same ratios from each competitor's fastest round",
           common.fmt_table(res["rows"], best),
           "", "Peak training memory (tensors alive at once during one step)",
           common.fmt_table(res["rows"], mem)]
    for r in res["rows"]:
        out.append(f"{r['model']}: {r['neuron_layers']} neuron layers: {r['neurons']}")
    return "\n".join(out)


def main(argv=None) -> None:
    common.suite_main(__doc__, run, report, argv, quick_help="small batch, T = 2, few rounds",
                      extra={"--models": {"nargs": "+", "default": list(MODELS)}})

if __name__ == "__main__":
    main()
