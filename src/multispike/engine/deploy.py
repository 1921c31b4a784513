"""Checkpoint in, verified deployable model out: :func:`deploy_checkpoint` (``multispike
deploy``, from :mod:`multispike.cli.deploy`, calls it with its flags). Steps:

1. load the checkpoint (:func:`multispike.engine.evaluate.open_checkpoint`), eval mode;
2. fold BN and amplitudes (:func:`~multispike.deploy.fold_amplitudes`), fix learned thresholds
   as constants (:meth:`~multispike.neurons.Neuron.fixed`) and, for multi-level neurons (MT,
   ternary-MT, integer, signed-integer), split the spike planes
   (:func:`~multispike.deploy.split_planes`);
3. verify (:func:`verify`): run the trained and the deployed model on ``verify_batches``
   batches of random images of the model's input size, in float64 (exact arithmetic up to
   rounding; spikes are discontinuous, so float32 rounding could flip one near a threshold) and
   in the checkpoint's dtype, and report the largest output difference; optionally run the
   addition-only executor;
4. write ``DIR/model.safetensors`` + ``DIR/config.json`` and, when NIR can express the model,
   ``DIR/model.nir`` (checked by running the written graph through ``nirtorch``); otherwise a
   one-line note says why not.

``device`` (default ``cpu``; ``auto``, ``cuda``, ``cuda:N``) is where steps 2 and 3 run. The
random images are drawn on the CPU from ``seed`` and moved there, the NIR graph is checked on
the CPU, and the written files hold CPU tensors, so the output does not depend on the device
beyond floating-point rounding. :func:`report` gives the lines the command prints.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multispike.checks import positive_int, positive_number
from multispike.checks import seed as check_seed
from multispike.errors import ConfigError

#: float64 outputs of the deployed model must match the trained model's to this (relative)
TOLERANCE = 1e-6


def _check_args(verify_batches: int, batch_size: int, dt: float, seed: int) -> None:
    check_seed("--seed", seed)
    positive_int("--verify-batches", verify_batches)
    positive_int("--batch-size", batch_size)
    positive_number("--dt", dt)


def deploy_checkpoint(
    checkpoint: str,
    out: str,
    *,
    nir: bool | str = True,
    dt: float = 1.0,
    split: bool = True,
    verify_batches: int = 2,
    batch_size: int = 8,
    executor: bool = False,
    seed: int = 0,
    force: bool = False,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Deploy one checkpoint into ``out``; returns the summary written into ``config.json``.

    ``device``: where the model is folded, split and verified (``cpu``, ``auto``, ``cuda``,
    ``cuda:N`` or a ``torch.device``). ``nir``: True writes ``model.nir`` where NIR can
    express the model, ``"required"`` (an explicit ``--nir``) refuses a model it cannot
    express before anything is written, False writes none. A folder holding a training run is
    never a target, ``force`` or not.
    """
    from multispike.deploy import fold_amplitudes, split_planes
    from multispike.deploy.io import CONFIG, WEIGHTS, save_deployed
    from multispike.engine.evaluate import open_checkpoint
    from multispike.engine.runlock import check_out_folder, holds_training_run
    from multispike.engine.train import pick_device

    _check_args(verify_batches, batch_size, dt, seed)
    check_out_folder(str(out))
    out_dir = Path(out)
    if holds_training_run(out_dir):  # its config.json is the run's: never overwritten
        raise ConfigError(f"{out_dir} holds a training run (checkpoints, metrics or its "
                          "config.json), which deploy never overwrites, --force or not; choose "
                          f"another --out, e.g. {out_dir / 'deployed'}")
    if not force and any((out_dir / f).exists() for f in (WEIGHTS, CONFIG, "model.nir")):
        raise ConfigError(f"{out_dir} already holds a deployed model; pass --force to overwrite")
    dev = pick_device(str(device))
    model, _ckpt = open_checkpoint(checkpoint)
    model.to(dev).eval()
    if getattr(model, "firing", None) == "ann":
        raise ConfigError("the checkpoint is the ANN twin (firing='ann'): no spikes to deploy")
    deployed = fold_amplitudes(model)
    if split:
        split_planes(deployed, inplace=True)
    rec = deployed.deployment
    shape = (int(model.in_channels), *map(int, model.input_size))
    verification = verify(model, deployed, shape, verify_batches, batch_size, seed, split)
    summary: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "model": model.model_args["name"],
        "firing": model.firing,
        "timesteps": int(model.timesteps),
        "folded_norms": len(rec["folded_norms"]),
        "folded_amplitudes": sum(1 for m in model.modules() if getattr(m, "amplitude", None)
                                 is not None),
        "rescaled_neurons": len(rec["rescaled_neurons"]),
        "fixed_thresholds": len(rec.get("fixed_thresholds", [])),
        "split_planes": bool(rec["split_planes"]),
        "verification": verification,
    }
    if executor:
        summary["executor"] = _executor(deployed, shape, seed)
    summary["nir"] = _nir(deployed, out_dir, dt, shape, seed) if nir else {"written": False,
                                                                          "note": "--no-nir"}
    if nir == "required" and not summary["nir"]["written"]:  # nothing written yet
        raise ConfigError(f"--nir asked for model.nir, but {summary['nir']['note']}; deploy "
                          "without --nir (or with --no-nir) to write the safetensors alone")
    paths = save_deployed(deployed, out_dir, extra={"summary": summary})
    summary["files"] = {k: str(v) for k, v in paths.items()}
    if summary["nir"].get("written"):
        summary["files"]["nir"] = summary["nir"]["path"]
    return summary


