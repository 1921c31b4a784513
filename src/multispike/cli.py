"""The ``multispike`` command: the only place where strings from the user become objects.

Each subcommand is a small function ``cmd_NAME(args) -> int``. Every
:class:`~multispike.errors.MultispikeError` becomes one line on stderr and exit code 2; a
warning becomes one line ``multispike: warning: ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence

from multispike.errors import MultispikeError


# -- neurons: the firing rules at work on a fixed input -------------------------------------------
def neuron_table(timesteps: int = 8) -> list[dict]:
    """Drive one neuron per constant input current and summarise what each rule emits.

    Input: ``x[t] = c`` for 41 currents c from −2 to 2, for ``timesteps`` steps, through PLIF
    (MT-SNN defaults) and LIF (Ternary Spike defaults) neurons with each firing rule.
    Returns one row per (neuron, rule): the spike-value histogram, spikes per neuron-step,
    and the entropy of the per-neuron output codes (how many distinct inputs it can tell apart).
    """
    import torch

    from multispike.monitor import record_activity
    from multispike.neurons import LIFNode, PLIFNode

    currents = torch.linspace(-2.0, 2.0, 41)
    x = currents.expand(timesteps, -1).contiguous()  # [T, B=41]
    rows = []
    for node_cls in (PLIFNode, LIFNode):
        for firing in ("binary", "mt", "ternary", "ternary-mt"):
            node = node_cls(firing=firing)
            with record_activity(node) as mon, torch.no_grad():
                out = node(x)  # [T, 41]
            (stats,) = mon.summary()
            codes = {tuple(col.tolist()) for col in out.T}  # distinct output trains
            rows.append(
                {
                    "neuron": node.dynamics,
                    "firing": firing,
                    "values": {str(k): round(v, 4) for k, v in stats["value_fractions"].items()},
                    "spikes_per_step": round(stats["rate"], 4),
                    "distinct_codes": len(codes),
                    "code_bits": round(float(torch.log2(torch.tensor(float(len(codes))))), 3),
                }
            )
    return rows


def cmd_neurons(args: argparse.Namespace) -> int:
    if args.timesteps < 1:
        raise MultispikeError(f"--timesteps must be >= 1, got {args.timesteps}")
    rows = neuron_table(args.timesteps)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"41 neurons, each fed one constant current in [-2, 2] for T = {args.timesteps} steps.\n"
        "values: fraction of neuron-steps emitting each spike value; distinct codes: how many\n"
        "different spike trains the 41 inputs produce (more codes = less information lost).\n"
    )
    print(f"{'neuron':<7}{'firing':<12}{'spikes/step':>12}{'codes':>7}{'bits':>7}   values")
    for r in rows:
        vals = " ".join(f"{k}:{v:.2f}" for k, v in r["values"].items())
        print(
            f"{r['neuron']:<7}{r['firing']:<12}{r['spikes_per_step']:>12.3f}"
            f"{r['distinct_codes']:>7}{r['code_bits']:>7.2f}   {vals}"
        )
    print(
        "\nWhat it shows: binary neurons map every negative current to silence and few positive\n"
        "ones apart; MT planes (MT-SNN Eq 10-11) and ternary spikes (Ternary Spike Eq 8) tell\n"
        "more inputs apart at the same T, and ternary-MT (both combined) the most."
    )
    return 0


# -- train -----------------------------------------------------------------------------------------
def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise MultispikeError(f"--seeds takes integers like 0,1,2; got {text!r}") from None
    if not seeds:
        raise MultispikeError("--seeds is empty; give e.g. --seeds 0,1,2")
    return seeds


def _options(pairs: list[str]) -> dict:
    """``key=value`` pairs of ``--option``; values parsed as JSON where they parse."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MultispikeError(f"--option takes key=value, got {pair!r}")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


