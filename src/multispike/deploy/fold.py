"""Re-parameterisation for inference: BN folded into convolutions, amplitudes into weights.

- :func:`fold_batchnorm`: a ``fold``/``tdbn`` BN after a convolution is a per-channel affine
  map in eval mode, written into the convolution (``W' = s·W``, ``b' = β + (b − μ)·s``);
  per-step BN stays as an exact per-step scale and shift.
- :func:`fold_amplitudes` (Ternary Spike Eq 15-17): ``K * (a·B) = (a·K) * B``, so each
  learnable amplitude ``a`` scales the weights of the layers that consume the neuron's spikes
  and the neuron emits ``b`` again. Where the paper leaves it open, an identity shortcut
  rescales its receiving neuron by ``1/a`` and a voting output gets a
  :class:`ScaledVotingLayer`.
- :func:`prepare`: every transform starts from it; neurons that learned their thresholds
  become their constant :meth:`~multispike.neurons.Neuron.fixed` layers.

The formulas, the cases the paper leaves open and why each is exact: ``docs/deploy.md``
§ BN folding, § Amplitude folding and § Every rule (learned thresholds).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from multispike.deploy.graph import DeployGraph, set_module, trace
from multispike.deploy.wrappers import ScaledVotingLayer, unwrap
from multispike.errors import ConfigError
from multispike.functional import MultiThreshold, TernaryMultiThreshold
from multispike.layers import BatchNormFold, BatchNormPerStep, TDBatchNorm
from multispike.neurons import Neuron, fix_thresholds


def deployment_record(model: nn.Module) -> dict[str, Any]:
    """The record of structural changes kept on a deployed model (``model.deployment``),
    created empty on first use: folded norms, scaled votes, rescaled neurons, split planes,
    neurons whose learned thresholds were fixed."""
    rec = getattr(model, "deployment", None)
    if rec is None:
        rec = {"folded_norms": [], "scaled_votes": [], "rescaled_neurons": [],
               "split_planes": False, "fixed_thresholds": []}
        model.deployment = rec
    rec.setdefault("fixed_thresholds", [])  # records written before learned thresholds
    return rec


def prepare(model: nn.Module, inplace: bool) -> nn.Module:
    """The model a transform works on: ``model`` itself if ``inplace``, else a deep copy; in
    eval mode (deploy transforms describe inference), every neuron that learns its thresholds
    replaced by its constant :meth:`~multispike.neurons.Neuron.fixed` layer (named in
    ``model.deployment["fixed_thresholds"]``; outputs unchanged)."""
    if not inplace:
        model = copy.deepcopy(model)
    learned = [name for name, m in model.named_modules()
               if isinstance(m, Neuron) and m.learn_thresholds]
    if learned:
        fix_thresholds(model)
        rec = deployment_record(model)
        rec["fixed_thresholds"] += [n for n in learned if n not in rec["fixed_thresholds"]]
    model.eval()
    return model


# -- BN ----------------------------------------------------------------------------------------
def bn_affine(norm: nn.Module) -> tuple[Tensor, Tensor]:
    """Per-channel ``(scale, shift)`` of a BN in eval mode (float64): ``BN(x) = s·x + shift``.

    For :class:`BatchNormFold` and :class:`TDBatchNorm`; per-step BN has one pair per step
    (:func:`per_step_affine`).
    """
    if isinstance(norm, BatchNormFold):
        bn = norm.bn
        gamma, beta = bn.weight.double(), bn.bias.double()
    elif isinstance(norm, TDBatchNorm):
        bn = norm.bn
        gamma = norm.weight.double() * (norm.alpha * norm.v_threshold)
        beta = norm.bias.double()
    else:  # pragma: no cover - callers check
        raise TypeError(type(norm).__name__)
    return _affine(bn, gamma, beta)


def per_step_affine(norm: BatchNormPerStep) -> list[tuple[Tensor, Tensor]]:
    """``(scale, shift)`` of each step's BN of a per-step BN (float64)."""
    return [_affine(bn, bn.weight.double(), bn.bias.double()) for bn in norm.bns]


