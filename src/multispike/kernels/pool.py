"""Reusable memory for the CPU kernel's large outputs, so that no call page-faults them afresh.

glibc serves every allocation of 32 MiB or more with a fresh ``mmap`` and unmaps it on free,
so a kernel output of that size is page-faulted (and zeroed by the OS) on every call: at
``[4, 32, 128, 32, 32]`` that doubled the time of a LIF forward + backward. Instead of changing
how the whole process allocates (``mallopt``, which :mod:`multispike.engine` does for its own
commands only), the kernels take their large outputs from this pool: anonymous memory maps
that are handed out as tensors (``torch.frombuffer``) and come back to the pool when the last
tensor using them is freed. A block is reused only for a request of exactly its size, which is
what a training loop asks for step after step.

- Only requests of at least :data:`MIN_BYTES` come from the pool; smaller ones use
  ``torch.empty`` (glibc reuses those well).
- Free blocks are kept up to ``MULTISPIKE_CPU_POOL_MB`` MiB in all (default 1024; 0 turns the
  pool off); beyond that a freed block is unmapped at once. :func:`clear` unmaps them all.
- New blocks are advised to use transparent huge pages, so even their first use faults
  512 times less often.
- A pooled tensor cannot be resized in place (``resize_``), like any tensor over an external
  buffer.

Example::

    >>> t = empty((4, 1 << 22), torch.float32)   # 64 MiB, from the pool
    >>> t.shape, t.dtype
    (torch.Size([4, 4194304]), torch.float32)
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
import weakref
from collections import defaultdict

import torch
from torch import Tensor

#: requests below this many bytes use torch.empty
MIN_BYTES = 8 << 20

_lock = threading.Lock()
_free: dict[int, list[mmap.mmap]] = defaultdict(list)
_held = 0  # bytes in free blocks
_types: dict[int, type] = {}


def limit_bytes() -> int:
    """Most bytes kept in free blocks (``MULTISPIKE_CPU_POOL_MB``, default 1024 MiB)."""
    text = os.environ.get("MULTISPIKE_CPU_POOL_MB", "1024")
    try:
        return max(0, int(float(text) * (1 << 20)))
    except ValueError:
        return 1024 << 20


def held_bytes() -> int:
    """Bytes now kept in free blocks (for tests and diagnostics)."""
    return _held


def _release(block: mmap.mmap, nbytes: int) -> None:
    global _held
    with _lock:
        if _held + nbytes <= limit_bytes():
            _free[nbytes].append(block)
            _held += nbytes
    # otherwise the block is unmapped when its last reference (the dying view's) goes


def _block(nbytes: int) -> mmap.mmap:
    global _held
    with _lock:
        blocks = _free.get(nbytes)
        if blocks:
            _held -= nbytes
            return blocks.pop()
    block = mmap.mmap(-1, nbytes)
    advise = getattr(mmap, "MADV_HUGEPAGE", None)
    if advise is not None:
        try:
            block.madvise(advise)
        except OSError:  # pragma: no cover - kernels without transparent huge pages
            pass
    return block


def empty(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An uninitialised CPU tensor of ``shape`` and ``dtype``; large ones come from the pool."""
    numel = 1
    for n in shape:
        numel *= n
    nbytes = numel * dtype.itemsize
    if nbytes < MIN_BYTES or limit_bytes() == 0:
        return torch.empty(shape, dtype=dtype, device="cpu")  # the CPU kernel's outputs
    block = _block(nbytes)
    kind = _types.get(nbytes)
    if kind is None:
        kind = _types.setdefault(nbytes, ctypes.c_char * nbytes)
    view = kind.from_buffer(block)
    # back to the pool once the last tensor over this buffer is gone
    weakref.finalize(view, _release, block, nbytes)
    return torch.frombuffer(view, dtype=dtype).view(shape)


def empty_like(t: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """:func:`empty` of ``t``'s shape (contiguous), in ``dtype`` (default ``t``'s); small ones
    by ``torch.empty_like``, the cheapest call."""
    dtype = t.dtype if dtype is None else dtype
    if t.numel() * dtype.itemsize < MIN_BYTES and t.is_contiguous():
        return torch.empty_like(t, dtype=dtype)
    return empty(tuple(t.shape), dtype)


def clear() -> None:
    """Unmap every free block."""
    global _held
    with _lock:
        blocks = [b for bs in _free.values() for b in bs]
        _free.clear()
        _held = 0
    for b in blocks:
        b.close()
