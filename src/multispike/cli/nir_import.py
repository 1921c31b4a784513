"""``multispike import``: a NIR graph (from snnTorch, SpikingJelly, Norse, Sinabs, Rockpool or
``multispike deploy``) as a multispike checkpoint, optionally upgraded to multi-bit spikes.

Examples::

    multispike import net.nir --out runs/imported
    multispike import net.nir --out runs/imported-mt --firing mt
    multispike import net.nir --out runs/imported-int --firing integer --option levels=3
    multispike eval --checkpoint runs/imported/model.pt --dataset digits

The checkpoint (``DIR/model.pt``) holds ``model_args`` (model ``nir_graph``, the graph's
description, T, the firing rule) and the weights, written by
:func:`multispike.engine.checkpoint.save_checkpoint`: ``eval``, ``energy``, ``analyze`` and
``deploy`` open it like any other. ``DIR/import.json`` says how each neuron node was mapped.
:func:`multispike.workflows.import_nir.import_nir` does the work; this module parses and prints.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from multispike.cli._common import parse_options
from multispike.errors import ConfigError
from multispike.workflows.import_nir import CHECKPOINT


def _shape(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        shape = [int(v) for v in str(text).replace("x", ",").split(",") if v.strip()]
    except ValueError:
        shape = []
    if not shape or min(shape) < 1:
        raise ConfigError(f"--input-shape takes sizes such as 1,8,8, got {text!r}")
    return shape


def cmd_import(args: argparse.Namespace) -> int:
    from multispike.workflows.import_nir import import_nir

    summary = import_nir(args.file, args.out, firing=args.firing, dt=args.dt,
                         timesteps=args.timesteps, input_shape=_shape(args.input_shape),
                         options=parse_options(args.option or []), force=args.force)
    rows, target = summary["neurons"], summary["checkpoint"]
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"imported {args.file}: {summary['nodes']} nodes, input "
          f"{tuple(summary['input_shape'])}, {summary['num_classes']} outputs, "
          f"T = {summary['timesteps']}, firing {summary['firing']}")
    for r in rows:
        dyn = "".join(f", {k}={r[k]:.6g}" for k in ("decay", "init_tau") if k in r)
        print(f"  {r['node']:<32}{r['neuron']}{dyn}, v_threshold={r['v_threshold']:.6g}, "
              f"v_reset={r['v_reset']:.6g}, {r['firing']} ({r['reset']} reset)")
    print(f"wrote {target} (eval/energy/analyze/deploy --checkpoint {target})")
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``import`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "import",
        help="bring a NIR graph in as a checkpoint; --firing mt|ternary|integer upgrades it",
        description="Read a NIR graph (snnTorch, SpikingJelly, Norse, Sinabs, Rockpool or "
        "multispike deploy) into a multispike checkpoint that eval, energy, analyze and deploy "
        "accept. --firing swaps every neuron's firing rule, keeping weights and dynamics.",
    )
    p.add_argument("file", help="a .nir file")
    p.add_argument("--out", required=True, help=f"folder for {CHECKPOINT} and import.json")
    p.add_argument("--firing", default=None, help="firing rule of every neuron: binary "
                   "(default, the graph's own), mt, ternary, ternary-mt, integer, "
                   "signed-integer")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="rule or model option, e.g. levels=3, deltas=[-0.5,0.5], reset=main, "
                   "learn_thresholds=yes, mt_on_fc=no (repeatable)")
    p.add_argument("--dt", type=float, default=None, help="Euler step the time constants are "
                   "read with (default: the graph's metadata, else 1e-4 as snnTorch and "
                   "SpikingJelly write)")
    p.add_argument("--timesteps", type=int, default=None,
                   help="T (default: the graph's metadata, else 4)")
    p.add_argument("--input-shape", default=None, help="one sample's shape, e.g. 1,8,8, when "
                   "the data's differs from a flat graph input (an MLP reading images)")
    p.add_argument("--force", action="store_true", help=f"overwrite {CHECKPOINT} in --out")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_import)
    return p
