"""What a fused kernel needs to know about a neuron layer, read from the layer without importing it.

:func:`spec_of` turns a neuron module (anything with the attributes of
:class:`multispike.neurons.Neuron`) into a :class:`KernelSpec`: dynamics, thresholds, sign,
surrogate, reset. It returns ``None`` when the layer's dynamics are not one of the three the
kernels implement (a subclass overriding ``charge``, say); such layers run the reference loop.

``KernelSpec.native`` says whether the compiled kernels (C++ on CPU, Triton on CUDA) cover the
firing rule and surrogate; otherwise only the eager fused path (any rule, any surrogate) does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from multispike.functional.firing import Binary, MultiThreshold, Ternary, TernaryMultiThreshold
from multispike.functional.surrogate import ATan, ClampSTE, Rectangular, Sigmoid

#: dynamics the kernels implement, by the ``dynamics`` key of the neuron class
DYNAMICS = ("plif", "lif", "if")
#: surrogate kinds of the compiled kernels (the code in csrc/multistep.cpp and triton_impl.py)
SURROGATE_KINDS: dict[type, int] = {Rectangular: 0, ClampSTE: 1, Sigmoid: 2, ATan: 3}
NATIVE_RULES = (Binary, MultiThreshold, Ternary, TernaryMultiThreshold)
#: most positive thresholds a compiled kernel takes (main + 15 deltas)
MAX_THRESHOLDS = 16

SAVE_NONE, SAVE_H, SAVE_CODE = 0, 1, 2


def cast_scalar(value: float, dtype: Any) -> float:
    """``value`` rounded to ``dtype``, as PyTorch rounds a Python scalar meeting a tensor (the
    kernels' constants; computed once per layer kind, never in the hot path)."""
    import torch

    return torch.tensor(value, dtype=dtype).item()


@dataclass(frozen=True)
class Static:
    """What the compiled kernels need of a layer, in plain numbers (custom-op arguments).

    ``form`` is the charge of ``csrc/multistep.cpp``: 0 ``H = A·V + X`` (IF: ``A = 1``,
    LIF: ``A = decay``), 1 PLIF with ``V_reset = 0``, 2 PLIF with ``V_reset ≠ 0`` (MT-SNN Eq 6).
    ``reset_grad`` is 0 for ``"surrogate"``, 1 for ``"spike"`` (the reset's gradient through
    ``|b|`` of the main spike; see :func:`multispike.functional.reset_spike`).
    """

    form: int
    decay: float
    thresholds: tuple[float, ...]
    signed: bool
    sg_kind: int
    sg_width: float
    v_reset: float
    detach: bool
    reset_grad: int = 0

    def args(self) -> tuple:
        """The custom ops' static arguments, in their order."""
        return (self.form, self.decay, list(self.thresholds), self.signed, self.sg_kind,
                self.sg_width, self.v_reset, self.detach, self.reset_grad)


@dataclass(frozen=True)
class KernelSpec:
    """Static description of one neuron layer for the fused kernels.

    Attributes:
        dynamics: ``"plif"``, ``"lif"`` or ``"if"``.
        decay: LIF decay (``None`` otherwise).
        v_threshold, v_reset, detach_reset, reset_grad: as on the layer.
        thresholds: the rule's positive thresholds, main first (signed rules mirror them).
        signed: the rule fires negative spikes (ternary rules).
        rule, surrogate: the layer's records (the eager path calls them).
        sg_kind: surrogate kind of the compiled kernels, ``None`` for another surrogate.
        native: the compiled kernels cover this rule and surrogate.
        static: the same in plain numbers (:class:`Static`), as the compiled kernels take it.
    """

    dynamics: str
    decay: float | None
    v_threshold: float
    v_reset: float
    detach_reset: bool
    thresholds: tuple[float, ...]
    signed: bool
    rule: Any
    surrogate: Any
    sg_kind: int | None
    native: bool
    static: Static | None = None
    reset_grad: str = "surrogate"

    @property
    def sg_width(self) -> float:
        return float(self.surrogate.width)

    def code_ok(self, needs_tau: bool) -> bool:
        """True when the backward needs no membrane value: one byte per neuron-step suffices.

        Window surrogates (rectangular, clamp) with ``detach_reset`` and no learnable tau; the
        byte holds the window count (<= 7), the main spike and ``b + 8`` (``|b| <= 7``).
        """
        if self.sg_kind not in (0, 1) or not self.detach_reset or needs_tau:
            return False
        windows = len(self.thresholds) * (2 if self.signed else 1)
        return windows <= 7


def _defining_class(cls: type, attr: str) -> type | None:
    for klass in cls.__mro__:
        if attr in vars(klass):
            return klass
    return None


def spec_of(neuron: Any) -> KernelSpec | None:
    """The :class:`KernelSpec` of a neuron layer, or ``None`` if no kernel implements it."""
    dynamics = getattr(neuron, "dynamics", None)
    if dynamics not in DYNAMICS:
        return None
    cls = type(neuron)
    # the class that sets `dynamics` must also be the one whose `charge` runs: a subclass
    # overriding charge() keeps the name but changes the maths
    owner = _defining_class(cls, "dynamics")
    if owner is None or _defining_class(cls, "charge") is not owner:
        return None
    if owner.__module__ != "multispike.neurons":
        return None
    rule = neuron.rule
    surrogate = neuron.surrogate
    v_th = float(neuron.v_threshold)
    thresholds = tuple(float(t) for t in rule.thresholds(v_th))
    sg_kind = SURROGATE_KINDS.get(type(surrogate))
    native = (
        type(rule) in NATIVE_RULES
        and sg_kind is not None
        and 1 <= len(thresholds) <= MAX_THRESHOLDS
        and all(math.isfinite(t) and t > 0 for t in thresholds)
    )
    decay = float(neuron.decay) if dynamics == "lif" else None
    v_reset = float(neuron.v_reset)
    reset_grad = str(getattr(neuron, "reset_grad", "surrogate"))
    static = None
    if native:
        static = Static(
            form=0 if dynamics != "plif" else (1 if v_reset == 0 else 2),
            decay=decay if decay is not None else 1.0,
            thresholds=thresholds,
            signed=bool(rule.signed),
            sg_kind=int(sg_kind),
            sg_width=float(surrogate.width),
            v_reset=v_reset,
            detach=bool(neuron.detach_reset),
            reset_grad=int(reset_grad == "spike"),
        )
    return KernelSpec(
        dynamics=dynamics,
        decay=decay,
        v_threshold=v_th,
        v_reset=v_reset,
        detach_reset=bool(neuron.detach_reset),
        thresholds=thresholds,
        signed=bool(rule.signed),
        rule=rule,
        surrogate=surrogate,
        sg_kind=sg_kind,
        native=native,
        static=static,
        reset_grad=reset_grad,
    )
