"""Keep freed CPU memory for reuse, so that large tensors stop costing page faults.

glibc's ``malloc`` serves every block of 32 MiB or more (the most its dynamic threshold
reaches) with a fresh ``mmap`` and hands it back with ``munmap`` when it is freed. A training
step at batch ``B·T`` allocates and frees many such tensors (a VGG layer's activations at
``B·T = 128`` are 32 MiB), so every step the kernel zero-fills them again page by page: on
the 2-core machine of docs/performance.md that was 1.1 million page faults and 2.7-3.7 s of
system time in a 6-8 s VGG-9 step, and it hits the SNN at ``B·T`` while sparing an ANN at
batch ``B``, whose tensors are small enough to be reused.

:func:`tune_cpu_allocator` raises glibc's mmap threshold to 2 GiB and its trim threshold to
the same, through ``mallopt``: large blocks then come from the heap and are reused after
they are freed, with no system call and no page fault. The price is resident memory: freed
blocks stay with the process, and same-size blocks fragment the heap a little (no growth on
the VGG-9 step; 1.5× glibc's default on the synthetic loop of tests/test_allocator.py).
``multispike train``/``eval`` call it when they run on the CPU; set
``MULTISPIKE_NO_MALLOC_TUNING=1`` to leave the allocator alone. Elsewhere than glibc (macOS,
musl) it does nothing and returns ``False``.

Example::

    >>> from multispike.engine.allocator import tune_cpu_allocator
    >>> tune_cpu_allocator()   # once, at start-up; True where it took effect
    True
"""

from __future__ import annotations

import ctypes
import os
import threading

# mallopt parameter numbers, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD = 2**31 - 1  # bytes; mallopt takes an int

ENV_OFF = "MULTISPIKE_NO_MALLOC_TUNING"

_lock = threading.Lock()
_state: bool | None = None


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # only glibc has it
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def tune_cpu_allocator() -> bool:
    """Make glibc reuse freed large blocks (see the module docs). Idempotent, thread-safe.

    Returns ``True`` when the setting is in effect, ``False`` when it is switched off by
    ``$MULTISPIKE_NO_MALLOC_TUNING`` or the C library is not glibc.
    """
    global _state
    with _lock:
        if _state is None:
            _state = _apply()
        return _state


def _apply() -> bool:
    if os.environ.get(ENV_OFF, "0") not in ("", "0"):
        return False
    libc = _glibc()
    if libc is None:
        return False
    # the trim threshold first: once large blocks live on the heap, freeing the top one must
    # not give it back to the system either
    return bool(libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD)) and bool(
        libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD)
    )
