"""Command-line glue of the analysis: the ``energy`` and ``analyze`` subcommands.

``multispike.cli`` calls :func:`register` with its subparsers; each subcommand's ``func(args)``
returns an exit code and raises :class:`~multispike.errors.MultispikeError` (one line) on bad
input, which the command line turns into exit code 2.

Examples::

    multispike energy --model resnet20m --dataset cifar10 --timesteps 2 \\
        --firing-rate 0.1642 --cost-table hu2021 --json
    multispike energy --checkpoint runs/r20/best.pt --dataset cifar10 --data-dir data
    multispike analyze --checkpoint runs/r20/best.pt --dataset cifar10 --out analysis/
    multispike analyze --eval-json eval.json --out analysis/
    multispike analyze --sweep deltas --out runs/deltas

Measuring (``energy --checkpoint``, ``analyze --checkpoint/--model``) runs on ``--device``:
``auto`` (default: the GPU when one is visible, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``,
as ``multispike eval`` does. Operation counts need no device and are traced on the CPU.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multispike.errors import ConfigError


# -- datasets ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    is_event: bool
    default_model: str


#: used when multispike.data is not part of the build (op counts need only the input size)
FALLBACK_SPECS = {
    "digits": _Spec("digits", 10, (1, 8, 8), False, "digits_net"),
    "cifar10": _Spec("cifar10", 10, (3, 32, 32), False, "vgg9"),
    "cifar100": _Spec("cifar100", 100, (3, 32, 32), False, "vgg9"),
    "cifar10-dvs": _Spec("cifar10-dvs", 10, (2, 128, 128), True, "vgg12"),
    "imagenet": _Spec("imagenet", 1000, (3, 224, 224), False, "resnet18"),
}


def dataset_spec(name: str) -> Any:
    """The dataset's spec (``num_classes``, ``input_shape``, ``is_event``, ``default_model``)."""
    try:
        from multispike.data import get_spec
    except ImportError:
        spec = FALLBACK_SPECS.get(str(name))
        if spec is None:
            raise ConfigError(
                f"unknown dataset {name!r}; choose one of {', '.join(FALLBACK_SPECS)}"
            ) from None
        return spec
    return get_spec(str(name))


def _models() -> Any:
    try:
        from multispike import models
    except ImportError as e:
        raise ConfigError(f"multispike.models cannot be imported ({e})") from None
    return models


def _check_timesteps(t: Any) -> int:
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ConfigError(f"--timesteps must be an integer >= 1, got {t!r}")
    return t


def _load_checkpoint(path: str) -> tuple[Any, dict[str, Any]]:
    """The model of a checkpoint file and what the checkpoint says of its run (dataset,
    data_dir, timesteps, firing, model); one :class:`CheckpointError` line for a bad file."""
    try:
        from multispike.engine.evaluate import checkpoint_settings, open_checkpoint
    except ImportError as e:
        raise ConfigError(
            f"--checkpoint needs multispike.engine, which cannot be imported ({e})"
        ) from None
    model, ckpt = open_checkpoint(path)
    return model, checkpoint_settings(ckpt)


#: what energy and analyze assume without a checkpoint
DEFAULTS = {"timesteps": 2, "firing": "binary"}


