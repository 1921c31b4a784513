"""Spike planes (MT-SNN Eq 10-12): binary planes out, one convolution per plane in.

An MT neuron with thresholds ``V_th`` and ``V_th + Δi`` (i = 1…n) emits
``S_sum = S + Σ S_Δi`` (Eq 11), an integer in {0, …, n+1}. Multiplying integers by weights
is not addition-only, but the next layer is linear, so (Eq 12)::

    Conv(S_sum) = Conv(S) + Σ_i Conv(S_Δi)

:func:`split_planes` rewrites a model so that each multi-level neuron emits its binary planes
(``rule.planes``, whose signed sum is the spike exactly, ties included) and each consumer sums
one convolution per plane, its bias added once:

================  ================  ====================================  ==================
rule              planes ``P``      plane ``k``                           signs
================  ================  ====================================  ==================
``mt``            ``n + 1``         ``Θ(H − θ_k)`` (MT-SNN Eq 10)         all ``+1``
``ternary-mt``    ``2(n + 1)``      ``Θ(H − θ_k)``, then ``Θ(−H − θ_k)``  ``+1``…, ``−1``…
``integer``       ``D``             ``[b ≥ k]``, k = 1…D (thermometer)    all ``+1``
``signed-integer`` ``2D``           ``[b ≥ k]``, then ``[b ≤ −k]``        ``+1``…, ``−1``…
================  ================  ====================================  ==================

Binary and ternary neurons, and integer rules with ``levels=1`` (spikes {0, 1} or {−1, 0, 1}),
already emit one (signed) plane and are left alone. A neuron that learned its thresholds is
first replaced by its constant :meth:`~multispike.neurons.Neuron.fixed` layer (see
:func:`~multispike.deploy.fold.prepare`).

Layout: planes are stacked on the channel axis, ``[T, B, C, ...] → [T, B, P·C, ...]`` (plane
``k`` holds channels ``k·C … (k+1)·C − 1``), so time folding, average pooling, flattening and
global pooling act on each plane unchanged. The wrappers (in the leaf module
:mod:`multispike.deploy.wrappers`, re-exported here):

==================== =====================================================================
:class:`PlaneNeuron` the multi-level neuron, emitting its planes
:class:`PlaneConv`   ``Σ_k sign_k · Conv(S_k) + bias`` (Eq 12), bias once
:class:`PlaneLinear` the same for a fully-connected layer
:class:`PlaneMaxPool` max pooling of signed (ternary-MT, signed-integer) planes: pool the
                     value, re-split (for unsigned planes per-plane max pooling is already
                     exact, because the planes are nested: ``max_w [b ≥ k] = [max_w b ≥ k]``)
:class:`PlaneMerge`  ``Σ_k sign_k · S_k``: an identity shortcut adds each plane spike as ±1
:class:`PlaneVote`   the voting layer after multi-level output neurons
==================== =====================================================================

Run :func:`~multispike.deploy.fold_amplitudes` first: the planes must be binary.

Example (an integer neuron, ``D = 3``, before a convolution with a bias)::

    >>> import torch
    >>> from multispike.deploy import fold_amplitudes, split_planes
    >>> from multispike.deploy.testing import exercise
    >>> from multispike.models import create
    >>> from multispike.neurons import build_neuron
    >>> from multispike.deploy.graph import set_module
    >>> x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    >>> model = create("digits_net").double()
    >>> cfg = {**model.stem_act.config(), "firing": "integer", "levels": 3, "reset": None}
    >>> set_module(model, "stem_act", build_neuron(cfg).double())
    >>> model = exercise(model, x)
    >>> planes = split_planes(fold_amplitudes(model))
    >>> type(planes.stem_act).__name__, planes.features[0].conv.signs
    ('PlaneNeuron', (1, 1, 1))
    >>> bool((planes(x) - model(x)).abs().max() < 1e-9)
    True
"""

from __future__ import annotations

from torch import nn

from multispike.deploy.fold import deployment_record, prepare
from multispike.deploy.graph import set_module, trace
from multispike.deploy.wrappers import (
    PlaneConv,
    PlaneLinear,
    PlaneMaxPool,
    PlaneMerge,
    PlaneNeuron,
    PlaneVote,
)
from multispike.errors import ConfigError
from multispike.functional import FiringRule

