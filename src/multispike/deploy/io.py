"""Saving and loading deployed models: ``model.safetensors`` + ``config.json``.

The weights go to a safetensors file (tensors only, nothing executed on load); the JSON holds
what rebuilds the structure around them:

- ``model_args``: :func:`multispike.models.create` arguments of the trained model;
- ``timesteps``, ``dtype``, ``input_shape``;
- ``deployment``: the BN layers folded away, every neuron's configuration after folding
  (thresholds of rescaled identity-shortcut receivers differ from the trained ones; learned
  thresholds are stored as the constants they hold, ``fixed_thresholds`` names those layers),
  the voting layers that carry a folded amplitude, and whether spike planes are split;
- ``weights_digest``: ``"sha256:<hex>"`` of the weights
  (:func:`multispike.engine.checkpoint.weights_digest`), also in the safetensors metadata.

:func:`load_deployed` rebuilds the model, applies the same structural changes and loads the
weights with ``strict=True``, so a file that does not fit is refused; so are weights that do
not match the stored digest (bytes changed after saving) and non-finite weights (also in
folders written before the digest existed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multispike.deploy.fold import fold_batchnorm
from multispike.deploy.graph import set_module, trace
from multispike.deploy.planes import split_planes
from multispike.deploy.wrappers import ScaledVotingLayer, unwrap
from multispike.errors import CheckpointError, MultispikeError
from multispike.layers import VotingLayer
from multispike.neurons import build_neuron

FORMAT = "multispike-deploy"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def deployment_config(model: nn.Module, input_shape: Sequence[int] | None = None
                      ) -> dict[str, Any]:
    """The JSON-ready description of a deployed model (see the module docstring);
    ``input_shape``: ``(C, H, W)`` of the data it was trained on, where that is not the
    model's own ``(in_channels, *input_size)`` (a ResNet trains at any size)."""
    graph = trace(model)
    rec = dict(getattr(model, "deployment", None) or {})
    neurons = {}
    for node in graph.of_op("neuron"):
        cfg = unwrap(node.module).config()
        neurons[node.name] = cfg
    p = next(model.parameters())
    return {
        "format": FORMAT,
        "version": VERSION,
        "model_args": getattr(model, "model_args", None),
        "timesteps": int(model.timesteps),
        "dtype": str(p.dtype).removeprefix("torch."),
        "input_shape": [int(v) for v in input_shape] if input_shape is not None
        else [int(model.in_channels), *map(int, model.input_size)],
        "deployment": {
            "folded_norms": list(rec.get("folded_norms", [])),
            "scaled_votes": list(rec.get("scaled_votes", [])),
            "rescaled_neurons": list(rec.get("rescaled_neurons", [])),
            "split_planes": bool(rec.get("split_planes", False)),
            "fixed_thresholds": list(rec.get("fixed_thresholds", [])),
            "neurons": neurons,
        },
    }


def save_deployed(model: nn.Module, out: str | os.PathLike[str],
                  extra: dict[str, Any] | None = None,
                  input_shape: Sequence[int] | None = None) -> dict[str, Path]:
    """Write ``out/model.safetensors`` and ``out/config.json``; returns their paths.

    ``extra`` entries are added to the JSON (e.g. the verification the command ran);
    ``input_shape`` as for :func:`deployment_config`.
    """
    from safetensors.torch import save_file

    from multispike.integrity import weights_digest

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = deployment_config(model, input_shape)
    if config["model_args"] is None:
        raise CheckpointError("only zoo models (with model_args) can be saved as deployed models")
    config.update(extra or {})
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config["weights_digest"] = digest = weights_digest(state)
    weights, cfg = out / WEIGHTS, out / CONFIG
    save_file(state, str(weights), metadata={"format": FORMAT, "digest": digest})
    cfg.write_text(json.dumps(config, indent=2) + "\n")
    return {"weights": weights, "config": cfg}


def load_deployed(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a deployed model from a folder written by :func:`save_deployed` (eval mode).

    Raises :class:`~multispike.errors.CheckpointError` (one line) for a missing, corrupt or
    mismatched folder.
    """
    from safetensors import SafetensorError, safe_open

    from multispike.integrity import check_weights
    from multispike.models import create

    path = Path(path)
    cfg_path, weights = path / CONFIG, path / WEIGHTS
    if not cfg_path.is_file() or not weights.is_file():
        raise CheckpointError(
            f"{path} is not a deployed model folder (needs {CONFIG} and {WEIGHTS}); write one "
            "with multispike deploy"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e}); rewrite it") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path} is not a {FORMAT} config")
    try:
        model, dep = _rebuild(config, create)
    except (MultispikeError, KeyError, TypeError, ValueError, AttributeError,
            AssertionError) as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{cfg_path} does not describe a deployed model ({type(e).__name__}: {reason}); "
            "write the folder again with multispike deploy"
        ) from None
    try:
        with safe_open(str(weights), "pt") as f:
            stored = (f.metadata() or {}).get("digest")
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights} cannot be read ({e}); write it again") from None
    digest = config.get("weights_digest", stored)
    if digest is not None and not isinstance(digest, str):
        raise CheckpointError(f"{cfg_path} has a weights_digest that is not a string; "
                              "write the folder again with multispike deploy")
    check_weights(state, digest, str(weights), "write the folder again with multispike deploy")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise CheckpointError(f"{weights} does not fit {cfg_path} ({first[:160]})") from None
    model.deployment = {"fixed_thresholds": [],
                        **{k: v for k, v in dep.items() if k != "neurons"}}
    return model.eval()


def _rebuild(config: dict[str, Any], create: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The model a deployment config describes, without its weights, and its ``deployment``."""
    args = dict(config["model_args"])
    model = create(args.pop("name"), **args)
    model.timesteps = int(config["timesteps"])
    model = model.to(getattr(torch, config.get("dtype", "float32")))
    dep = config["deployment"]
    fold_batchnorm(model, inplace=True)
    for name, ncfg in dep["neurons"].items():
        set_module(model, name, build_neuron({**ncfg, "check_input": False}))
    for name in dep["scaled_votes"]:
        vote = model.get_submodule(name)
        assert isinstance(vote, VotingLayer)
        set_module(model, name, ScaledVotingLayer(vote.num_classes, vote.group))
    if dep["split_planes"]:
        split_planes(model, inplace=True)
    return model, dep