def _images(shape: tuple[int, ...], batches: int, batch_size: int, seed: int,
            device: torch.device | None = None) -> list[torch.Tensor]:
    """Random float64 images, drawn on the CPU (the same on every device), then on ``device``."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.rand(batch_size, *shape, generator=g, dtype=torch.float64, device="cpu")
            .to(device) for _ in range(batches)]


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def verify(model: nn.Module, deployed: nn.Module, shape: tuple[int, ...], batches: int,
           batch_size: int, seed: int, split: bool = True) -> dict[str, Any]:
    """Largest output difference between ``model`` and its deployed form on random images.

    - ``max_abs_diff_float64``: the same transforms applied to a float64 copy of ``model``,
      against that copy: the exact-arithmetic check (it passes when the difference is at most
      ``TOLERANCE`` times the output scale);
    - ``max_abs_diff_<dtype>``: the deployed model as written (the checkpoint's dtype) against
      the checkpoint, showing the rounding of the folded weights; a membrane within that
      rounding of a threshold can flip one spike, which is reported, not hidden.
    """
    from multispike.deploy import fold_amplitudes, split_planes

    dtype = next(model.parameters()).dtype
    ref64 = copy.deepcopy(model).double()
    dep64 = fold_amplitudes(ref64)
    if split:
        split_planes(dep64, inplace=True)
    diff64 = diff = scale = 0.0
    for x in _images(shape, batches, batch_size, seed, _device_of(model)):
        a = ref64(x)
        diff64 = max(diff64, float((a - dep64(x)).abs().max()))
        scale = max(scale, float(a.abs().max()))
        xd = x.to(dtype)
        diff = max(diff, float((model(xd) - deployed(xd)).abs().max()))
    return {
        "batches": batches,
        "batch_size": batch_size,
        "input_shape": list(shape),
        "max_abs_diff_float64": diff64,
        f"max_abs_diff_{str(dtype).removeprefix('torch.')}": diff,
        "output_scale": scale,
        "passed": diff64 <= TOLERANCE * max(1.0, scale),
    }


def _executor(deployed: nn.Module, shape: tuple[int, ...], seed: int) -> dict[str, Any]:
    from multispike.deploy.executor import AdditionOnlyExecutor

    (x,) = _images(shape, 1, 1, seed + 1, _device_of(deployed))
    rep, diff = AdditionOnlyExecutor(copy.deepcopy(deployed).double()).verify(x)
    return {"max_abs_diff_float64": diff, **rep.summary()}


@torch.no_grad()
def _nir(deployed: nn.Module, out_dir: Path, dt: float, shape: tuple[int, ...], seed: int
         ) -> dict[str, Any]:
    from multispike.deploy.nir_export import export_nir, run_nir

    try:
        import nir
    except ImportError:
        return {"written": False, "note": "the nir package is not installed: pip install "
                "'multispike[nir]'"}
    try:
        graph = export_nir(deployed, input_shape=shape, dt=dt)
    except ConfigError as e:
        return {"written": False, "note": str(e)}
    # check the graph's semantics in float64: export a float64 copy and run it through nirtorch
    dep64 = copy.deepcopy(deployed).double()
    (x,) = _images(shape, 1, 2, seed + 2, _device_of(dep64))
    ran = run_nir(export_nir(dep64, input_shape=shape, dt=dt), x, dep64.timesteps, dt=dt)
    diff = float((ran - dep64(x)).abs().max())
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.nir"
    nir.write(path, graph)
    back = nir.read(path)
    return {"written": True, "path": str(path), "nodes": len(back.nodes),
            "edges": len(back.edges), "dt": dt, "max_abs_diff_float64": diff}


def report(summary: dict[str, Any]) -> str:
    """The human-readable lines the command prints."""
    v = summary["verification"]
    other = next((k for k in v if k.startswith("max_abs_diff_") and not k.endswith("float64")),
                 None)
    lines = [
        f"deployed {summary['model']} ({summary['firing']}, T={summary['timesteps']}) from "
        f"{summary['checkpoint']}",
        f"  folded {summary['folded_norms']} BN layers into convolutions and "
        f"{summary['folded_amplitudes']} amplitudes into weights"
        + (f" ({summary['rescaled_neurons']} identity-shortcut receivers rescaled)"
           if summary["rescaled_neurons"] else ""),
        *([f"  learned thresholds of {summary['fixed_thresholds']} neuron layers fixed as "
           "constants"] if summary.get("fixed_thresholds") else []),
        f"  spike planes split: {'yes' if summary['split_planes'] else 'no'}",
        f"  verified on {v['batches']} x {v['batch_size']} random "
        f"{'x'.join(map(str, v['input_shape']))} images: largest output difference "
        f"{v['max_abs_diff_float64']:.3g} (float64)"
        + (f", {v[other]:.3g} ({other.removeprefix('max_abs_diff_')})" if other else "")
        + f" at output scale {v['output_scale']:.3g}: {'ok' if v['passed'] else 'FAILED'}",
    ]
    if "executor" in summary:
        e = summary["executor"]
        lines.append(
            f"  addition-only executor: {e['total_sops']:,} additions (SOPs) for one image over "
            f"T={e['timesteps']} ({e['total_dense_macs']:,} MACs dense), encoder "
            f"{e['encoder_macs']:,} MACs; largest difference {e['max_abs_diff_float64']:.3g}"
        )
    n = summary["nir"]
    if n.get("written"):
        lines.append(f"  NIR: {n['path']} ({n['nodes']} nodes, {n['edges']} edges, dt={n['dt']:g});"
                     f" run through nirtorch it differs by {n['max_abs_diff_float64']:.3g}")
    else:
        lines.append(f"  NIR: not written: {n['note']}")
    files = summary.get("files", {})
    lines.append(f"  wrote {', '.join(files[k] for k in ('weights', 'config') if k in files)}")
    return "\n".join(lines)