__all__ = [
    "PlaneConv",
    "PlaneLinear",
    "PlaneMaxPool",
    "PlaneMerge",
    "PlaneNeuron",
    "PlaneVote",
    "is_multi_plane",
    "plane_ranks",
    "split_planes",
]


def plane_ranks(rule: FiringRule, v_threshold: float) -> tuple[int, ...]:
    """For each plane, the rank of its threshold among the rule's thresholds (0 = lowest).

    A neuron with spike value ``b > 0`` fires exactly the planes of the ``b`` lowest
    thresholds (its value counts the thresholds its membrane reached).
    """
    th = rule.thresholds(v_threshold)
    order = sorted(th)
    ranks = tuple(order.index(t) for t in th)
    return ranks * 2 if rule.signed else ranks


def is_multi_plane(rule: FiringRule) -> bool:
    """True for rules whose spikes need more than one (signed) plane: MT, ternary-MT, and the
    integer rules with ``levels > 1`` (the rule says: :attr:`FiringRule.multi_plane`)."""
    return rule.multi_plane


def split_planes(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Every multi-level neuron (MT, ternary-MT, integer and signed-integer with
    ``levels > 1``) emits its binary planes and every layer that reads it computes one
    convolution (or matrix product) per plane (:class:`PlaneConv`), its bias once.

    Returns the model (a copy unless ``inplace``) in eval mode with equal outputs; learned
    thresholds become constants (:meth:`~multispike.neurons.Neuron.fixed`). Binary and
    ternary neurons are left alone (their spikes are already single planes). Raises
    :class:`~multispike.errors.ConfigError` if such a neuron still has an amplitude (run
    :func:`~multispike.deploy.fold_amplitudes` first) or feeds a layer the planes cannot
    reach.
    """
    model = prepare(model, inplace)
    graph = trace(model)
    split = False
    for node in graph.of_op("neuron"):
        neuron = node.module
        if isinstance(neuron, PlaneNeuron) or not is_multi_plane(neuron.rule):
            continue
        if neuron.amplitude is not None:
            a = float(neuron.amplitude.detach())
            raise ConfigError(
                f"neuron {node.name} still has an amplitude ({a:g}); its planes would not be "
                "binary: call fold_amplitudes(model) before split_planes"
            )
        rule = neuron.rule
        signs = rule.plane_signs
        for target, via in graph.spike_targets(node.name):
            for v in via:
                if v.op == "maxpool" and rule.signed and not isinstance(v.module, PlaneMaxPool):
                    ranks = plane_ranks(rule, neuron.v_threshold)
                    set_module(model, v.name, PlaneMaxPool(v.module, signs, ranks))
            if target.op == "conv":
                set_module(model, target.name, PlaneConv(target.module, signs))
            elif target.op == "linear":
                set_module(model, target.name, PlaneLinear(target.module, signs))
            elif target.op == "vote":
                set_module(model, target.name, PlaneVote(target.module, signs))
            # a neuron fed through an identity shortcut: the planes merged on it
            # ([T*B, P*C, H, W] -> [T*B, C, H, W]); anything else cannot take planes
            elif not (target.op == "neuron" and _merge_identity(
                    model, target.name, PlaneMerge(signs, dim=1))):
                raise ConfigError(
                    f"{rule.name} neuron {node.name} feeds {target.name} ({target.op}), which "
                    "cannot take spike planes; deploy it without split_planes"
                )
        set_module(model, node.name, PlaneNeuron(neuron))
        split = True
    rec = deployment_record(model)
    rec["split_planes"] = bool(rec.get("split_planes")) or split
    return model


def _merge_identity(model: nn.Module, receiver: str, merge: nn.Module) -> bool:
    """Ask the block that holds neuron ``receiver`` to put ``merge`` on the identity shortcut
    feeding it (a residual block knows its own parts: ``merge_identity``); False where no
    identity shortcut feeds it."""
    parent, _, attr = receiver.rpartition(".")
    block = model.get_submodule(parent) if parent else None
    merge_identity = getattr(block, "merge_identity", None)
    return bool(merge_identity is not None and merge_identity(attr, merge))