def resolve_checkpoint_args(args: argparse.Namespace, default_dataset: str | None = None
                            ) -> tuple[Any, list[str]]:
    """Fill ``args.dataset``, ``args.timesteps`` and ``args.data_dir`` from ``--checkpoint``
    (flags given win, each with a note), else from the defaults; returns ``(model, notes)``:
    the checkpoint's model (None without one) and ``note: ...`` lines for the output.

    A ``--model`` or ``--firing`` other than the checkpoint's is refused (one line): a trained
    model keeps its architecture and firing rule.
    """
    notes: list[str] = []
    if not getattr(args, "checkpoint", None):
        if args.timesteps is None:
            args.timesteps = DEFAULTS["timesteps"]
        if args.dataset is None:
            args.dataset = default_dataset
        return None, notes
    loaded = _load_checkpoint(args.checkpoint)
    model, saved = loaded if isinstance(loaded, tuple) else (loaded, {})
    name = saved.get("model") or getattr(model, "name", None)
    if args.model and name and args.model != name:
        raise ConfigError(f"--model {args.model} differs from the checkpoint's model {name}; "
                          "drop --model (a checkpoint rebuilds its own model)")
    firing = getattr(model, "firing", None) or saved.get("firing")
    if getattr(args, "firing", None) and firing and str(args.firing) != str(firing):
        raise ConfigError(f"--firing {args.firing} differs from the checkpoint's firing "
                          f"{firing}; drop --firing (a trained model keeps its firing rule)")
    saved_t = saved.get("timesteps") or getattr(model, "timesteps", None)
    if args.timesteps is None:
        args.timesteps = saved_t or DEFAULTS["timesteps"]
    elif saved_t and args.timesteps != saved_t:
        notes.append(f"note: --timesteps {args.timesteps} overrides the checkpoint's "
                     f"T = {saved_t}")
    if args.dataset is None:
        args.dataset = saved.get("dataset")
        if args.dataset is None:
            raise ConfigError(f"checkpoint {args.checkpoint} does not record its dataset; "
                              "give --dataset")
    elif saved.get("dataset") and args.dataset != saved["dataset"]:
        notes.append(f"note: --dataset {args.dataset} overrides the checkpoint's dataset "
                     f"{saved['dataset']}")
    if getattr(args, "data_dir", None) is None and args.dataset == saved.get("dataset"):
        args.data_dir = saved.get("data_dir")
    return model, notes


def _check_fits(model: Any, spec: Any, args: argparse.Namespace) -> None:
    """A checkpoint's model must take the input of ``--dataset`` (one line otherwise)."""
    want = [getattr(model, "in_channels", None), *(getattr(model, "input_size", None) or ())]
    have = list(spec.input_shape)
    if want[0] is None or len(want) != len(have):
        return
    if [int(w) for w in want] != [int(h) for h in have]:
        raise ConfigError(
            f"the checkpoint's model takes {'x'.join(map(str, want))} input but --dataset "
            f"{spec.name} gives {'x'.join(map(str, have))}; drop --dataset to use the one it "
            "was trained on")


def _check_memory(model: Any, spec: Any, t: int, batch_size: int, device: Any) -> None:
    try:
        from multispike.engine.evaluate import check_memory
    except ImportError:  # pragma: no cover - engine not part of the build
        return
    check_memory(model, spec.input_shape, t, batch_size, device, training=False)


def _progress(loader: Any, desc: str, batches: int, args: argparse.Namespace) -> Any:
    """``loader`` with a progress display of ``batches`` batches (off with --no-progress)."""
    try:
        from multispike.engine.evaluate import Progress
    except ImportError:  # pragma: no cover - engine not part of the build
        return loader
    try:
        total = min(len(loader), batches)
    except TypeError:
        total = batches
    return Progress(loader, desc, total=total, enabled=not getattr(args, "no_progress", False))


def _check_out(out: str) -> None:
    from multispike.engine.runlock import check_out_folder

    check_out_folder(out)


def _build_model(args: argparse.Namespace, spec: Any, model: Any = None) -> Any:
    """The model of ``--checkpoint`` (``model``, already loaded), else ``--model`` (or the
    dataset default), untrained."""
    if getattr(args, "checkpoint", None):
        if model is None:
            loaded = _load_checkpoint(args.checkpoint)
            model = loaded[0] if isinstance(loaded, tuple) else loaded
        if hasattr(model, "timesteps"):
            model.timesteps = args.timesteps
        return model
    name = args.model or spec.default_model
    kwargs: dict[str, Any] = {"num_classes": spec.num_classes, "timesteps": args.timesteps}
    firing = getattr(args, "firing", None)
    if firing:
        kwargs["firing"] = firing
        if str(firing).lower() == "ann":
            kwargs.pop("timesteps")  # the ANN twin has no dynamics: one step
    if spec.input_shape[0] != 3:
        kwargs["in_channels"] = spec.input_shape[0]
    return _models().create(name, **kwargs)


def _loader(args: argparse.Namespace, spec: Any) -> tuple[Any, Any]:
    """Test-split loader and its evaluation transform (normalisation)."""
    try:
        from multispike import data
    except ImportError as e:
        raise ConfigError(f"measuring needs multispike.data, which cannot be imported ({e})") \
            from None
    kwargs: dict[str, Any] = {"data_dir": args.data_dir, "train": False}
    if spec.is_event:
        kwargs["timesteps"] = args.timesteps
    ds = data.build(spec.name, **kwargs)
    loader = data.make_loader(ds, args.batch_size, shuffle=False)
    return loader, data.batch_transform(spec.name, train=False)


