"""Checkpoints: written atomically, read without executing pickled code, rebuilding the model.

A checkpoint is one ``torch.save`` file of plain containers and tensors, read back with
``torch.load(weights_only=True)`` (no arbitrary code runs). It holds

- ``model_args``: the arguments of :func:`multispike.models.create` that rebuild the model;
- ``model``: the state dict;
- ``optimizer``, ``scheduler``, ``epoch``, ``best_accuracy``, ``config``: what ``--resume``
  needs to continue exactly;
- ``format``: the checkpoint format version.

Writes go to a temporary file in the same folder, then ``os.replace`` renames it over the
target, so a run killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multispike.errors import CheckpointError

FORMAT = 1


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (write a temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint safely; :class:`CheckpointError` (one line) if missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile,
            pickle.UnpicklingError) as e:
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a multispike checkpoint ({reason}); "
            "use another file, e.g. best.pt beside it"
        ) from None
    if not isinstance(ckpt, dict) or "model_args" not in ckpt or "model" not in ckpt:
        raise CheckpointError(
            f"checkpoint {path} lacks model_args/model; it was not written by multispike train"
        )
    return ckpt


def build_model(model_args: dict[str, Any]) -> nn.Module:
    """``multispike.models.create(**model_args)``."""
    from multispike.models import create

    args = dict(model_args)
    return create(args.pop("name"), **args)


def load_state(model: nn.Module, state: dict[str, Any], source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line :class:`CheckpointError` on mismatch."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise CheckpointError(
            f"checkpoint {source} does not fit this model ({first[:160]}); it was trained with "
            "another architecture or options"
        ) from None


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint and load its weights: ``(model, checkpoint)``."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt["model_args"])
    load_state(model, ckpt["model"], str(path))
    return model, ckpt
