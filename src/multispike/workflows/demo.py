"""The demo: neuron designs compared at few time steps on scikit-learn's bundled digits.

Trains the small digits model with binary, multi-threshold and ternary neurons, ternary
neurons with a learned amplitude ``a`` (Ternary Spike Eq 13-14, the paper's "trainable ternary
spike"), integer spikes with ``D = 3`` (SpikeYOLO's I-LIF rule: the same four spike values,
two bits, as MT with its three thresholds) and MT neurons whose thresholds are learned
(``learn_thresholds=True``), at T = 1 and 2, and its ANN twin, over several seeds; returns
one row per (design, T) with the mean and standard deviation of the best test accuracy, the
bits a spike can carry and the spikes per neuron and step it fired, draws accuracy against T,
and reads the table in plain words (:func:`demo_reading`).

Each row names its design in ``label`` and its firing rule in ``firing`` (the value
``TrainConfig.firing`` takes): the design "ternary + learned a" fires ``ternary``, "integer
D=3" fires ``integer`` with ``levels=3``, "mt + learned thresholds" fires ``mt``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from multispike.analysis._io import new_figure, save_figure
from multispike.analysis.figures import legend_outside
from multispike.analysis.information import spike_bits
from multispike.engine.config import TrainConfig
from multispike.engine.evaluate import evaluate_model
from multispike.engine.train import train_model

#: (label, firing rule, model options) of each neuron design the demo compares; the label names
#: the design, the firing rule is a value of ``TrainConfig.firing``
DESIGNS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ann", "ann", {}),
    ("binary", "binary", {}),
    ("mt", "mt", {}),
    ("ternary", "ternary", {}),
    ("ternary + learned a", "ternary", {"learn_amplitude": True}),
    # SpikeYOLO's integer spikes with D = 3: values {0, 1, 2, 3}, as MT with three thresholds
    ("integer D=3", "integer", {"levels": 3}),
    ("mt + learned thresholds", "mt", {"learn_thresholds": True}),
)

#: the design each new design is read against besides binary: the one with the same spike
#: values (integer D=3 and MT both take 4 values) or the same rule with fixed thresholds
REFERENCES: dict[str, str] = {"integer D=3": "mt", "mt + learned thresholds": "mt"}


def run_demo(
    *,
    timesteps: Sequence[int] = (1, 2),
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 12,
    batch_size: int = 64,
    lr: float = 0.1,
    progress: bool = True,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Train every design at every T for every seed; one row per (design, T): ``label`` (the
    design), ``firing`` (its firing rule), ``options`` (its model options), ``timesteps``,
    ``accuracy`` and ``std`` (mean and standard deviation over the seeds), ``seeds``,
    ``accuracies``, ``threads``, ``spike_bits`` (``log2`` of the values a spike takes; None
    for the ANN) and ``rate`` (mean over the seeds of the spikes per neuron per time step on
    the test images, every MT plane and every unit of an integer spike counted, as synaptic
    operations are billed; measured on the model after its last epoch; 0 for the ANN; None
    where the trainer returned no ``model``).

    ``device``: where every run trains (``auto``, ``cpu``, ``cuda`` or ``cuda:N``).

    The ANN twin has no time steps: it is trained once per seed and reported at T = 1.

    On the CPU the demo trains with one thread unless ``MULTISPIKE_THREADS`` or
    ``OMP_NUM_THREADS`` says otherwise: floating-point sums depend on the thread count, and
    one thread makes the table the same on every machine (the tiny digits model gains little
    from more). Each row records the thread count in ``threads``.
    """
    import os
    import sys

    pinned = not (os.environ.get("MULTISPIKE_THREADS") or os.environ.get("OMP_NUM_THREADS"))
    if pinned:
        os.environ["MULTISPIKE_THREADS"] = "1"
    try:
        return _run(timesteps, seeds, epochs, batch_size, lr, progress, device, sys)
    finally:
        if pinned:
            os.environ.pop("MULTISPIKE_THREADS", None)


