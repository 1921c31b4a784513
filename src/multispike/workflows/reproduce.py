"""``multispike reproduce``: one row of the papers' tables, from dataset folder to "paper vs ours".

For a recipe (one TOML per table row, with the paper's claim in its ``[paper]`` table) and a
list of seeds, :func:`reproduce`

1. trains each seed into ``OUT/seedN`` at the paper's T, and, for every other T of the paper's
   sweep (MT-SNN Table 3 / Fig 3-4, Ternary Table 2), one more model per seed into
   ``OUT/T{T}/seedN``, as the papers trained one model per T
   (:func:`multispike.engine.train_model`: the run lock, exact resume; a seed whose run exists
   is resumed, a finished one is not trained again). ``sweep="eval"`` (``--sweep eval``) keeps
   the cheap reading instead: the paper-T model evaluated at the other T, rows labelled so;
2. evaluates each seed's ``best.pt`` (the papers report the best epoch on the test set) at the
   T it was trained at (and, with ``sweep="eval"``, at every T of the sweep), with
   :func:`multispike.engine.evaluate_model`, as ``multispike eval`` does; every T row of the
   report carries ``trained_T`` and ``eval_T``;
3. measures firing rates and bills energy from them (``events`` convention, the defaults of
   ``multispike energy --checkpoint``: 8 test batches of 64, or fewer in a smaller test set,
   ``hu2021``);
4. deploys: folds BN and amplitudes (:func:`multispike.deploy.fold_amplitudes`) and checks that
   the folded model reproduces the outputs;
5. writes ``OUT/report.json``, ``OUT/report.md`` and ``OUT/accuracy_vs_T.png`` (ours, mean ±
   std over seeds, with the paper's points). ``report.md`` names in its header every setting
   given on the command line that is not the recipe's (``--epochs``, seeds, ``--device``,
   ``--sweep``), and labels a claim that is our own number (the digits recipes' demo rows).

Each seed's results are kept in ``OUT/seedN/reproduce.json`` keyed by the checkpoint's bytes,
so an interrupted run continues where it stopped. Under ``torchrun`` training uses every
process (DistributedDataParallel); evaluation, energy, deployment and the report run on rank 0.

Example (CPU, a few minutes)::

    multispike reproduce mt-digits --seeds 0,1 --epochs 2 --out runs/repro
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from multispike.analysis.figures import mean_std
from multispike.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: ``multispike energy --checkpoint``'s defaults, which the report uses too
ENERGY_BATCHES, ENERGY_BATCH_SIZE, COST_TABLE = 8, 64, "hu2021"
#: 3: the energy records the batches it measured; 4: evaluation, energy and the deployment
#: check read the data with the run's dataset options (resize, ...), as training did
REPORT_VERSION = 4
#: the seeds when none are given; how the accuracy-against-T rows are made
DEFAULT_SEEDS, SWEEPS = (0, 1, 2), ("train", "eval")


# -- the paper's claim ------------------------------------------------------------------------
def paper_claim(recipe: str) -> dict[str, Any]:
    """The ``[paper]`` table of a recipe (name or ``.toml`` path): the paper's claim."""
    from multispike.engine.config import recipe_dir

    path = Path(recipe)
    if not (path.suffix == ".toml" and path.is_file()):
        path = recipe_dir() / f"{recipe}.toml"
    if not path.is_file():
        from multispike.engine.config import list_recipes

        raise ConfigError(f"unknown recipe {recipe!r}; choose one of {', '.join(list_recipes())}")
    claim = tomllib.loads(path.read_text()).get("paper")
    if not isinstance(claim, dict) or "source" not in claim:
        raise ConfigError(f"recipe {path} has no [paper] table with a source: no published "
                          f"number to compare against; train it with `multispike train --recipe "
                          f"{recipe}`, or add a [paper] table (see docs/reproduce.md)")
    return claim


def sweep_timesteps(claim: dict[str, Any]) -> list[int]:
    """The T to evaluate at: the claim's T and every T of its sweep."""
    ts = {int(claim["timesteps"])} | {int(t) for t in claim.get("sweep_timesteps", [])}
    return sorted(ts)


def own_claim(claim: dict[str, Any]) -> bool:
    """Whether the claim is our own number, not a paper's (the digits recipes' demo rows)."""
    return str(claim.get("source", "")).startswith("multispike demo")


