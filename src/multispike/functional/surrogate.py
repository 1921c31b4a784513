"""Surrogate gradients for the Heaviside step.

Forward, every surrogate is the Heaviside step of MT-SNN Eq 4, ``Θ(x) = 1 if x >= 0 else 0``
(so Θ(0) = 1). Backward, it passes ``dΘ/dx ≈ g(x)``, the derivative of a smooth *primitive*
``P(x)`` that each surrogate names, so that a test can check the autograd Function against
autograd of the primitive.

Each surrogate is a small :class:`torch.autograd.Function` wrapped by a frozen record holding
its one number: the window surrogates (:class:`Rectangular`, :class:`ClampSTE`) have a
``width`` (the neurons' ``surrogate_width``), the smooth ones (:class:`Sigmoid`, :class:`ATan`)
a sharpness ``alpha`` (the neurons' ``surrogate_alpha``). Firing rules call the record on
``H - θ`` once per threshold θ, so the gradient sums over thresholds (MT: ``V_th`` and each
``V_th + Δi``; ternary: ``+V_th`` and ``-V_th``).

Example::

    >>> sg = Rectangular(width=1.0)
    >>> x = torch.tensor([-0.6, -0.2, 0.0, 0.4], requires_grad=True)
    >>> sg(x).sum().backward()
    >>> x.grad            # (1/a) · 1(|x| <= a/2), MT-SNN Eq 9
    tensor([0., 1., 1., 1.])
    >>> get_surrogate("sigmoid", alpha=2.0)
    Sigmoid(alpha=2.0)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from multispike.checks import positive_number
from multispike.errors import ConfigError


def heaviside(x: Tensor) -> Tensor:
    """MT-SNN Eq 4: ``Θ(x) = 1`` where ``x >= 0``, else 0, in the dtype of ``x``."""
    return (x >= 0).to(x.dtype)


class _HeavisideFn(torch.autograd.Function):
    """Θ forward, shared by every surrogate; subclasses define the backward from ``x = H − θ``
    (saved) and ``ctx.param`` (the surrogate's width or sharpness)."""

    @staticmethod
    def forward(ctx, x: Tensor, param: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.param = param
        return heaviside(x)


class _RectangularFn(_HeavisideFn):
    """Θ forward; MT-SNN Eq 9 backward: ``dS/dH = (1/a)·1(|x| <= a/2)``."""

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        a = ctx.param
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
        return grad * (x.abs() <= ctx.param / 2).to(grad.dtype), None


class _SigmoidFn(_HeavisideFn):
    """Θ forward; ``dS/dH = α·σ(αx)·(1 − σ(αx))`` backward (SpikingJelly / snnTorch style)."""

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(ctx.param * x)
        return grad * ctx.param * s * (1 - s), None


class _ATanFn(_HeavisideFn):
    """Θ forward; ``dS/dH = (α/2) / (1 + (π/2·α·x)²)`` backward (SpikingJelly's ATan)."""

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        a = ctx.param
        return grad * (a / 2) / (1 + (math.pi / 2 * a * x) ** 2), None


class _RoundClampFn(torch.autograd.Function):
    """``round(clamp(u, lo, hi))`` forward (half to even, as ``torch.round``); straight-through
    backward ``1(lo <= u <= hi)`` (bounds included)."""

    @staticmethod
    def forward(ctx, u: Tensor, lo: float, hi: float) -> Tensor:
        ctx.save_for_backward(u)
        ctx.lo, ctx.hi = lo, hi
        return torch.round(torch.clamp(u, lo, hi))

    @staticmethod
    def backward(ctx, grad: Tensor):
        (u,) = ctx.saved_tensors
        return grad * ((u >= ctx.lo) & (u <= ctx.hi)).to(grad.dtype), None, None


def round_ste(u: Tensor, lo: float, hi: float) -> Tensor:
    """Integer spikes with a straight-through gradient (SpikeYOLO's I-LIF, issue #15):
    ``round(clamp(u, lo, hi))`` forward, ``d/du = 1`` where ``lo <= u <= hi``, else 0.

    ``torch.round`` rounds half to even (0.5 → 0, 1.5 → 2, 2.5 → 2), after the clamp, as
    SpikeYOLO's code and SpikingJelly's ``MultiLevelSpikeCount`` do. ``u`` any shape.

    >>> u = torch.tensor([-0.7, 0.5, 1.5, 2.5, 4.6], requires_grad=True)
    >>> b = round_ste(u, 0.0, 4.0)
    >>> b.detach()
    tensor([0., 0., 2., 2., 4.])
    >>> b.sum().backward(); u.grad
    tensor([0., 1., 1., 1., 0.])
    """
    return _RoundClampFn.apply(u, lo, hi)


class Surrogate:
    """Base of the surrogate records: call on ``x = H − θ`` to fire with a surrogate gradient."""

    #: short name used on the command line and in checkpoints
    name: str = ""
    #: the field holding the surrogate's number: ``"width"`` (a window) or ``"alpha"`` (a
    #: sharpness); a neuron's option for it is ``"surrogate_" + param_name``
    param_name: ClassVar[str] = "width"

    def __post_init__(self) -> None:  # run by each dataclass subclass
        value = positive_number(self.option, getattr(self, self.param_name))
        object.__setattr__(self, self.param_name, value)

    @property
    def param(self) -> float:
        """The surrogate's one number: the window's width or the sharpness ``alpha``."""
        return float(getattr(self, self.param_name))

    @property
    def option(self) -> str:
        """The neuron option that sets :attr:`param`: ``surrogate_width`` or ``surrogate_alpha``."""
        return "surrogate_" + self.param_name

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
    """Sigmoid surrogate: primitive ``σ(αx)``, ``dS/dH = α·σ(αx)·(1 − σ(αx))``; ``alpha`` is
    the sharpness ``α`` (default 4, peak ``α/4``)."""

    alpha: float = 4.0
    name = "sigmoid"
    param_name = "alpha"

    def __call__(self, x: Tensor) -> Tensor:
        return _SigmoidFn.apply(x, self.alpha)

    def primitive(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.alpha * x)


@dataclass(frozen=True)
class ATan(Surrogate):
    """Arc-tangent surrogate: primitive ``atan(π/2·αx)/π + 1/2``; ``alpha`` is the sharpness
    ``α`` (default 2, peak ``α/2``)."""

    alpha: float = 2.0
    name = "atan"
    param_name = "alpha"

    def __call__(self, x: Tensor) -> Tensor:
        return _ATanFn.apply(x, self.alpha)

    def primitive(self, x: Tensor) -> Tensor:
        return torch.atan(math.pi / 2 * self.alpha * x) / math.pi + 0.5


SURROGATES: dict[str, type[Surrogate]] = {
    cls.name: cls for cls in (Rectangular, ClampSTE, Sigmoid, ATan)
}


def get_surrogate(
    surrogate: str | Surrogate, width: float | None = None, *, alpha: float | None = None
) -> Surrogate:
    """Turn a name (``rectangular``, ``clamp``, ``sigmoid``, ``atan``) into a surrogate record.

    ``width`` sets the window of ``rectangular`` and ``clamp``, ``alpha`` the sharpness of
    ``sigmoid`` and ``atan``; ``None`` keeps the surrogate's own default. Giving ``alpha`` to a
    window surrogate is a :class:`ConfigError`; giving ``width`` to a smooth one is the old
    spelling of ``alpha`` (before ``surrogate_alpha`` existed): it still means ``alpha``, with
    a :class:`DeprecationWarning` (checkpoints store it that way: :func:`legacy_surrogate_options`
    converts them silently). A record passes through unchanged (giving it a different number
    too is an error: the record already has one).
    """
    if isinstance(surrogate, Surrogate):
        for option, value in (("surrogate_width", width), ("surrogate_alpha", alpha)):
            # an equal surrogate_width beside a smooth record is the old spelling: accepted
            wrong = option == "surrogate_alpha" and surrogate.option != option
            if value is not None and (wrong or value != surrogate.param):
                raise ConfigError(
                    f"{option}={value} conflicts with {surrogate!r}; pass the number inside "
                    "the surrogate object or use its name"
                )
        return surrogate
    cls = SURROGATES.get(str(surrogate).lower())
    if cls is None:
        raise ConfigError(
            f"unknown surrogate {surrogate!r}; choose one of {', '.join(sorted(SURROGATES))}"
        )
    if cls.param_name == "width":
        if alpha is not None:
            raise ConfigError(
                f"surrogate_alpha is the sharpness of sigmoid and atan; {cls.name} has a window "
                f"width: use surrogate_width={alpha}"
            )
        return cls() if width is None else cls(width=width)
    if width is not None:
        if alpha is not None:
            raise ConfigError(
                f"surrogate_width is the window of rectangular and clamp; {cls.name} takes "
                f"surrogate_alpha only: drop surrogate_width={width}"
            )
        warnings.warn(
            f"surrogate_width={width} for the {cls.name} surrogate is its sharpness: spell it "
            f"surrogate_alpha={width} (surrogate_width is the window of rectangular and clamp)",
            DeprecationWarning,
            stacklevel=3,
        )
        alpha = width
    return cls() if alpha is None else cls(alpha=alpha)


def legacy_surrogate_options(config: dict) -> dict:
    """A neuron config written before ``surrogate_alpha`` existed, in today's keys.

    Old checkpoints store the sharpness of ``sigmoid`` and ``atan`` as ``surrogate_width``;
    this moves it to ``surrogate_alpha`` (a copy; other configs come back unchanged), so the
    same neuron is rebuilt without a warning.

    >>> legacy_surrogate_options({"surrogate": "atan", "surrogate_width": 3.0})
    {'surrogate': 'atan', 'surrogate_alpha': 3.0}
    """
    name = config.get("surrogate")
    cls = SURROGATES.get(str(name).lower()) if isinstance(name, str) else None
    if cls is None or cls.param_name != "alpha" or config.get("surrogate_width") is None:
        return config
    if config.get("surrogate_alpha") is not None:
        return config  # both given: let get_surrogate name the conflict
    out = dict(config)
    out["surrogate_alpha"] = out.pop("surrogate_width")
    return out
