"""``multispike demo``, ``train`` and ``eval``: flags to a training configuration, a run, a
checkpoint's evaluation."""

from __future__ import annotations

import argparse
import errno
import json
from pathlib import Path
from typing import Any

from multispike.checks import positive_int
from multispike.cli._common import (
    add_compile_flag,
    add_data_option_flag,
    parse_data_options,
    parse_options,
)
from multispike.errors import MultispikeError


# -- train -----------------------------------------------------------------------------------------
def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags the user gave, as :class:`~multispike.engine.TrainConfig` overrides."""
    model_options = parse_options(args.option)
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
        "cuda_graphs": args.cuda_graphs or None,
        "num_workers": args.workers, "val_split": args.val_split,
        "sync_bn": args.sync_bn, "download": args.download or None,
        "progress": False if args.no_progress else None,
        "model_options": model_options or None,
        "data_options": parse_data_options(args.data_option) or None,
        "init": args.init,
    }


def _check_resumable_file(out: str) -> None:
    """``--resume`` continues from last.pt only: say so if that file cannot be read."""
    from multispike.engine.checkpoint import load_model

    last = Path(out) / "last.pt"
    if last.exists():
        load_model(last, fix=f"--resume continues only from last.pt, so the run in {out} "
                        "cannot be resumed: start a new run in another --out (its best.pt, "
                        "if readable, still serves eval and deploy)")


def _no_space(e: OSError, out: str | None) -> MultispikeError:
    where = out or (Path(e.filename).parent if e.filename else "the output folder")
    last = Path(out) / "last.pt" if out else None
    if last is not None and last.is_file():
        kept = f"the previous {last} is intact: free space, then continue with --resume"
    else:
        kept = "no checkpoint had been written yet: free space, then run again"
    return MultispikeError(
        f"no space left on the device of {where} while writing a checkpoint; {kept}")


def check_flag_conflicts(args: argparse.Namespace) -> None:
    """Refuse (one line) flags that contradict each other, before anything runs."""
    import os

    if args.seed is not None and args.seeds is not None:
        raise MultispikeError(f"--seed {args.seed} and --seeds {args.seeds} both set the seed; "
                              "give one (--seeds runs once per seed)")
    if args.init is not None:
        given = [flag for flag, value in (
            ("--recipe", args.recipe), ("--model", args.model), ("--firing", args.firing),
            ("--neuron", args.neuron), ("--deltas", args.deltas),
            ("--learn-amplitude", args.learn_amplitude or None), ("--option", args.option or None),
            ("--resume", args.resume or None)) if value is not None]
        if given:
            raise MultispikeError(
                f"--init starts from its checkpoint's model, firing rule and options, and "
                f"{given[0]} would set them too; drop {given[0]} (choose the firing rule at "
                "`multispike import --firing`; --resume continues a run by its --out alone)")
    if args.sync_bn and int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        raise MultispikeError("--sync-bn synchronises batch norm across the processes of a "
                              "torchrun job, and this run is one process; drop --sync-bn or "
                              "start it with torchrun --nproc-per-node N")


def epoch_line(row: dict, epochs: int) -> str:
    """One epoch's metrics row as one line (``--no-progress`` prints it per epoch)."""
    return (f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}  "
            f"train {row['train_accuracy']:.4f}  test {row['test_accuracy']:.4f}  "
            f"lr {row['lr']:.4g}  {row['images_per_s']:.0f} img/s")


def start_line(info: dict) -> str:
    """Where a run trains, with its CPU thread count (printed at the start of a run)."""
    if info.get("threads") is None:
        return f"training on {info['device']}"
    n = info["threads"]
    return (f"training on {info['device']} with {n} thread{'s' if n > 1 else ''} "
            "(the same seed and thread count give the same result; --threads N fixes it)")


def _apply_threads(n: int | None) -> None:
    """``--threads N``: the same as ``MULTISPIKE_THREADS=N``."""
    import os

    if n is not None:
        positive_int("--threads", n)
        os.environ["MULTISPIKE_THREADS"] = str(n)


