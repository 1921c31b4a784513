"""``multispike energy`` and ``multispike analyze``: flags to models, dataset specs, loaders and
training functions for :mod:`multispike.analysis`.

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

The sweeps (``analyze --sweep``) train through :func:`engine_train_fn`, which this module hands
to :func:`multispike.analysis.sweeps.delta_sweep` / ``placement_ablation`` / ``levels_sweep`` /
``learn_thresholds_sweep``: the analysis does not import the training engine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from multispike.checks import positive_int
from multispike.cli._common import add_data_option_flag, parse_data_options, parse_options
from multispike.errors import ConfigError

#: what energy and analyze assume without a checkpoint
DEFAULTS = {"timesteps": 2, "firing": "binary"}


# -- checkpoints, models, devices ----------------------------------------------------------------
def _load_checkpoint(path: str) -> tuple[Any, dict[str, Any]]:
    """The model of a checkpoint file and what the checkpoint says of its run (dataset,
    data_dir, timesteps, firing, model); one :class:`CheckpointError` line for a bad file."""
    from multispike.engine.checkpoint import load_model
    from multispike.engine.evaluate import checkpoint_settings

    model, ckpt = load_model(path)
    return model, checkpoint_settings(ckpt)


def resolve_checkpoint_args(args: argparse.Namespace, default_dataset: str | None = None
                            ) -> tuple[Any, list[str]]:
    """Fill ``args.dataset``, ``args.timesteps``, ``args.data_dir`` and ``args.data_options``
    from ``--checkpoint`` (the run's dataset, folder and dataset options; flags given win,
    each with a note), else from the defaults and ``--data-option``; returns
    ``(model, notes)``: the checkpoint's model (None without one) and ``note: ...`` lines.

    A ``--model`` or ``--firing`` other than the checkpoint's is refused (one line): a trained
    model keeps its architecture and firing rule.
    """
    notes: list[str] = []
    options = parse_data_options(getattr(args, "data_option", None))
    args.data_given = ("--dataset",) * bool(args.dataset) + ("--data-option",) * bool(options)
    if not getattr(args, "checkpoint", None):
        if args.timesteps is None:
            args.timesteps = DEFAULTS["timesteps"]
        if args.dataset is None:
            args.dataset = default_dataset
        args.data_options = options
        return None, notes
    from multispike.engine.evaluate import run_data

    model, saved = _load_checkpoint(args.checkpoint)
    _same_model(args, model, saved)
    saved_t = saved.get("timesteps") or getattr(model, "timesteps", None)
    if args.timesteps is None:
        args.timesteps = saved_t or DEFAULTS["timesteps"]
    elif saved_t and args.timesteps != saved_t:
        notes.append(f"note: --timesteps {args.timesteps} overrides the checkpoint's "
                     f"T = {saved_t}")
    if args.dataset is not None and saved.get("dataset") and args.dataset != saved["dataset"]:
        notes.append(f"note: --dataset {args.dataset} overrides the checkpoint's dataset "
                     f"{saved['dataset']}")
    run = run_data(saved, dataset=args.dataset, data_dir=getattr(args, "data_dir", None),
                   options=options)
    args.dataset, args.data_dir, args.data_options = run.dataset, run.data_dir, run.options
    return model, notes


def _same_model(args: argparse.Namespace, model: Any, saved: dict[str, Any]) -> None:
    """Refuse (one line) a ``--model`` or ``--firing`` other than the checkpoint's."""
    name = saved.get("model") or getattr(model, "name", None)
    if args.model and name and args.model != name:
        raise ConfigError(f"--model {args.model} differs from the checkpoint's model {name}; "
                          "drop --model (a checkpoint rebuilds its own model)")
    firing = getattr(model, "firing", None) or saved.get("firing")
    if getattr(args, "firing", None) and firing and str(args.firing) != str(firing):
        raise ConfigError(f"--firing {args.firing} differs from the checkpoint's firing "
                          f"{firing}; drop --firing (a trained model keeps its firing rule)")


def _spec(args: argparse.Namespace) -> Any:
    """The dataset spec of ``args.dataset`` with its dataset options (input size, classes)."""
    from multispike import data

    return data.get_spec(str(args.dataset), **(getattr(args, "data_options", None) or {}))


def _build_model(args: argparse.Namespace, spec: Any, loaded: Any) -> Any:
    """The model of ``--checkpoint`` (``loaded``) at ``--timesteps``, checked against the
    dataset's input; else ``--model`` (or the dataset's default), untrained, with the
    dataset's input channels and size."""
    from multispike.engine.checkpoint import check_input_fits

    if loaded is not None:
        if getattr(args, "option", None):
            raise ConfigError("--option sets options of an untrained --model; a --checkpoint "
                              "keeps the options it was trained with: drop --option")
        if hasattr(loaded, "timesteps"):
            loaded.timesteps = args.timesteps
        check_input_fits(loaded, spec, getattr(args, "data_given", ()))
        return loaded
    from multispike.engine.checkpoint import build_for_dataset

    kwargs: dict[str, Any] = {"num_classes": spec.num_classes, "timesteps": args.timesteps}
    firing = getattr(args, "firing", None)
    if firing:
        kwargs["firing"] = firing
        if str(firing).lower() == "ann":
            kwargs.pop("timesteps")  # the ANN twin has no dynamics: one step
    options = parse_options(getattr(args, "option", None) or [])
    model, _ = build_for_dataset({"name": args.model or spec.default_model, **kwargs,
                                  **options}, spec, options)
    return model


