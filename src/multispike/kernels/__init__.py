"""Fused multi-step neurons: one kernel call per layer instead of a loop of small ops over T.

Everything here computes the spikes of the reference loop (:func:`multispike.functional.
multistep`), operation by operation, and its gradients up to the order of floating-point sums.
Three implementations: ``"cpu"`` (C++/OpenMP, :mod:`~multispike.kernels.cpu`), ``"triton"``
(CUDA, :mod:`~multispike.kernels.triton_impl`) and ``"eager"`` (torch ops, any device, dtype,
rule and surrogate; the fallback). A layer reaches them as one :class:`KernelRecord`
(:func:`record_of`). What each keeps for the backward, learned thresholds, packed spikes
(:func:`compact_spikes`) and the measurements: ``docs/performance.md``.

Entry points::

    >>> import torch
    >>> from multispike.kernels import fused_multistep
    >>> from multispike.neurons import PLIFNode
    >>> neuron = PLIFNode(firing="mt", backend="torch")    # the reference loop over T
    >>> x_seq = 2 * torch.rand(4, 2, 16)                   # [T, B, ...] input currents
    >>> out = fused_multistep(x_seq, neuron)              # like neuron(x_seq) with backend="fused"
    >>> torch.equal(out, neuron(x_seq)), out.shape
    (True, torch.Size([4, 2, 16]))
    >>> node = PLIFNode(firing="mt", backend="auto")       # what the layers do by default
    >>> torch.equal(node(x_seq), out)
    True
    >>> from multispike.monitor import record_activity

:func:`dispatch` is the hook :meth:`multispike.neurons.Neuron.forward` calls. It reads a
decision made once per layer, device and dtype (:func:`choose`, cached on the layer until its
options change or it is moved); :func:`route` explains it, as ``neuron.path`` shows::

    >>> PLIFNode(firing="mt", backend="fused").path.fused    # C++ kernel, or the eager one
    True
    >>> with record_activity(node):
    ...     print(node.path.reason)
    a recording monitor (record_activity) needs every step's membrane: the reference loop runs
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from multispike.errors import ConfigError, InputError
from multispike.kernels import cpu
from multispike.kernels.compact import compact_spikes, packing
from multispike.kernels.direct import CpuLauncher, TritonLauncher
from multispike.kernels.function import IMPLS, FusedMultistep, Plan, fused
from multispike.kernels.record import SAVE_NONE, KernelRecord, record_of, threshold_vector

BACKENDS = ("auto", "torch", "fused")

__all__ = [
    "BACKENDS",
    "FusedMultistep",
    "IMPLS",
    "KernelRecord",
    "Route",
    "compact_spikes",
    "Plan",
    "choose",
    "dispatch",
    "fused_multistep",
    "check_finite",
    "native_impl",
    "raise_on_nonfinite",
    "route",
    "record_of",
    "triton_available",
]

_TRITON_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_warned: set[str] = set()


@torch.compiler.assume_constant_result
def triton_available() -> bool:
    """True when CUDA and an importable Triton are both present."""
    from multispike.kernels import triton_impl

    return triton_impl.available()


@torch.compiler.assume_constant_result
def cpu_kernel_available() -> bool:
    """True when the C++ kernel is built and loaded (building it on first use)."""
    return cpu.library() is not None


def native_impl(record: KernelRecord, x: Tensor) -> str | None:
    """The compiled implementation for this layer and input (``"cpu"``, ``"triton"``), or None."""
    if not record.native:
        return None
    if x.device.type == "cpu" and x.dtype in cpu.DTYPES:
        return "cpu" if cpu_kernel_available() else None
    if x.device.type == "cuda" and x.dtype in _TRITON_DTYPES and triton_available():
        return "triton"
    return None


def _scalars(neuron: Any, record: KernelRecord) -> tuple[Tensor | None, ...]:
    """``(w, amp)``: the layer's PLIF ``w`` (None for other dynamics) and amplitude, as they
    are (the kernels read them; :func:`~multispike.kernels.function.fused` casts for the eager
    path)."""
    return (neuron.w if record.dynamics == "plif" else None), neuron.amplitude


def _thresholds(neuron: Any, record: KernelRecord) -> Tensor | None:
    """A learning layer's thresholds as the kernels take them (:func:`threshold_vector`,
    torch ops on the layer's device, differentiable), or None."""
    if not record.learned:
        return None
    return threshold_vector(record, *neuron.threshold_tensors())


