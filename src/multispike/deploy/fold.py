"""Re-parameterisation for inference: BN folded into convolutions, amplitudes into weights.

**BN folding.** In eval mode a BN after a convolution is a per-channel affine map, so
``BN(W * x + b) = W' * x + b'`` with (per output channel)::

    s  = γ / √(σ² + ε)                 (tdBN: s = λ·α·V_th / √(σ² + ε))
    W' = s · W,    b' = β + (b − μ)·s

:func:`fold_batchnorm` writes ``W'``, ``b'`` into the convolution (which gains a bias) and puts
``nn.Identity`` in the BN's slot. It folds ``norm="fold"`` (BN over B·T) and ``norm="tdbn"``.
Per-step BN (``norm="per-step"``) is a different affine map at every time step; a single
convolution cannot hold it, so it stays (an exact per-step scale and shift). The amplitude
folding below is exact with it too, the addition-only executor folds it into one weight table
per step, and NIR export refuses it (NIR weights do not change with time).

**Amplitude folding** (Ternary Spike Eq 15-17). A neuron with a learnable amplitude emits
``a·b`` with ``b ∈ {−1, 0, 1}`` (or {0, 1}, or MT's {0, …, n+1}). Every layer that consumes
these spikes is linear in them, so ``K * (a·B) = (a·K) * B``: :func:`fold_amplitudes` scales
the weights of each consumer (convolution, linear layer, 1×1 downsampling shortcut) by ``a``
and removes the amplitude, so that the neuron emits ``b`` again. Average pooling, global
average pooling and flattening between the neuron and its consumer are linear and commute
with ``a``; max pooling commutes with ``a > 0`` only (``max(a·b) = a·max(b)``), so a
non-positive amplitude before max pooling is refused.

Two cases the paper leaves open:

- *identity shortcut* (spike-level residual, ``SN2(BN2(Conv2(...)) + a·b)``): the stream
  ``a·b`` enters the membrane of the receiving neuron with no weight to absorb ``a``. The
  receiver is rescaled instead: divide everything entering it by ``a`` — the other branch's
  (BN-folded) convolution weight and bias — and divide its threshold(s) and reset potential
  by ``a``. Its charge (IF, LIF, PLIF) and hard reset are linear in the membrane, so the
  scaled membrane ``u/a`` crosses ``V_th/a`` exactly when ``u`` crosses ``V_th``: it emits the
  same spikes, the shortcut adds plain ``±1`` and the network stays multiplication-free.
  This needs ``a > 0``.
- *voting output*: the output neurons' spikes reach no weight, only the voting average; the
  amplitude becomes a scale of the voting layer (:class:`ScaledVotingLayer`), one
  multiplication per class and step at the readout, none per synapse.

Thresholds of all other neurons are unchanged. The result is exact: the folded model's
outputs equal the trained model's up to floating-point rounding (checked in float64).

**Learned thresholds** (``learn_thresholds=True``) are constants once trained: every transform
starts from :func:`prepare`, which replaces each such neuron of the copy it works on by its
:meth:`~multispike.neurons.Neuron.fixed` layer (the same class and options, ``V_th`` and an MT
rule's deltas set to the learned values as floats) and records its name in
``model.deployment["fixed_thresholds"]``. Everything downstream (amplitude folding, planes, the
executor, NIR, save/load) reads plain float thresholds.
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
    :class:`ScaledVotingLayer` (see the module docstring). Returns the deployed model (a copy
    unless ``inplace``) in eval mode, whose neurons emit {−1, 0, 1} / {0, 1} (MT: integers)
    and whose outputs equal the input model's.

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
