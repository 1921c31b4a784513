"""Surrogate gradients for the Heaviside step.

Forward, every surrogate is the Heaviside step of MT-SNN Eq 4, ``Θ(x) = 1 if x >= 0 else 0``
(so Θ(0) = 1). Backward, it passes ``dΘ/dx ≈ g(x)``, the derivative of a smooth *primitive*
``P(x)`` that each surrogate names, so that a test can check the autograd Function against
autograd of the primitive.

Each surrogate is a small :class:`torch.autograd.Function` wrapped by a frozen record holding
its width; firing rules call the record on ``H - θ`` once per threshold θ, so the gradient
sums over thresholds (MT: ``V_th`` and each ``V_th + Δi``; ternary: ``+V_th`` and ``-V_th``).

Example::

    >>> sg = Rectangular(width=1.0)
    >>> x = torch.tensor([-0.6, -0.2, 0.0, 0.4], requires_grad=True)
    >>> sg(x).sum().backward()
    >>> x.grad            # (1/a) · 1(|x| <= a/2), MT-SNN Eq 9
    tensor([0., 1., 1., 1.])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from multispike.errors import ConfigError


def heaviside(x: Tensor) -> Tensor:
    """MT-SNN Eq 4: ``Θ(x) = 1`` where ``x >= 0``, else 0, in the dtype of ``x``."""
    return (x >= 0).to(x.dtype)


class _HeavisideFn(torch.autograd.Function):
    """Θ forward, shared by every surrogate; subclasses define the backward from ``x = H − θ``
    (saved) and ``ctx.width`` (the surrogate's width or sharpness)."""

    @staticmethod
    def forward(ctx, x: Tensor, width: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.width = width
        return heaviside(x)


class _RectangularFn(_HeavisideFn):
    """Θ forward; MT-SNN Eq 9 backward: ``dS/dH = (1/a)·1(|x| <= a/2)``."""

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        a = ctx.width
        return grad * (x.abs() <= a / 2).to(grad.dtype) / a, None


class _ClampFn(_HeavisideFn):
    """Θ forward; unit-height window backward: ``dS/dH = 1(|x| <= w/2)``.

    This is the straight-through estimator of the Ternary Spike code, which backpropagates
    through ``clamp(u, 0, 1)`` (binary) or ``clamp(u, -1, 1)`` (ternary) around thresholds at
    ±0.5: a gradient of 1, whatever the window's width.
    """

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= ctx.width / 2).to(grad.dtype), None


class _SigmoidFn(_HeavisideFn):
    """Θ forward; ``dS/dH = α·σ(αx)·(1 − σ(αx))`` backward (SpikingJelly / snnTorch style)."""

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(ctx.width * x)
        return grad * ctx.width * s * (1 - s), None


class _ATanFn(_HeavisideFn):
    """Θ forward; ``dS/dH = (α/2) / (1 + (π/2·α·x)²)`` backward (SpikingJelly's ATan)."""

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        a = ctx.width
        return grad * (a / 2) / (1 + (math.pi / 2 * a * x) ** 2), None


class Surrogate:
    """Base of the surrogate records: call on ``x = H − θ`` to fire with a surrogate gradient."""

    #: short name used on the command line and in checkpoints
    name: str = ""
    width: float

    def __post_init__(self) -> None:  # run by each dataclass subclass
        _check_positive("surrogate_width", self.width)

    def __call__(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def primitive(self, x: Tensor) -> Tensor:
        """The smooth function whose derivative is this surrogate's backward."""
        raise NotImplementedError  # pragma: no cover - abstract

    def derivative(self, x: Tensor) -> Tensor:
        """``g(x)``, the gradient the backward passes for an upstream gradient of 1."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self(x).sum(), x)
        return g


@dataclass(frozen=True)
class Rectangular(Surrogate):
    """MT-SNN Eq 9, the default: ``dS/dH = (1/a)·1(|H − θ| <= a/2)``.

    ``width`` is ``a`` (dimensionless, in units of membrane potential); the paper sets 1.
    Primitive: ``clamp(x/a + 1/2, 0, 1)``.
    """

    width: float = 1.0
    name = "rectangular"

    def __call__(self, x: Tensor) -> Tensor:
        return _RectangularFn.apply(x, self.width)

    def primitive(self, x: Tensor) -> Tensor:
        return torch.clamp(x / self.width + 0.5, 0.0, 1.0)


@dataclass(frozen=True)
class ClampSTE(Surrogate):
    """Straight-through window of the Ternary Spike code: ``dS/dH = 1(|H − θ| <= w/2)``.

    Unlike :class:`Rectangular` the height stays 1 for any width. Primitive:
    ``clamp(x + w/2, 0, w)``.
    """

    width: float = 1.0
    name = "clamp"

    def __call__(self, x: Tensor) -> Tensor:
        return _ClampFn.apply(x, self.width)

    def primitive(self, x: Tensor) -> Tensor:
        return torch.clamp(x + self.width / 2, 0.0, self.width)


@dataclass(frozen=True)
class Sigmoid(Surrogate):
    """Sigmoid surrogate: primitive ``σ(αx)``; ``width`` is ``α`` (sharpness, default 4)."""

    width: float = 4.0
    name = "sigmoid"

    def __call__(self, x: Tensor) -> Tensor:
        return _SigmoidFn.apply(x, self.width)

    def primitive(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.width * x)


@dataclass(frozen=True)
class ATan(Surrogate):
    """Arc-tangent surrogate: primitive ``atan(π/2·αx)/π + 1/2``; ``width`` is ``α`` (default 2)."""

    width: float = 2.0
    name = "atan"

    def __call__(self, x: Tensor) -> Tensor:
        return _ATanFn.apply(x, self.width)

    def primitive(self, x: Tensor) -> Tensor:
        return torch.atan(math.pi / 2 * self.width * x) / math.pi + 0.5


SURROGATES: dict[str, type[Surrogate]] = {
    cls.name: cls for cls in (Rectangular, ClampSTE, Sigmoid, ATan)
}


def get_surrogate(surrogate: str | Surrogate, width: float | None = None) -> Surrogate:
    """Turn a name (``rectangular``, ``clamp``, ``sigmoid``, ``atan``) into a surrogate record.

    ``width=None`` keeps the surrogate's own default. A record passes through unchanged
    (giving it a ``width`` too is an error: the record already has one).
    """
    if isinstance(surrogate, Surrogate):
        if width is not None and width != getattr(surrogate, "width", width):
            raise ConfigError(
                f"surrogate_width={width} conflicts with {surrogate!r}; "
                "pass the width inside the surrogate object or use its name"
            )
        return surrogate
    cls = SURROGATES.get(str(surrogate).lower())
    if cls is None:
        raise ConfigError(
            f"unknown surrogate {surrogate!r}; choose one of {', '.join(sorted(SURROGATES))}"
        )
    return cls() if width is None else cls(width=float(width))


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