def fused_multistep(x_seq: Tensor, neuron: Any, *, impl: str = "auto") -> Tensor:
    """Spikes of ``neuron`` for ``x_seq`` ``[T, B, ...]`` through a fused kernel.

    Same result as ``neuron(x_seq)`` with ``backend="torch"`` (from ``V = 0``, no monitor).

    Args:
        x_seq: input currents, time first.
        neuron: a :class:`~multispike.neurons.PLIFNode`, ``LIFNode`` or ``IFNode`` (not a
            subclass that overrides ``charge``).
        impl: ``"auto"`` (compiled kernel if one covers the layer, else eager), ``"cpu"``,
            ``"triton"`` or ``"eager"``.

    Raises:
        ConfigError: the layer's dynamics have no kernel, or ``impl`` cannot run it.
    """
    record = record_of(neuron)
    if record is None:
        raise ConfigError(
            f"no fused kernel for {type(neuron).__name__}: its charge() is not one of "
            "PLIF, LIF, IF; use backend='torch'"
        )
    if impl == "auto":
        impl = native_impl(record, x_seq) or "eager"
    elif impl not in IMPLS:
        raise ConfigError(f"unknown kernel implementation {impl!r}; choose auto or {IMPLS}")
    elif impl != "eager" and native_impl(record, x_seq) != impl:
        raise ConfigError(
            f"kernel {impl!r} cannot run this layer on {x_seq.device.type}/{x_seq.dtype} "
            f"(firing {record.rule.name}, surrogate {type(record.surrogate).__name__}); use "
            "impl='eager' or 'auto'"
        )
    launcher = _launcher(impl, record, neuron, x_seq.dtype)
    if type(launcher) in _LAUNCHERS:
        return _launch(launcher, neuron, x_seq, check=False)
    w, amp = _scalars(neuron, record)
    return fused(x_seq, Plan(record, impl), w, amp, _thresholds(neuron, record))


_LAUNCHER_OF = {"cpu": CpuLauncher, "triton": TritonLauncher}
_LAUNCHERS = (CpuLauncher, TritonLauncher)


def _launcher(impl: str | None, record: KernelRecord, neuron: Any, dtype: torch.dtype) -> Any:
    """The launcher of ``impl`` for the layer and input dtype (C++ always; Triton unless its
    learned thresholds are of a dtype the in-kernel computation does not take), else
    ``impl`` itself (the path :func:`fused` takes)."""
    if impl not in _LAUNCHER_OF:
        return impl
    rho = getattr(neuron, "threshold_rho", None)
    if impl == "triton" and record.learned and (
            rho is None or rho.dtype not in (torch.float32, torch.float64)):
        return impl
    return _LAUNCHER_OF[impl](record, dtype, type(neuron).__name__)


def _launch(launcher: CpuLauncher | TritonLauncher, neuron: Any, x_seq: Tensor, *,
            check: bool) -> Tensor:
    """Run a compiled kernel on the layer's parameters as they are (no torch op on them)."""
    params = getattr(neuron, "_parameters", None)  # a module's: faster than its __getattr__
    if params is None:
        params = {"w": getattr(neuron, "w", None), "amplitude": neuron.amplitude,
                  "threshold_rho": getattr(neuron, "threshold_rho", None)}
    w = params["w"] if launcher.plif else None
    amp = params.get("amplitude")
    rho = params["threshold_rho"] if launcher.learned else None
    if x_seq.numel() == 0:  # nothing to launch a kernel for
        record = launcher.record
        return fused(x_seq, Plan(record, "eager"), w, amp, _thresholds(neuron, record))
    wants_grad = torch.is_grad_enabled() and (
        x_seq.requires_grad or any(p is not None and p.requires_grad for p in (w, amp, rho)))
    if type(launcher) is TritonLauncher:
        check = _flag(neuron, x_seq) if check else None  # the kernel ORs into it
    if not wants_grad:
        return launcher(x_seq, w, amp, rho, SAVE_NONE, check)
    # inside compact_spikes() the kernel also writes the spikes' packed codes, which a layer
    # that saves the spikes keeps instead
    return launcher(x_seq, w, amp, rho, launcher.modes[w is not None and w.requires_grad],
                    check, packing())


def _warn_once(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)


