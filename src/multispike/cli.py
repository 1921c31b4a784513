"""The ``multispike`` command: the only place where strings from the user become objects.

Each subcommand is a small function ``cmd_NAME(args) -> int``. Every
:class:`~multispike.errors.MultispikeError` becomes one line on stderr and exit code 2; a
warning becomes one line ``multispike: warning: ...``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from multispike.engine.config import parse_seeds
from multispike.engine.runlock import check_out_folder
from multispike.errors import ConfigError, MultispikeError


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
    import torch

    from multispike.engine.evaluate import machine_memory

    need = 41 * args.timesteps * 4 * 16  # input, membrane, spikes, records of 41 neurons
    if need > machine_memory(torch.device("cpu")):
        raise MultispikeError(f"--timesteps {args.timesteps} needs about {need / 2**30:,.0f} "
                              "GiB for 41 neurons, more than this machine has; lower it")
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
        "weight_decay": args.weight_decay, "momentum": args.momentum,
        "schedule": args.schedule, "seed": args.seed,
        "augment": args.augment, "out": args.out, "resume": args.resume or None,
        "device": args.device, "amp": args.amp, "compile": args.compile,
        "num_workers": args.workers, "val_split": args.val_split,
        "sync_bn": args.sync_bn or None, "download": args.download or None,
        "progress": False if args.no_progress else None,
        "model_options": model_options or None,
    }


def _check_train_memory(cfg) -> None:
    """Refuse (one line) a run whose one batch cannot fit in the device's memory."""
    from multispike.engine.evaluate import check_memory

    if cfg.timesteps * cfg.batch_size < 4096:  # cheap runs: no model to build twice
        return
    from multispike import data
    from multispike.engine.checkpoint import build_model
    from multispike.engine.train import model_args_for, pick_device

    spec = data.get_spec(cfg.dataset, **cfg.data_options)
    model = build_model(model_args_for(cfg, spec))
    check_memory(model, spec.input_shape, cfg.timesteps, cfg.batch_size,
                 pick_device(cfg.device), training=True)


def _check_resumable_file(out: str) -> None:
    """``--resume`` continues from last.pt only: say so if that file cannot be read."""
    from multispike.engine.evaluate import open_checkpoint

    last = Path(out) / "last.pt"
    if last.exists():
        open_checkpoint(last, fix=f"--resume continues only from last.pt, so the run in {out} "
                        "cannot be resumed: start a new run in another --out (its best.pt, "
                        "if readable, still serves eval and deploy)")


def _no_space(e: OSError, out: str | None) -> MultispikeError:
    where = out or (Path(e.filename).parent if e.filename else "the output folder")
    return MultispikeError(
        f"no space left on the device of {where} while writing a checkpoint; the previous "
        "last.pt is intact: free space, then continue with --resume")