def _device(name: Any) -> Any:
    """The ``torch.device`` of ``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""
    try:
        from multispike.engine.train import pick_device
    except ImportError as e:
        raise ConfigError(
            f"measuring needs multispike.engine, which cannot be imported ({e})"
        ) from None
    return pick_device(str(name or "auto"))


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


# -- energy --------------------------------------------------------------------------------------
def energy_report(args: argparse.Namespace) -> Any:
    """Build the model, count its operations, get the rates, estimate: an EnergyReport."""
    from multispike.analysis.energy import estimate_energy, get_cost_table
    from multispike.analysis.ops import trace_ops
    from multispike.analysis.stats import measure_rates

    if args.checkpoint and args.firing_rate is not None:
        raise ConfigError("give --firing-rate (assumed rate) or --checkpoint (measured), not both")
    table = get_cost_table(args.cost_table)
    convention = getattr(args, "convention", None)
    note = ""
    if convention == "events" and not args.checkpoint:
        raise ConfigError(
            "--convention events bills each layer from recorded spikes: give --checkpoint with "
            "data; an assumed --firing-rate is billed by --convention paper (the default then)"
        )
    _positive("--batches", args.batches)
    _positive("--batch-size", args.batch_size)
    if args.timesteps is not None:
        _check_timesteps(args.timesteps)
    loaded, notes = resolve_checkpoint_args(args, default_dataset="cifar10")
    if not args.checkpoint and args.firing is None:
        args.firing = DEFAULTS["firing"]
    t = _check_timesteps(args.timesteps)
    spec = dataset_spec(args.dataset)
    model = _build_model(args, spec, loaded)
    if loaded is not None:
        _check_fits(model, spec, args)
    if str(getattr(model, "firing", "")) == "ann" and not spec.is_event:
        t = 1  # the ANN twin sees the image once
    device = _device(getattr(args, "device", None) if args.checkpoint else "cpu")
    _check_memory(model, spec, t, args.batch_size if args.checkpoint else 1, device)
    ops = trace_ops(model, spec.input_shape, t, event=bool(spec.is_event))
    if args.checkpoint:
        model.to(device)
        loader, transform = _loader(args, spec)
        loader = _progress(loader, f"measure {spec.name} T={t}", args.batches, args)
        measured = measure_rates(model, loader, batches=args.batches, transform=transform,
                                 events=convention != "paper")
        if convention != "paper" and measured.events is None:
            if convention == "events":
                raise ConfigError(
                    f"cannot count the events of {type(model).__name__} "
                    f"({measured.events_error}); use --convention paper"
                )
            note = f"events not counted ({measured.events_error}): paper convention"
        rates: Any = measured if measured.events is not None else measured.rates
        source = f"measured on {measured.batches} batches of {spec.name}"
    else:
        if args.firing_rate is None:
            if ops.neurons:
                raise ConfigError(
                    "give --firing-rate S (spikes per neuron per step, e.g. 0.1642) or "
                    "--checkpoint with data to measure the rates"
                )
            rates, source = 0.0, "none (no spiking layer)"
        else:
            rates, source = args.firing_rate, "assumed"
    report = estimate_energy(ops, rates, t, table, rate_source=source, convention=convention)
    if note:
        report.meta["convention_note"] = note
    if notes:
        report.meta["notes"] = notes
    report.meta.update({
        "model": getattr(model, "name", args.model or spec.default_model),
        "dataset": spec.name,
        "input_shape": list(spec.input_shape),
    })
    if getattr(model, "firing", None):
        report.firing = str(model.firing)
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


def _options(items: list[str]) -> dict[str, Any]:
    """``["v_threshold=0.5", "neuron=lif"]`` → ``{"v_threshold": 0.5, "neuron": "lif"}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--sweep-option takes KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


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