def train_overrides(args: argparse.Namespace) -> dict:
    """The flags the user gave, as :class:`~multispike.engine.TrainConfig` overrides."""
    model_options = _options(args.option)
    if args.deltas is not None:
        try:
            model_options["deltas"] = [float(d) for d in args.deltas.split(",")]
        except ValueError:
            raise MultispikeError(f"--deltas takes numbers like -0.5,0.5; got {args.deltas!r}")\
                from None
    if args.learn_amplitude:
        model_options["learn_amplitude"] = True
    return {
        "dataset": args.dataset, "model": args.model, "data_dir": args.data_dir,
        "timesteps": args.timesteps, "firing": args.firing, "neuron": args.neuron,
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "weight_decay": args.weight_decay, "schedule": args.schedule, "seed": args.seed,
        "augment": args.augment, "out": args.out, "resume": args.resume or None,
        "device": args.device, "amp": args.amp, "compile": args.compile,
        "num_workers": args.workers,
        "sync_bn": args.sync_bn or None, "download": args.download or None,
        "progress": False if args.no_progress else None,
        "model_options": model_options or None,
    }


def cmd_train(args: argparse.Namespace) -> int:
    import statistics
    from pathlib import Path

    from multispike.engine import resolve_config, resume_config, train_model

    overrides = train_overrides(args)

    def config(run: dict):
        # --resume needs only --out: the run's config.json holds the rest
        if args.resume and run.get("out"):
            return resume_config(run["out"], args.recipe, run)
        return resolve_config(args.recipe, run)

    if args.seeds is None:
        result = train_model(config(overrides))
        print(f"best test accuracy {result['best_accuracy']:.4f}"
              + (f"; checkpoints in {result['out']}" if result["out"] else ""))
        return 0
    seeds = _seeds(args.seeds)
    accs = []
    for seed in seeds:
        run = dict(overrides, seed=seed)
        if overrides["out"]:
            run["out"] = str(Path(overrides["out"]) / f"seed{seed}")
        result = train_model(config(run))
        accs.append(result["best_accuracy"])
        print(f"seed {seed}: best test accuracy {accs[-1]:.4f}")
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"{len(seeds)} seeds: {100 * statistics.fmean(accs):.2f} ± {100 * std:.2f} %")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from multispike.engine import evaluate_model, load_model, parse_timesteps
    from multispike.engine.config import check_compile_mode

    timesteps = parse_timesteps(args.timesteps)
    compile_mode = check_compile_mode(args.compile or "off")
    model, ckpt = load_model(args.checkpoint)
    dataset = args.dataset or ckpt.get("config", {}).get("dataset") or "digits"
    data_dir = args.data_dir or ckpt.get("config", {}).get("data_dir")
    rows = evaluate_model(model, dataset, timesteps, data_dir=data_dir,
                          batch_size=args.batch_size, device=args.device,
                          compile=compile_mode)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{ckpt['model_args']['name']} on {dataset} ({args.checkpoint})")
    print(f"{'T':>4}{'accuracy':>10}{'loss':>9}{'rate':>8}")
    for r in rows:
        print(f"{r['timesteps']:>4}{r['accuracy']:>10.4f}{r['loss']:>9.4f}"
              f"{r['mean_firing_rate']:>8.4f}")
    print("\nfiring rate per layer (spikes per neuron per step; -1 and MT planes count):")
    for layer, rate in rows[-1]["firing_rates"].items():
        print(f"  {layer:<40}{rate:.4f}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from multispike.engine.demo import plot_demo, run_demo

    seeds = _seeds(args.seeds)
    rows = run_demo(seeds=seeds, epochs=args.epochs, progress=not args.json)
    plot = plot_demo(rows, Path(args.out) / "accuracy_vs_T.png")
    (Path(args.out) / "demo.json").write_text(json.dumps(rows, indent=2))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"\nscikit-learn digits (1,437 train / 360 test 8x8 images), {args.epochs} epochs, "
          f"seeds {','.join(map(str, seeds))}: best test accuracy, mean ± std\n")
    print(f"{'firing':<20}{'T':>3}{'accuracy (%)':>18}")
    for r in rows:
        print(f"{r['firing']:<20}{r['timesteps']:>3}"
              f"{100 * r['accuracy']:>12.2f} ± {100 * r['std']:.2f}")
    print(f"\nplot: {plot}\n")
    print(demo_reading(rows))
    return 0


