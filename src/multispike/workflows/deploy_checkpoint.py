"""Checkpoint in, verified deployable model out: :func:`deploy_checkpoint` (``multispike
deploy``, from :mod:`multispike.cli.deploy`, calls it with its flags). Steps:

1. load the checkpoint (:func:`multispike.engine.checkpoint.load_model`), eval mode;
2. fold BN and amplitudes (:func:`~multispike.deploy.fold_amplitudes`), fix learned thresholds
   as constants (:meth:`~multispike.neurons.Neuron.fixed`) and, for multi-level neurons (MT,
   ternary-MT, integer, signed-integer), split the spike planes
   (:func:`~multispike.deploy.split_planes`);
3. verify (:func:`verify`): run the trained and the deployed model on ``verify_batches``
   batches of random images of the model's input size, in float64 (exact arithmetic up to
   rounding; spikes are discontinuous, so float32 rounding could flip one near a threshold) and
   in the checkpoint's dtype, and report the largest output difference; a check that proves
   nothing (outputs all zero, neuron layers that never fired) is reported INCONCLUSIVE, never
   ok (:func:`inconclusive`); optionally run the addition-only executor;
4. write ``DIR/model.safetensors`` + ``DIR/config.json`` and, when NIR can express the model,
   ``DIR/model.nir`` (checked by running the written graph through ``nirtorch``); otherwise a
   one-line note says why not.

``device`` (default ``cpu``; ``auto``, ``cuda``, ``cuda:N``) is where steps 2 and 3 run. The
random images are drawn on the CPU from ``seed`` and moved there, the NIR graph is checked on
the CPU, and the written files hold CPU tensors, so the output does not depend on the device
beyond floating-point rounding. :func:`report` gives the lines the command prints; with
``progress=True`` each stage also prints one line with its duration when it ends.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

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
    progress: bool = False,
    log: TextIO | None = None,
) -> dict[str, Any]:
    """Deploy one checkpoint into ``out``; returns the summary written into ``config.json``.

    ``device``: where the model is folded, split and verified (``cpu``, ``auto``, ``cuda``,
    ``cuda:N`` or a ``torch.device``). ``nir``: True writes ``model.nir`` where NIR can
    express the model, ``"required"`` (an explicit ``--nir``) refuses a model it cannot
    express before anything is written or verified, False writes none. A folder holding a
    training run is never a target, ``force`` or not. ``progress``: one line per stage with
    its duration on ``log`` (default stdout) and the check's batches on stderr
    (:class:`~multispike.engine.evaluate.Progress`).
    """
    from multispike.deploy import fold_amplitudes, split_planes
    from multispike.deploy.io import save_deployed

    _check_args(verify_batches, batch_size, dt, seed)
    out_dir = _target(out, force)
    stage = _Stages(progress, log)
    with stage(f"loaded {checkpoint}"):
        model, shape = _load(checkpoint, device)
    with stage("folded BN and amplitudes") as label:
        deployed = fold_amplitudes(model)
        if split:
            split_planes(deployed, inplace=True)
            if deployed.deployment["split_planes"]:
                label[0] += ", split the spike planes"
    graph, note = _nir_export(deployed, dt, shape) if nir else (None, "--no-nir")
    if nir == "required" and graph is None:  # refused before the long check and any file
        raise ConfigError(f"--nir asked for model.nir, but {note}; deploy without --nir (or "
                          "with --no-nir) to write the safetensors alone")
    with stage(f"verified on {verify_batches} x {batch_size} random images"):
        verification = verify(model, deployed, shape, verify_batches, batch_size, seed, split,
                              progress=progress)
    summary = _summary(checkpoint, model, deployed, verification)
    if executor:
        with stage("ran the addition-only executor on one image"):
            summary["executor"] = _executor(deployed, shape, seed)
    summary["nir"] = {"written": False, "note": note}
    if graph is not None:
        with stage("checked model.nir through nirtorch"):
            summary["nir"] = _nir_write(deployed, graph, out_dir, dt, shape, seed)
    with stage(f"wrote {out_dir}"):
        paths = save_deployed(deployed, out_dir, extra={"summary": summary}, input_shape=shape)
    summary["files"] = {k: str(v) for k, v in paths.items()}
    if summary["nir"].get("written"):
        summary["files"]["nir"] = summary["nir"]["path"]
    return summary


class _Stages:
    """``with stage("folded ...") as label:`` prints ``deploy: folded ... (1.2 s)`` on ``log``
    (default: stdout at the time) when the stage ends (``label[0]`` may change the text on the
    way); nothing when not ``enabled``.

    >>> import io
    >>> log = io.StringIO()
    >>> with _Stages(True, log)("loaded x.pt"):
    ...     pass
    >>> log.getvalue().startswith("deploy: loaded x.pt (0.0 s)")
    True
    """

    def __init__(self, enabled: bool, log: TextIO | None = None) -> None:
        self.enabled, self.log = enabled, log

    @contextmanager
    def __call__(self, text: str) -> Iterator[list[str]]:
        start, label = time.perf_counter(), [text]
        yield label
        if self.enabled:
            print(f"deploy: {label[0]} ({time.perf_counter() - start:.1f} s)",
                  file=self.log or sys.stdout, flush=True)


def _target(out: str, force: bool) -> Path:
    """``out`` as a folder deploy may write into: never a training run; a deployed model only
    with ``force``."""
    from multispike.deploy.io import CONFIG, WEIGHTS
    from multispike.engine.runlock import check_out_folder, holds_training_run

    check_out_folder(str(out))
    out_dir = Path(out)
    if holds_training_run(out_dir):  # its config.json is the run's: never overwritten
        raise ConfigError(f"{out_dir} holds a training run (checkpoints, metrics or its "
                          "config.json), which deploy never overwrites, --force or not; choose "
                          f"another --out, e.g. {out_dir / 'deployed'}")
    if not force and any((out_dir / f).exists() for f in (WEIGHTS, CONFIG, "model.nir")):
        raise ConfigError(f"{out_dir} already holds a deployed model; pass --force to overwrite")
    return out_dir


def _load(checkpoint: str, device: str | torch.device) -> tuple[nn.Module, tuple[int, ...]]:
    """The checkpoint's model on ``device``, in eval mode, and the ``(C, H, W)`` of the data
    its run trained on (a ResNet trains at any size); the ANN twin is refused."""
    from multispike.engine.checkpoint import checkpoint_input_shape, load_model
    from multispike.engine.device import pick_device

    dev = pick_device(str(device))
    model, ckpt = load_model(checkpoint)
    model.to(dev).eval()
    if getattr(model, "firing", None) == "ann":
        raise ConfigError("the checkpoint is the ANN twin (firing='ann'): no spikes to deploy")
    return model, checkpoint_input_shape(ckpt, model)


def _summary(checkpoint: str, model: nn.Module, deployed: nn.Module,
             verification: dict[str, Any]) -> dict[str, Any]:
    rec = deployed.deployment
    return {
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
           batch_size: int, seed: int, split: bool = True, *, progress: bool = False
           ) -> dict[str, Any]:
    """Largest output difference between ``model`` and its deployed form on random images.

    - ``max_abs_diff_float64``: the same transforms applied to a float64 copy of ``model``,
      against that copy: the exact-arithmetic check (it passes when the difference is at most
      ``TOLERANCE`` times the output scale);
    - ``max_abs_diff_<dtype>``: the deployed model as written (the checkpoint's dtype) against
      the checkpoint, showing the rounding of the folded weights; a membrane within that
      rounding of a threshold can flip one spike, which is reported, not hidden;
    - ``conclusive``: False when the comparison proves nothing, ``note`` says why
      (:func:`inconclusive`): the outputs are all zero, or neuron layers of ``model`` fired no
      spike on the images (``silent_layers``), so the weights after them were never compared.
    """
    from multispike.deploy import fold_amplitudes, split_planes
    from multispike.engine.evaluate import Progress

    dtype = next(model.parameters()).dtype
    ref64 = copy.deepcopy(model).double()
    dep64 = fold_amplitudes(ref64)
    if split:
        split_planes(dep64, inplace=True)
    diff64 = diff = scale = 0.0
    compared = 0
    images = _images(shape, batches, batch_size, seed, _device_of(model))
    with spike_counts(ref64) as spikes:
        for x in Progress(images, "deploy: checking outputs", enabled=progress):
            a = ref64(x)
            diff64 = max(diff64, float((a - dep64(x)).abs().max()))
            scale = max(scale, float(a.abs().max()))
            compared += a.numel()
            xd = x.to(dtype)
            diff = max(diff, float((model(xd) - deployed(xd)).abs().max()))
    silent = [name for name, n in spikes.items() if n == 0]
    note = inconclusive(compared, scale, silent, len(spikes))
    return {
        "batches": batches,
        "batch_size": batch_size,
        "input_shape": list(shape),
        "max_abs_diff_float64": diff64,
        f"max_abs_diff_{str(dtype).removeprefix('torch.')}": diff,
        "output_scale": scale,
        "passed": diff64 <= TOLERANCE * max(1.0, scale),
        "silent_layers": silent,
        "neuron_layers": len(spikes),
        "conclusive": note is None,
        "note": note,
    }


@contextmanager
def spike_counts(model: nn.Module) -> Iterator[dict[str, int]]:
    """Non-zero outputs of each neuron layer of ``model`` while the block runs (forward hooks;
    no extra pass)."""
    from multispike.neurons import Neuron

    counts: dict[str, int] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, Neuron):
            counts[name] = 0

            def hook(_m: nn.Module, _args: Any, out: torch.Tensor, name: str = name) -> None:
                counts[name] += int(torch.count_nonzero(out))

            handles.append(m.register_forward_hook(hook))
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


def inconclusive(compared: int, scale: float, silent: list[str], layers: int) -> str | None:
    """Why an output comparison proves nothing (``None`` when it proves something): nothing
    compared, outputs all zero, or neuron layers that never fired (a random image unlike the
    data leaves an untrained, or even a trained, model silent; the weights after a silent layer
    only ever see zeros).

    >>> inconclusive(160, 0.0, [], 3)
    'the outputs are all zero on the check images, so the comparison proves nothing'
    >>> inconclusive(160, 0.2, ["a", "b", "c"], 3)
    'no neuron fired on the check images, so only the biases were compared'
    >>> inconclusive(160, 1.5, [], 3) is None
    True
    """
    if compared == 0:
        return "no output was compared, so the comparison proves nothing"
    if scale == 0.0:
        return "the outputs are all zero on the check images, so the comparison proves nothing"
    if layers and len(silent) == layers:
        return "no neuron fired on the check images, so only the biases were compared"
    if silent:
        shown = ", ".join(silent[:3]) + (", ..." if len(silent) > 3 else "")
        return (f"{len(silent)} of {layers} neuron layers fired no spike on the check images "
                f"({shown}), so the weights after {'it' if len(silent) == 1 else 'them'} "
                "were not compared")
    return None


def _executor(deployed: nn.Module, shape: tuple[int, ...], seed: int) -> dict[str, Any]:
    from multispike.deploy.executor import AdditionOnlyExecutor

    (x,) = _images(shape, 1, 1, seed + 1, _device_of(deployed))
    rep, diff = AdditionOnlyExecutor(copy.deepcopy(deployed).double()).verify(x)
    return {"max_abs_diff_float64": diff, **rep.summary()}


def _nir_export(deployed: nn.Module, dt: float, shape: tuple[int, ...]
                ) -> tuple[Any, str | None]:
    """``(graph, None)`` where NIR can express ``deployed``, else ``(None, why not)``."""
    from multispike.deploy.nir_export import export_nir

    try:
        import nir  # noqa: F401
    except ImportError:
        return None, "the nir package is not installed: pip install 'multispike[nir]'"
    try:
        return export_nir(deployed, input_shape=shape, dt=dt), None
    except ConfigError as e:
        return None, str(e)


@torch.no_grad()
def _nir_write(deployed: nn.Module, graph: Any, out_dir: Path, dt: float,
               shape: tuple[int, ...], seed: int) -> dict[str, Any]:
    """Check ``graph``'s semantics in float64 (a float64 export run through nirtorch against
    the deployed model), then write it as ``out_dir/model.nir``."""
    import nir

    from multispike.deploy.nir_export import export_nir, run_nir

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
        + f" at output scale {v['output_scale']:.3g}: {_verdict(v)}",
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


def _verdict(v: dict[str, Any]) -> str:
    """``ok``, ``FAILED``, or ``INCONCLUSIVE`` with what was found: a check that compared
    nothing, all-zero outputs or silent layers is never called ok (still exit code 0: random
    images unlike the data can leave a good model silent, and nothing was found to differ).

    >>> _verdict({"passed": True, "conclusive": False, "note": "the outputs are all zero"})
    'INCONCLUSIVE: the outputs are all zero; compare ... on real data (docs/deploy.md)'
    """
    if not v["passed"]:
        return "FAILED"
    if v.get("conclusive", True):
        return "ok"
    return (f"INCONCLUSIVE: {v['note']}; compare the deployed model (load_deployed) with the "
            "checkpoint on real data (docs/deploy.md)")