def _run(timesteps, seeds, epochs, batch_size, lr, progress, device, sys) -> list[dict]:
    from tqdm.auto import tqdm

    jobs = []
    for label, firing, options in DESIGNS:
        for t in timesteps if firing != "ann" else (1,):
            jobs.append((label, firing, options, t))
    rows, done = [], 0
    total = len(jobs) * len(seeds)
    tty = sys.stderr.isatty()  # elsewhere (a log, a pipe): one plain line per run, no \r
    bar = tqdm(total=total, desc="demo", disable=not (progress and tty), dynamic_ncols=True)
    for label, firing, options, t in jobs:
        accs, rates, used = [], [], set()
        for seed in seeds:
            cfg = TrainConfig(dataset="digits", firing=firing, timesteps=t, epochs=epochs,
                              batch_size=batch_size, lr=lr, seed=seed, progress=False,
                              model_options=dict(options), num_workers=0,
                              device=device)
            def epoch_done(row, label=label, t=t, seed=seed):  # progress inside each run
                bar.set_postfix(design=label, T=t, seed=seed,
                                epoch=f"{row['epoch']}/{epochs}",
                                test=f"{row['test_accuracy']:.3f}")
                if progress and not tty:
                    print(f"demo: {label}, T={t}, seed {seed}: epoch {row['epoch']}/{epochs} "
                          f"test accuracy {row['test_accuracy']:.3f}", file=sys.stderr,
                          flush=True)

            result = train_model(cfg, on_epoch=epoch_done)
            accs.append(result["best_accuracy"])
            if firing != "ann" and result.get("model") is not None:
                # the whole test set (360 images): two batches of 256
                (measured,) = evaluate_model(result["model"], "digits", [t], device=device,
                                             max_batches_for_rates=2)
                rates.append(measured["mean_firing_rate"])
            used.add(result.get("threads"))
            bar.update(1)
            done += 1
            bar.set_postfix(design=label, T=t, acc=f"{accs[-1]:.3f}")
            if progress and not tty:
                print(f"demo: run {done}/{total}: {label}, T={t}, seed {seed}: best test "
                      f"accuracy {accs[-1]:.3f}", file=sys.stderr, flush=True)
        rows.append({
            "label": label,
            "firing": firing,
            "options": dict(options),
            "timesteps": t,
            "accuracy": statistics.fmean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "seeds": list(seeds),
            "accuracies": accs,
            "spike_bits": spike_bits(firing, levels=options.get("levels")),
            "rate": (statistics.fmean(rates) if rates else
                     0.0 if firing == "ann" else None),  # None: the trainer gave no model
            "threads": sorted(used, key=str)[0] if len(used) == 1 else sorted(used, key=str),
        })
    bar.close()
    return rows


