"""Integrity of a set of weights: a digest that names them exactly, and a finiteness check.

Shared by the checkpoints of :mod:`multispike.engine.checkpoint` and the deployed folders of
:mod:`multispike.deploy.io`: both store :func:`weights_digest` at save time and refuse, with
:func:`check_weights`, weights that no longer match it or hold NaN/inf.

Example::

    >>> import torch
    >>> state = {"w": torch.ones(2)}
    >>> weights_digest(state).startswith("sha256:")
    True
    >>> check_weights(state, weights_digest(state), "model.pt")   # passes silently
    >>> first_nonfinite({"w": torch.tensor([1.0, float("nan")])})   # (name, bad, values)
    ('w', 1, 2)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch

from multispike.errors import CheckpointError

DIGEST_PREFIX = "sha256:"


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """``"sha256:<hex>"`` over every tensor's name, dtype, shape and bytes, in sorted key order.

    Computed on CPU copies, so the same weights give the same digest on any device.
    """
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        t = t.to("cpu").contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
        head = f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{tuple(t.shape)}\0{t.nbytes}\0"
        h.update(head.encode())
        h.update(memoryview(raw))
    return DIGEST_PREFIX + h.hexdigest()


def model_digest(state: Mapping[str, torch.Tensor], model_args: Any) -> str:
    """``"sha256:<hex>"`` over everything that decides what a checkpoint's model computes: the
    :func:`multispike.models.create` arguments (as canonical JSON) and :func:`weights_digest`
    of the weights. Editing either (firing ``mt`` to ``ternary``, a byte of a tensor) changes it.
    """
    from multispike.checks import plain

    args = json.dumps(plain(model_args), sort_keys=True, default=str)
    h = hashlib.sha256(f"model_args\0{args}\0weights\0{weights_digest(state)}".encode())
    return DIGEST_PREFIX + h.hexdigest()


def first_nonfinite(state: Mapping[str, torch.Tensor]) -> tuple[str, int, int] | None:
    """``(name, bad values, values)`` of the first tensor holding NaN or inf, else ``None``."""
    for name, t in state.items():
        if (t.is_floating_point() or t.is_complex()) and t.numel():
            finite = torch.isfinite(t.detach())
            if not bool(finite.all()):
                return name, int((~finite).sum()), t.numel()
    return None


def check_weights(state: Mapping[str, torch.Tensor], digest: str | None, source: str,
                  fix: str = "use best.pt or re-train") -> None:
    """Refuse (one line) weights that do not match ``digest`` (if given) or are not finite."""
    if digest is not None and weights_digest(state) != digest:
        raise CheckpointError(
            f"{source} is corrupt: its weights do not match the digest stored at save time; "
            f"{fix}")
    bad = first_nonfinite(state)
    if bad is not None:
        name, n, total = bad
        raise CheckpointError(
            f"{source} holds non-finite weights ({n} of {total} values of {name!r} are NaN or "
            f"inf); they cannot be evaluated or deployed: {fix}")