def cmd_train(args: argparse.Namespace) -> int:
    import statistics

    from multispike.engine import resolve_config, resume_config, train_model
    from multispike.engine.config import parse_seeds
    from multispike.engine.runlock import check_out_folder
    from multispike.engine.train import check_run, init_timesteps

    check_out_folder(args.out)
    check_flag_conflicts(args)
    _apply_threads(args.threads)
    overrides = train_overrides(args)
    if args.init is not None and args.timesteps is None:  # fine-tune at the model's own T
        overrides["timesteps"] = init_timesteps(args.init)
    seeds = None if args.seeds is None else parse_seeds(args.seeds)

    def config(run: dict):
        # --resume needs only --out: the run's config.json holds the rest
        if args.resume and run.get("out"):
            _check_resumable_file(run["out"])
            cfg = resume_config(run["out"], args.recipe, run)
        else:
            cfg = resolve_config(args.recipe, run)
        check_run(cfg)
        return cfg

    def train(run: dict) -> dict:
        cfg = config(run)
        on_epoch = None
        if args.no_progress:  # no bar: one line per epoch instead
            def on_epoch(row, epochs=cfg.epochs):
                print(epoch_line(row, epochs), flush=True)
        try:
            return train_model(cfg, on_epoch=on_epoch,
                               on_start=lambda info: print(start_line(info), flush=True))
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


# -- eval ------------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from multispike.engine import parse_timesteps
    from multispike.engine.config import check_compile_mode
    from multispike.workflows.evaluate_checkpoint import evaluate_checkpoint

    asked = None if args.timesteps is None else parse_timesteps(args.timesteps)
    compile_mode = check_compile_mode(args.compile or "off")
    if args.batch_size is not None:
        positive_int("--batch-size", args.batch_size)
    result = evaluate_checkpoint(args.checkpoint, timesteps=asked, dataset=args.dataset,
                                 data_dir=args.data_dir,
                                 data_options=parse_data_options(args.data_option),
                                 batch_size=args.batch_size, device=args.device,
                                 compile=compile_mode, progress=not args.no_progress)
    rows, trained = result.rows, result.trained
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{result.model} on {result.dataset}{_options_text(result.data_options)} "
          f"({args.checkpoint})")
    print(f"{'T':>4}{'accuracy':>10}{'loss':>9}{'rate':>8}")
    for r in rows:
        print(f"{r['timesteps']:>4}{r['accuracy']:>10.4f}{r['loss']:>9.4f}"
              f"{r['mean_firing_rate']:>8.4f}")
    shown = next((r for r in rows if r["timesteps"] == trained), rows[-1])
    print(f"\nfiring rate per layer at T = {shown['timesteps']} (spikes per neuron per step; "
          "-1 and MT planes count):")
    for layer, rate in shown["firing_rates"].items():
        print(f"  {layer:<40}{rate:.4f}")
    return 0


def _options_text(options: dict) -> str:
    """`` (resize=48)``: the dataset options of an output's header; empty without any."""
    return f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else ""


# -- demo ------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from multispike.engine.config import parse_seeds
    from multispike.engine.device import pick_device
    from multispike.engine.runlock import check_out_folder
    from multispike.workflows.demo import demo_reading, plot_demo, run_demo

    check_out_folder(args.out)  # before anything is trained
    seeds = parse_seeds(args.seeds)
    positive_int("--epochs", args.epochs)
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
    w = max(20, *(len(r["label"]) + 2 for r in rows))
    print(f"{'design':<{w}}{'T':>3}{'accuracy (%)':>18}{'bits/spike':>12}{'spikes/step':>13}")
    for r in rows:
        bits = "-" if r.get("spike_bits") is None else f"{r['spike_bits']:.2f}"
        rate = "-" if r.get("spike_bits") is None or r.get("rate") is None \
            else f"{r['rate']:.3f}"
        print(f"{r['label']:<{w}}{r['timesteps']:>3}"
              f"{100 * r['accuracy']:>12.2f} ± {100 * r['std']:.2f}{bits:>12}{rate:>13}")
    print("\nbits/spike: log2 of the values a spike takes; spikes/step: spikes per neuron and "
          "time step on the test images after the last epoch, every MT plane and every unit of "
          "an integer spike counted (synaptic operations grow with it)")
    print(f"\nplot: {plot}\n")
    print(demo_reading(rows))
    return 0


