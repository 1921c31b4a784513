"""Make an untrained model fire, so that deploy transforms can be checked on it.

A freshly built model barely fires: its learnable amplitudes are all 1 and its BN layers hold
the identity statistics, so a check of :func:`~multispike.deploy.fold_amplitudes` on it would
prove little. :func:`exercise` gives every amplitude a random value and sets every BN (and
every linear layer that feeds neurons) so that each neuron's input current is spread around its
threshold: every layer fires, with both signs for ternary neurons, and deep layers stay alive.

Example::

    >>> import torch
    >>> from multispike.deploy.testing import exercise, firing_rates
    >>> from multispike.models import create
    >>> model = create("digits_net", firing="ternary", learn_amplitude=True).double()
    >>> x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    >>> model = exercise(model, x, seed=0)             # in place; returns the model (eval)
    >>> min(firing_rates(model, x).values()) > 0       # every neuron layer fires
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from multispike.deploy.graph import trace
from multispike.deploy.wrappers import unwrap
from multispike.layers import BatchNormFold, BatchNormPerStep, TDBatchNorm
from multispike.neurons import Neuron, PLIFNode


def _gain(model: nn.Module) -> tuple[float, bool]:
    """Current needed to reach the threshold (V_th, times τ for PLIF) and signedness."""
    neuron = next(m for m in model.modules() if isinstance(m, Neuron))
    scale = neuron.v_threshold * (float(neuron.tau) if isinstance(neuron, PLIFNode) else 1.0)
    return scale, neuron.rule.signed


@torch.no_grad()
def exercise(
    model: nn.Module,
    x: Tensor,
    *,
    seed: int = 0,
    amplitudes: tuple[float, float] = (0.3, 1.7),
) -> nn.Module:
    """Randomise amplitudes and BN so that every neuron of ``model`` fires on ``x``.

    - each learnable amplitude ``a`` is drawn from ``amplitudes`` (uniform);
    - BN running statistics are set from ``x`` (one pass in training mode), then each BN's
      affine parameters (tdBN: λ, β; per-step BN: each step's) and each linear layer that feeds
      neurons are set so that every channel's current has a random mean and spread of the
      order of the threshold (means around 0 for ternary neurons).

    In place; returns ``model`` in eval mode. Deterministic for a given ``seed``; ``x`` must
    be on the model's device (any device: the random numbers are drawn on the CPU).
    """
    draws = _Draws(seed)
    lo, hi = amplitudes
    for m in model.modules():
        if isinstance(m, Neuron) and m.amplitude is not None:
            m.amplitude.fill_(float(draws.uniform((), lo, hi, m.amplitude)))
    _statistics_from(model, x)
    _retune(model, x, draws)
    return model


class _Draws:
    """Uniform numbers drawn on the CPU from one seed and moved: the same model on every
    device."""

    def __init__(self, seed: int) -> None:
        self.g = torch.Generator(device="cpu").manual_seed(seed)

    def uniform(self, shape: tuple[int, ...], lo: float, hi: float, like: Tensor) -> Tensor:
        u = torch.rand(shape, generator=self.g, dtype=torch.float64, device="cpu")
        return (lo + (hi - lo) * u).to(like)


def _statistics_from(model: nn.Module, x: Tensor) -> None:
    """Every BN's running statistics = the statistics of ``x`` (one pass, momentum 1);
    ``model`` is left in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 1.0
    model.train()
    model(x)
    for bn, mom in zip(bns, momenta, strict=True):
        bn.momentum = mom
    model.eval()


def _standardise(y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel (dim 1) mean and spread of ``y`` (a spread of 0 counts as 1)."""
    dims = [d for d in range(y.dim()) if d != 1]
    m, sd = y.mean(dims), y.std(dims)
    return m, torch.where(sd > 1e-6, sd, torch.ones_like(sd))


def _retune(model: nn.Module, x: Tensor, draws: _Draws) -> None:
    """One pass over ``x`` in which each BN, and each linear layer that feeds neurons, gets
    the ``(w, b)`` that give its output a random mean and spread of the order of the
    threshold, channel by channel (in forward order, the later layers seeing the retuned
    earlier ones)."""
    scale, signed = _gain(model)
    mean_range = (-0.6, 0.6) if signed else (-0.3, 1.0)
    graph = trace(model)
    layers = [n.module for n in graph.of_op("norm")]
    layers += [n.module for n in graph.of_op("linear")
               if any(c.op == "neuron" for c in graph.consumers(n.name))]

    def retune(w: Tensor, b: Tensor, y: Tensor) -> None:
        """Set ``(w, b)`` of ``y = w·z + b`` so that y gets the target mean and spread."""
        m, sd = _standardise(y)
        c = y.shape[1]
        mu = draws.uniform((c,), *mean_range, y) * scale
        spread = draws.uniform((c,), 0.5, 1.0, y) * scale
        w.mul_(_col(spread / sd, w))
        b.copy_((b - m) * spread / sd + mu)

    def hook(module: nn.Module, args: tuple[Tensor], out: Tensor) -> Tensor:
        (inp,) = args
        if isinstance(module, BatchNormPerStep):
            for t in range(out.shape[0]):
                bn = module.bns[min(t, len(module.bns) - 1)]
                retune(bn.weight, bn.bias, out[t])
        elif isinstance(module, BatchNormFold):
            retune(module.bn.weight, module.bn.bias, out.flatten(0, 1))
        elif isinstance(module, (TDBatchNorm, nn.Linear)):
            retune(module.weight, module.bias, out.flatten(0, 1))
        return module.forward(inp)  # forward(): no hooks, so no recursion

    removers: list[Callable[[], None]] = [layer.register_forward_hook(hook).remove
                                          for layer in layers]
    try:
        model(x)
    finally:
        for remove in removers:
            remove()


def _col(v: Tensor, w: Tensor) -> Tensor:
    """``v`` shaped to scale the output channels (dim 0) of weight ``w``."""
    return v.view(-1, *([1] * (w.dim() - 1)))


@torch.no_grad()
def firing_rates(model: nn.Module, x: Tensor) -> dict[str, float]:
    """Fraction of non-zero outputs of every neuron layer of ``model`` on ``x``."""
    graph = trace(model)
    values = graph.run(x, keep=True)
    assert isinstance(values, dict)
    out = {}
    for node in graph.of_op("neuron"):
        v = values[node.name]
        if unwrap(node.module) is not node.module:  # planes: [T, B, P*C, ...]
            v = v.abs()
        out[node.name] = float((v != 0).double().mean())
    return out
