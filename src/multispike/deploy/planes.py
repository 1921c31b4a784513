"""Spike planes (MT-SNN Eq 10-12): binary planes out, one convolution per plane in.

An MT neuron emits ``S_sum = S + Σ_i S_Δi`` (Eq 11), an integer; the next layer is linear, so
``Conv(S_sum) = Conv(S) + Σ_i Conv(S_Δi)`` (Eq 12). :func:`split_planes` rewrites a model so
that each multi-level neuron (MT, ternary-MT, integer, signed-integer) emits its binary planes
stacked on the channel axis and each consumer sums one convolution per plane, its bias once;
the wrappers (:class:`PlaneNeuron`, :class:`PlaneConv`, ...) live in the leaf module
:mod:`multispike.deploy.wrappers`. Run :func:`~multispike.deploy.fold_amplitudes` first. The
planes of each rule, the layout and the wrappers: ``docs/deploy.md`` § MT spike planes and
§ Every rule.

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
    convolution (or matrix product) per plane (:class:`PlaneConv`), its bias once: MT-SNN Eq 12,
    ``Conv(S + Σ_i S_Δi) = Conv(S) + Σ_i Conv(S_Δi)``, with the planes of Eq 10-11.

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
