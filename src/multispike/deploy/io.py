"""Saving and loading deployed models: ``model.safetensors`` + ``config.json``.

The weights go to a safetensors file (tensors only, nothing executed on load); the JSON holds
what rebuilds the structure around them:

- ``model_args``: :func:`multispike.models.create` arguments of the trained model;
- ``timesteps``, ``dtype``, ``input_shape``;
- ``deployment``: the BN layers folded away, every neuron's configuration after folding
  (thresholds of rescaled identity-shortcut receivers differ from the trained ones), the voting
  layers that carry a folded amplitude, and whether MT planes are split.

:func:`load_deployed` rebuilds the model, applies the same structural changes and loads the
weights with ``strict=True``, so a file that does not fit is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multispike.deploy.fold import ScaledVotingLayer, fold_batchnorm
from multispike.deploy.graph import base_neuron, set_module, trace
from multispike.deploy.planes import split_planes
from multispike.errors import CheckpointError
from multispike.layers import VotingLayer
from multispike.neurons import build_neuron

FORMAT = "multispike-deploy"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def deployment_config(model: nn.Module) -> dict[str, Any]:
    """The JSON-ready description of a deployed model (see the module docstring)."""
    graph = trace(model)
    rec = dict(getattr(model, "deployment", None) or {})
    neurons = {}
    for node in graph.of_op("neuron"):
        cfg = base_neuron(node.module).config()
        neurons[node.name] = cfg
    p = next(model.parameters())
    return {
        "format": FORMAT,
        "version": VERSION,
        "model_args": getattr(model, "model_args", None),
        "timesteps": int(model.timesteps),
        "dtype": str(p.dtype).removeprefix("torch."),
        "input_shape": [int(model.in_channels), *map(int, model.input_size)],
        "deployment": {
            "folded_norms": list(rec.get("folded_norms", [])),
            "scaled_votes": list(rec.get("scaled_votes", [])),
            "rescaled_neurons": list(rec.get("rescaled_neurons", [])),
            "split_planes": bool(rec.get("split_planes", False)),
            "neurons": neurons,
        },
    }


def save_deployed(model: nn.Module, out: str | os.PathLike[str],
                  extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``out/model.safetensors`` and ``out/config.json``; returns their paths.

    ``extra`` entries are added to the JSON (e.g. the verification the command ran).
    """
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = deployment_config(model)
    if config["model_args"] is None:
        raise CheckpointError("only zoo models (with model_args) can be saved as deployed models")
    config.update(extra or {})
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights, cfg = out / WEIGHTS, out / CONFIG
    save_file(state, str(weights), metadata={"format": FORMAT})
    cfg.write_text(json.dumps(config, indent=2) + "\n")
    return {"weights": weights, "config": cfg}


def load_deployed(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a deployed model from a folder written by :func:`save_deployed` (eval mode).

    Raises :class:`~multispike.errors.CheckpointError` (one line) for a missing, corrupt or
    mismatched folder.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

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
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights} cannot be read ({e}); write it again") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise CheckpointError(f"{weights} does not fit {cfg_path} ({first[:160]})") from None
    model.deployment = {k: v for k, v in dep.items() if k != "neurons"}
    return model.eval()