def seed_dir(out_dir: Path, seed: int, t: int, t_paper: int) -> Path:
    """Where the model of ``seed`` trained at T = ``t`` lives: ``OUT/seedN`` at the paper's T,
    ``OUT/T{t}/seedN`` at another T of the sweep."""
    return out_dir / f"seed{seed}" if t == t_paper else out_dir / f"T{t}" / f"seed{seed}"


# -- one seed ---------------------------------------------------------------------------------
def _file_key(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _train(recipe: str, run_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    from multispike.engine import resolve_config, resume_config, train_model

    run = {**overrides, "out": str(run_dir)}
    if (run_dir / "last.pt").is_file() and (run_dir / "config.json").is_file():
        cfg = resume_config(run_dir, recipe, run)  # continues, or finds the run finished
    else:
        cfg = resolve_config(recipe, run)
    start = time.perf_counter()
    result = train_model(cfg)
    history = result["history"]
    return {
        "best_accuracy": result["best_accuracy"],
        "epochs": len(history),
        "train_images_per_s": (statistics.fmean(r["images_per_s"] for r in history)
                               if history else None),
        "train_wall_s_this_call": time.perf_counter() - start,
        "dataset": cfg.dataset,
        "data_dir": cfg.data_dir,
        "device": result["device"],
        "threads": result["threads"],
    }


def _energy(model: Any, run: Any, timesteps: int, progress: bool = False) -> dict[str, Any]:
    """What ``multispike energy --checkpoint`` reports, with its defaults, on the run's data
    (``run``: :class:`~multispike.engine.checkpoint.RunData`)."""
    from multispike import data
    from multispike.analysis.energy import get_cost_table
    from multispike.deploy import event_model
    from multispike.engine.evaluate import Progress, split_loader
    from multispike.workflows.measure import model_energy

    spec = data.get_spec(run.dataset, **run.options)
    model.timesteps = timesteps
    loader, transform = split_loader(run.dataset, data_dir=run.data_dir,
                                    batch_size=ENERGY_BATCH_SIZE, timesteps=timesteps,
                                    data_options=run.options)
    shown = Progress(loader, f"energy T={timesteps}", enabled=progress,
                     total=min(len(loader), ENERGY_BATCHES))
    report = model_energy(model, spec, timesteps, get_cost_table(COST_TABLE), loader=shown,
                          transform=transform, batches=ENERGY_BATCHES, events=event_model)
    batches = min(ENERGY_BATCHES, len(loader))  # a small test set has fewer
    images = min(ENERGY_BATCHES * ENERGY_BATCH_SIZE, len(loader.dataset))
    return {"energy_uj": report.energy_uj, "sops": report.sops,
            "flops": report.first_layer_flops, "mean_rate": report.mean_rate,
            "convention": report.convention, "timesteps": timesteps,
            "batches": batches, "images": images}


def _deploy(model: Any, run: Any) -> dict[str, Any]:
    """Fold BN and amplitudes; the largest output difference on one test batch (float64) of
    the run's data (``run``: :class:`~multispike.engine.checkpoint.RunData`)."""
    from multispike import data
    from multispike.deploy import fold_amplitudes
    from multispike.engine.evaluate import split_loader, to_model_input
    from multispike.workflows.deploy_checkpoint import inconclusive, spike_counts

    spec = data.get_spec(run.dataset, **run.options)
    loader, transform = split_loader(run.dataset, data_dir=run.data_dir, batch_size=16,
                                    timesteps=model.timesteps, data_options=run.options,
                                    progress=False)
    x, _ = next(iter(loader))
    x = to_model_input(transform(x) if transform is not None else x, spec)
    ref = model.double().eval()
    deployed = fold_amplitudes(ref)
    with torch.no_grad(), spike_counts(ref) as spikes:
        x = x.to(next(ref.parameters()).device, torch.float64)
        a = ref(x)
        diff = float((deployed(x) - a).abs().max())
    model.float()
    # a silent model or all-zero outputs prove nothing: not "ok", and the report says why
    note = inconclusive(a.numel(), float(a.abs().max()), [n for n, c in spikes.items() if not c],
                        len(spikes))
    return {"max_abs_diff_float64": diff, "ok": diff <= 1e-6 and note is None, "note": note}


def _cached(cache: Path, key: str, eval_ts: list[int], full: bool) -> dict[str, Any] | None:
    """The saved evaluation of the checkpoint with sha256 ``key``, if it covers the same work."""
    if not cache.is_file():
        return None
    try:
        saved = json.loads(cache.read_text())
    except ValueError:
        return None
    same = (saved.get("checkpoint_sha256"), saved.get("version"), saved.get("eval_T"),
            "energy" in saved) == (key, REPORT_VERSION, eval_ts, full)
    return saved if same else None


def evaluate_seed(run_dir: Path, dataset: str, data_dir: str | None, claim: dict[str, Any],
                  device: str, eval_ts: Sequence[int] | None = None,
                  full: bool = True, progress: bool = False) -> dict[str, Any]:
    """Accuracy at each T of ``eval_ts`` (default: every T of the claim) of one trained seed,
    and with ``full`` its energy and deployment at the paper's T (cached in the folder). The
    data is the run's: its dataset options (``resize``, ...) come from the checkpoint, and
    ``data_dir`` (None: the run's folder) replaces its folder."""
    from multispike.engine import evaluate_model, load_model
    from multispike.engine.checkpoint import checkpoint_settings, run_data

    best = run_dir / "best.pt"
    cache = run_dir / "reproduce.json"
    key = _file_key(best)
    ts = sorted(int(t) for t in (eval_ts or sweep_timesteps(claim)))
    saved = _cached(cache, key, ts, full)
    if saved is not None:
        return saved
    model, ckpt = load_model(best)
    run = run_data(checkpoint_settings(ckpt), dataset=dataset, data_dir=data_dir)
    trained_t = model.timesteps  # the checkpoint's T: the T it was trained at
    batch = (ckpt.get("config") or {}).get("batch_size") or ENERGY_BATCH_SIZE
    rows = evaluate_model(model, run.dataset, ts, data_dir=run.data_dir,
                          data_options=run.options, device=device, rates=True,
                          batch_size=batch, progress=progress)
    result = {
        "version": REPORT_VERSION,
        "checkpoint": str(best),
        "checkpoint_sha256": key,
        "best_epoch": ckpt.get("epoch"),
        "trained_T": trained_t,
        "eval_T": ts,
        "accuracy": {str(r["timesteps"]): 100 * r["accuracy"] for r in rows},
        "mean_firing_rate": {str(r["timesteps"]): r.get("mean_firing_rate") for r in rows},
    }
    if full:
        result["energy"] = _energy(model, run, int(claim["timesteps"]), progress)
        result["deploy"] = _deploy(model, run)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(cache)
    return result


# -- the report -------------------------------------------------------------------------------
def device_name(device: str) -> str:
    """What ``device`` (``"cpu"``, ``"cuda:0"``) is: the GPU's name, or the CPU and its cores."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def environment(wall_s: float, device: str, threads: Any = None) -> dict[str, Any]:
    """Where and with what the run ran: ``device`` is the one it trained on (``"cpu"``,
    ``"cuda:0"``), named in ``device_name``; ``gpu`` says whether that was a GPU; ``threads``:
    the CPU thread count of the trainings (``None`` on a GPU)."""
    from importlib import metadata

    try:
        version = metadata.version("multispike")
    except metadata.PackageNotFoundError:
        version = None
    commit = None
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=10)
        commit = proc.stdout.strip() or None if proc.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "device": device,
        "device_name": device_name(device),
        "gpu": device.startswith("cuda"),
        "threads": threads,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "multispike": version,
        "git_commit": commit,
        "python": platform.python_version(),
        "wall_s": wall_s,
    }


def _spread(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation; the deviation is None (n/a) for one value."""
    mean, std = mean_std(values)
    return mean, (std if len(values) > 1 else None)


def sweep_rows(claim: dict[str, Any], seeds: dict[int, dict[str, Any]],
               sweep_seeds: dict[int, dict[int, dict[str, Any]]] | None,
               sweep: str) -> dict[str, dict[str, Any]]:
    """Accuracy against T, one row per T of the claim, each with ``trained_T`` and ``eval_T``.

    ``sweep="train"``: row T reads the models trained at T (``sweep_seeds[T]``; ``seeds`` at
    the paper's T). ``"eval"``: every row reads ``seeds``, the models trained at the paper's T.
    """
    t_paper = int(claim["timesteps"])
    rows: dict[str, dict[str, Any]] = {}
    for t in sweep_timesteps(claim):
        apart = sweep == "train" and t != t_paper
        runs = (sweep_seeds or {})[t] if apart else seeds
        vals = [r["accuracy"][str(t)] for r in runs.values()]
        mean, std = _spread(vals)
        rows[str(t)] = {"trained_T": t if apart else t_paper, "eval_T": t, "ours_mean": mean,
                        "ours_std": std, "ours": vals}
    for t, acc in zip(claim.get("sweep_timesteps", []), claim.get("sweep_accuracy", []),
                      strict=False):
        rows.setdefault(str(t), {})["paper"] = acc
    return rows


def summarize(recipe: str, claim: dict[str, Any], seeds: dict[int, dict[str, Any]],
              wall_s: float, device: str = "cpu", *,
              sweep_seeds: dict[int, dict[int, dict[str, Any]]] | None = None,
              sweep: str = "eval", overrides: dict[str, Any] | None = None,
              threads: Any = None) -> dict[str, Any]:
    """The report: paper vs ours (mean ± std over seeds; std None with one seed), accuracy
    against T (:func:`sweep_rows`), energy. ``device``: where the seeds trained (``"cpu"``,
    ``"cuda:0"``); ``overrides``: the command-line settings that are not the recipe's
    (:func:`command_overrides`); ``threads``: the CPU thread count of the trainings."""
    t = int(claim["timesteps"])
    ours = [s["accuracy"][str(t)] for s in seeds.values()]
    mean, std = _spread(ours)
    paper = claim.get("accuracy")
    row: dict[str, Any] = {"timesteps": t, "trained_T": t, "eval_T": t, "paper": paper,
                           "paper_std": claim.get("std"), "claim_is_ours": own_claim(claim),
                           "ours_mean": mean, "ours_std": std, "ours": ours}
    if paper is not None:
        row["difference"] = mean - float(paper)
        row["paper_within_our_spread"] = None if std is None else abs(mean - float(paper)) <= std
    energies = [s["energy"]["energy_uj"] for s in seeds.values()]
    em, es = _spread(energies)
    first = next(iter(seeds.values()))["energy"]
    return {
        "recipe": recipe,
        "claim": claim,
        "overrides": overrides or {},
        "sweep": sweep,
        "seeds": {str(k): v for k, v in seeds.items()},
        "sweep_seeds": {str(tt): {str(k): v for k, v in runs.items()}
                        for tt, runs in (sweep_seeds or {}).items()},
        "accuracy": row,
        "accuracy_vs_T": sweep_rows(claim, seeds, sweep_seeds, sweep),
        "energy_uj_per_image": {"mean": em, "std": es, "timesteps": t,
                                "convention": first["convention"], "cost_table": COST_TABLE,
                                "batches": first.get("batches", ENERGY_BATCHES),
                                "images": first.get("images")},
        "deploy_ok": all(s["deploy"]["ok"] for s in seeds.values()),
        "environment": environment(wall_s, device, threads),
    }


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def pm(mean: float, std: float | None, digits: int = 2) -> str:
    """``mean ± std``; ``± n/a`` where there is no standard deviation (one seed).

    >>> pm(97.5, None), pm(97.5, 0.25)
    ('97.50 ± n/a', '97.50 ± 0.25')
    """
    return f"{mean:.{digits}f} ± " + ("n/a" if std is None else f"{std:.{digits}f}")


def claim_pm(value: float | None, std: float | None) -> str:
    """A claimed accuracy with its ± as the source prints it (Ternary Table 2's ``±0.0`` stays
    ``0.0``); ``n/a`` where the text gives none (MT-SNN); ``–`` with no number.

    >>> claim_pm(94.71, None), claim_pm(94.46, 0.0), claim_pm(66.9, 0.19)
    ('94.71 ± n/a', '94.46 ± 0.0', '66.90 ± 0.19')
    """
    if value is None:
        return "–"
    return f"{value:.2f} ± " + ("n/a" if std is None else str(float(std)))


def settings_line(overrides: dict[str, Any]) -> str:
    """The report's header line naming every setting given on the command line."""
    if not overrides:
        return ("Settings: the recipe's, with the default seeds (0,1,2); nothing was "
                "overridden on the command line.")
    parts = [f"`{flag} {o['value']}` (instead of {o['instead_of']})"
             for flag, o in overrides.items()]
    return "Settings overridden on the command line: " + ", ".join(parts) + "."


def _sweep_note(rep: dict[str, Any], noun: str) -> str:
    t0 = rep["accuracy"]["timesteps"]
    if rep.get("sweep") == "train":
        return ("Each row's models (one per seed) were trained at that row's T, as the "
                f"{noun}'s were.")
    return (f"`--sweep eval`: every row is the models trained at T = {t0}, evaluated at that T; "
            f"the {noun}'s points are models trained at each T, so only the T = {t0} row "
            "compares like with like.")


def _model_cell(v: dict[str, Any]) -> str:
    if v.get("trained_T") == v.get("eval_T"):
        return f"trained at T = {v['trained_T']}"
    return f"evaluated at T = {v['eval_T']}, trained at T = {v['trained_T']}"


def threads_line(threads: Any) -> str:
    """The report's header line naming the CPU thread count the seeds trained with."""
    if threads is None:
        return "CPU threads: – (trained on a GPU)."
    return (f"CPU threads: {threads} (the same seed and the same thread count give the same "
            "result; `multispike train --threads N` fixes the count).")


def _measured_on(e: dict[str, Any]) -> str:
    """The batches the energy's firing rates were measured on, as many as there were."""
    n = e.get("batches", ENERGY_BATCHES)
    images = f": {e['images']} images" if e.get("images") is not None else ""
    return f"{n} test batch{'es' if n != 1 else ''} of up to {ENERGY_BATCH_SIZE}{images}"


def report_markdown(rep: dict[str, Any]) -> str:
    claim, acc, env = rep["claim"], rep["accuracy"], rep["environment"]
    n = len(rep["seeds"])
    ours_claim = own_claim(claim)
    who = "claim (ours)" if ours_claim else "paper"  # a column's header
    noun = "claim" if ours_claim else "paper"  # in the prose
    lines = [f"# Reproduction of `{rep['recipe']}`", "", settings_line(rep.get("overrides", {})),
             "", threads_line(env.get("threads")), ""]
    lines += [f"Claim: {claim.get('method', '')} {claim.get('architecture', '')} on "
              f"{claim.get('dataset', '')} at T = {claim['timesteps']}, {claim['source']}."]
    if ours_claim:
        lines += ["", "This claim is our own number (the README's `multispike demo` table, "
                  "measured with this package), not a published one."]
    if claim.get("claim"):
        lines += ["", f"The paper says: {claim['claim']}."]
    lines += ["", "Accuracy is the best test accuracy over the epochs (the papers' convention: "
              f"the best epoch is chosen on the test set). The {noun}'s value lies within our "
              "spread when it is within one standard deviation of our mean (n/a with one seed: "
              "no standard deviation).", ""]
    lines += [f"| | {who} | ours (mean ± std, "
              f"{n} seed{'s' if n != 1 else ''}) | difference | {who} within our spread |",
              "|---|---|---|---|---|"]
    within = acc.get("paper_within_our_spread")
    said = "n/a" if within is None else ("yes" if within else "no")
    lines += [f"| top-1 accuracy (%) at T = {acc['timesteps']} | "
              f"{claim_pm(acc['paper'], acc.get('paper_std'))} | "
              f"{pm(acc['ours_mean'], acc['ours_std'])} | "
              f"{_fmt(acc.get('difference'))} | {said} |"]
    comp = claim.get("comparison")
    if comp:
        lines += ["", f"The {noun}'s comparison: against {comp.get('against')} "
                  f"({comp.get('source')}"
                  + (f", {comp['accuracy']:.2f}% at T = {comp['timesteps']}"
                     if comp.get("accuracy") is not None else "")
                  + (f": {comp['claim']}" if comp.get("claim") else "") + ")."]
    lines += ["", "## Accuracy against T", "", _sweep_note(rep, noun), "",
              "![accuracy against T](accuracy_vs_T.png)", "",
              f"| T | our models | {who} | ours |", "|---|---|---|---|"]
    for tt, v in sorted(rep["accuracy_vs_T"].items(), key=lambda kv: int(kv[0])):
        ours = pm(v["ours_mean"], v["ours_std"]) if "ours_mean" in v else "–"
        lines += [f"| {tt} | {_model_cell(v)} | {_fmt(v.get('paper'))} | {ours} |"]
    e = rep["energy_uj_per_image"]
    lines += ["", "## Energy per image", "",
              f"{pm(e['mean'], e['std'], 3)} µJ at T = {e['timesteps']} "
              f"(cost table {e['cost_table']}, convention {e['convention']}, rates measured on "
              f"{_measured_on(e)}).", ""]
    lines += [f"## Per seed (the models trained at T = {acc['timesteps']})", "",
              "| seed | best epoch | accuracy at T (%) | firing rate | "
              "energy (µJ) | deploy max diff (float64) | train img/s |",
              "|---|---|---|---|---|---|---|"]
    t = str(acc["timesteps"])
    for seed, s in rep["seeds"].items():
        lines += [f"| {seed} | {s.get('best_epoch')} | {s['accuracy'][t]:.2f} | "
                  f"{_fmt(s['mean_firing_rate'].get(t), 4)} | {s['energy']['energy_uj']:.3f} | "
                  f"{s['deploy']['max_abs_diff_float64']:.1e} | "
                  f"{_fmt(s.get('train_images_per_s'), 0)} |"]
    notes = sorted({s["deploy"]["note"] for s in rep["seeds"].values()
                    if s["deploy"].get("note")})
    lines += ["", *(f"Deploy check inconclusive: {n}." for n in notes)] if notes else []
    lines += ["", "## Environment", ""]
    lines += [f"- device: {env['device']} ({env['device_name']})"]
    for k in ("torch", "cuda", "multispike", "git_commit", "python"):
        lines += [f"- {k}: {env.get(k) if env.get(k) is not None else '–'}"]
    lines += [f"- wall time of this run: {env['wall_s']:.0f} s", ""]
    return "\n".join(lines)


def plot_report(rep: dict[str, Any], path: Path) -> Path:
    from multispike.analysis._io import new_figure, save_figure
    from multispike.analysis.figures import span_ylim

    fig = new_figure(6.0, 4.2)
    ax = fig.subplots()
    pts = sorted(rep["accuracy_vs_T"].items(), key=lambda kv: int(kv[0]))
    ours = [(int(t), v) for t, v in pts if "ours_mean" in v]
    how = ("one model per T" if rep.get("sweep") == "train"
           else f"trained at T = {rep['accuracy']['timesteps']}")
    ax.errorbar([t for t, _ in ours], [v["ours_mean"] for _, v in ours],
                yerr=[v["ours_std"] or 0.0 for _, v in ours], marker="o", capsize=3,
                label=f"ours (mean ± std, {len(rep['seeds'])} seeds, {how})")
    paper = [(int(t), v["paper"]) for t, v in pts if v.get("paper") is not None]
    if not paper and rep["accuracy"]["paper"] is not None:
        paper = [(rep["accuracy"]["timesteps"], rep["accuracy"]["paper"])]
    if paper:
        who = "our demo's claim" if own_claim(rep["claim"]) else "paper"
        ax.plot([t for t, _ in paper], [a for _, a in paper], "s--", color="black",
                label=f"{who} ({rep['claim']['source']})")
    span_ylim(ax, [v["ours_mean"] for _, v in ours] + [a for _, a in paper])
    ax.set_xticks(sorted({t for t, _ in ours} | {t for t, _ in paper}))
    ax.set_xlabel("time steps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{rep['recipe']}: {'claim' if own_claim(rep['claim']) else 'paper'} vs ours"
                 "\nerror bars: standard deviation over seeds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# -- the whole command ------------------------------------------------------------------------
def command_overrides(recipe: str, seeds: Sequence[int], epochs: int | None, device: str,
                      sweep: str, data_options: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
    """The settings given on the command line that differ from the recipe's or the defaults:
    ``{"--epochs": {"value": 2, "instead_of": 12}, ...}``."""
    from multispike.engine import resolve_config

    out: dict[str, Any] = {}
    recipe_options = resolve_config(recipe).data_options if data_options else {}
    for key, value in (data_options or {}).items():
        out[f"--data-option {key}"] = {
            "value": value, "instead_of": f"the recipe's {recipe_options[key]}"
            if key in recipe_options else "the dataset's default"}
    if epochs is not None:
        out["--epochs"] = {"value": epochs,
                           "instead_of": f"the recipe's {resolve_config(recipe).epochs}"}
    if tuple(seeds) != DEFAULT_SEEDS:
        out["--seeds"] = {"value": ",".join(map(str, seeds)),
                          "instead_of": ",".join(map(str, DEFAULT_SEEDS))}
    if device != "auto":
        out["--device"] = {"value": device, "instead_of": "auto"}
    if sweep != "train":
        out["--sweep"] = {"value": sweep, "instead_of": "train: one model per T"}
    return out


def _train_all(recipe: str, out_dir: Path, seeds: list[int], ts: list[int], t_paper: int,
               overrides: dict[str, Any], progress: bool) -> dict[int, dict[int, Any]]:
    """Train every seed at every T of ``ts`` (the paper's T first): ``{T: {seed: summary}}``."""
    trained: dict[int, dict[int, Any]] = {}
    for t in [t_paper] + [tt for tt in ts if tt != t_paper]:
        trained[t] = {}
        for seed in seeds:
            run = {**overrides, "seed": seed, "timesteps": None if t == t_paper else t}
            trained[t][seed] = _train(recipe, seed_dir(out_dir, seed, t, t_paper), run)
            if progress and int(os.environ.get("RANK", "0")) == 0:
                print(f"seed {seed}, T = {t}: best test accuracy "
                      f"{trained[t][seed]['best_accuracy']:.4f}", flush=True)
    return trained


def reproduce(
    recipe: str,
    *,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    out: str | os.PathLike | None = None,
    data_dir: str | None = None,
    epochs: int | None = None,
    device: str = "auto",
    progress: bool = True,
    sweep: str = "train",
    data_options: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Train, evaluate, measure, deploy and report one recipe over ``seeds`` (module docs).

    ``data_options``: dataset options over the recipe's ``data_options`` (``--data-option``,
    e.g. ``{"cache_dir": "/scratch/dvs"}``); training records them, and every evaluation of
    the trained models reads the data with them.
    ``sweep``: ``"train"`` trains one model per seed and T of the paper's sweep, as the papers
    did; ``"eval"`` evaluates the paper-T models at the other T (cheaper; the rows say so).
    Returns the report (also written to ``out``), or ``None`` on ranks other than 0.
    """
    start = time.perf_counter()
    claim = paper_claim(recipe)
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct integers, got {seeds}")
    if sweep not in SWEEPS:
        raise ConfigError(f"unknown sweep {sweep!r}; choose one of {', '.join(SWEEPS)}")
    out_dir = Path(out) if out is not None else Path("runs") / "reproduce" / Path(recipe).stem
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder; choose a folder")
    given = command_overrides(recipe, seeds, epochs, device, sweep, data_options)
    overrides: dict[str, Any] = {"data_dir": data_dir, "epochs": epochs, "device": device,
                                 "progress": progress, "data_options": data_options or None}
    t0, ts = int(claim["timesteps"]), sweep_timesteps(claim)
    trained = _train_all(recipe, out_dir, seeds, ts if sweep == "train" else [t0], t0,
                         overrides, progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    dataset = next(iter(trained[t0].values()))["dataset"]
    results: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        r = evaluate_seed(out_dir / f"seed{seed}", dataset, data_dir, claim, device,
                          eval_ts=[t0] if sweep == "train" else ts, progress=progress)
        results[seed] = {**r, **{k: trained[t0][seed][k] for k in
                                 ("best_accuracy", "epochs", "train_images_per_s")}}
    apart = {t: {seed: {**evaluate_seed(seed_dir(out_dir, seed, t, t0), dataset, data_dir,
                                        claim, device, eval_ts=[t], full=False,
                                        progress=progress),
                        **{k: trained[t][seed][k] for k in ("best_accuracy", "epochs")}}
                 for seed in seeds} for t in trained if t != t0}
    used = ", ".join(sorted({r["device"] for runs in trained.values() for r in runs.values()}))
    counts = sorted({r.get("threads") for runs in trained.values() for r in runs.values()},
                    key=str)
    rep = summarize(recipe, claim, results, time.perf_counter() - start, used,
                    sweep_seeds=apart, sweep=sweep, overrides=given,
                    threads=counts[0] if len(counts) == 1 else counts)
    (out_dir / "report.json").write_text(json.dumps(rep, indent=2, default=_json_default))
    plot_report(rep, out_dir / "accuracy_vs_T.png")
    (out_dir / "report.md").write_text(report_markdown(rep))
    return rep


def _json_default(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)