# -- the parsers -----------------------------------------------------------------------------------
def add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", help="a recipe name (`multispike recipes` lists them) or a "
                   ".toml path")
    p.add_argument("--dataset", help="digits, cifar10, cifar100, cifar10-dvs, imagenet")
    p.add_argument("--model", help="registry key (default: the dataset's default model)")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--download", action="store_true", help="download missing data (online)")
    p.add_argument("--timesteps", type=int, help="time steps T")
    p.add_argument("--firing", help="binary, mt, ternary, ternary-mt, integer, "
                   "signed-integer (with --option levels=D) or ann (ANN twin)")
    p.add_argument("--neuron", help="neuron dynamics: plif, lif or if")
    p.add_argument("--deltas", help="MT deltas, e.g. -0.5,0.5")
    p.add_argument("--learn-amplitude", action="store_true", help="trainable amplitude a")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other model or neuron option, e.g. --option norm=tdbn, "
                   "levels=4, reset=soft, learn_thresholds=true (repeatable)")
    add_data_option_flag(p, "over a recipe's data_options")
    p.add_argument("--epochs", type=int,
                   help="full passes over the training set (default: the recipe's, else 10)")
    p.add_argument("--batch-size", type=int,
                   help="samples per step, per process under torchrun (default: the "
                   "recipe's, else 64)")
    p.add_argument("--lr", type=float,
                   help="initial SGD learning rate (default: the recipe's, else 0.1)")
    p.add_argument("--weight-decay", type=float,
                   help="L2 weight decay, 0 for none (default: the recipe's, else 5e-4)")
    p.add_argument("--momentum", type=float, help="SGD momentum in [0, 1) (default 0.9)")
    p.add_argument("--schedule", help="cosine, step or constant")
    p.add_argument("--augment", help="augmentation name of the dataset")
    p.add_argument("--seed", type=int,
                   help="random seed of weights, data order and augmentation (default 0)")
    p.add_argument("--seeds", help="run once per seed, e.g. 0,1,2, and report mean ± std")
    p.add_argument("--out", help="folder for last.pt, best.pt, metrics.csv, config.json")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="start from this checkpoint's model and weights (a file, or a folder "
                   "holding model.pt, best.pt or last.pt: e.g. what `multispike import` "
                   "wrote) and fine-tune it: a new run, fresh optimizer and schedule; the "
                   "model (its firing rule included) is the checkpoint's")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", help="mixed precision: auto, off, bf16, fp16")
    add_compile_flag(p)
    p.add_argument("--cuda-graphs", action="store_true",
                   help="capture the whole training step (forward, backward, optimizer) in a "
                   "CUDA graph and replay it; CUDA only (refused on the CPU)")
    p.add_argument("--workers", type=int, help="data loader worker processes")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads (default: the cores other processes leave free; the "
                   "same as MULTISPIKE_THREADS=N)")
    p.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="SyncBatchNorm under torchrun on CUDA GPUs (--no-sync-bn turns a "
                   "recipe's off)")
    p.add_argument("--val-split", type=float, metavar="FRACTION",
                   help="hold out this fraction of the training set and choose the best "
                   "epoch on it (default 0: the papers' convention, the best epoch on the "
                   "test set)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub: Any) -> None:
    """Add ``demo``, ``train`` and ``eval`` to the command line's subparsers."""
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
    add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="accuracy at several T and firing rates of a checkpoint")
    p.add_argument("--checkpoint", required=True, help="a last.pt or best.pt file")
    p.add_argument("--timesteps",
                   help="e.g. 1,2,4 (default: the T the model was trained at, then 1,2,4)")
    p.add_argument("--dataset", help="default: the dataset the checkpoint was trained on")
    p.add_argument("--data-dir",
                   help="dataset folder (default: the one the checkpoint was trained on)")
    add_data_option_flag(p, "default: the options the checkpoint was trained with; these "
                         "change or add to them")
    p.add_argument("--batch-size", type=int,
                   help="images per batch (default: the run's training batch size, smaller in "
                   "proportion at a T above the trained one, so that memory stays that of "
                   "training; 64 if the checkpoint does not record it)")
    p.add_argument("--device", default="auto")
    add_compile_flag(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_eval)