def cmd_train(args: argparse.Namespace) -> int:
    import statistics

    from multispike.engine import resolve_config, resume_config, train_model

    check_out_folder(args.out)
    overrides = train_overrides(args)
    seeds = None if args.seeds is None else parse_seeds(args.seeds)

    def config(run: dict):
        # --resume needs only --out: the run's config.json holds the rest
        if args.resume and run.get("out"):
            _check_resumable_file(run["out"])
            cfg = resume_config(run["out"], args.recipe, run)
        else:
            cfg = resolve_config(args.recipe, run)
        _check_train_memory(cfg)
        return cfg

    def train(run: dict) -> dict:
        cfg = config(run)
        try:
            return train_model(cfg)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise _no_space(e, run.get("out")) from None
            raise

    if seeds is None:
        result = train(overrides)
        if result.get("rank", 0) != 0:  # under torchrun only rank 0 speaks
            return 0
        print(f"best test accuracy {result['best_accuracy']:.4f}"
              + (f"; checkpoints in {result['out']}" if result["out"] else ""))
    else:
        accs = []
        for seed in seeds:
            run = dict(overrides, seed=seed)
            if overrides["out"]:
                run["out"] = str(Path(overrides["out"]) / f"seed{seed}")
            result = train(run)
            accs.append(result["best_accuracy"])
            if result.get("rank", 0) == 0:
                print(f"seed {seed}: best test accuracy {accs[-1]:.4f}")
        if result.get("rank", 0) != 0:
            return 0
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{len(seeds)} seeds: {100 * statistics.fmean(accs):.2f} ± {100 * std:.2f} %")
    if not args.out:
        print("no --out given: no checkpoints were kept (give --out DIR to keep last.pt and "
              "best.pt)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from multispike import data
    from multispike.engine import evaluate_model, parse_timesteps
    from multispike.engine.config import check_compile_mode
    from multispike.engine.evaluate import check_memory, open_checkpoint
    from multispike.engine.train import pick_device

    timesteps = parse_timesteps(args.timesteps)
    compile_mode = check_compile_mode(args.compile or "off")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be an integer >= 1, got {args.batch_size}")
    device = pick_device(args.device)
    model, ckpt = open_checkpoint(args.checkpoint)
    dataset = args.dataset or ckpt.get("config", {}).get("dataset") or "digits"
    data_dir = args.data_dir or ckpt.get("config", {}).get("data_dir")
    spec = data.get_spec(dataset)
    check_memory(model, spec.input_shape, max(timesteps), args.batch_size, device,
                 training=False)
    rows = evaluate_model(model, dataset, timesteps, data_dir=data_dir,
                          batch_size=args.batch_size, device=args.device,
                          compile=compile_mode, progress=not args.no_progress)
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
    from multispike.engine.demo import plot_demo, run_demo
    from multispike.engine.train import pick_device

    check_out_folder(args.out)  # before anything is trained
    seeds = parse_seeds(args.seeds)
    if isinstance(args.epochs, bool) or args.epochs < 1:
        raise ConfigError(f"--epochs must be an integer >= 1, got {args.epochs}")
    pick_device(args.device)
    rows = run_demo(seeds=seeds, epochs=args.epochs, device=args.device,
                    progress=not (args.json or args.no_progress))
    plot = plot_demo(rows, Path(args.out) / "accuracy_vs_T.png")
    (Path(args.out) / "demo.json").write_text(json.dumps(rows, indent=2))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    threads = {str(r.get("threads")) for r in rows}
    print(f"\nscikit-learn digits (1,437 train / 360 test 8x8 images), {args.epochs} epochs, "
          f"seeds {','.join(map(str, seeds))}: best test accuracy over the epochs (the papers' "
          "convention: the best epoch is chosen on the test set), mean ± std; CPU threads "
          f"{', '.join(sorted(threads))} (results depend on the thread count; the demo pins "
          "one unless MULTISPIKE_THREADS says otherwise)\n")
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
    p.add_argument("--recipe", help="a recipe name (`multispike recipes` lists them) or a "
                   ".toml path")
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
    p.add_argument("--momentum", type=float, help="SGD momentum in [0, 1) (default 0.9)")
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
    p.add_argument("--val-split", type=float, metavar="FRACTION",
                   help="hold out this fraction of the training set and choose the best "
                   "epoch on it (default 0: the papers' convention, the best epoch on the "
                   "test set)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multispike",
        description="Spiking neural networks whose spikes carry more than one bit.",
    )
    parser.add_argument("--version", action="version",
                        version=f"multispike {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="compare neuron designs at T = 1, 2 on the digits")
    p.add_argument("--seeds", default="0,1,2", help="seeds (default 0,1,2)")
    p.add_argument("--epochs", type=int, default=12, help="epochs per run (default 12)")
    p.add_argument("--out", default="runs/demo", help="folder for the plot and JSON")
    p.add_argument("--device", default="auto",
                   help="where to train: auto (default: a GPU if any), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("recipes", help="list the recipes (one per row of the papers' tables), "
                       "or show one in full")
    p.add_argument("name", nargs="?", help="a recipe to show in full, with every setting")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("models", help="list the registered models and their defaults")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("datasets", help="list the datasets: classes, input shape, default model")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_datasets)

    from multispike.analysis.commands import register as register_analysis

    register_analysis(sub)

    from multispike.deploy.commands import register as register_deploy

    register_deploy(sub)

    from multispike.reproduce import register as register_reproduce

    register_reproduce(sub)

    p = sub.add_parser("neurons", help="show binary, MT and ternary neurons on a fixed input")
    p.add_argument("--timesteps", type=int, default=8, help="time steps T (default 8)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_neurons)
    return parser


def package_version() -> str:
    """The installed package's version (``multispike.__version__`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("multispike")
    except PackageNotFoundError:
        import multispike

        return str(getattr(multispike, "__version__", "unknown"))


def recipe_rows() -> list[dict]:
    """One row per shipped recipe: name, dataset, model, firing, T, epochs, lr (resolved) and
    the paper's claim (its ``[paper]`` table)."""
    from multispike.engine import list_recipes, resolve_config
    from multispike.reproduce import paper_claim

    rows = []
    for name in list_recipes():
        cfg = resolve_config(name)
        rows.append({"name": name, "dataset": cfg.dataset, "model": cfg.model,
                     "firing": cfg.firing, "timesteps": cfg.timesteps, "epochs": cfg.epochs,
                     "lr": cfg.lr, "paper": paper_claim(name)})
    return rows


def claim_text(claim: dict) -> str:
    """``94.71% (MT-SNN Table 3)``, with ± where the paper gives one."""
    if claim.get("accuracy") is None:
        return f"{claim.get('claim', '-')} ({claim['source']})"
    pm = f" ± {claim['std']:.2f}" if claim.get("std") is not None else ""
    return f"{claim['accuracy']:.2f}%{pm} ({claim['source']})"


def cmd_recipes(args: argparse.Namespace) -> int:
    from multispike.engine import load_recipe, resolve_config

    if args.name:
        from multispike.reproduce import paper_claim

        raw = {k: v for k, v in load_recipe(args.name).items() if k != "recipe"}
        resolved = resolve_config(args.name).to_dict()
        claim = paper_claim(args.name)
        if args.json:
            print(json.dumps({"name": args.name, "recipe": raw, "config": resolved,
                              "paper": claim}, indent=2))
            return 0
        print(f"recipe {args.name}: every setting of the run it makes (recipe: set by the "
              "recipe file; default: TrainConfig's, or the dataset's/model's where None)")
        for key, value in resolved.items():
            if key == "recipe":
                continue
            print(f"  {key:<16}{json.dumps(value):<40} {'recipe' if key in raw else 'default'}")
        print(f"the paper: {claim_text(claim)} at T = {claim['timesteps']}"
              + (f"; compared with {claim['comparison']['against']}"
                 if claim.get("comparison") else ""))
        print(f"train it: multispike train --recipe {args.name} --out runs/{Path(args.name).stem}")
        print(f"reproduce it (train, evaluate, energy, deploy, report): multispike reproduce "
              f"{args.name} --data-dir DATA")
        return 0
    rows = recipe_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    w = max(len(r["name"]) for r in rows) + 2
    print(f"{'name':<{w}}{'dataset':<12}{'model':<11}{'firing':<9}{'T':>3}{'epochs':>7}"
          f"{'lr':>6}  paper")
    for r in rows:
        print(f"{r['name']:<{w}}{r['dataset']:<12}{r['model'] or '-':<11}"
              f"{r['firing'] or '-':<9}{r['timesteps']:>3}{r['epochs']:>7}{r['lr']:>6g}  "
              f"{claim_text(r['paper'])}")
    print("\nshow one in full: multispike recipes NAME; train one: multispike train --recipe NAME")
    return 0


def model_rows() -> list[dict]:
    """One row per registered model: family, defaults (T, firing, neuron, classes, input)."""
    import torch

    from multispike.models import create, get_builder, list_models

    rows = []
    for name in list_models():
        with torch.device("meta"):  # the defaults only: no memory for the weights
            model = create(name)
        args = model.model_args
        doc = (get_builder(name).__doc__ or "").strip().splitlines()
        rows.append({
            "name": name, "family": type(model).__name__.lower(),
            "timesteps": args.get("timesteps"), "firing": args.get("firing"),
            "neuron": args.get("neuron"), "num_classes": args.get("num_classes"),
            "in_channels": args.get("in_channels"),
            "input_size": list(getattr(model, "input_size", []) or []),
            "description": doc[0] if doc else "",
        })
    return rows


def cmd_models(args: argparse.Namespace) -> int:
    rows = model_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<12}{'family':<8}{'T':>3}  {'firing':<9}{'neuron':<8}{'classes':>8}  input")
    for r in rows:
        size = "x".join(map(str, [r["in_channels"], *r["input_size"]]))
        print(f"{r['name']:<12}{r['family']:<8}{r['timesteps']:>3}  {r['firing']:<9}"
              f"{r['neuron']:<8}{r['num_classes']:>8}  {size}")
    print("\nthe defaults of `multispike train --model NAME`; flags such as --timesteps and "
          "--firing override them")
    return 0


def dataset_rows() -> list[dict]:
    """One row per dataset: classes, input shape, event or static, default model."""
    from multispike.data import DATASETS

    return [{"name": s.name, "num_classes": s.num_classes, "input_shape": list(s.input_shape),
             "kind": "event" if s.is_event else "static", "default_model": s.default_model,
             "augments": list(s.augments), "default_augment": s.default_augment}
            for s in DATASETS.values()]


def cmd_datasets(args: argparse.Namespace) -> int:
    rows = dataset_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<13}{'classes':>8}  {'input':<11}{'kind':<8}default model")
    for r in rows:
        print(f"{r['name']:<13}{r['num_classes']:>8}  {'x'.join(map(str, r['input_shape'])):<11}"
              f"{r['kind']:<8}{r['default_model']}")
    print("\ninput: channels x height x width of one image (event data: of one frame per step)")
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
    except (MemoryError, RuntimeError) as e:
        from multispike.engine.evaluate import allocation_failure

        if not allocation_failure(e):
            raise
        print(f"multispike: error: {args.command} ran out of memory: lower --batch-size or "
              "--timesteps (or use a device with more memory)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("multispike: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `multispike energy --json | head`: the reader left early
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        where = Path(e.filename).parent if e.filename else "the output folder"
        print(f"multispike: error: no space left on the device of {where}; free space and "
              "run again", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