def _affine(bn: nn.BatchNorm2d, gamma: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    if bn.running_mean is None or bn.running_var is None:
        raise ConfigError("BN without running statistics cannot be folded; train with them")
    scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
    return scale, beta - bn.running_mean.double() * scale


def fold_conv_affine(layer: nn.Module, scale: Tensor, shift: Tensor) -> None:
    """``layer(x)·scale + shift`` folded into ``layer`` (conv or linear), in place."""
    w = layer.weight
    view = (-1,) + (1,) * (w.dim() - 1)
    bias = torch.zeros_like(shift) if layer.bias is None else layer.bias.double()
    with torch.no_grad():
        w.copy_((w.double() * scale.view(view)).to(w.dtype))
        new_bias = (bias * scale + shift).to(w.dtype)
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias)
        else:
            layer.bias.copy_(new_bias)


def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Fold every ``fold``/``tdbn`` BN into the convolution before it (eval mode).

    Returns the model (a copy unless ``inplace``) with each folded BN replaced by
    ``nn.Identity`` and its convolution given a bias. Per-step BN is kept (see the module
    docstring). Outputs are unchanged up to rounding.
    """
    model = prepare(model, inplace)
    graph = trace(model)
    rec = deployment_record(model)
    for node in graph.of_op("norm"):
        if isinstance(node.module, BatchNormPerStep):
            continue
        (src,) = node.inputs
        conv = graph[src]
        if conv.op not in ("conv", "linear") or len(graph.consumers(src)) != 1:
            raise ConfigError(f"cannot fold BN {node.name}: it does not follow one convolution")
        scale, shift = bn_affine(node.module)
        fold_conv_affine(unwrap(conv.module), scale, shift)
        set_module(model, node.name, nn.Identity())
        rec["folded_norms"].append(node.name)
    return model


# -- amplitudes --------------------------------------------------------------------------------
def _scale_weights(layer: nn.Module, factor: float, *, bias: bool) -> None:
    with torch.no_grad():
        layer.weight.mul_(factor)
        if bias and layer.bias is not None:
            layer.bias.mul_(factor)


def _scale_current(graph: DeployGraph, name: str, factor: float, receiver: str) -> None:
    """Multiply the current that node ``name`` feeds into ``receiver`` by ``factor``."""
    node = graph[name]
    if len(graph.consumers(name)) != 1:
        raise ConfigError(
            f"cannot rescale the input of {receiver}: {name} also feeds other layers"
        )
    if node.op in ("conv", "linear"):
        _scale_weights(unwrap(node.module), factor, bias=True)
    elif node.op == "norm":
        bns = node.module.bns if isinstance(node.module, BatchNormPerStep) else None
        if bns is None:  # pragma: no cover - fold/tdbn BN are folded before amplitudes
            raise ConfigError(f"fold BN {name} before rescaling {receiver}")
        with torch.no_grad():
            for bn in bns:
                bn.weight.mul_(factor)
                bn.bias.mul_(factor)
    elif node.op == "sum":
        for src in node.inputs:
            _scale_current(graph, src, factor, receiver)
    else:
        raise ConfigError(
            f"cannot rescale the input of {receiver}: it also receives {name} ({node.op}), "
            "which has no weight to scale"
        )


def rescale_neuron(neuron: Neuron, factor: float) -> None:
    """Multiply a neuron's thresholds and reset potential by ``factor > 0`` (in place).

    With every input current scaled by the same factor the neuron emits the same spikes:
    charge and hard reset are linear in the membrane.
    """
    rule = neuron.rule
    if isinstance(rule, (MultiThreshold, TernaryMultiThreshold)) and rule.deltas is not None:
        neuron.rule = type(rule)(deltas=tuple(d * factor for d in rule.deltas))
    neuron.v_threshold = neuron.v_threshold * factor
    neuron.v_reset = neuron.v_reset * factor
    neuron.rule.validate(neuron.v_threshold)


def _device_of(model: nn.Module) -> torch.device:
    """Where the model's weights live (new modules are put there too)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def amplitude_of(neuron: Neuron) -> float | None:
    a = neuron.amplitude
    return None if a is None else float(a.detach())


