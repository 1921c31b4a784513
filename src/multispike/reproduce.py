"""``multispike reproduce``: one row of the papers' tables, from dataset folder to "paper vs ours".

For a recipe (one TOML per table row, with the paper's claim in its ``[paper]`` table) and a
list of seeds, :func:`reproduce`

1. trains each seed into ``OUT/seedN`` (:func:`multispike.engine.train_model`: the run lock,
   exact resume; a seed whose run exists is resumed, a finished one is not trained again);
2. evaluates each seed's ``best.pt`` (the papers report the best epoch on the test set) at the
   paper's T and at every T of the paper's sweep (MT-SNN Table 3 / Fig 3-4), with
   :func:`multispike.engine.evaluate_model`, as ``multispike eval`` does;
3. measures firing rates and bills energy from them (``events`` convention, the defaults of
   ``multispike energy --checkpoint``: 8 test batches of 64, ``hu2021``);
4. deploys: folds BN and amplitudes (:func:`multispike.deploy.fold_amplitudes`) and checks that
   the folded model reproduces the outputs;
5. writes ``OUT/report.json``, ``OUT/report.md`` and ``OUT/accuracy_vs_T.png`` (ours, mean ±
   std over seeds, with the paper's points).

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
REPORT_VERSION = 1


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
    }


def _energy(model: Any, dataset: str, data_dir: str | None, timesteps: int) -> dict[str, Any]:
    """What ``multispike energy --checkpoint`` reports, with its defaults."""
    from multispike import data
    from multispike.analysis.energy import get_cost_table
    from multispike.analysis.measure import eval_loader, model_energy

    spec = data.get_spec(dataset)
    model.timesteps = timesteps
    loader, transform = eval_loader(spec, data_dir=data_dir, batch_size=ENERGY_BATCH_SIZE,
                                    timesteps=timesteps)
    report = model_energy(model, spec, timesteps, get_cost_table(COST_TABLE), loader=loader,
                          transform=transform, batches=ENERGY_BATCHES)
    return {"energy_uj": report.energy_uj, "sops": report.sops,
            "flops": report.first_layer_flops, "mean_rate": report.mean_rate,
            "convention": report.convention, "timesteps": timesteps}


def _deploy(model: Any, dataset: str, data_dir: str | None) -> dict[str, Any]:
    """Fold BN and amplitudes; the largest output difference on one test batch (float64)."""
    from multispike import data
    from multispike.analysis.measure import eval_loader
    from multispike.deploy import fold_amplitudes
    from multispike.engine.train import to_model_input

    spec = data.get_spec(dataset)
    loader, transform = eval_loader(spec, data_dir=data_dir, batch_size=16,
                                    timesteps=model.timesteps)
    x, _ = next(iter(loader))
    x = to_model_input(transform(x) if transform is not None else x, spec)
    ref = model.double().eval()
    deployed = fold_amplitudes(ref)
    with torch.no_grad():
        x = x.to(next(ref.parameters()).device, torch.float64)
        diff = float((deployed(x) - ref(x)).abs().max())
    model.float()
    return {"max_abs_diff_float64": diff, "ok": diff <= 1e-6}


def evaluate_seed(run_dir: Path, dataset: str, data_dir: str | None, claim: dict[str, Any],
                  device: str) -> dict[str, Any]:
    """Accuracy at every T, energy and deployment of one trained seed (cached in the folder)."""
    from multispike.engine import evaluate_model, load_model

    best = run_dir / "best.pt"
    cache = run_dir / "reproduce.json"
    key = _file_key(best)
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text())
        except ValueError:
            saved = {}
        if saved.get("checkpoint_sha256") == key and saved.get("version") == REPORT_VERSION:
            return saved
    model, ckpt = load_model(best)
    ts = sweep_timesteps(claim)
    rows = evaluate_model(model, dataset, ts, data_dir=data_dir, device=device, rates=True)
    t_paper = int(claim["timesteps"])
    result = {
        "version": REPORT_VERSION,
        "checkpoint": str(best),
        "checkpoint_sha256": key,
        "best_epoch": ckpt.get("epoch"),
        "accuracy": {str(r["timesteps"]): 100 * r["accuracy"] for r in rows},
        "mean_firing_rate": {str(r["timesteps"]): r.get("mean_firing_rate") for r in rows},
        "energy": _energy(model, dataset, data_dir, t_paper),
        "deploy": _deploy(model, dataset, data_dir),
    }
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


def environment(wall_s: float, device: str) -> dict[str, Any]:
    """Where and with what the run ran: ``device`` is the one it trained on (``"cpu"``,
    ``"cuda:0"``), named in ``device_name``; ``gpu`` says whether that was a GPU."""
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
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "multispike": version,
        "git_commit": commit,
        "python": platform.python_version(),
        "wall_s": wall_s,
    }


def summarize(recipe: str, claim: dict[str, Any], seeds: dict[int, dict[str, Any]],
              wall_s: float, device: str = "cpu") -> dict[str, Any]:
    """The report: paper vs ours (mean ± std over seeds), accuracy against T, energy;
    ``device``: where the seeds trained (``"cpu"``, ``"cuda:0"``)."""
    t = str(int(claim["timesteps"]))
    ours = [s["accuracy"][t] for s in seeds.values()]
    mean, std = mean_std(ours)
    paper = claim.get("accuracy")
    row: dict[str, Any] = {"timesteps": int(t), "paper": paper, "paper_std": claim.get("std"),
                           "ours_mean": mean, "ours_std": std, "ours": ours}
    if paper is not None:
        row["difference"] = mean - float(paper)
        row["paper_within_our_spread"] = abs(mean - float(paper)) <= std
    sweep = {}
    for tt in sweep_timesteps(claim):
        vals = [s["accuracy"][str(tt)] for s in seeds.values()]
        m, sd = mean_std(vals)
        sweep[str(tt)] = {"ours_mean": m, "ours_std": sd}
    for tt, acc in zip(claim.get("sweep_timesteps", []), claim.get("sweep_accuracy", []),
                       strict=False):
        sweep.setdefault(str(tt), {})["paper"] = acc
    energies = [s["energy"]["energy_uj"] for s in seeds.values()]
    em, es = mean_std(energies)
    return {
        "recipe": recipe,
        "claim": claim,
        "seeds": {str(k): v for k, v in seeds.items()},
        "accuracy": row,
        "accuracy_vs_T": sweep,
        "energy_uj_per_image": {"mean": em, "std": es, "timesteps": int(t),
                                "convention": next(iter(seeds.values()))["energy"]["convention"],
                                "cost_table": COST_TABLE},
        "deploy_ok": all(s["deploy"]["ok"] for s in seeds.values()),
        "environment": environment(wall_s, device),
    }


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def report_markdown(rep: dict[str, Any]) -> str:
    claim, acc, env = rep["claim"], rep["accuracy"], rep["environment"]
    n = len(rep["seeds"])
    lines = [f"# Reproduction of `{rep['recipe']}`", ""]
    lines += [f"Claim: {claim.get('method', '')} {claim.get('architecture', '')} on "
              f"{claim.get('dataset', '')} at T = {claim['timesteps']}, {claim['source']}."]
    if claim.get("claim"):
        lines += ["", f"The paper says: {claim['claim']}."]
    lines += ["", "Accuracy is the best test accuracy over the epochs (the papers' convention: "
              "the best epoch is chosen on the test set). The paper's value lies within our "
              "spread when it is within one standard deviation of our mean.", ""]
    lines += ["| | paper | ours (mean ± std, "
              f"{n} seed{'s' if n != 1 else ''}) | difference | paper within our spread |",
              "|---|---|---|---|---|"]
    paper = (f"{acc['paper']:.2f}" + (f" ± {acc['paper_std']:.2f}" if acc.get("paper_std")
                                       is not None else "")) if acc["paper"] is not None else "–"
    within = acc.get("paper_within_our_spread")
    said = "–" if within is None else ("yes" if within else "no")
    lines += [f"| top-1 accuracy (%) at T = {acc['timesteps']} | {paper} | "
              f"{acc['ours_mean']:.2f} ± {acc['ours_std']:.2f} | "
              f"{_fmt(acc.get('difference'))} | {said} |"]
    comp = claim.get("comparison")
    if comp:
        lines += ["", f"The paper's comparison: against {comp.get('against')} "
                  f"({comp.get('source')}"
                  + (f", {comp['accuracy']:.2f}% at T = {comp['timesteps']}"
                     if comp.get("accuracy") is not None else "")
                  + (f": {comp['claim']}" if comp.get("claim") else "") + ")."]
    lines += ["", "## Accuracy against T", "", "![accuracy against T](accuracy_vs_T.png)", "",
              "| T | paper | ours |", "|---|---|---|"]
    for tt, v in sorted(rep["accuracy_vs_T"].items(), key=lambda kv: int(kv[0])):
        ours = (f"{v['ours_mean']:.2f} ± {v['ours_std']:.2f}" if "ours_mean" in v else "–")
        lines += [f"| {tt} | {_fmt(v.get('paper'))} | {ours} |"]
    e = rep["energy_uj_per_image"]
    lines += ["", "## Energy per image", "",
              f"{e['mean']:.3f} ± {e['std']:.3f} µJ at T = {e['timesteps']} "
              f"(cost table {e['cost_table']}, convention {e['convention']}, rates measured on "
              f"{ENERGY_BATCHES} test batches of {ENERGY_BATCH_SIZE}).", ""]
    lines += ["## Per seed", "", "| seed | best epoch | accuracy at T (%) | firing rate | "
              "energy (µJ) | deploy max diff (float64) | train img/s |",
              "|---|---|---|---|---|---|---|"]
    t = str(acc["timesteps"])
    for seed, s in rep["seeds"].items():
        lines += [f"| {seed} | {s.get('best_epoch')} | {s['accuracy'][t]:.2f} | "
                  f"{_fmt(s['mean_firing_rate'].get(t), 4)} | {s['energy']['energy_uj']:.3f} | "
                  f"{s['deploy']['max_abs_diff_float64']:.1e} | "
                  f"{_fmt(s.get('train_images_per_s'), 0)} |"]
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
    ax.errorbar([t for t, _ in ours], [v["ours_mean"] for _, v in ours],
                yerr=[v["ours_std"] for _, v in ours], marker="o", capsize=3,
                label=f"ours (mean ± std, {len(rep['seeds'])} seeds)")
    paper = [(int(t), v["paper"]) for t, v in pts if v.get("paper") is not None]
    if not paper and rep["accuracy"]["paper"] is not None:
        paper = [(rep["accuracy"]["timesteps"], rep["accuracy"]["paper"])]
    if paper:
        ax.plot([t for t, _ in paper], [a for _, a in paper], "s--", color="black",
                label=f"paper ({rep['claim']['source']})")
    span_ylim(ax, [v["ours_mean"] for _, v in ours] + [a for _, a in paper])
    ax.set_xticks(sorted({t for t, _ in ours} | {t for t, _ in paper}))
    ax.set_xlabel("time steps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{rep['recipe']}: paper vs ours\nerror bars: standard deviation over seeds",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# -- the whole command ------------------------------------------------------------------------
def reproduce(
    recipe: str,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    out: str | os.PathLike | None = None,
    data_dir: str | None = None,
    epochs: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any] | None:
    """Train, evaluate, measure, deploy and report one recipe over ``seeds`` (module docs).

    Returns the report (also written to ``out``), or ``None`` on ranks other than 0.
    """
    start = time.perf_counter()
    claim = paper_claim(recipe)
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct integers, got {seeds}")
    out_dir = Path(out) if out is not None else Path("runs") / "reproduce" / Path(recipe).stem
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder; choose a folder")
    overrides: dict[str, Any] = {"data_dir": data_dir, "epochs": epochs, "device": device,
                                 "progress": progress}
    trained: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        trained[seed] = _train(recipe, out_dir / f"seed{seed}", {**overrides, "seed": seed})
        if progress and int(os.environ.get("RANK", "0")) == 0:
            print(f"seed {seed}: best test accuracy {trained[seed]['best_accuracy']:.4f}",
                  flush=True)
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    dataset = next(iter(trained.values()))["dataset"]
    results: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        r = evaluate_seed(out_dir / f"seed{seed}", dataset, data_dir, claim, device)
        results[seed] = {**r, **{k: trained[seed][k] for k in
                                 ("best_accuracy", "epochs", "train_images_per_s")}}
    used = ", ".join(sorted({t["device"] for t in trained.values()}))  # one, in practice
    rep = summarize(recipe, claim, results, time.perf_counter() - start, used)
    (out_dir / "report.json").write_text(json.dumps(rep, indent=2, default=_json_default))
    plot_report(rep, out_dir / "accuracy_vs_T.png")
    (out_dir / "report.md").write_text(report_markdown(rep))
    return rep


def _json_default(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)