def plot_demo(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Accuracy (mean ± std over seeds) against T, one line per design; the ANN as a line
    (:func:`demo_figure`), written as a PNG."""
    return save_figure(demo_figure(rows), path)


def demo_figure(rows: list[dict[str, Any]]) -> Figure:
    """The demo's figure: its legend beside the axes (it covered data points inside them), the
    figure laid out so that nothing is cut off
    (:func:`~multispike.analysis.figures.layout_problems` finds nothing).

    >>> from multispike.analysis.figures import layout_problems
    >>> rows = [{"label": "binary", "timesteps": t, "accuracy": 0.8 + 0.03 * t, "std": 0.01}
    ...         for t in (1, 2)] + [{"label": "ann", "timesteps": 1, "accuracy": 0.9, "std": 0}]
    >>> layout_problems(demo_figure(rows))
    []
    """
    fig = new_figure(7.5, 3.8)
    ax = fig.subplots()
    all_t = sorted({r["timesteps"] for r in rows if r["label"] != "ann"})
    spiking = [d[0] for d in DESIGNS if d[0] != "ann"]
    for label, *_ in DESIGNS:
        pts = sorted((r["timesteps"], r["accuracy"], r["std"]) for r in rows
                     if r["label"] == label)
        if not pts:
            continue
        if label == "ann":
            ax.axhline(100 * pts[0][1], color="k", ls="--", lw=1, label="ANN twin")
            continue
        ts, acc, std = zip(*pts, strict=True)
        # each design a little to the side, so that the error bars do not sit on each other
        shift = 0.06 * (spiking.index(label) - (len(spiking) - 1) / 2)
        ax.errorbar([t + shift for t in ts], [100 * a for a in acc],
                    yerr=[100 * s for s in std], marker="o", capsize=3, label=label)
    ax.set_xticks(all_t)
    ax.set_xlabel("time steps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digits: accuracy against time steps\n"
                 "error bars: standard deviation over seeds", fontsize=10)
    legend_outside(ax)
    ax.grid(alpha=0.3)
    return fig


def demo_reading(rows: list[dict[str, Any]]) -> str:
    """A plain-words reading of the demo table, computed from the numbers themselves.

    >>> rows = [{"label": "binary", "timesteps": 1, "accuracy": 0.9, "std": 0.01},
    ...         {"label": "mt", "timesteps": 1, "accuracy": 0.95, "std": 0.01},
    ...         {"label": "ternary + learned a", "timesteps": 1, "accuracy": 0.905, "std": 0.01},
    ...         {"label": "ann", "timesteps": 1, "accuracy": 0.96, "std": 0.0}]
    >>> print(demo_reading(rows))
    What it shows:
      T=1: mt vs binary +5.00 points (better, spread 1.00)
      T=1: ternary + learned a vs binary +0.50 points (within the seed-to-seed spread, spread 1.00)
      ANN twin: 96.00%.

    The new designs are read against binary and against the design they compare with
    (:data:`REFERENCES`), and rows with ``spike_bits`` and ``rate`` give a cost line:

    >>> rows = [{"label": "binary", "timesteps": 1, "accuracy": 0.9, "std": 0.01,
    ...          "spike_bits": 1.0, "rate": 0.2},
    ...         {"label": "mt", "timesteps": 1, "accuracy": 0.95, "std": 0.01,
    ...          "spike_bits": 2.0, "rate": 0.3},
    ...         {"label": "integer D=3", "timesteps": 1, "accuracy": 0.93, "std": 0.01,
    ...          "spike_bits": 2.0, "rate": 0.4}]
    >>> print(demo_reading(rows))  # doctest: +NORMALIZE_WHITESPACE
    What it shows:
      T=1: mt vs binary +5.00 points (better, spread 1.00)
      T=1: integer D=3 vs binary +3.00 points (better, spread 1.00)
      T=1: integer D=3 vs mt -2.00 points (worse, spread 1.00)
      Cost: bits per spike / spikes per neuron and step (SOPs grow with the second): binary
      T=1 1.00 / 0.200; mt T=1 2.00 / 0.300; integer D=3 T=1 2.00 / 0.400.
    """
    acc = {(r["label"], r["timesteps"]): r for r in rows}
    lines = []

    def versus(r: dict[str, Any], ref: str, base: dict[str, Any], t: int) -> str:
        diff = 100 * (r["accuracy"] - base["accuracy"])
        noise = 100 * max(r["std"], base["std"])
        verdict = ("within the seed-to-seed spread" if abs(diff) <= noise
                   else "better" if diff > 0 else "worse")
        return (f"T={t}: {r['label']} vs {ref} {diff:+.2f} points ({verdict}, "
                f"spread {noise:.2f})")

    for t in sorted({r["timesteps"] for r in rows if r["label"] != "ann"}):
        base = acc.get(("binary", t))
        if base is None:
            continue
        for label, _, _ in DESIGNS:
            r = acc.get((label, t))
            if label in ("ann", "binary") or r is None:
                continue
            lines.append(versus(r, "binary", base, t))
            ref = acc.get((REFERENCES.get(label, ""), t))
            if ref is not None:
                lines.append(versus(r, ref["label"], ref, t))
    ann = acc.get(("ann", 1))
    if ann:
        lines.append(f"ANN twin: {100 * ann['accuracy']:.2f}%.")
    cost = [r for r in rows if r.get("spike_bits") is not None and r.get("rate") is not None]
    if cost:
        lines.append("Cost: bits per spike / spikes per neuron and step (SOPs grow with the "
                     "second): " + "; ".join(
                         f"{r['label']} T={r['timesteps']} {r['spike_bits']:.2f} / "
                         f"{r['rate']:.3f}" for r in cost) + ".")
    return "What it shows:\n  " + "\n  ".join(lines)
