"""``multispike recipes``, ``models``, ``datasets`` and ``neurons``: what the package holds,
and its firing rules at work on a fixed input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from multispike.checks import positive_int
from multispike.errors import MultispikeError


# -- recipes ---------------------------------------------------------------------------------------
def recipe_claim(name: str) -> dict | None:
    """The ``[paper]`` table of a recipe, or None for a recipe beyond the papers that has no
    published number to compare against (``ilif-resnet20m-cifar10``, say)."""
    from multispike.engine.config import load_recipe, recipe_dir
    from multispike.workflows.reproduce import paper_claim, tomllib

    load_recipe(name)  # an unknown or broken recipe is its own one-line error
    path = Path(name) if Path(name).suffix == ".toml" else recipe_dir() / f"{name}.toml"
    if "paper" not in tomllib.loads(path.read_text(encoding="utf-8")):
        return None
    return paper_claim(name)  # a [paper] table without a source is an error


def recipe_rows() -> list[dict]:
    """One row per shipped recipe: name, dataset, model, firing, T, epochs, lr (resolved) and
    the paper's claim (its ``[paper]`` table; None for a recipe beyond the papers)."""
    from multispike.engine import list_recipes, resolve_config

    rows = []
    for name in list_recipes():
        cfg = resolve_config(name)
        rows.append({"name": name, "dataset": cfg.dataset, "model": cfg.model,
                     "firing": cfg.firing, "timesteps": cfg.timesteps, "epochs": cfg.epochs,
                     "lr": cfg.lr, "paper": recipe_claim(name)})
    return rows


def recipe_notes(name: str) -> list[str]:
    """The comments of a recipe file, in order, without ``#``: its sources, and the settings
    that are choices of ours rather than the paper's or the authors' code's."""
    from multispike.engine.config import recipe_dir

    path = Path(name) if Path(name).suffix == ".toml" else recipe_dir() / f"{name}.toml"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip()[1:].strip() for ln in lines if ln.strip().startswith("#")]


#: what the recipe table shows for a recipe without a published claim
NO_CLAIM = "- (beyond the papers: no published number)"


def claim_text(claim: dict | None) -> str:
    """``94.71% (MT-SNN Table 3)``, with ± where the paper gives one, as it prints it
    (``± 0.0``, not ``± 0.00``); ``ours:`` before the source of a claim that is our own number
    (the digits recipes' demo rows); :data:`NO_CLAIM` for None.

    >>> claim_text({"accuracy": 94.71, "source": "MT-SNN Table 3"})
    '94.71% (MT-SNN Table 3)'
    >>> claim_text({"accuracy": 94.46, "std": 0.0, "source": "Ternary Spike Table 2"})
    '94.46% ± 0.0 (Ternary Spike Table 2)'
    >>> claim_text({"accuracy": 99.81, "std": 0.32, "source": "multispike demo (README)"})
    '99.81% ± 0.32 (ours: multispike demo (README))'
    >>> claim_text(None)
    '- (beyond the papers: no published number)'
    """
    from multispike.workflows.reproduce import own_claim

    if claim is None:
        return NO_CLAIM
    source = f"ours: {claim['source']}" if own_claim(claim) else claim["source"]
    if claim.get("accuracy") is None:
        return f"{claim.get('claim', '-')} ({source})"
    pm = f" ± {float(claim['std'])}" if claim.get("std") is not None else ""
    return f"{claim['accuracy']:.2f}%{pm} ({source})"


#: datasets that ship with their package (scikit-learn's digits): no --data-dir to give
BUNDLED = frozenset({"digits"})


