"""The CPU kernel: ``csrc/multistep.cpp`` compiled on first use and called through ctypes.

The library has no PyTorch headers (it takes raw pointers); it is built with the system C++
compiler (``$CXX``, else ``g++``, else ``c++``), with
``-O3 -march=native -fopenmp -ffp-contract=off``, in :data:`PARTS` parts compiled in parallel
(about 40 s of one core in all: a template instance per common configuration; about 20 s on
two cores) and linked, and cached under
``$MULTISPIKE_CACHE`` (default ``~/.cache/multispike``), keyed by the source, the compiler, the
flags and the host CPU; a build announces itself in one line on stderr. It links the OpenMP
runtime PyTorch has already loaded (same soname), so both share one thread pool; it uses
``torch.get_num_threads()`` threads, fewer while other processes keep cores busy
(:func:`_threads`).

:func:`library` returns ``None`` (after one warning) when the build or the load fails; the
caller then uses the eager fused path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from multispike.errors import InputError
from multispike.kernels import host, pool
from multispike.kernels.record import Static
from multispike.kernels.record import cast_scalar as _cast

SOURCE = Path(__file__).with_name("csrc") / "multistep.cpp"
FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fPIC", "-shared",
         "-std=c++17", "-fno-math-errno"]
#: translation units of a build (``-DMS_PART=p``; ``MS_PARTS`` in csrc/multistep.cpp)
PARTS = 6
MAX_THR = 16
#: ``ms_abi_version()`` of csrc/multistep.cpp this module's :class:`Args` mirrors
ABI_VERSION = 9

DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2}


class Args(ctypes.Structure):
    """Mirror of ``struct Args`` in csrc/multistep.cpp (field order and types must match).

    Only the fields and ``_keep`` (what a pointer field points into) can be set: a misspelt
    field raises instead of being ignored by the kernel."""

    __slots__ = ("_keep",)

    _fields_ = [
        ("T", ctypes.c_int64),
        ("N", ctypes.c_int64),
        ("dtype", ctypes.c_int32),
        ("form", ctypes.c_int32),
        ("n_thr", ctypes.c_int32),
        ("is_signed", ctypes.c_int32),
        ("save_mode", ctypes.c_int32),
        ("has_amp", ctypes.c_int32),
        ("sg_kind", ctypes.c_int32),
        ("detach", ctypes.c_int32),
        ("need_tau", ctypes.c_int32),
        ("need_amp", ctypes.c_int32),
        ("nthreads", ctypes.c_int32),
        ("stream", ctypes.c_int32),
        ("check", ctypes.c_int32),
        ("reset_grad", ctypes.c_int32),
        ("soft", ctypes.c_int32),
        ("levels", ctypes.c_int32),
        ("by_value", ctypes.c_int32),
        ("A", ctypes.c_double),
        ("D", ctypes.c_double),
        ("vr", ctypes.c_double),
        ("tau", ctypes.c_double),
        ("amp", ctypes.c_double),
        ("sg_param", ctypes.c_double),
        ("sg_half", ctypes.c_double),
        ("sg_k", ctypes.c_double),
        ("sg_c", ctypes.c_double),
        ("rthr", ctypes.c_double),
        ("vth", ctypes.c_double),
        ("inv", ctypes.c_double),
        ("thr", ctypes.c_double * MAX_THR),
        ("need_thr", ctypes.c_int32),
        ("pad_", ctypes.c_int32),
        ("lthr", ctypes.c_void_p),
        ("gthr", ctypes.c_void_p),
        ("pack", ctypes.c_void_p),
        ("pack_bits", ctypes.c_int32),
        ("pack_lo", ctypes.c_int32),
    ]


try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed: str | None = None


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features", "model name")):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_dir() -> Path:
    root = os.environ.get("MULTISPIKE_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "multispike"


def _build(cxx: str) -> Path:
    src = SOURCE.read_bytes()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(
        b"\0".join([src, version.encode(), " ".join(FLAGS).encode(), _cpu_id().encode()])
    ).hexdigest()[:16]
    out_dir = cache_dir() / "kernels"
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / f"multistep-{key}.so"
    if lib.exists():
        return lib
    with open(out_dir / f"multistep-{key}.lock", "w") as lock:
        if fcntl is not None:  # one build at a time (pytest -n, several processes)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if lib.exists():
            return lib
        _announce_build(lib)
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp_dir:
            tmp = os.path.join(tmp_dir, "multistep.so")
            _compile(cxx, tmp_dir, tmp)
            os.replace(tmp, lib)
    return lib


def _announce_build(lib: Path) -> None:
    """One line on stderr before a build: the first call otherwise sits silent for ~30 s."""
    print(f"multispike: building the CPU kernel, once per compiler and CPU (about 30 s; "
          f"cached as {lib})", file=sys.stderr, flush=True)


def _compile(cxx: str, tmp_dir: str, out: str) -> None:
    """Compile the :data:`PARTS` parts of the source in parallel (at most one per core) into
    ``tmp_dir`` and link them into ``out``; raises RuntimeError with the compiler's last line."""
    from concurrent.futures import ThreadPoolExecutor

    compile_flags = [f for f in FLAGS if f != "-shared"]
    objs = [os.path.join(tmp_dir, f"part{p}.o") for p in range(PARTS)]

    def run(cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True)

    cmds = [[cxx, *compile_flags, f"-DMS_PART={p}", "-c", str(SOURCE), "-o", objs[p]]
            for p in range(PARTS)]
    with ThreadPoolExecutor(max_workers=max(1, min(PARTS, os.cpu_count() or 1))) as ex:
        procs = list(ex.map(run, cmds))

    def check(proc: subprocess.CompletedProcess) -> None:
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1:] or ["compiler failed"])

    for proc in procs:
        check(proc)
    # GNU ld's -z defs: a unit that no part defines fails here, not when the library loads
    defs = ["-Wl,-z,defs"] if sys.platform.startswith("linux") else []
    check(run([cxx, *FLAGS, *defs, *objs, "-o", out]))


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, building it on first use; ``None`` if that is impossible."""
    global _lib, _failed
    if _lib is not None or _failed is not None:
        return _lib
    with _lock:
        if _lib is not None or _failed is not None:
            return _lib
        if os.environ.get("MULTISPIKE_NO_CPU_KERNEL"):
            _failed = "disabled by MULTISPIKE_NO_CPU_KERNEL"
            return None
        cxx = _compiler()
        try:
            if cxx is None:
                raise RuntimeError("no C++ compiler found (set CXX or install g++)")
            lib = ctypes.CDLL(str(_build(cxx)))
            lib.ms_forward.argtypes = [ctypes.POINTER(Args)] + [ctypes.c_void_p] * 4
            lib.ms_forward.restype = ctypes.c_int
            lib.ms_backward.argtypes = [ctypes.POINTER(Args)] + [ctypes.c_void_p] * 4
            lib.ms_backward.restype = ctypes.c_int
            lib.ms_unpack.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                      ctypes.c_int64, ctypes.c_int32, ctypes.c_int32,
                                      ctypes.c_double, ctypes.c_int32, ctypes.c_int32]
            lib.ms_unpack.restype = ctypes.c_int
            if lib.ms_abi_version() != ABI_VERSION:
                raise RuntimeError("stale kernel library (ABI version mismatch)")
            _lib = lib
        except Exception as e:  # noqa: BLE001 - any failure means: use the eager path
            _failed = f"{type(e).__name__}: {e}"
            warnings.warn(
                f"multispike: the CPU neuron kernel is unavailable ({_failed}); fused neurons "
                "fall back to the slower eager path",
                RuntimeWarning,
                stacklevel=3,
            )
    return _lib


def failure() -> str | None:
    """Why :func:`library` returned ``None`` (``None`` if it loaded or was not tried)."""
    return _failed


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def forward(x: Tensor, args: Args) -> tuple[Tensor, Tensor | None, bool]:
    """Run the forward over contiguous ``x`` ``[T, N]``; returns ``(out, saved, nonfinite)``.

    ``nonfinite`` is True when ``args.check`` is set and ``x`` holds a NaN or an infinity.
    Large outputs come from :mod:`multispike.kernels.pool` (no page faults on reuse). With
    ``args.pack`` set, the spikes' packed codes are written too (row ``t`` of ``[T,
    ceil(N·pack_bits/8)]`` uint8: :func:`multispike.kernels.compact.packed_codes`).
    """
    lib = _lib or library()
    assert lib is not None
    out = pool.empty_like(x)
    saved = None
    if args.save_mode == 1:
        saved = pool.empty_like(x)
    elif args.save_mode == 2:
        saved = pool.empty_like(x, torch.uint8)
    args.nthreads = _threads(x.numel())
    args.stream = _stream(x)
    flag = ctypes.c_int32(0)
    rc = lib.ms_forward(ctypes.byref(args), x.data_ptr(), out.data_ptr(), _ptr(saved),
                        ctypes.addressof(flag))
    if rc != 0:
        raise RuntimeError(f"multispike CPU kernel forward failed (code {rc})")
    return out, saved, bool(flag.value)


def checked_forward(x: Tensor, args: Args, save_mode: int, check: bool, where: str
                    ) -> tuple[Tensor, Tensor | None]:
    """:func:`forward` with ``save_mode`` and the input check set; raises
    :class:`~multispike.errors.InputError` naming ``where`` when ``check`` finds NaN or inf."""
    args.save_mode = save_mode
    args.check = int(check)
    out, saved, nonfinite = forward(x, args)
    if nonfinite:
        raise InputError(f"{where} input contains NaN or inf; check the layer before it or the "
                         "data")
    return out, saved


def unpack(codes: Tensor, n: int, bits: int, lo: int, amp: float, dtype: torch.dtype
           ) -> Tensor:
    """The spikes ``amp·(code + lo)`` ``[T, n]`` in ``dtype`` (rounded as the forward rounds
    them) from the forward's packed codes ``[T, ceil(n·bits/8)]``, in one pass."""
    lib = _lib or library()
    assert lib is not None
    out = torch.empty(codes.shape[0], n, dtype=dtype)
    rc = lib.ms_unpack(codes.data_ptr(), out.data_ptr(), codes.shape[0], n, bits, lo, amp,
                       DTYPES[dtype], _threads(out.numel()))
    if rc != 0:
        raise RuntimeError(f"multispike CPU kernel unpack failed (code {rc})")
    return out