def analyze(args: argparse.Namespace) -> dict[str, Any]:
    """Run what the flags ask for; returns ``{"written": {name: path}, ...}``."""
    from multispike.analysis.figures import plot_accuracy_vs_timesteps
    from multispike.analysis.information import entropy_rows, plot_entropy
    from multispike.analysis.membrane import membrane_histograms, neuron_thresholds, plot_membrane
    from multispike.analysis.stats import collect_activity, plot_firing_stats
    from multispike.analysis.sweeps import delta_sweep, placement_ablation

    if not (args.checkpoint or args.model or args.eval_json or args.sweep):
        raise ConfigError(
            "nothing to analyze: give --checkpoint (or --model) with --dataset, --eval-json "
            "FILE, or --sweep deltas|placement"
        )
    if args.timesteps is not None:
        _check_timesteps(args.timesteps)
    _check_out(args.out)
    if args.checkpoint or args.model:
        _positive("--batches", args.batches)
        _positive("--batch-size", args.batch_size)
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
        spec = dataset_spec(args.dataset)
        model = _build_model(args, spec, loaded)
        if loaded is not None:
            _check_fits(model, spec, args)
        device = _device(getattr(args, "device", None))
        _check_memory(model, spec, args.timesteps, args.batch_size, device)
        model = model.to(device)
        loader, transform = _loader(args, spec)
        loader = _progress(loader, f"record {spec.name} T={args.timesteps}", args.batches, args)
        mon = collect_activity(model, loader, batches=args.batches, transform=transform,
                               membrane_samples=args.membrane_samples)
        summary = mon.summary()
        for key, paths in (
            ("firing", plot_firing_stats(summary, out / "firing_stats.png")),
            ("entropy", plot_entropy(summary, out / "entropy.png")),
        ):
            written.update({f"{key}_{k}": str(v) for k, v in paths.items()})
        if args.membrane_samples > 0:
            hist = membrane_histograms(mon, thresholds=neuron_thresholds(model))
            paths = plot_membrane(hist, out / "membrane.png", max_layers=args.max_layers or None)
            written.update({f"membrane_{k}": str(v) for k, v in paths.items()})
        spikes = sum(r["spikes"] for r in summary)
        steps = sum(r["neuron_steps"] for r in summary)
        result["mean_rate"] = spikes / steps if steps else 0.0
        result["entropy"] = [
            {k: r[k] for k in ("layer", "entropy_bits", "bound_bits")}
            for r in entropy_rows(summary)
        ]

    if args.sweep:
        common = {"dataset": args.sweep_dataset, "model": args.sweep_model,
                  "epochs": args.epochs, "seed": args.seed, "recipe": args.recipe,
                  "settings": {"model_options": _options(args.sweep_option or [])}}
        default_ts = "1" if args.sweep == "deltas" else "1,2,3"
        ts = _ints(args.sweep_timesteps or default_ts, "--sweep-timesteps")
        if args.sweep == "deltas":
            if len(ts) != 1:
                raise ConfigError(f"--sweep deltas runs at one T, got --sweep-timesteps {ts}")
            res = delta_sweep(magnitudes=_floats(args.deltas, "--deltas"), timesteps=ts[0],
                              out=out / "delta_sweep", **common)
        else:
            res = placement_ablation(timesteps=ts, out=out / "placement", **common)
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


# -- registration --------------------------------------------------------------------------------
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
                   help="binary, mt, ternary, ternary-mt or ann (default binary; with "
                   "--checkpoint the model keeps its own)")
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
    p.add_argument("--data-dir", help="dataset folder (with --checkpoint)")
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
    p.add_argument("--dataset", help="data to feed --checkpoint/--model (default with "
                   "--checkpoint: the dataset it was trained on)")
    p.add_argument("--data-dir", help="dataset folder")
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
    p.add_argument("--sweep", choices=("deltas", "placement"),
                   help="train and draw an MT ablation (MT-SNN Fig 5c or 5a/b)")
    p.add_argument("--sweep-dataset", default="digits", help="dataset of the sweep (digits)")
    p.add_argument("--sweep-model", help="model of the sweep (default: the dataset's)")
    p.add_argument("--recipe", help="engine recipe for the sweep runs (the papers' settings)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per sweep run (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sweep runs")
    p.add_argument("--deltas", default="0.1,0.3,0.5,0.7",
                   help="delta sizes of --sweep deltas (default 0.1,0.3,0.5,0.7)")
    p.add_argument("--sweep-timesteps", default=None,
                   help="time steps of the sweep runs: one T for deltas (default 1), a list "
                   "for placement (default 1,2,3)")
    p.add_argument("--sweep-option", action="append", metavar="KEY=VALUE",
                   help="model/neuron option for every sweep run, e.g. v_threshold=0.5 "
                   "(repeatable; values are JSON)")
    p.add_argument("--out", default="analysis", help="output folder (default ./analysis)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress display while recording")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=cmd_analyze)
