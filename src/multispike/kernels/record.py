"""What a fused kernel needs to know about a neuron layer, read from the layer's records.

:func:`record_of` turns a neuron module (anything with the attributes of
:class:`multispike.neurons.Neuron`) into a :class:`KernelRecord`: dynamics, thresholds, sign,
surrogate, reset. It reads data only: the layer's dynamics record (``dynamics_record``, one of
:class:`~multispike.functional.IF`, :class:`~multispike.functional.LIF`,
:class:`~multispike.functional.PLIF`), its firing rule, surrogate and reset options, and its
``custom_charge`` flag; never its class or module. It returns ``None`` when no kernel implements
the layer: a ``charge()`` override (``custom_charge``, set for every class that defines
``charge``) or a dynamics record the kernels do not know. Such layers run the reference loop.

Learned thresholds (``learn_thresholds``): the record is built from the initial thresholds (their
number, order and which one resets never change while they learn) and says ``learned``; the
values themselves reach the kernels as a tensor on the device per call (:func:`threshold_vector`)
and the kernels return its gradient.

``KernelRecord.native`` says whether the compiled kernels (C++ on CPU, Triton on CUDA) cover the
firing rule and surrogate; otherwise only the eager fused path (any rule, any surrogate) does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, make_dataclass
from typing import Any

from multispike.functional.dynamics import IF, LIF, PLIF, resolve_reset
from multispike.functional.firing import (
    Binary,
    Integer,
    MultiThreshold,
    SignedInteger,
    Ternary,
    TernaryMultiThreshold,
)
from multispike.functional.surrogate import ATan, ClampSTE, Rectangular, Sigmoid

#: dynamics records the kernels implement (exactly these types: a subclass may charge otherwise;
#: their names are :data:`multispike.functional.DYNAMICS`' keys)
KERNEL_DYNAMICS = (PLIF, LIF, IF)
#: surrogate kinds of the compiled kernels (the code in csrc/multistep.cpp and triton_impl.py)
SURROGATE_KINDS: dict[type, int] = {Rectangular: 0, ClampSTE: 1, Sigmoid: 2, ATan: 3}
NATIVE_RULES = (Binary, MultiThreshold, Ternary, TernaryMultiThreshold, Integer, SignedInteger)
#: most positive thresholds a compiled kernel takes (main + 15 deltas)
MAX_THRESHOLDS = 16

SAVE_NONE, SAVE_H, SAVE_CODE = 0, 1, 2


def cast_scalar(value: float, dtype: Any) -> float:
    """``value`` rounded to ``dtype``, as PyTorch rounds a Python scalar meeting a tensor (the
    kernels' constants; plain float arithmetic, no tensor made).

    >>> cast_scalar(0.1, __import__("torch").bfloat16)
    0.10009765625
    """
    from multispike.kernels.host import rounder

    return rounder(dtype)(float(value))


#: The neuron at the kernel boundary, as ONE record: every static option the compiled kernels
#: read, in order, as ``(name, type, doc)``. :class:`Static` is made from it, and so are the
#: custom ops' schemas and fakes (:mod:`multispike.kernels.custom_ops`); the C++ kernel's
#: ``struct Args`` and the Triton constexprs take their options from a :class:`Static`
#: (``cpu._static_args``, ``triton_impl._forward_meta``). A new option is one row here plus
#: its use in the kernels.
STATIC_FIELDS: tuple[tuple[str, type, str], ...] = (
    ("form", int, "charge: 0 H = A·V + X (IF: A = 1, LIF: A = decay), 1 PLIF with V_reset = 0, "
                  "2 PLIF with V_reset ≠ 0 (MT-SNN Eq 6)"),
    ("decay", float, "A of form 0"),
    ("thresholds", tuple, "the positive thresholds the kernels count, main first ((V_th,) for "
                          "the integer rules)"),
    ("signed", bool, "the rule fires negative spikes at the mirrored thresholds"),
    ("sg_kind", int, "surrogate: 0 rectangular, 1 clamp, 2 sigmoid, 3 atan"),
    ("sg_param", float, "the surrogate's number: window width, or sharpness alpha"),
    ("v_reset", float, "V_reset"),
    ("detach", bool, "detach_reset"),
    ("reset_grad", int, "0: the hard reset's gradient through the surrogate; 1: through |b| of "
                        "the resetting spike (functional.reset_spike)"),
    ("soft", bool, "soft reset V = H − b·v_th instead of a hard one at ±reset_thr"),
    ("reset_thr", float, "the threshold whose crossing resets (hard reset)"),
    ("v_th", float, "V_th: the soft reset's quantum"),
    ("levels", int, "0 for the threshold rules; D >= 1 for the integer rules, "
                    "b = round(clamp(H·inv_th, lo, D)) with lo = 0 or −D (signed)"),
    ("inv_th", float, "1/V_th of the integer rules"),
    ("by_value", bool, "integer rules with reset='any': the hard reset fires where b != 0"),
    ("learned", bool, "the thresholds, reset_thr, v_th and inv_th come from a tensor "
                      "(threshold_vector) whose gradient the backward returns; the numbers "
                      "here are the initial ones"),
)
#: the custom-op schema type of each field type
SCHEMA_TYPES = {int: "int", float: "float", bool: "bool", tuple: "float[]"}


def _static_args(self) -> tuple:
    """The custom ops' static arguments, in the order of :data:`STATIC_FIELDS`."""
    return tuple(list(getattr(self, name)) if kind is tuple else getattr(self, name)
                 for name, kind, _ in STATIC_FIELDS)


def _static_from_args(cls, values) -> Static:
    """A :class:`Static` from the custom ops' static arguments (plain numbers, as the schema
    hands them over)."""
    return cls(*(tuple(float(v) for v in value) if kind is tuple else kind(value)
                 for (_, kind, _), value in zip(STATIC_FIELDS, values, strict=True)))


def _static_hash(self) -> int:
    """The fields' hash, worked out once: a launch looks its cached constants up by the
    record, every call."""
    h = self.__dict__.get("_hash")
    if h is None:
        h = hash(tuple(getattr(self, name) for name, _, _ in STATIC_FIELDS))
        object.__setattr__(self, "_hash", h)
    return h


Static = make_dataclass(
    "Static", [(name, kind) for name, kind, _ in STATIC_FIELDS], frozen=True,
    namespace={"args": _static_args, "from_args": classmethod(_static_from_args),
               "__hash__": _static_hash, "__module__": __name__})
Static.__doc__ = (
    "What the compiled kernels need of a layer, in plain numbers (the custom ops' static "
    "arguments); one field per row of :data:`STATIC_FIELDS`:\n\n"
    + "\n".join(f"- ``{name}``: {doc}" for name, _, doc in STATIC_FIELDS))


def static_schema() -> str:
    """The static fields as custom-op schema arguments (``"int form, float decay, ..."``)."""
    return ", ".join(f"{SCHEMA_TYPES[kind]} {name}" for name, kind, _ in STATIC_FIELDS)


@dataclass(frozen=True)
class KernelRecord:
    """Static description of one neuron layer for the fused kernels.

    Attributes:
        dynamics: ``"plif"``, ``"lif"`` or ``"if"`` (the name of the layer's dynamics record).
        decay: LIF decay (``None`` otherwise).
        v_threshold, v_reset, detach_reset, reset_grad: as on the layer.
        reset: the layer's reset, resolved: ``"main"``, ``"any"`` or ``"soft"``.
        thresholds: the rule's positive thresholds, main first (signed rules mirror them).
        signed: the rule fires negative spikes (ternary rules).
        rule, surrogate: the layer's records (the eager path calls them).
        sg_kind: surrogate kind of the compiled kernels, ``None`` for another surrogate.
        native: the compiled kernels cover this rule and surrogate.
        static: the same in plain numbers (:class:`Static`), as the compiled kernels take it.
        learned: the layer learns its thresholds (``v_threshold`` and ``thresholds`` are then
            the initial values; the current ones travel as :func:`threshold_vector`).
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
    reset: str = "main"
    learned: bool = False

    @property
    def sg_param(self) -> float:
        """The surrogate's number: window width or sharpness ``alpha``."""
        return self.surrogate.param

    def code_ok(self, needs_tau: bool) -> bool:
        """True when the backward needs no membrane value: one byte per neuron-step suffices.

        Window surrogates (rectangular, clamp) with ``detach_reset`` and no learnable tau; the
        byte holds the window count (<= 7), the resetting spike ``S`` of a hard reset (0 for a
        soft reset, whose detached gradient ``dV/dH`` is 1) and ``b + 8`` (``|b| <= 7``).
        """
        if self.sg_kind not in (0, 1) or not self.detach_reset or needs_tau or self.learned:
            return False  # learned thresholds: their gradient needs H
        if isinstance(self.rule, Integer):  # the backward needs H·(1/V_th): keep H
            return False
        windows = len(self.thresholds) * (2 if self.signed else 1)
        return windows <= 7


def record_of(neuron: Any) -> KernelRecord | None:
    """The :class:`KernelRecord` of a neuron layer, or ``None`` if no kernel implements it."""
    dyn = getattr(neuron, "dynamics_record", None)
    if type(dyn) not in KERNEL_DYNAMICS or getattr(neuron, "custom_charge", False):
        return None
    learned = bool(getattr(neuron, "learn_thresholds", False))
    dynamics = dyn.name
    rule = neuron.rule
    surrogate = neuron.surrogate
    v_th = float(neuron.v_threshold)
    thresholds = tuple(float(t) for t in rule.thresholds(v_th))
    reset = resolve_reset(rule, getattr(neuron, "reset", None))
    soft = reset == "soft"
    integer = isinstance(rule, Integer)
    reset_thr = thresholds[0] if soft else float(rule.reset_threshold(v_th, reset))
    if integer and soft:
        reset_thr = v_th
    # what the compiled kernels count: the thresholds, or for the integer rules V_th alone
    kernel_thr = (v_th,) if integer else thresholds
    sg_kind = SURROGATE_KINDS.get(type(surrogate))
    native = (
        type(rule) in NATIVE_RULES
        and sg_kind is not None
        and 1 <= len(kernel_thr) <= MAX_THRESHOLDS
        and all(math.isfinite(t) and t > 0 for t in thresholds)
        and (integer or reset_thr in thresholds)
    )
    decay = float(dyn.decay) if isinstance(dyn, LIF) else None
    v_reset = float(neuron.v_reset)
    reset_grad = str(getattr(neuron, "reset_grad", "surrogate"))
    static = None
    if native:
        static = Static(
            form=0 if dynamics != "plif" else (1 if v_reset == 0 else 2),
            decay=decay if decay is not None else 1.0,
            thresholds=kernel_thr,
            signed=bool(rule.signed),
            sg_kind=int(sg_kind),
            sg_param=surrogate.param,
            v_reset=v_reset,
            detach=bool(neuron.detach_reset),
            reset_grad=int(reset_grad == "spike"),
            soft=soft,
            reset_thr=reset_thr,
            v_th=v_th,
            levels=int(rule.levels) if integer else 0,
            inv_th=1.0 / v_th,
            by_value=integer and reset == "any",
            learned=learned,
        )
    return KernelRecord(
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
        reset=reset,
        learned=learned,
    )


def threshold_vector(record: KernelRecord, v_th: Any, learned: Any) -> Any:
    """The learned thresholds as the kernels take them: one tensor
    ``[θ_0 … θ_{K−1}, θ_r, V_th, 1/V_th]`` (``K`` the kernels' thresholds, main first: the
    rule's thresholds, or ``(V_th,)`` for the integer rules; ``θ_r`` the hard reset's
    threshold; ``V_th`` the soft reset's quantum; ``1/V_th`` the integer rules' scale, as the
    reference computes it), built by torch ops from ``(V_th, learned)`` of
    ``Neuron.threshold_tensors()`` on their device, so that autograd carries the kernels'
    gradient of this vector on to ``threshold_rho``."""
    import torch

    from multispike.functional.firing import _reciprocal

    rule = record.rule
    th = tuple(learned) if learned is not None else (v_th,)
    if record.reset == "soft":
        r = th[0]
    else:
        r = rule.reset_threshold(v_th, record.reset, learned)
    return torch.stack([*th, r, v_th, _reciprocal(v_th)])