def cmd_recipes(args: argparse.Namespace) -> int:
    from multispike.engine import load_recipe, resolve_config

    if args.name:
        raw = {k: v for k, v in load_recipe(args.name).items() if k != "recipe"}
        resolved = resolve_config(args.name).to_dict()
        claim = recipe_claim(args.name)
        notes = recipe_notes(args.name)
        if args.json:
            print(json.dumps({"name": args.name, "recipe": raw, "config": resolved,
                              "paper": claim, "notes": notes}, indent=2))
            return 0
        print(f"recipe {args.name}: every setting of the run it makes (recipe: set by the "
              "recipe file; default: TrainConfig's, or the dataset's/model's where None)")
        for key, value in resolved.items():
            if key == "recipe":
                continue
            where = "recipe" if key in raw else "default"
            if key == "batch_size":  # DataLoader batch of each torchrun process
                where += " (per process: the global batch is batch_size x processes)"
            print(f"  {key:<16}{json.dumps(value):<40} {where}")
        if notes:
            print("the recipe's notes (its comments: sources, and which settings are ours):")
            print("\n".join(f"  {ln}" for ln in notes))
        if claim is None:
            print(f"the paper: {NO_CLAIM}")
        else:
            print(f"the paper: {claim_text(claim)} at T = {claim['timesteps']}"
                  + (f"; compared with {claim['comparison']['against']}"
                     if claim.get("comparison") else ""))
        print(f"train it: multispike train --recipe {args.name} --out runs/{Path(args.name).stem}")
        if claim is not None:
            data_dir = "" if resolved["dataset"] in BUNDLED else " --data-dir DATA"
            print(f"reproduce it (train, evaluate, energy, deploy, report): multispike "
                  f"reproduce {args.name}{data_dir}")
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


# -- models and datasets ---------------------------------------------------------------------------
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
             "augments": list(s.augments), "default_augment": s.default_augment,
             "options": list(s.options)}
            for s in DATASETS.values()]


def cmd_datasets(args: argparse.Namespace) -> int:
    rows = dataset_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<13}{'classes':>8}  {'input':<11}{'kind':<8}{'default model':<15}options")
    for r in rows:
        print(f"{r['name']:<13}{r['num_classes']:>8}  {'x'.join(map(str, r['input_shape'])):<11}"
              f"{r['kind']:<8}{r['default_model']:<15}{', '.join(r['options']) or '-'}")
    print("\ninput: channels x height x width of one image (event data: of one frame per step)"
          "; a model takes its input channels and size from the dataset")
    print("options: set with --data-option KEY=VALUE (train, eval, energy, analyze, reproduce) "
          "or a recipe's [data_options]; a checkpoint's commands reuse the run's")
    return 0


# -- neurons: the firing rules at work on a fixed input --------------------------------------------
def cmd_neurons(args: argparse.Namespace) -> int:
    timesteps = positive_int("--timesteps", args.timesteps)
    import torch

    from multispike.analysis.firing_rules import neuron_table
    from multispike.engine.device import machine_memory

    need = 41 * timesteps * 4 * 16  # input, membrane, spikes, records of 41 neurons
    if need > machine_memory(torch.device("cpu")):
        raise MultispikeError(f"--timesteps {timesteps} needs about {need / 2**30:,.0f} "
                              "GiB for 41 neurons, more than this machine has; lower it")
    rows = neuron_table(timesteps)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"41 neurons, each fed one constant current in [-2, 2] for T = {timesteps} steps.\n"
        "values: fraction of neuron-steps emitting each spike value; distinct codes: how many\n"
        "different spike trains the 41 inputs produce (more codes = less information lost).\n"
    )
    print(f"{'neuron':<7}{'firing':<15}{'spikes/step':>12}{'codes':>7}{'bits':>7}   values")
    for r in rows:
        vals = " ".join(f"{k}:{v:.2f}" for k, v in r["values"].items())
        print(
            f"{r['neuron']:<7}{r['firing']:<15}{r['spikes_per_step']:>12.3f}"
            f"{r['distinct_codes']:>7}{r['code_bits']:>7.2f}   {vals}"
        )
    print(
        "\nWhat it shows: binary neurons map every negative current to silence and few positive\n"
        "ones apart; MT planes (MT-SNN Eq 10-11) and ternary spikes (Ternary Spike Eq 8) tell\n"
        "more inputs apart at the same T, and ternary-MT (both combined) more still. Integer\n"
        "spikes (levels D = 4, soft reset: SpikeYOLO's I-LIF) keep the remainder of each\n"
        "step, so the LIF neuron tells as many inputs apart as ternary-MT while staying\n"
        "non-negative; signed integers tell the most."
    )
    return 0


# -- the parsers -----------------------------------------------------------------------------------
def register(sub: Any) -> None:
    """Add ``recipes``, ``models`` and ``datasets`` to the command line's subparsers."""
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


def register_neurons(sub: Any) -> None:
    """Add ``neurons`` to the command line's subparsers."""
    p = sub.add_parser("neurons", help="show binary, MT and ternary neurons on a fixed input")
    p.add_argument("--timesteps", type=int, default=8, help="time steps T (default 8)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_neurons)