def _plain(x: Tensor) -> bool:
    """A plain tensor with real storage (not a FakeTensor, subclass or functorch wrapper)."""
    if type(x) is not torch.Tensor and not isinstance(x, torch.nn.Parameter):
        return False
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return wrapped is None or not wrapped(x)


def choose(neuron: Any, x: Tensor) -> str | None:
    """The implementation that runs ``neuron`` for input like ``x`` (its device and dtype):
    ``"cpu"``, ``"triton"``, ``"eager"``, or ``None`` for the reference loop.

    By ``neuron.backend``: ``"torch"``: ``None``; ``"auto"``: a compiled kernel (C++ on CPU,
    Triton on CUDA) when one covers the layer, its dtype and device, else ``None``;
    ``"fused"``: the compiled kernel, else the eager fused path; ``None`` only when no kernel
    implements the dynamics (``kernel_record`` is ``None``: a ``charge()`` override). The
    monitor is not considered here (the caller checks it on every call; :func:`route` does).
    """
    backend = getattr(neuron, "backend", "auto")
    if backend == "torch":
        return None
    record = getattr(neuron, "kernel_record", None)
    if record is None and not hasattr(neuron, "kernel_record"):
        record = record_of(neuron)  # a duck-typed layer without the cached record
    if record is None:
        return None
    impl = native_impl(record, x)
    if impl is None and backend == "fused":
        return "eager"
    return impl


@dataclass(frozen=True)
class Route:
    """Which path a neuron layer's forward takes, and why (``neuron.path``).

    Attributes:
        impl: ``"cpu"`` (C++ kernel), ``"triton"`` (CUDA), ``"eager"`` (fused torch ops), or
            ``None``: the reference loop of :func:`multispike.functional.multistep`.
        reason: one line saying why.
    """

    impl: str | None
    reason: str

    @property
    def fused(self) -> bool:
        """True for a fused path (any ``impl``), False for the reference loop."""
        return self.impl is not None


_NAMES = {"cpu": "the C++ kernel", "triton": "the Triton kernel", "eager": "the eager fused path"}


def route(neuron: Any, x: Tensor) -> Route:
    """The :class:`Route` a forward of ``neuron`` takes for input like ``x``, with its reason."""
    where = type(neuron).__name__
    if getattr(neuron, "monitor", None) is not None:
        return Route(None, "a recording monitor (record_activity) needs every step's membrane: "
                           "the reference loop runs")
    backend = getattr(neuron, "backend", "auto")
    if backend == "torch":
        return Route(None, "backend='torch' asks for the reference loop")
    impl = choose(neuron, x)
    record = getattr(neuron, "kernel_record", None) or record_of(neuron)
    if record is None:
        if getattr(neuron, "custom_charge", False):
            why = (f"{where} overrides charge() (custom_charge=True), which no fused kernel "
                   "implements")
        else:
            why = (f"no fused kernel implements the dynamics record "
                   f"{getattr(neuron, 'dynamics_record', None)!r}")
        return Route(None, f"{why}: the reference loop runs")
    on = f"{x.device.type}/{str(x.dtype).replace('torch.', '')}"
    learned = " with learned thresholds" if record.learned else ""
    if impl in ("cpu", "triton"):
        return Route(impl, f"{_NAMES[impl]} covers {record.dynamics}/{record.rule.name}/"
                           f"{record.surrogate.name}/reset={record.reset}{learned} on {on}")
    if not record.native:
        why = (f"the compiled kernels do not cover firing {record.rule.name!r} with surrogate "
               f"{type(record.surrogate).__name__}")
    else:
        why = f"no compiled kernel for {on} here"
        if x.device.type == "cpu" and x.dtype in cpu.DTYPES and cpu.failure():
            why += f" ({cpu.failure()})"
    if impl == "eager":
        return Route("eager", f"backend='fused' and {why}: {_NAMES['eager']} runs")
    return Route(None, f"{why}: the reference loop runs (backend='fused' would run "
                       f"{_NAMES['eager']})")


_MISSING = object()