def fold_amplitudes(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Ternary Spike Eq 15-17: fold every learnable amplitude into the consuming weights.

    Folds BN first (:func:`fold_batchnorm`), then for every neuron with an amplitude ``a``
    scales the weights of its consumers by ``a`` and removes the amplitude; identity
    shortcuts rescale their receiving neuron and voting outputs become a
    :class:`ScaledVotingLayer` (``docs/deploy.md`` § Amplitude folding). Returns the deployed
    model (a copy unless ``inplace``) in eval mode, whose neurons emit {−1, 0, 1} / {0, 1}
    (MT: integers) and whose outputs equal the input model's.

    Raises :class:`~multispike.errors.ConfigError` (one line) for amplitudes that cannot be
    folded exactly: zero or non-finite, non-positive before max pooling or an identity
    shortcut.
    """
    model = fold_batchnorm(model, inplace=inplace)
    graph = trace(model)
    rec = deployment_record(model)
    rescale: dict[str, list[tuple[float, str, tuple[str, ...]]]] = {}
    for node in graph.of_op("neuron"):
        neuron = unwrap(node.module)
        a = amplitude_of(neuron)
        if a is None:
            continue
        if not math.isfinite(a) or a == 0:
            raise ConfigError(
                f"neuron {node.name} has amplitude {a}: its spikes carry no information and "
                "cannot be folded; retrain or drop the layer"
            )
        for target, via in graph.spike_targets(node.name):
            pools = [v.name for v in via if v.op == "maxpool"]
            if pools and a <= 0:
                raise ConfigError(
                    f"neuron {node.name} has amplitude {a:g} <= 0 before max pooling "
                    f"{pools[0]}: max(a*b) = a*max(b) needs a > 0, so it cannot be folded"
                )
            if target.op in ("conv", "linear"):
                _scale_weights(unwrap(target.module), a, bias=False)
            elif target.op == "vote":
                vote = target.module
                old = float(getattr(vote, "scale", 1.0))
                scaled = ScaledVotingLayer(vote.num_classes, vote.group, old * a)
                set_module(model, target.name, scaled.to(_device_of(model)))
                rec["scaled_votes"].append(target.name)
            elif target.op == "neuron":
                # the receiver is rescaled once every stream is known (below)
                src = via[-1].name if via else node.name
                rescale.setdefault(target.name, []).append((a, node.name, (src,)))
            else:
                raise ConfigError(
                    f"neuron {node.name} feeds {target.name} ({target.op}) directly; its "
                    "amplitude has no weight to fold into"
                )
        neuron.amplitude = None
    for name, streams in rescale.items():
        _rescale_receiver(graph, name, streams)
        rec["rescaled_neurons"].append(name)
    return model


def _rescale_receiver(graph: DeployGraph, name: str,
                      streams: list[tuple[float, str, tuple[str, ...]]]) -> None:
    """Identity shortcut(s) with amplitude ``a`` into neuron ``name``: divide by ``a``."""
    amps = {a for a, _, _ in streams}
    sources = {s for _, _, srcs in streams for s in srcs}
    a, first, _ = streams[0]
    if len(amps) > 1:
        raise ConfigError(
            f"neuron {name} receives identity shortcuts with different amplitudes "
            f"{sorted(amps)}; one rescaling cannot make them all ±1"
        )
    if a <= 0:
        raise ConfigError(
            f"neuron {first} has amplitude {a:g} <= 0 and reaches {name} through an identity "
            "shortcut; rescaling the receiver needs a > 0, so it cannot be folded"
        )
    node = graph[name]
    for src in node.inputs:
        if src not in sources:
            _scale_current(graph, src, 1.0 / a, name)
    rescale_neuron(unwrap(node.module), 1.0 / a)


def is_deployed(model: nn.Module) -> bool:
    """True when no neuron has an amplitude or learns its thresholds and no ``fold``/``tdbn``
    BN is left."""
    graph = trace(model)
    for node in graph:
        if node.op == "neuron":
            neuron = unwrap(node.module)
            if neuron.amplitude is not None or neuron.learn_thresholds:
                return False
        if node.op == "norm" and not isinstance(node.module, BatchNormPerStep):
            return False
    return True


def event_model(model: nn.Module) -> tuple[nn.Module, Any]:
    """The deployed copy of a zoo model (amplitudes and BN folded) and its deployment graph:
    what :func:`~multispike.analysis.stats.measure_rates` counts exact events on (pass it as
    ``events=``).

    Its neurons emit integers (a value ``k`` is ``|k|`` unit events, for every rule) and its
    spike patterns are the model's; learned thresholds are fixed as constants
    (:func:`prepare`). Raises :class:`~multispike.errors.ConfigError` for models outside the
    zoo's VGG and ResNet families (no deployment graph) or that cannot be folded.
    """
    deployed = fold_amplitudes(model)
    return deployed, trace(deployed)
