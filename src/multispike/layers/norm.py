"""Batch normalisation over time-first tensors ``[T, B, C, H, W]`` or ``[T, B, C]``.

Four variants, chosen by name (a model's ``norm`` option, :data:`NORMS`): :class:`BatchNormFold`
(``"fold"``, the default), :class:`BatchNormPerStep` (``"per-step"``), :class:`TDBatchNorm`
(``"tdbn"``) and :class:`BatchNormStepStats` (``"step-stats"``). :func:`get_norm` gives the
class, :func:`build_norm` an instance; ``docs/models.md`` compares their statistics.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from multispike.checks import positive_int
from multispike.errors import ConfigError

__all__ = [
    "NORMS",
    "BatchNormFold",
    "BatchNormPerStep",
    "BatchNormStepStats",
    "TDBatchNorm",
    "build_norm",
    "get_norm",
]


def _as_4d(x: Tensor) -> Tensor:
    """``[N, C]`` → ``[N, C, 1, 1]`` so one BatchNorm2d serves conv and FC layers alike."""
    return x[:, :, None, None] if x.dim() == 2 else x  # [N, C] -> [N, C, 1, 1]


def _from_4d(y: Tensor, dim: int) -> Tensor:
    return y.flatten(1) if dim == 2 else y  # [N, C, 1, 1] -> [N, C]


class BatchNormFold(nn.Module):
    """BN over ``B·T`` (default): a plain ``BatchNorm2d`` on the folded tensor.

    Statistics (and running averages) are shared by all time steps, as in the Ternary Spike
    code and SpikingJelly. ``[T, B, C, H, W]`` or ``[T, B, C]`` in, same shape out.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)

    def forward(self, x: Tensor) -> Tensor:
        t, b = x.shape[:2]
        y = x.flatten(0, 1)  # [T, B, C, ...] -> [T*B, C, ...]
        y = _from_4d(self.bn(_as_4d(y)), y.dim())
        return y.unflatten(0, (t, b))  # [T*B, C, ...] -> [T, B, C, ...]


class BatchNormStepStats(BatchNormFold):
    """One BN whose training statistics are taken at each time step apart.

    The Ternary Spike code wraps its stem's ``Conv2d`` + ``BatchNorm2d`` in ``SpikeConv``,
    which calls them once per time step: the affine parameters and running averages are
    shared, but each step is normalised with its own batch mean and variance (the running
    averages take T updates per batch). For static images every step is the same, so this
    equals :class:`BatchNormFold`; for event frames it does not. In eval mode it is exactly a
    :class:`BatchNormFold` (the running averages serve every step), which is how deployment
    folds it.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        outs = [_from_4d(self.bn(_as_4d(x[t])), x.dim() - 1) for t in range(x.shape[0])]
        return torch.stack(outs)  # T x [B, C, ...] -> [T, B, C, ...]


class BatchNormPerStep(nn.Module):
    """One BN per time step: step ``t`` uses its own statistics and affine parameters.

    Built with ``timesteps`` BNs. When a model runs with more steps than that (``model.timesteps``
    raised after training), steps ``t >= timesteps`` reuse the **last** step's BN: the last
    trained step is the closest to a converged membrane. Fewer steps use the first ones.
    """

    def __init__(
        self, num_features: int, timesteps: int, eps: float = 1e-5, momentum: float = 0.1
    ) -> None:
        super().__init__()
        positive_int("timesteps", timesteps, where="per-step BN")
        self.bns = nn.ModuleList(
            nn.BatchNorm2d(num_features, eps=eps, momentum=momentum) for _ in range(timesteps)
        )

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.bns) - 1
        outs = [
            _from_4d(self.bns[min(t, last)](_as_4d(x[t])), x.dim() - 1) for t in range(x.shape[0])
        ]
        return torch.stack(outs)  # T x [B, C, ...] -> [T, B, C, ...]


class TDBatchNorm(nn.Module):
    """tdBN (Zheng et al. 2021, Eq 6-7): ``y = λ·α·V_th·(x − E[x])/√(Var[x] + ε) + β``.

    Mean and variance per channel are taken over ``(T, B, H, W)`` (the same statistics as
    :class:`BatchNormFold`); the normalised value is scaled by ``α·V_th`` before the learnable
    affine ``λ, β``. tdBN uses ``α = 1`` except before a residual addition, where
    ``α = 1/√2``. The effective BN scale is ``λ·α·V_th`` (what a BN-folding step must use).
    """

    def __init__(
        self,
        num_features: int,
        *,
        v_threshold: float = 1.0,
        alpha: float = 1.0,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum, affine=False)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.v_threshold = float(v_threshold)
        self.alpha = float(alpha)

    def forward(self, x: Tensor) -> Tensor:
        t, b = x.shape[:2]
        y = _as_4d(x.flatten(0, 1))  # [T, B, C, ...] -> [T*B, C, H, W] (or [T*B, C, 1, 1])
        scale = (self.weight * (self.alpha * self.v_threshold))[:, None, None]  # [C, 1, 1]
        y = self.bn(y) * scale + self.bias[:, None, None]
        y = _from_4d(y, x.dim() - 1)
        return y.unflatten(0, (t, b))  # [T*B, C, ...] -> [T, B, C, ...]

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, alpha={self.alpha:g}, v_threshold={self.v_threshold:g}"


NORMS: dict[str, type[nn.Module]] = {
    "fold": BatchNormFold,
    "per-step": BatchNormPerStep,
    "tdbn": TDBatchNorm,
    "step-stats": BatchNormStepStats,
}


def _norm_key(name: str) -> str:
    key = str(name).lower().replace("_", "-")
    if key not in NORMS:
        raise ConfigError(f"unknown norm {name!r}; choose one of {', '.join(NORMS)}")
    return key


def get_norm(name: str) -> type[nn.Module]:
    """The BN class of a name: ``"fold"`` (default), ``"per-step"``, ``"tdbn"`` or
    ``"step-stats"``."""
    return NORMS[_norm_key(name)]


def build_norm(
    name: str,
    num_features: int,
    *,
    timesteps: int = 1,
    v_threshold: float = 1.0,
    alpha: float = 1.0,
) -> nn.Module:
    """Build a BN layer by name, passing each variant only the options it uses.

    ``timesteps`` sizes per-step BN; ``v_threshold`` and ``alpha`` scale tdBN.
    """
    key = _norm_key(name)
    if key == "per-step":
        return BatchNormPerStep(num_features, timesteps)
    if key == "tdbn":
        return TDBatchNorm(num_features, v_threshold=v_threshold, alpha=alpha)
    if key == "step-stats":
        return BatchNormStepStats(num_features)
    return BatchNormFold(num_features)