def dispatch(neuron: Any, x_seq: Tensor) -> Tensor | None:
    """The fused output of ``neuron`` for ``x_seq``, or ``None`` to run the reference loop.

    The implementation is :func:`choose`'s, read from the layer's cache (``_routes``, keyed
    by device type and dtype, emptied when the layer's options change or it moves), so that
    it is decided once, not on every call. Inside ``torch.compile`` the choice is made while
    tracing (a constant of the graph) and the compiled kernels enter the graph as the custom
    ops of :mod:`multispike.kernels.custom_ops`; the eager fused path does not (the reference
    loop is traced instead). Tensor subclasses outside compilation (functorch wrappers, fake
    tensors) take the reference loop. The caller handles the activity monitor (which needs
    every step's membrane).

    With ``neuron.check_input``, the input's finiteness is checked by the compiled kernel in
    its own pass (C++: raises at once; Triton: sets ``neuron.nonfinite``, read by
    :func:`raise_on_nonfinite`), or by a separate pass before the eager path.
    """
    compiling = torch.compiler.is_compiling()
    if compiling:
        impl = choose(neuron, x_seq)
        if impl == "eager":
            return None
    else:
        if not _plain(x_seq):
            return None
        routes = getattr(neuron, "__dict__", {}).get("_routes")
        key = (x_seq.device.type, x_seq.dtype)
        impl = _MISSING if routes is None else routes.get(key, _MISSING)
        if type(impl) in _LAUNCHERS:  # the common case: straight to the kernel
            return _launch(impl, neuron, x_seq, check=bool(neuron.check_input))
        if impl is _MISSING:
            impl = choose(neuron, x_seq)
            if impl is None and getattr(neuron, "backend", "auto") == "fused":
                _warn_once(type(neuron).__name__, f"multispike: {route(neuron, x_seq).reason}")
            if impl in _LAUNCHER_OF:  # prepared once, kept until the layer changes or moves
                impl = _launcher(impl, getattr(neuron, "kernel_record", None) or record_of(neuron),
                                 neuron, x_seq.dtype)
            if routes is not None:
                routes[key] = impl
            if type(impl) in _LAUNCHERS:
                return _launch(impl, neuron, x_seq,
                               check=bool(getattr(neuron, "check_input", False)))
    if impl is None:
        return None
    record = getattr(neuron, "kernel_record", None) or record_of(neuron)
    check = bool(getattr(neuron, "check_input", False))
    where = type(neuron).__name__
    if impl == "eager" and check:
        check_finite(x_seq, where)
    w, amp = _scalars(neuron, record)
    flag = _flag(neuron, x_seq) if check and impl == "triton" else None
    return fused(x_seq, Plan(record, impl), w, amp, _thresholds(neuron, record), flag=flag,
                 check=check, where=where)


def _flag(neuron: Any, x: Tensor) -> Tensor | None:
    """The layer's NaN/inf flag on ``x``'s device, made there on first use (a fill on the
    device: no host copy, nothing waits)."""
    flag = getattr(neuron, "nonfinite", None)
    if isinstance(flag, Tensor) and flag.device == x.device:
        return flag
    if not hasattr(neuron, "nonfinite") or torch.compiler.is_compiling():
        return flag
    flag = torch.zeros((), dtype=torch.int32, device=x.device)
    neuron.nonfinite = flag
    return flag


def check_finite(x: Tensor, where: str) -> None:
    """Raise :class:`InputError` if ``x`` holds a NaN or an infinity (a host sync on GPUs)."""
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
        raise InputError(
            f"{where} input contains NaN or inf; check the layer before it or the data"
        )


def raise_on_nonfinite(model: torch.nn.Module) -> None:
    """Raise :class:`InputError` if a neuron layer of ``model`` was given NaN or inf on CUDA.

    The Triton kernels check their input in the same pass that reads it and set the layer's
    ``nonfinite`` flag on the device, so that no call waits for the answer. This function reads
    all the flags at once (one synchronisation: call it once per training step, where the loop
    waits for the loss anyway; ``multispike train`` and ``eval`` do), clears them, and names
    the layers. On CPU the kernel raises at once instead, so the flags stay 0.
    """
    named = [(name, m.nonfinite) for name, m in model.named_modules()
             if isinstance(getattr(m, "nonfinite", None), Tensor)]
    if not named:
        return
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, flag) in enumerate(named):
        by_device.setdefault(flag.device, []).append(i)
    bad: list[str] = []
    for idxs in by_device.values():
        flags = torch.stack([named[i][1] for i in idxs])
        if bool(flags.any()):
            bad += [named[i][0] or "the neuron" for i, f in zip(idxs, flags.tolist(), strict=True)
                    if f]
            for i in idxs:
                named[i][1].zero_()
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise InputError(
            f"NaN or inf reached neuron layer {shown}; check the layer before it or the data"
        )
