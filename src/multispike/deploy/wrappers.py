"""The plain modules deployment puts into a model, and :func:`unwrap`, which looks inside them.

A leaf module: it imports no other part of :mod:`multispike.deploy`, so the graph, the
transforms, the executor and the exporters can all import it.

===================== ===================================================================
:class:`PlaneNeuron`  a multi-level neuron emitting its binary planes (MT-SNN Eq 10-11)
:class:`PlaneConv`    ``Σ_k sign_k · Conv(S_k) + bias`` (MT-SNN Eq 12), bias once
:class:`PlaneLinear`  the same for a fully-connected layer
:class:`PlaneMaxPool` max pooling of signed planes (ternary-MT, signed-integer): pool, re-split
:class:`PlaneMerge`   ``Σ_k sign_k · S_k``: an identity shortcut adds each plane spike as ±1
:class:`PlaneVote`    the voting layer after MT output neurons
:class:`ScaledVotingLayer` voting scaled by a folded output amplitude (Ternary Spike Eq 15-17)
===================== ===================================================================

Planes are stacked on the channel axis: ``[T, B, C, ...] → [T, B, P·C, ...]`` (see
:mod:`multispike.deploy.planes`).

Example::

    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(2, 3, 1, bias=False)
    >>> planes = torch.tensor([1.0, 0.0, 1.0, 1.0]).view(1, 4, 1, 1)  # [N, P·C]: 2 planes of 2
    >>> value = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1)              # their sum: MT spikes
    >>> torch.allclose(PlaneConv(conv, (1, 1))(planes), conv(value))   # MT-SNN Eq 12
    True
    >>> unwrap(PlaneConv(conv, (1, 1))) is conv and unwrap(conv) is conv
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multispike.functional import multistep
from multispike.layers import VotingLayer, unwrap  # noqa: F401 - unwrap: part of this API
from multispike.neurons import Neuron


def signed_sum(chunks: Sequence[Tensor], signs: Sequence[int]) -> Tensor:
    """``Σ_k sign_k · chunk_k`` with additions and subtractions only."""
    total: Tensor | None = None
    for s, c in zip(signs, chunks, strict=True):
        if total is None:
            total = c if s > 0 else -c
        else:
            total = total + c if s > 0 else total - c
    assert total is not None
    return total


class PlaneNeuron(nn.Module):
    """A multi-level neuron (MT, ternary-MT, integer, signed-integer) that emits its binary
    planes (``rule.planes``: threshold crossings, or the thermometer ``[b ≥ k]`` of integer
    spikes).

    ``[T, B, C, ...] → [T, B, P·C, ...]``; the planes come from ``rule.planes(H, V_th)`` on
    the same membrane ``H`` the neuron fires from, and ``Σ sign_k · plane_k`` equals the
    neuron's output. The wrapped neuron is ``.neuron``: a neuron that learns its thresholds
    is held as its constant :meth:`~multispike.neurons.Neuron.fixed` copy.
    """

    def __init__(self, neuron: Neuron) -> None:
        super().__init__()
        self.neuron = neuron.fixed() if neuron.learn_thresholds else neuron

    @property
    def signs(self) -> tuple[int, ...]:
        return self.neuron.rule.plane_signs

    @property
    def wrapped(self) -> nn.Module:
        """The neuron layer this wrapper holds (:func:`~multispike.layers.unwrap`)."""
        return self.neuron

    def forward(self, x_seq: Tensor) -> Tensor:
        n = self.neuron
        planes: list[Tensor] = []

        def observe(_t: int, h: Tensor, _out: Tensor) -> None:
            planes.append(n.rule.planes(h, n.v_threshold))  # [P, B, C, ...]

        multistep(x_seq, n.charge, n.params(x_seq.dtype), observe=observe)
        p = torch.stack(planes, 1)  # [P, T, B, C, ...]
        return p.movedim(0, 2).flatten(2, 3)  # -> [T, B, P, C, ...] -> [T, B, P*C, ...]


class PlaneConv(nn.Module):
    """MT-SNN Eq 12: ``Σ_k sign_k · Conv(S_k) + bias`` over channel-stacked planes.

    ``[N, P·C, H, W] → [N, C', H', W']``; the convolution is ``.conv``.
    """

    def __init__(self, conv: nn.Conv2d, signs: Sequence[int]) -> None:
        super().__init__()
        self.conv = conv
        self.signs = tuple(int(s) for s in signs)

    @property
    def wrapped(self) -> nn.Module:
        """The conv layer this wrapper holds (:func:`~multispike.layers.unwrap`)."""
        return self.conv

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv
        parts = [c._conv_forward(xk, c.weight, None) for xk in x.chunk(len(self.signs), 1)]
        y = signed_sum(parts, self.signs)
        return y if c.bias is None else y + c.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"signs={self.signs}"


class PlaneLinear(nn.Module):
    """``Σ_k sign_k · W S_k + bias`` over planes stacked on the last axis; ``.linear``."""

    def __init__(self, linear: nn.Linear, signs: Sequence[int]) -> None:
        super().__init__()
        self.linear = linear
        self.signs = tuple(int(s) for s in signs)

    @property
    def wrapped(self) -> nn.Module:
        """The linear layer this wrapper holds (:func:`~multispike.layers.unwrap`)."""
        return self.linear

    def forward(self, x: Tensor) -> Tensor:
        w = self.linear.weight
        parts = [F.linear(xk, w) for xk in x.chunk(len(self.signs), -1)]
        y = signed_sum(parts, self.signs)
        return y if self.linear.bias is None else y + self.linear.bias

    def extra_repr(self) -> str:
        return f"signs={self.signs}"


class PlaneMaxPool(nn.Module):
    """Max pooling of signed planes: value ``Σ sign·plane``, pool, split again into planes
    (plane of rank ``r``: ``value ≥ r + 1``, or ``≤ −(r + 1)`` for a ``−`` plane).

    Comparisons only. Needed for ternary-MT and signed-integer, whose ``+`` and ``−`` planes
    cannot be pooled apart (``max(b)`` of a window holding +2 and −2 is +2, not 0).
    ``.pool`` is the pooling.
    """

    def __init__(self, pool: nn.Module, signs: Sequence[int], ranks: Sequence[int]) -> None:
        super().__init__()
        self.pool = pool
        self.signs = tuple(int(s) for s in signs)
        self.ranks = tuple(int(r) for r in ranks)

    @property
    def wrapped(self) -> nn.Module:
        """The pool layer this wrapper holds (:func:`~multispike.layers.unwrap`)."""
        return self.pool

    def forward(self, x: Tensor) -> Tensor:
        value = self.pool(signed_sum(x.chunk(len(self.signs), 1), self.signs))
        planes = [
            (value >= r + 1) if s > 0 else (value <= -(r + 1))
            for s, r in zip(self.signs, self.ranks, strict=True)
        ]
        return torch.cat(planes, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"signs={self.signs}, ranks={self.ranks}"


class PlaneMerge(nn.Module):
    """``Σ_k sign_k · S_k`` along ``dim``: an identity shortcut adds each plane spike as ±1."""

    def __init__(self, signs: Sequence[int], dim: int = 1) -> None:
        super().__init__()
        self.signs = tuple(int(s) for s in signs)
        self.dim = int(dim)

    def forward(self, x: Tensor) -> Tensor:
        return signed_sum(x.chunk(len(self.signs), self.dim), self.signs)

    def extra_repr(self) -> str:
        return f"signs={self.signs}, dim={self.dim}"


class PlaneVote(nn.Module):
    """Voting over MT output neurons: merge the planes (last axis), then ``.vote``."""

    def __init__(self, vote: VotingLayer, signs: Sequence[int]) -> None:
        super().__init__()
        self.vote = vote
        self.merge = PlaneMerge(signs, dim=-1)

    @property
    def wrapped(self) -> nn.Module:
        """The vote layer this wrapper holds (:func:`~multispike.layers.unwrap`)."""
        return self.vote

    def forward(self, x: Tensor) -> Tensor:
        return self.vote(self.merge(x))


class ScaledVotingLayer(VotingLayer):
    """Voting layer whose class scores are multiplied by the folded output amplitude ``a``:
    ``scale · mean(group)``. ``scale`` is a buffer (saved with the weights)."""

    def __init__(self, num_classes: int, group: int = 10, scale: float = 1.0) -> None:
        super().__init__(num_classes, group)
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) * self.scale.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={float(self.scale):.6g}"