def backward(grad: Tensor, saved: Tensor, args: Args, n_thr: int = 0
             ) -> tuple[Tensor, float, float, list[float] | None]:
    """Reverse loop; returns ``(grad_x, dL/dtau, dL/damp, dL/dthr)`` (the sums are 0 if not
    asked; ``dL/dthr``, ``n_thr`` floats like the learned thresholds' vector that ``args.lthr``
    points to, only when ``n_thr`` > 0). No tensor is made but ``grad_x``."""
    lib = _lib or library()
    assert lib is not None
    gx = pool.empty_like(grad)
    sums = (ctypes.c_double * 2)()
    g_thr = None
    if n_thr:
        g_thr = (ctypes.c_double * n_thr)()
        args.need_thr = 1
        args.gthr = ctypes.addressof(g_thr)
    args.nthreads = _threads(grad.numel())
    args.stream = _stream(grad)
    rc = lib.ms_backward(ctypes.byref(args), grad.data_ptr(), saved.data_ptr(), gx.data_ptr(),
                         sums)
    if rc != 0:
        raise RuntimeError(f"multispike CPU kernel backward failed (code {rc})")
    return gx, sums[0], sums[1], None if g_thr is None else list(g_thr)


#: arrays at least this large are written with non-temporal stores (they overflow L2 anyway;
#: measured faster from 1 MiB up on a 2-core EPYC, see docs/performance.md)
STREAM_BYTES = 1 << 20