def _device(name: Any) -> Any:
    """The ``torch.device`` of ``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""
    from multispike.engine.train import pick_device

    return pick_device(str(name or "auto"))


def _check_memory(model: Any, spec: Any, t: int, batch_size: int, device: Any) -> None:
    from multispike.engine.evaluate import check_memory

    check_memory(model, spec.input_shape, t, batch_size, device, training=False)


def _loader(args: argparse.Namespace, spec: Any, desc: str) -> tuple[Any, Any]:
    """The test split of ``--dataset`` in ``--batch-size`` batches, with a progress display of
    ``--batches`` batches (off with ``--no-progress``), and its evaluation transform."""
    from multispike.engine.evaluate import Progress, split_loader

    enabled = not getattr(args, "no_progress", False)
    # the run's dataset options (none: the dataset's defaults)
    loader, transform = split_loader(spec.name, data_dir=args.data_dir,
                                    batch_size=args.batch_size, timesteps=args.timesteps,
                                    data_options=getattr(args, "data_options", None),
                                    progress=enabled)
    try:
        total = min(len(loader), args.batches)
    except TypeError:
        total = args.batches
    return Progress(loader, desc, total=total, enabled=enabled), transform


# -- energy --------------------------------------------------------------------------------------
def energy_report(args: argparse.Namespace) -> Any:
    """The flags of ``multispike energy`` as an :class:`~multispike.analysis.EnergyReport`:
    the model built or loaded, its operations counted, its rates assumed or measured."""
    from multispike.analysis.energy import get_cost_table
    from multispike.analysis.measure import model_energy
    from multispike.analysis.ops import trace_ops
    from multispike.deploy import event_model

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
    loaded, notes = resolve_checkpoint_args(args, default_dataset="cifar10")
    if not args.checkpoint and args.firing is None:
        args.firing = DEFAULTS["firing"]
    t = positive_int("--timesteps", args.timesteps)
    spec = _spec(args)
    model = _build_model(args, spec, loaded)
    if str(getattr(model, "firing", "")) == "ann" and not spec.is_event:
        t = 1  # the ANN twin sees the image once
    device = _device(getattr(args, "device", None) if args.checkpoint else "cpu")
    _check_memory(model, spec, t, args.batch_size if args.checkpoint else 1, device)
    ops = trace_ops(model, spec.input_shape, t, event=bool(spec.is_event))
    measure: dict[str, Any] = {}
    if args.checkpoint:
        model.to(device)
        loader, transform = _loader(args, spec, f"measure {spec.name} T={t}")
        measure = {"loader": loader, "transform": transform, "batches": args.batches,
                   "events": event_model}
    elif args.firing_rate is None and ops.neurons:
        raise ConfigError(
            "give --firing-rate S (spikes per neuron per step, e.g. 0.1642) or "
            "--checkpoint with data to measure the rates"
        )
    report = model_energy(model, spec, t, table, rates=args.firing_rate, convention=convention,
                          ops=ops, **measure)
    if notes:
        report.meta["notes"] = notes
    report.meta.update({
        "model": getattr(model, "name", args.model or spec.default_model),
        "dataset": spec.name,
        "input_shape": list(spec.input_shape),
    })
    return report


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


def engine_train_fn() -> Any:
    """The sweeps' trainer: :func:`multispike.engine.train_model` on the configuration that
    :func:`multispike.engine.resolve_config` builds (the run's ``recipe``, then its settings).

    A setting that is no :class:`~multispike.engine.TrainConfig` field is not dropped: the run
    raises :class:`ConfigError` (one line, naming it) before it trains. A run whose ``out``
    folder already holds a ``last.pt`` is resumed (or, finished, reused).
    """
    import dataclasses

    from multispike import engine

    fields = {f.name for f in dataclasses.fields(engine.TrainConfig)}

    def train(settings: dict[str, Any]) -> Any:
        settings = dict(settings)
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise ConfigError(
                f"unknown training setting {unknown[0]!r} for the sweep runs; known: "
                f"{', '.join(sorted(fields))}"
            )
        recipe = settings.pop("recipe", None)
        if settings.get("out") and (Path(settings["out"]) / "last.pt").is_file():
            settings["resume"] = True  # a re-run sweep continues (or reuses) finished runs
        return engine.train_model(engine.resolve_config(recipe=recipe, overrides=settings))

    return train


def _sweep(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """``--sweep deltas|placement|levels|learn-thresholds``: the sweep trained by
    :func:`engine_train_fn`."""
    from multispike.analysis.sweeps import (
        delta_sweep,
        learn_thresholds_sweep,
        levels_sweep,
        placement_ablation,
        zoo_check,
    )

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
    from multispike.analysis.measure import activity_report
    from multispike.engine.runlock import check_out_folder

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
    loaded, notes = resolve_checkpoint_args(args)
    out = Path(args.out)
    written: dict[str, str] = {}
    result: dict[str, Any] = {"written": written}
    if notes:
        result["notes"] = notes

    if eval_rows is not None:
        paths = plot_accuracy_vs_timesteps(eval_rows, out / "accuracy_vs_timesteps.png")
        written.update({f"accuracy_{k}": str(v) for k, v in paths.items()})

    if args.checkpoint or args.model:
        if not args.dataset:
            raise ConfigError("--model needs --dataset to feed the model")
        spec = _spec(args)
        model = _build_model(args, spec, loaded)
        device = _device(getattr(args, "device", None))
        _check_memory(model, spec, args.timesteps, args.batch_size, device)
        model = model.to(device)
        loader, transform = _loader(args, spec, f"record {spec.name} T={args.timesteps}")
        activity = activity_report(model, loader, out, batches=args.batches,
                                   transform=transform, membrane_samples=args.membrane_samples,
                                   max_layers=args.max_layers or None)
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
