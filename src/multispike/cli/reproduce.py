"""``multispike reproduce``: one row of the papers' tables, from dataset folder to "paper vs
ours" (:func:`multispike.workflows.reproduce.reproduce` does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from multispike.checks import positive_int
from multispike.cli._common import add_data_option_flag, parse_data_options


def cmd_reproduce(args: argparse.Namespace) -> int:
    if args.epochs is not None:
        positive_int("--epochs", args.epochs)
    from multispike.engine.config import parse_seeds
    from multispike.engine.device import pick_device
    from multispike.engine.runlock import check_out_folder
    from multispike.workflows.reproduce import own_claim, pm, reproduce

    check_out_folder(args.out or str(Path("runs") / "reproduce" / Path(args.recipe).stem))
    pick_device(args.device)  # an unsupported device: one line before anything is trained
    options = parse_data_options(args.data_option)

    rep = reproduce(args.recipe, seeds=parse_seeds(args.seeds), out=args.out,
                    data_dir=args.data_dir, epochs=args.epochs, device=args.device,
                    progress=not args.no_progress, sweep=args.sweep, data_options=options)
    if rep is None:
        return 0
    acc = rep["accuracy"]
    out = Path(args.out) if args.out else Path("runs") / "reproduce" / Path(args.recipe).stem
    paper = "–" if acc["paper"] is None else f"{acc['paper']:.2f}"
    who = "our demo's claim" if own_claim(rep["claim"]) else "paper"
    print(f"{rep['recipe']}: ours {pm(acc['ours_mean'], acc['ours_std'])} % at "
          f"T = {acc['timesteps']} over {len(rep['seeds'])} seeds, {who} {paper} "
          f"({rep['claim']['source']}); report in {out / 'report.md'}")
    return 0


def register(sub: Any) -> None:
    """Add ``reproduce`` to the command line's subparsers."""
    p = sub.add_parser(
        "reproduce", help="train, evaluate, measure and deploy one recipe over seeds; report "
        "paper vs ours")
    p.add_argument("recipe", help="a recipe name (multispike recipes) or a .toml path")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    add_data_option_flag(p, "over the recipe's data_options; every evaluation of the trained "
                         "models uses them too")
    p.add_argument("--seeds", default="0,1,2", help="seeds, e.g. 0,1,2 (default)")
    p.add_argument("--out", help="report folder (default runs/reproduce/RECIPE)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs (e.g. a quick run)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--sweep", choices=("train", "eval"), default="train",
                   help="accuracy against T: train one model per T of the paper's sweep, as "
                   "the papers did (train, default), or evaluate the model trained at the "
                   "paper's T at the other T (eval: cheaper; its rows say 'evaluated at T, "
                   "trained at T0')")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)