def _stream(t: Tensor) -> int:
    return int(t.numel() * t.element_size() >= STREAM_BYTES)


_monitor = None


def _threads(numel: int) -> int:
    """PyTorch's thread count, lowered to the cores other processes leave free (unless the
    user fixed the count: see multispike.cpuload), and to one thread per 64k elements
    (below that a second thread costs more than it saves). The kernel's results do not depend
    on it."""
    global _monitor
    limit = min(torch.get_num_threads(), numel // 65536 or 1)
    if limit <= 1:
        return 1
    if _monitor is None:
        from multispike.cpuload import kernel_monitor

        _monitor = kernel_monitor
    return _monitor.threads(limit)


@functools.lru_cache(maxsize=256)
def _static_args(st: Static, dtype: torch.dtype) -> Args:
    a = Args()
    a.dtype = DTYPES[dtype]
    a.form = st.form
    a.n_thr = len(st.thresholds)
    for k, th in enumerate(st.thresholds):
        a.thr[k] = _cast(th, dtype)
    a.is_signed = int(st.signed)
    a.sg_kind = st.sg_kind
    a.detach = int(st.detach)
    a.reset_grad = int(st.reset_grad)
    a.soft = int(st.soft)
    a.rthr = _cast(st.reset_thr, dtype)
    # b·V_th: PyTorch multiplies by a Python scalar in the op's compute type (float for
    # bfloat16), so V_th is not rounded to bfloat16 first
    a.vth = _cast(st.v_th, torch.float64 if dtype == torch.float64 else torch.float32)
    # integer rules: u = H·(1/V_th), a Python scalar too (in the op's compute type)
    a.levels = int(st.levels)
    a.by_value = int(st.by_value)
    a.inv = _cast(st.inv_th, torch.float64 if dtype == torch.float64 else torch.float32)
    a.vr = _cast(st.v_reset, dtype)
    param = st.sg_param  # window width, or sharpness alpha
    a.sg_param = _cast(param, dtype)
    a.sg_half = _cast(param / 2, dtype)
    a.sg_k = _cast(math.pi / 2 * param, dtype)
    a.sg_c = _cast(param / 2, dtype)
    a.A, a.D, a.tau, a.amp = 1.0, 1.0, 1.0, 1.0
    if st.form == 0:
        a.A = _cast(st.decay, dtype)
    return a


def make_args(st: Static, x: Tensor, w: Tensor | None, amp: Tensor | None,
              thr: Tensor | None = None) -> Args:
    """The kernel's arguments for ``x`` ``[T, N]`` (CPU tensors: reading ``w`` and ``a`` is
    free). ``w``: PLIF's parameter (``τ`` from it by :func:`multispike.kernels.host.plif_scalars`).

    ``thr``: learned thresholds as :func:`multispike.kernels.custom_ops.kernel_thresholds` gives
    them; the kernel reads them through a pointer (kept alive on the returned struct)."""
    a = Args.from_buffer_copy(_static_args(st, x.dtype))  # the cached struct stays read-only
    if thr is not None:
        kept = thr.detach().to(torch.float64).contiguous()
        a.lthr = kept.data_ptr()
        a._keep = kept
    a.T, a.N = x.shape[0], x.shape[1]
    if w is not None:
        a.A, a.D, a.tau, _ = host.plif_scalars(w.item(), x.dtype)
    if amp is not None:
        a.has_amp = 1
        a.amp = host.rounder(x.dtype)(amp.item())
    return a