def demo_reading(rows: list[dict]) -> str:
    """A plain-words reading of the demo table, computed from the numbers themselves."""
    acc = {(r["firing"], r["timesteps"]): r for r in rows}
    lines = []
    for t in sorted({r["timesteps"] for r in rows if r["firing"] != "ann"}):
        base = acc.get(("binary", t))
        if base is None:
            continue
        for label in ("mt", "ternary", "trainable-ternary"):
            r = acc.get((label, t))
            if r is None:
                continue
            diff = 100 * (r["accuracy"] - base["accuracy"])
            noise = 100 * max(r["std"], base["std"])
            verdict = ("within the seed-to-seed spread" if abs(diff) <= noise
                       else "better" if diff > 0 else "worse")
            lines.append(f"T={t}: {label} vs binary {diff:+.2f} points ({verdict}, "
                         f"spread {noise:.2f})")
    ann = acc.get(("ann", 1))
    if ann:
        lines.append(f"ANN twin: {100 * ann['accuracy']:.2f}%.")
    return "What it shows:\n  " + "\n  ".join(lines)


# -- entry point ---------------------------------------------------------------------------------
def _add_compile_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile", nargs="?", const="default", metavar="MODE",
                   help="run the model through torch.compile: default (MODE left out), "
                        "reduce-overhead (CUDA graphs) or max-autotune; off (default) runs it "
                        "eagerly")


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", help="a recipe name (see --list-recipes) or a .toml path")
    p.add_argument("--dataset", help="digits, cifar10, cifar100, cifar10-dvs, imagenet")
    p.add_argument("--model", help="registry key (default: the dataset's default model)")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--download", action="store_true", help="download missing data (online)")
    p.add_argument("--timesteps", type=int, help="time steps T")
    p.add_argument("--firing", help="binary, mt, ternary, ternary-mt or ann (ANN twin)")
    p.add_argument("--neuron", help="neuron dynamics: plif, lif or if")
    p.add_argument("--deltas", help="MT deltas, e.g. -0.5,0.5")
    p.add_argument("--learn-amplitude", action="store_true", help="trainable amplitude a")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other model option, e.g. --option norm=tdbn (repeatable)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", help="cosine, step or constant")
    p.add_argument("--augment", help="augmentation name of the dataset")
    p.add_argument("--seed", type=int)
    p.add_argument("--seeds", help="run once per seed, e.g. 0,1,2, and report mean ± std")
    p.add_argument("--out", help="folder for last.pt, best.pt, metrics.csv, config.json")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", help="mixed precision: auto, off, bf16, fp16")
    _add_compile_flag(p)
    p.add_argument("--workers", type=int, help="data loader worker processes")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multispike",
        description="Spiking neural networks whose spikes carry more than one bit.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="compare neuron designs at T = 1, 2 on the digits")
    p.add_argument("--seeds", default="0,1,2", help="seeds (default 0,1,2)")
    p.add_argument("--epochs", type=int, default=12, help="epochs per run (default 12)")
    p.add_argument("--out", default="runs/demo", help="folder for the plot and JSON")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model (see --recipe)")
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="accuracy at several T and firing rates of a checkpoint")
    p.add_argument("--checkpoint", required=True, help="a last.pt or best.pt file")
    p.add_argument("--timesteps", default="1,2,4", help="e.g. 1,2,4 (default)")
    p.add_argument("--dataset", help="default: the dataset the checkpoint was trained on")
    p.add_argument("--data-dir")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    _add_compile_flag(p)
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("recipes", help="list the recipes (one per row of the papers' tables)")
    p.set_defaults(func=cmd_recipes)

    from multispike.analysis.commands import register as register_analysis

    register_analysis(sub)

    from multispike.deploy.commands import register as register_deploy

    register_deploy(sub)

    p = sub.add_parser("neurons", help="show binary, MT and ternary neurons on a fixed input")
    p.add_argument("--timesteps", type=int, default=8, help="time steps T (default 8)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_neurons)
    return parser


def cmd_recipes(args: argparse.Namespace) -> int:
    from multispike.engine import list_recipes, load_recipe

    for name in list_recipes():
        r = load_recipe(name)
        print(f"{name:<42}{r.get('model', ''):<11}{r.get('dataset', ''):<13}"
              f"T={r.get('timesteps', '')}")
    return 0


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"multispike: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    formatwarning, warnings.formatwarning = warnings.formatwarning, _warning_line
    try:
        return int(args.func(args) or 0)
    except MultispikeError as e:
        print(f"multispike: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("multispike: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `multispike energy --json | head`: the reader left early
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
