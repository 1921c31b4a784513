"""``multispike energy`` and ``multispike analyze``: their flags parsed and handed to the
measuring workflow (:mod:`multispike.workflows.measure`), its results printed.

Examples::

    multispike energy --model resnet20m --dataset cifar10 --timesteps 2 \\
        --firing-rate 0.1642 --cost-table hu2021 --json
    multispike energy --checkpoint runs/r20/best.pt --dataset cifar10 --data-dir data
    multispike analyze --checkpoint runs/r20/best.pt --dataset cifar10 --out analysis/
    multispike analyze --eval-json eval.json --out analysis/
    multispike analyze --sweep deltas --out runs/deltas
    multispike analyze --sweep levels --levels 1,2,3,4 --out runs/levels
    multispike analyze --sweep learn-thresholds --rules mt,integer --out runs/learned

Measuring (``energy --checkpoint``, ``analyze --checkpoint/--model``) runs on ``--device``:
``auto`` (default: the GPU when one is visible, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``,
as ``multispike eval`` does. Operation counts need no device and are traced on the CPU.

The sweeps (``analyze --sweep``) train through :func:`multispike.workflows.sweeps.engine_train_fn`,
which this module hands to :func:`multispike.analysis.sweeps.delta_sweep` /
``placement_ablation`` / ``levels_sweep`` / ``learn_thresholds_sweep``: the analysis does not
import the training engine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from multispike.checks import positive_int
from multispike.cli._common import add_data_option_flag, parse_data_options, parse_options
from multispike.errors import ConfigError


# -- the measuring pipeline (multispike.workflows.measure) ---------------------------------------
def _target(args: argparse.Namespace, default_dataset: str | None = None) -> Any:
    """The :class:`~multispike.workflows.measure.Target` of ``--checkpoint`` and the data
    flags."""
    from multispike.workflows.measure import resolve_target

    return resolve_target(getattr(args, "checkpoint", None), model=args.model,
                          firing=getattr(args, "firing", None), dataset=args.dataset,
                          timesteps=args.timesteps, data_dir=getattr(args, "data_dir", None),
                          data_options=parse_data_options(getattr(args, "data_option", None)),
                          default_dataset=default_dataset)


def _model(args: argparse.Namespace, target: Any, firing: str | None) -> tuple[Any, Any]:
    """The dataset spec of the target and the model ``--checkpoint`` or ``--model`` gives."""
    from multispike.workflows.measure import build_target_model, dataset_spec

    spec = dataset_spec(target)
    return spec, build_target_model(target, spec, model=args.model, firing=firing,
                                    options=parse_options(getattr(args, "option", None) or []))


# -- energy --------------------------------------------------------------------------------------
def energy_report(args: argparse.Namespace) -> Any:
    """The flags of ``multispike energy`` as an :class:`~multispike.analysis.EnergyReport`
    (:func:`multispike.workflows.measure.measure_energy`)."""
    from multispike.analysis.energy import get_cost_table
    from multispike.workflows.measure import DEFAULTS, measure_energy

    if args.checkpoint and args.firing_rate is not None:
        raise ConfigError("give --firing-rate (assumed rate) or --checkpoint (measured), not both")
    table = get_cost_table(args.cost_table)
    convention = getattr(args, "convention", None)
    if convention == "events" and not args.checkpoint:
        raise ConfigError(
            "--convention events bills each layer from recorded spikes: give --checkpoint with "
            "data; an assumed --firing-rate is billed by --convention paper (the default then)"
        )
    positive_int("--batches", args.batches)
    positive_int("--batch-size", args.batch_size)
    if args.timesteps is not None:
        positive_int("--timesteps", args.timesteps)
    target = _target(args, default_dataset="cifar10")
    firing = args.firing if args.checkpoint or args.firing is not None else DEFAULTS["firing"]
    positive_int("--timesteps", target.timesteps)
    spec, model = _model(args, target, firing)
    return measure_energy(model, spec, table, target, rates=args.firing_rate,
                          convention=convention, device=getattr(args, "device", None),
                          batches=args.batches, batch_size=args.batch_size,
                          progress=not getattr(args, "no_progress", False),
                          model_name=args.model)


def cmd_energy(args: argparse.Namespace) -> int:
    from multispike.analysis.energy import format_report

    report = energy_report(args)
    if args.json:
        d = report.to_dict()
        if not args.layers:
            d.pop("layers")
            d.pop("neuron_layers")
        print(json.dumps(d, indent=2))
    else:
        for line in report.meta.get("notes", []):
            print(line)
        print(f"model {report.meta['model']} on {report.meta['dataset']} "
              f"(input {tuple(report.meta['input_shape'])}), one sample")
        print(format_report(report))
        if report.meta.get("convention_note"):
            print(report.meta["convention_note"])
    return 0


# -- analyze -------------------------------------------------------------------------------------
def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated numbers, got {text!r}") from None


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated integers, got {text!r}") from None


def _eval_rows(path: str) -> list[dict[str, Any]]:
    """The rows of ``--eval-json``, each with a finite accuracy in [0, 100] and a T >= 1
    (ANN rows may leave T out); anything else is one line naming the row."""
    import csv
    import math

    from multispike.analysis._io import read_rows

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"--eval-json {path} is a directory; give the JSON (or CSV) file "
                          "that `multispike eval --json` wrote")
    try:
        rows = read_rows(path)
    except (UnicodeDecodeError, OSError, csv.Error) as e:
        why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else \
            (getattr(e, "strerror", None) or type(e).__name__)
        raise ConfigError(f"--eval-json {path} cannot be read ({why}); give the JSON (or CSV) "
                          "file that `multispike eval --json` wrote") from None
    if not rows:
        raise ConfigError(f"--eval-json {path} holds no rows; give the output of "
                          "`multispike eval --json`")
    for i, r in enumerate(rows):
        acc = r.get("accuracy")
        try:
            value = float(acc)
        except (TypeError, ValueError):
            value = math.nan
        if isinstance(acc, bool) or not math.isfinite(value) or not 0 <= value <= 100:
            raise ConfigError(
                f"--eval-json {path}: row {i} has accuracy {acc!r}, not a number in [0, 1] "
                "(fraction) or [0, 100] (percent); fix or drop the row")
        t = r.get("timesteps")
        if t in (None, "") or str(r.get("firing", "")).lower() == "ann":
            continue
        try:
            ok = float(t) == int(float(t)) and int(float(t)) >= 1
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise ConfigError(f"--eval-json {path}: row {i} has timesteps {t!r}, not an integer "
                              ">= 1; fix or drop the row")
    return rows


def _sweep(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """``--sweep deltas|placement|levels|learn-thresholds``: the sweep trained by
    :func:`~multispike.workflows.sweeps.engine_train_fn`."""
    from multispike.analysis.sweeps import (
        delta_sweep,
        learn_thresholds_sweep,
        levels_sweep,
        placement_ablation,
        zoo_check,
    )
    from multispike.workflows.sweeps import engine_train_fn

    common = {"dataset": args.sweep_dataset, "model": args.sweep_model,
              "epochs": args.epochs, "seed": args.seed, "recipe": args.recipe,
              "settings": {"model_options": parse_options(args.sweep_option or [],
                                                          "--sweep-option")},
              "train_fn": engine_train_fn()}
    default_ts = "1,2,3" if args.sweep == "placement" else "1"
    ts = _ints(args.sweep_timesteps or default_ts, "--sweep-timesteps")
    if args.sweep != "placement" and len(ts) != 1:
        raise ConfigError(f"--sweep {args.sweep} runs at one T, got --sweep-timesteps {ts}")
    if args.sweep == "deltas":
        return delta_sweep(magnitudes=_floats(args.deltas, "--deltas"), timesteps=ts[0],
                           out=out / "delta_sweep", check_fn=zoo_check, **common)
    if args.sweep == "levels":
        return levels_sweep(levels=_ints(args.levels or "1,2,3,4", "--levels"), timesteps=ts[0],
                            out=out / "levels_sweep", check_fn=zoo_check, **common)
    if args.sweep == "learn-thresholds":
        rules = [r.strip() for r in str(args.rules).split(",") if r.strip()]
        levels = _ints(args.levels or "3", "--levels")
        if len(levels) != 1:
            raise ConfigError(f"--sweep learn-thresholds takes one --levels D for the integer "
                              f"rules, got {args.levels}")
        return learn_thresholds_sweep(rules=rules, levels=levels[0], timesteps=ts[0],
                                      out=out / "learn_thresholds", check_fn=zoo_check,
                                      **common)
    return placement_ablation(timesteps=ts, out=out / "placement", **common)


def analyze(args: argparse.Namespace) -> dict[str, Any]:
    """Run what the flags ask for; returns ``{"written": {name: path}, ...}``."""
    from multispike.analysis.figures import plot_accuracy_vs_timesteps
    from multispike.engine.runlock import check_out_folder
    from multispike.workflows.measure import record_activity

    if not (args.checkpoint or args.model or args.eval_json or args.sweep):
        raise ConfigError(
            "nothing to analyze: give --checkpoint (or --model) with --dataset, --eval-json "
            "FILE, or --sweep deltas|placement|levels|learn-thresholds"
        )
    if args.timesteps is not None:
        positive_int("--timesteps", args.timesteps)
    check_out_folder(args.out)
    if args.checkpoint or args.model:
        positive_int("--batches", args.batches)
        positive_int("--batch-size", args.batch_size)
        if args.membrane_samples < 0:
            raise ConfigError(f"--membrane-samples must be >= 0, got {args.membrane_samples}")
    eval_rows = _eval_rows(args.eval_json) if args.eval_json else None
    target = _target(args)
    out = Path(args.out)
    written: dict[str, str] = {}
    result: dict[str, Any] = {"written": written}
    if target.notes:
        result["notes"] = target.notes

    if eval_rows is not None:
        paths = plot_accuracy_vs_timesteps(eval_rows, out / "accuracy_vs_timesteps.png")
        written.update({f"accuracy_{k}": str(v) for k, v in paths.items()})

    if args.checkpoint or args.model:
        if not target.dataset:
            raise ConfigError("--model needs --dataset to feed the model")
        spec, model = _model(args, target, getattr(args, "firing", None))
        activity = record_activity(model, spec, target, out, device=getattr(args, "device", None),
                                   batches=args.batches, batch_size=args.batch_size,
                                   membrane_samples=args.membrane_samples,
                                   max_layers=args.max_layers or None,
                                   progress=not getattr(args, "no_progress", False))
        written.update(activity["written"])
        result["mean_rate"] = activity["mean_rate"]
        result["entropy"] = activity["entropy"]

    if args.sweep:
        res = _sweep(args, out)
        written.update({f"sweep_{k}": str(res[k]) for k in ("png", "csv", "json")})
        result["sweep_rows"] = res["rows"]
    return result


def cmd_analyze(args: argparse.Namespace) -> int:
    result = analyze(args)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    for line in result.get("notes", []):
        print(line)
    if "mean_rate" in result:
        print(f"mean firing rate {result['mean_rate']:.4f} spikes per neuron per step")
        for r in result["entropy"]:
            print(f"  {r['layer'] or '<neuron>':<30} H = {r['entropy_bits']:.3f} bits "
                  f"(bound {r['bound_bits']:.3f})")
    for r in result.get("sweep_rows", []):
        print("  " + ", ".join(f"{k}={v}" for k, v in r.items()))
    for name, path in result["written"].items():
        print(f"wrote {name}: {path}")
    return 0


# -- the parsers ---------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    """Add the ``energy`` and ``analyze`` subcommands to an argparse subparsers object."""
    _register_energy(subparsers)
    _register_analyze(subparsers)


def _register_energy(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "energy",
        help="estimate the energy of one inference (Ternary Spike Table 5)",
        description="Count the operations of a model (MACs, encoder FLOPs, SOPs, sign "
        "operations) and price them with a cost table. Rates are assumed (--firing-rate: "
        "SOPs = s x T x A, the paper convention) or measured (--checkpoint with data: each "
        "layer's SOPs counted from the spikes it reads after pooling, the events convention).",
    )
    p.add_argument("--model", help="model name (default: the dataset's default model)")
    p.add_argument("--dataset",
                   help="dataset, for the input size and class count (default: the "
                   "checkpoint's, else cifar10)")
    p.add_argument("--timesteps", type=int,
                   help="time steps T (default: the checkpoint's, else 2; a T other than the "
                   "checkpoint's is noted in the output)")
    p.add_argument("--firing",
                   help="binary, mt, ternary, ternary-mt, integer, signed-integer or ann "
                   "(default binary; with --checkpoint the model keeps its own)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other option of --model, e.g. levels=3, deltas=[-0.5,0.5] "
                   "(repeatable; not with --checkpoint)")
    p.add_argument("--firing-rate", type=float, default=None,
                   help="assumed mean rate s, spikes per neuron per step (0.1642 = 16.42%%; "
                   "MT counts every plane, so up to n+1)")
    p.add_argument("--cost-table", default="hu2021",
                   help="hu2021 (12.5 pJ/FLOP, 77 fJ/SOP, 3.7 pJ/spike), 45nm (4.6 pJ/MAC, "
                   "0.9 pJ/AC), or a JSON file (default hu2021)")
    p.add_argument("--checkpoint", help="trained model: measure the rates on --dataset")
    p.add_argument("--convention", choices=("events", "paper"), default=None,
                   help="how a spiking layer's SOPs are billed: events (what it reads after "
                   "pooling, counted from recorded spikes; the default with --checkpoint) or "
                   "paper (the rate of the neuron feeding it, Ternary Spike Table 5; the only "
                   "choice, and the default, with --firing-rate)")
    p.add_argument("--data-dir", help="dataset folder (default with --checkpoint: the one it "
                   "was trained on)")
    add_data_option_flag(p, "default with --checkpoint: the options it was trained with")
    p.add_argument("--batches", type=int, default=8, help="test batches to measure (default 8)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--device", default="auto",
                   help="where to measure with --checkpoint: auto (default: a GPU if any), cpu, "
                   "cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--layers", action="store_true", help="with --json: include per-layer rows")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress display while measuring")
    p.set_defaults(func=cmd_energy)


def _register_analyze(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="firing statistics, entropy, membrane figures, accuracy plots, MT ablations",
        description="Write figures (PNG) with their numbers (CSV/JSON) into --out.",
    )
    p.add_argument("--checkpoint", help="trained model to record activity from")
    p.add_argument("--model", help="an untrained model instead of --checkpoint (smoke test)")
    p.add_argument("--firing", help="firing rule of --model")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other option of --model, e.g. levels=3 (repeatable)")
    p.add_argument("--dataset", help="data to feed --checkpoint/--model (default with "
                   "--checkpoint: the dataset it was trained on)")
    p.add_argument("--data-dir", help="dataset folder (default with --checkpoint: the one it "
                   "was trained on)")
    add_data_option_flag(p, "default with --checkpoint: the options it was trained with")
    p.add_argument("--timesteps", type=int,
                   help="time steps T (default: the checkpoint's, else 2)")
    p.add_argument("--batches", type=int, default=4, help="test batches to record (default 4)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--device", default="auto",
                   help="where to run --checkpoint/--model: auto (default: a GPU if any), cpu, "
                   "cuda or cuda:N")
    p.add_argument("--membrane-samples", type=int, default=2000,
                   help="membrane samples per layer and step (0: no membrane figure)")
    p.add_argument("--max-layers", type=int, default=0,
                   help="layers shown in the membrane figure (default all; Fig 2 shows 4)")
    p.add_argument("--eval-json", help="evaluation rows (firing, timesteps, accuracy): draw "
                   "accuracy against T")
    p.add_argument("--sweep", choices=("deltas", "placement", "levels", "learn-thresholds"),
                   help="train and draw an ablation: deltas or placement (MT-SNN Fig 5c or "
                   "5a/b), levels (integer spikes, D = --levels, against spike bits) or "
                   "learn-thresholds (fixed vs learned thresholds for --rules, against spike "
                   "bits)")
    p.add_argument("--sweep-dataset", default="digits", help="dataset of the sweep (digits)")
    p.add_argument("--sweep-model", help="model of the sweep (default: the dataset's)")
    p.add_argument("--recipe", help="engine recipe for the sweep runs (the papers' settings)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per sweep run (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sweep runs")
    p.add_argument("--deltas", default="0.1,0.3,0.5,0.7",
                   help="delta sizes of --sweep deltas (default 0.1,0.3,0.5,0.7)")
    p.add_argument("--levels", default=None,
                   help="integer levels D: the list of --sweep levels (default 1,2,3,4), the "
                   "one D of the integer rules in --sweep learn-thresholds (default 3)")
    p.add_argument("--rules", default="mt,integer",
                   help="firing rules of --sweep learn-thresholds (default mt,integer)")
    p.add_argument("--sweep-timesteps", default=None,
                   help="time steps of the sweep runs: one T for deltas, levels and "
                   "learn-thresholds (default 1), a list for placement (default 1,2,3)")
    p.add_argument("--sweep-option", action="append", metavar="KEY=VALUE",
                   help="model/neuron option for every sweep run, e.g. v_threshold=0.5 "
                   "(repeatable; values are JSON)")
    p.add_argument("--out", default="analysis", help="output folder (default ./analysis)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress display while recording")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=cmd_analyze)
