"""Spiking neuron layers: thin ``nn.Module`` wrappers over :mod:`multispike.functional`.

:class:`Neuron` is the base; :class:`PLIFNode`, :class:`LIFNode` and :class:`IFNode` differ
only in their dynamics record (``layer.dynamics_record``). Every layer takes a time-first
tensor ``[T, B, ...]``, keeps no state between calls (:meth:`Neuron.step` streams one step
with explicit state) and runs a fused kernel where one covers it (:attr:`Neuron.path` says
which path and why). The classes' defaults, every option (firing rules, resets, surrogates,
learned thresholds, ``backend``) and the equations they implement: ``docs/neurons.md``.

Example::

    >>> node = PLIFNode(firing="mt", deltas=(-0.5, 0.5))
    >>> x = torch.rand(4, 8, 16)        # [T, B, N]
    >>> node(x).shape
    torch.Size([4, 8, 16])
    >>> node.dynamics_record, node.reset
    (PLIF(init_tau=2.0), 'main')
    >>> PLIFNode(backend="torch").path.reason
    "backend='torch' asks for the reference loop"
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from multispike import kernels
from multispike.checks import boolean, finite_number
from multispike.errors import ConfigError, InputError
from multispike.functional import (
    IF,
    LIF,
    PLIF,
    RESET_GRADS,
    Dynamics,
    FiringRule,
    NeuronParams,
    NeuronState,
    Surrogate,
    check_reset,
    check_surrogate,
    get_firing,
    get_surrogate,
    initial_thresholds,
    learned_thresholds,
    legacy_surrogate_options,
    multistep,
    plif_tau,
    split_thresholds,
)
from multispike.functional import step as step_fn

#: what a training loop needs of the kernels, through the neuron layers (the engine talks to
#: models and neurons): saved spikes kept packed inside the block, and the layers' NaN/inf
#: flags read once per step
compact_spikes = kernels.compact_spikes
raise_on_nonfinite = kernels.raise_on_nonfinite


class Neuron(nn.Module):
    """Base class of all spiking neuron layers.

    Subclasses set their dynamics record (:attr:`dynamics_record`) and name (:attr:`dynamics`);
    the base owns charge (through the record), firing, reset, amplitude, the loop over T, input
    checks, the choice of backend and the opt-in statistics hook. A subclass may override
    :meth:`charge` with other maths: it then runs the reference loop (:attr:`custom_charge`).
    """

    #: registry key of the dynamics (``"plif"``, ``"lif"``, ``"if"``)
    dynamics: ClassVar[str] = ""
    #: True for a class that defines its own :meth:`charge` (set when the class is created):
    #: the fused kernels implement only the charge of :attr:`dynamics_record`, so such layers
    #: run the reference loop (:attr:`path` says so). A subclass whose ``charge`` override
    #: keeps the record's maths may set ``custom_charge = False`` in its class body.
    custom_charge: ClassVar[bool] = False
    #: the dynamics as data (:class:`~multispike.functional.IF`, ``LIF(decay)``,
    #: ``PLIF(init_tau)``); the kernels read it, not the class
    dynamics_record: Dynamics | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "charge" in cls.__dict__ and "custom_charge" not in cls.__dict__:
            cls.custom_charge = True

    def __init__(
        self,
        *,
        v_threshold: float,
        v_reset: float = 0.0,
        firing: str | FiringRule = "binary",
        deltas: Sequence[float] | None = None,
        levels: int | None = None,
        learn_thresholds: bool = False,
        reset: str | None = None,
        learn_amplitude: bool = False,
        surrogate: str | Surrogate = "rectangular",
        surrogate_width: float | None = None,
        surrogate_alpha: float | None = None,
        detach_reset: bool = False,
        reset_grad: str = "surrogate",
        check_input: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if backend not in kernels.BACKENDS:
            raise ConfigError(
                f"unknown backend {backend!r}; choose one of {', '.join(kernels.BACKENDS)}"
            )
        #: "auto", "torch" or "fused": how forward() runs the loop over T (docs/neurons.md,
        #: "Backend")
        self.backend = backend
        v_threshold = finite_number("v_threshold", v_threshold)
        if v_threshold <= 0:
            raise ConfigError(f"v_threshold must be > 0, got {v_threshold}; use e.g. 1.0")
        v_reset = finite_number("v_reset", v_reset)
        if v_reset >= v_threshold:
            raise ConfigError(
                f"v_reset={v_reset} is not below v_threshold={v_threshold}: the neuron would fire "
                "forever; use v_reset=0"
            )
        self.v_threshold = v_threshold
        self.v_reset = v_reset
        self.rule = get_firing(firing, deltas, levels)
        self.rule.validate(self.v_threshold)
        self.surrogate = get_surrogate(surrogate, surrogate_width, alpha=surrogate_alpha)
        self.detach_reset = boolean("detach_reset", detach_reset)
        if reset_grad not in RESET_GRADS:
            raise ConfigError(
                f"unknown reset_grad {reset_grad!r}; choose one of {', '.join(RESET_GRADS)}"
            )
        self.reset_grad = str(reset_grad)
        #: "main", "any" or "soft": the reset after a spike, resolved from the rule's default
        self.reset = check_reset(self.rule, reset, self.v_reset, self.reset_grad,
                                 self.detach_reset)
        check_surrogate(self.rule, self.surrogate, self.reset, self.detach_reset)
        #: True where ``V_th`` (and an MT rule's deltas) are learnt: :attr:`threshold_rho`
        self.learn_thresholds = boolean("learn_thresholds", learn_thresholds)
        self.threshold_rho: nn.Parameter | None
        if self.learn_thresholds:
            initial, _ = initial_thresholds(self.rule, self.v_threshold)
            # ρ of learned_thresholds: 0 gives exactly the given thresholds
            self.threshold_rho = nn.Parameter(torch.zeros(len(initial)))
        else:
            self.register_parameter("threshold_rho", None)
        self.check_input = boolean("check_input", check_input)
        self.amplitude: nn.Parameter | None
        if boolean("learn_amplitude", learn_amplitude):
            self.amplitude = nn.Parameter(torch.tensor(1.0))
        else:
            self.register_parameter("amplitude", None)
        #: set by :func:`multispike.monitor.record_activity` while statistics are recorded
        self.monitor: Any = None
        #: 1 once a CUDA kernel saw NaN/inf input (checked without a host sync; read and
        #: cleared by :func:`multispike.kernels.raise_on_nonfinite`): an int32 made on the
        #: input's device at the first checked call there (None until then, so that moving
        #: the layer copies nothing); not part of the state dict
        self.nonfinite: Tensor | None = None

    #: attributes the fused kernels read: setting one refreshes :attr:`kernel_record` and forgets
    #: the cached backend decisions
    _KERNEL_FIELDS = frozenset(
        {"v_threshold", "v_reset", "rule", "surrogate", "detach_reset", "reset_grad", "reset",
         "dynamics_record", "backend", "learn_thresholds"}
    )

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in Neuron._KERNEL_FIELDS:
            self._refresh_kernel_record()

    def _refresh_kernel_record(self) -> None:
        try:
            record = kernels.record_of(self)
        except AttributeError:  # still being built: an attribute record_of reads is not set yet
            record = None
        self.__dict__["kernel_record"] = record
        self.__dict__["_routes"] = {}  # (device type, dtype) -> impl, filled by forward

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        out = super()._apply(fn, *args, **kwargs)
        self.__dict__["_routes"] = {}  # moved or cast: decide the backend again
        self.nonfinite = None  # made again on the new device when first needed
        return out

    #: what the fused kernels know of this layer (:class:`~multispike.kernels.KernelRecord`),
    #: worked out when the layer is built or its options change, not on every call (so that
    #: ``torch.compile`` reads it as a constant); ``None`` when no kernel implements it
    kernel_record: kernels.KernelRecord | None = None

    # -- backend ---------------------------------------------------------------------------
    @property
    def path(self) -> kernels.Route:
        """The path the next forward takes for input on this layer's device and in its dtype,
        and why (:class:`~multispike.kernels.Route`): a fused kernel (``"cpu"``, ``"triton"``,
        ``"eager"``) or the reference loop (``impl=None``). A recording monitor forces the
        reference loop; see :meth:`path_for` for an input of another device or dtype."""
        params = [p for p in self.parameters(recurse=False)]
        dtype = params[0].dtype if params else torch.get_default_dtype()
        flag = self.nonfinite
        device = params[0].device if params else (
            flag.device if flag is not None else torch.device("cpu"))
        return self.path_for(torch.empty(0, dtype=dtype, device=device))

    def path_for(self, x: Tensor) -> kernels.Route:
        """:attr:`path` for the input ``x`` (its device and dtype; the values do not matter)."""
        return kernels.route(self, x)

    @property
    def runs_fused(self) -> bool:
        """True when the next forward (on this layer's device) runs a fused kernel."""
        return self.path.fused

    # -- dynamics --------------------------------------------------------------------------
    def charge(self, v: Tensor, x: Tensor) -> Tensor:
        """``H = charge(V, X)``: one time step of :attr:`dynamics_record`."""
        record = self.dynamics_record
        if record is None:
            raise NotImplementedError(f"{type(self).__name__} has no dynamics record")
        w = self.w.to(x.dtype) if record.learnable else None
        return record.charge(v, x, w=w, v_reset=self.v_reset)

    def dynamics_options(self) -> dict[str, Any]:
        """The dynamics record's keyword options (``{"decay": 0.25}`` for ``LIF(0.25)``)."""
        record = self.dynamics_record
        return {} if record is None else record.options()

    def config(self) -> dict[str, Any]:
        """Plain options that rebuild this layer with :func:`build_neuron`."""
        rule = self.rule
        return {
            "dynamics": self.dynamics,
            **self.dynamics_options(),
            "v_threshold": self.v_threshold,
            "v_reset": self.v_reset,
            "firing": rule.name,
            "deltas": list(rule.deltas) if getattr(rule, "deltas", None) else None,
            **({"levels": rule.levels} if hasattr(rule, "levels") else {}),
            **({"learn_thresholds": True} if self.learn_thresholds else {}),
            "reset": self.reset,
            "learn_amplitude": self.amplitude is not None,
            "surrogate": self.surrogate.name,
            self.surrogate.option: self.surrogate.param,
            "detach_reset": self.detach_reset,
            "reset_grad": self.reset_grad,
        }

    def params(self, dtype: torch.dtype | None = None) -> NeuronParams:
        """The :class:`~multispike.functional.NeuronParams` record of this layer."""
        a = self.amplitude
        if a is not None and dtype is not None:
            a = a.to(dtype)
        v_th, learned = self.threshold_tensors() if self.learn_thresholds else (
            self.v_threshold, None)
        return NeuronParams(
            v_threshold=v_th,
            v_reset=self.v_reset,
            rule=self.rule,
            surrogate=self.surrogate,
            detach_reset=self.detach_reset,
            amplitude=a,
            reset_grad=self.reset_grad,
            reset=self.reset,
            thresholds=learned,
        )

    # -- learned thresholds ----------------------------------------------------------------
    def threshold_tensors(self) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        """The learned ``(V_th, thresholds)`` as 0-dim tensors with their gradients: every
        threshold in the order of ``rule.thresholds()`` (main first; None for rules with one
        threshold), from :attr:`threshold_rho` by
        :func:`~multispike.functional.learned_thresholds`. Only with ``learn_thresholds``."""
        if self.threshold_rho is None:
            raise ConfigError(f"{type(self).__name__} does not learn its thresholds; read "
                              "v_threshold and rule.deltas, or build it with learn_thresholds=True")
        initial, main = initial_thresholds(self.rule, self.v_threshold)
        return split_thresholds(learned_thresholds(self.threshold_rho, initial), main)

    def fixed_firing(self) -> tuple[float, FiringRule]:
        """The layer's current ``(V_th, rule)`` as constants: ``V_th`` a float, the rule with
        float deltas (MT rules). For a layer with ``learn_thresholds`` this reads the learned
        values (one host read); otherwise it is ``(v_threshold, rule)``. The thresholds are
        ``rule.thresholds(V_th)``, the planes ``rule.planes(H, V_th)``.

        >>> node = IFNode(firing="mt", deltas=(-0.5, 0.5), learn_thresholds=True)
        >>> v, rule = node.fixed_firing()
        >>> v, rule.deltas, rule.thresholds(v)
        (1.0, (-0.5, 0.5), (1.0, 0.5, 1.5))
        """
        if not self.learn_thresholds:
            return self.v_threshold, self.rule
        with torch.no_grad():
            v, learned = self.threshold_tensors()
            values = torch.stack([v, *(learned or ())]).to(torch.float64)
        if learned is None:
            return values[0].item(), self.rule
        # Δ_i = θ_i − V_th in float64: exact for float32 thresholds, so V_th + Δ_i = θ_i
        deltas = (values[2:] - values[0]).tolist()
        return values[0].item(), dataclasses.replace(self.rule, deltas=tuple(deltas))

    def fixed(self) -> Neuron:
        """An equivalent layer with constant float thresholds (a copy; this one is unchanged).

        For a layer with ``learn_thresholds``: the same class, options, parameters (τ's ``w``,
        the amplitude), device and dtype, with ``v_threshold`` and the rule's deltas set to
        the learned values (:meth:`fixed_firing`) and ``learn_thresholds=False``; its outputs
        equal this layer's (input and thresholds in float32 or float64). Its :meth:`config`
        rebuilds it with :func:`build_neuron`. For any other layer:
        a plain copy.

        >>> node = LIFNode(firing="integer", levels=3, learn_thresholds=True)
        >>> const = node.fixed()
        >>> const.learn_thresholds, const.v_threshold, const.config()["levels"]
        (False, 0.5, 3)
        """
        v, rule = self.fixed_firing()
        out = copy.deepcopy(self)
        if self.learn_thresholds:
            out.threshold_rho = None
            out.v_threshold = v
            out.rule = rule
            out.learn_thresholds = False
        return out

    # -- running ---------------------------------------------------------------------------
    def forward(self, x_seq: Tensor) -> Tensor:
        """Spikes ``[T, B, ...]`` for input currents ``[T, B, ...]``, from ``V = V_reset``.

        The path is :attr:`path` (cached per device and dtype). With ``check_input``, rank and
        dtype are checked on the host (free); finiteness is checked inside the fused kernel's
        own pass over the input when one runs (on CUDA the error surfaces at
        :func:`multispike.kernels.raise_on_nonfinite`, once per step), else by a separate pass.
        """
        if self.check_input:
            check_sequence(x_seq, type(self).__name__, finite=False)
        monitor = self.monitor
        if monitor is None and self.backend != "torch":
            out = kernels.dispatch(self, x_seq)
            if out is not None:
                return out
        if self.check_input:
            kernels.check_finite(x_seq, type(self).__name__)
        observe = None if monitor is None else partial(monitor.observe, self)
        out, _ = multistep(x_seq, self.charge, self.params(x_seq.dtype), observe=observe)
        return out

    def init_state(self, x: Tensor) -> NeuronState:
        """The state at t = 0 for one step of input ``x`` ``[B, ...]``: ``V = V_reset``
        (0 by default; SpikingJelly and Norse also start at ``V_reset``)."""
        return NeuronState(torch.full_like(x, self.v_reset))

    def step(self, x: Tensor, state: NeuronState | None = None) -> tuple[Tensor, NeuronState]:
        """One time step for streaming: ``out, state = node.step(x, state)``.

        ``x`` is ``[B, ...]`` (no time dimension); ``state=None`` starts from ``V = V_reset``.
        Running T steps equals :meth:`forward` on the stacked input.
        """
        if self.check_input:
            check_tensor(x, type(self).__name__)
        if state is None:
            state = self.init_state(x)
        elif not isinstance(getattr(state, "v", None), Tensor):
            raise InputError(f"{type(self).__name__}.step expects state=None or the NeuronState "
                             f"a previous .step() returned, got {type(state).__name__}")
        elif state.v.shape != x.shape:  # broadcasting would mix neurons silently
            raise InputError(
                f"{type(self).__name__}.step got input of shape {tuple(x.shape)} but a state of "
                f"shape {tuple(state.v.shape)}; pass the state the previous step of this input "
                "returned, or state=None to start again")
        out, state, _ = step_fn(x, state, self.charge, self.params(x.dtype))
        return out, state

    def extra_repr(self) -> str:
        cfg = self.config()
        cfg.pop("dynamics")
        return ", ".join(f"{k}={v}" for k, v in cfg.items() if v is not None)


class PLIFNode(Neuron):
    """Parametric LIF of MT-SNN (Eq 7-8): ``H[t] = (1 − 1/τ)·V[t−1] + X[t]/τ``.

    ``τ = 1 + exp(−w)`` with one learnable ``w`` per layer, initialised so that
    ``τ = init_tau`` (``w = −log(init_tau − 1)``). Defaults follow MT-SNN: ``V_th = 1``,
    ``V_reset = 0``, ``init_tau = 2``. Record: :class:`~multispike.functional.PLIF`.
    """

    dynamics = "plif"

    def __init__(self, *, init_tau: float = 2.0, v_threshold: float = 1.0, **kwargs: Any) -> None:
        super().__init__(v_threshold=v_threshold, **kwargs)
        self.dynamics_record = PLIF(init_tau)
        self.w = nn.Parameter(torch.tensor(self.dynamics_record.init_w()))

    @property
    def init_tau(self) -> float:
        """The ``τ`` the layer was built with (its record's; the learnt one is :attr:`tau`)."""
        return self.dynamics_record.init_tau

    @init_tau.setter
    def init_tau(self, value: float) -> None:
        self.dynamics_record = PLIF(value)

    @property
    def tau(self) -> Tensor:
        """The current membrane time constant ``τ = 1 + exp(−w)`` (MT-SNN Eq 7)."""
        return plif_tau(self.w)


class LIFNode(Neuron):
    """LIF of Ternary Spike (Eq 4/7): ``u[t] = decay·u[t−1]·(1 − |b[t−1]|) + x[t]``.

    Defaults follow the Ternary Spike paper and code: ``decay = 0.25``, ``V_th = 0.5`` (the code
    fires at ``|u| >= 0.5``), ``V_reset = 0``. Record: :class:`~multispike.functional.LIF`.
    """

    dynamics = "lif"

    def __init__(self, *, decay: float = 0.25, v_threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(v_threshold=v_threshold, **kwargs)
        self.dynamics_record = LIF(decay)

    @property
    def decay(self) -> float:
        """The leak ``decay`` of the record (setting it replaces the record)."""
        return self.dynamics_record.decay

    @decay.setter
    def decay(self, value: float) -> None:
        self.dynamics_record = LIF(value)


class IFNode(Neuron):
    """Integrate-and-fire, no leak (MT-SNN Eq 5): ``H[t] = V[t−1] + X[t]``; ``V_th = 1``.

    Record: :class:`~multispike.functional.IF`.
    """

    dynamics = "if"

    def __init__(self, *, v_threshold: float = 1.0, **kwargs: Any) -> None:
        super().__init__(v_threshold=v_threshold, **kwargs)
        self.dynamics_record = IF()


NEURONS: dict[str, type[Neuron]] = {cls.dynamics: cls for cls in (PLIFNode, LIFNode, IFNode)}


def get_neuron_class(dynamics: str | type[Neuron]) -> type[Neuron]:
    """Turn a dynamics name (``plif``, ``lif``, ``if``) into its class."""
    if isinstance(dynamics, type) and issubclass(dynamics, Neuron):
        return dynamics
    cls = NEURONS.get(str(dynamics).lower())
    if cls is None:
        raise ConfigError(f"unknown neuron {dynamics!r}; choose one of {', '.join(NEURONS)}")
    return cls


def build_neuron(config: dict[str, Any]) -> Neuron:
    """Rebuild a layer from :meth:`Neuron.config` (the inverse of ``config()``).

    Configs of older versions rebuild the same layer: without ``reset`` the rule's default
    (today's behaviour) applies, and a ``surrogate_width`` stored for sigmoid or atan is read
    as their ``surrogate_alpha``.
    """
    cfg = legacy_surrogate_options(dict(config))
    cls = get_neuron_class(cfg.pop("dynamics"))
    return cls(**cfg)


def fix_thresholds(model: nn.Module) -> nn.Module:
    """Replace every neuron layer of ``model`` that learns its thresholds by its
    :meth:`Neuron.fixed` copy (in place); returns ``model`` (the fixed copy where ``model``
    is such a layer itself). Outputs are unchanged; the thresholds are then constants.

    >>> net = nn.Sequential(nn.Linear(4, 4), IFNode(firing="mt", learn_thresholds=True))
    >>> fix_thresholds(net)[1].learn_thresholds
    False
    """
    if isinstance(model, Neuron):
        return model.fixed() if model.learn_thresholds else model
    for name, child in list(model.named_children()):
        fixed = fix_thresholds(child)
        if fixed is not child:
            setattr(model, name, fixed)
    return model


# -- input checks ------------------------------------------------------------------------------
def check_tensor(x: Any, where: str, *, finite: bool = True) -> None:
    """Raise :class:`InputError` unless ``x`` is a (finite) floating-point tensor."""
    if not isinstance(x, Tensor):
        raise InputError(f"{where} expects a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise InputError(f"{where} got a complex tensor ({x.dtype}); pass a real one, e.g. x.real")
    if not x.is_floating_point():
        raise InputError(
            f"{where} got {'a boolean' if x.dtype == torch.bool else 'an integer'} tensor "
            f"({x.dtype}); convert it with x.float()"
        )
    if finite:
        kernels.check_finite(x, where)


def check_sequence(x: Any, where: str, *, finite: bool = True) -> None:
    """:func:`check_tensor` plus a time dimension: ``[T, B, ...]`` with ``T >= 1``."""
    check_tensor(x, where, finite=finite)
    if x.dim() < 2 or x.shape[0] < 1:
        raise InputError(
            f"{where} expects time-first input [T, B, ...], got shape {tuple(x.shape)}; add the "
            "time dimension with x.unsqueeze(0) or use .step() for one time step"
        )
