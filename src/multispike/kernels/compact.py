"""Keep spikes bit-packed wherever autograd saves them: ``with compact_spikes(): loss = ...``.

The layer after a spiking neuron saves its input, the spikes, for its own backward. Inside
:func:`compact_spikes` every saved tensor that is a fused neuron's output (or a view of it) is
kept as the codes ``b - lo`` in 1, 2, 4 or 8 bits (the range the neuron declares with
:func:`tag`) and rebuilt as ``a·b`` in the same dtype when the backward needs it: bit for bit
the tensor that was saved. The compiled kernels write the packed codes themselves
(:func:`rebuild` unpacks them); the eager fused path's outputs are packed by the tensor ops
here. Bit widths, layouts, limits and measurements: ``docs/performance.md``
("Spikes saved by the next layer").

Example::

    >>> import torch
    >>> from multispike.neurons import LIFNode
    >>> node, fc = LIFNode(firing="binary"), torch.nn.Linear(16, 10)
    >>> x = torch.randn(4, 2, 16, requires_grad=True)
    >>> with compact_spikes():
    ...     loss = fc(node(x)).square().sum()
    >>> loss.backward()
    >>> x.grad.shape
    torch.Size([4, 2, 16])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

#: the widths a spike code may take: 8 // bits codes share a byte
WIDTHS = (1, 2, 4, 8)
#: devices whose packed codes the Triton kernel rebuilds (the tests add "cpu" when they run
#: the Triton kernels in its interpreter)
TRITON_DEVICES = {"cuda"}


def bits_for(lo: int, hi: int) -> int:
    """The fewest bits of :data:`WIDTHS` that hold the codes ``0 .. hi - lo``."""
    if hi < lo:
        raise ValueError(f"spike range lo={lo} > hi={hi}")
    for bits in WIDTHS:
        if hi - lo < 1 << bits:
            return bits
    raise ValueError(f"spike range {lo}..{hi} needs more than 8 bits")


_active = 0


def packing() -> bool:
    """True inside :func:`compact_spikes`: the compiled kernels then write packed codes."""
    return _active > 0


class SpikeTag:
    """Attached to a fused neuron's output: the amplitude its spikes carry (None: 1) and the
    range ``lo..hi`` of the integers ``b`` (None: not declared, stored as int8); ``codes``:
    the packed codes a compiled kernel wrote (see the module docs), or None."""

    __slots__ = ("amp", "lo", "hi", "bits", "codes")

    def __init__(
        self, amp: Tensor | float | None, lo: int | None = None, hi: int | None = None,
        codes: Tensor | None = None,
    ) -> None:
        self.amp, self.lo, self.hi, self.codes = amp, lo, hi, codes
        self.bits = None if lo is None else bits_for(lo, hi)


class _Codes:
    """A saved spike tensor kept as a reference to the kernel's packed codes: ``codes``
    ``[T, ceil(n·bits/8)]``, and the saved tensor's view (``shape``, ``stride``, ``offset``)
    of the root output (contiguous, ``T·n`` elements in any shape)."""

    __slots__ = ("codes", "n", "bits", "lo", "amp", "dtype", "shape", "stride", "offset")

    def __init__(self, t: Tensor, root: Tensor, tag_: SpikeTag) -> None:
        self.codes, self.bits, self.lo, self.amp = tag_.codes, tag_.bits, tag_.lo, tag_.amp
        self.n, self.dtype = root.numel() // tag_.codes.shape[0], t.dtype
        self.shape, self.stride = t.shape, t.stride()
        self.offset = t.storage_offset() - root.storage_offset()

    @property
    def nbytes(self) -> int:
        """Bytes of the kept codes (shared by every saved view of one output)."""
        return self.codes.numel()


def packed_codes(bits: int, t: int, n: int, device: torch.device) -> Tensor:
    """The buffer a compiled kernel writes the packed codes of ``t`` steps of ``n`` neurons,
    ``bits`` each (:func:`bits_for` of the spikes' range), into."""
    per = 8 // bits
    return torch.empty(t, -(-n // per), dtype=torch.uint8, device=device)


def rebuild(codes: Tensor, n: int, bits: int, lo: int, amp: Tensor | float | None,
            dtype: torch.dtype) -> Tensor:
    """The spikes ``a·b`` ``[T, n]`` in ``dtype`` from a kernel's packed codes, in one pass
    (the C++ kernel's, or the Triton one's), else in tensor ops."""
    if codes.device.type in TRITON_DEVICES and not isinstance(amp, float):
        from multispike.kernels import triton_impl

        return triton_impl.unpack(codes, n, bits, lo, amp, dtype)
    if codes.device.type == "cpu" and not isinstance(amp, Tensor):
        from multispike.kernels import cpu

        if dtype in cpu.DTYPES and cpu.library() is not None:
            return cpu.unpack(codes, n, bits, lo, 1.0 if amp is None else amp, dtype)
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=codes.device)
    c = (codes.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    b = c.view(codes.shape[0], -1)[:, :n].to(dtype) + lo
    return b if amp is None else b * (amp.to(dtype) if isinstance(amp, Tensor) else amp)


class _Packed:
    """A saved spike tensor: ``q`` is what is kept (uint8 codes packed ``8 // bits`` to a
    byte, or int8 ``b`` when ``bits`` is None); the rest is metadata."""

    __slots__ = ("q", "amp", "dtype", "bits", "lo", "shape", "stride", "hi")

    def __init__(
        self,
        q: Tensor,
        amp: Tensor | None,
        dtype: torch.dtype,
        bits: int | None = None,
        lo: int = 0,
        shape: torch.Size | None = None,
        stride: tuple[int, ...] | None = None,
        hi: int = 0,
    ) -> None:
        self.q, self.amp, self.dtype = q, amp, dtype
        self.bits, self.lo, self.hi, self.shape, self.stride = bits, lo, hi, shape, stride

    @property
    def nbytes(self) -> int:
        """Bytes of the kept tensor."""
        return self.q.numel() * self.q.element_size()


def tag(out: Tensor, amp: Tensor | float | None, lo: int | None = None, hi: int | None = None,
        codes: Tensor | None = None) -> None:
    """Mark ``out`` (a fused neuron's output, not a view) as spikes ``amp · b``.

    ``lo`` and ``hi``: the smallest and largest ``b`` the rule emits (binary 0, 1; ternary
    -1, 1; ``K`` thresholds 0, K; ternary with ``K`` thresholds -K, K). With them the saved
    spikes are bit-packed; without them they are kept as int8. ``codes``: the packed codes a
    compiled kernel wrote for ``out`` (``[T, ...]``, contiguous); a saved view of ``out`` then
    keeps a reference to them.
    """
    if (lo is None) != (hi is None):
        raise ValueError("give both lo and hi, or neither")
    if lo is not None:
        lo, hi = int(lo), int(hi)
    # a kernel output may itself be a view of its buffer (the CPU kernel's pooled outputs are
    # views of a torch.frombuffer tensor): tag that buffer, which every view of it reports as
    # its _base, when it holds exactly these spikes
    target = out
    if out._base is not None and out._base.numel() == out.numel():
        target = out._base
    # the amplitude itself: _pack snapshots its value when a layer saves these spikes (in the
    # same forward), so that tagging costs no op
    target._ms_spike = SpikeTag(amp, lo, hi, codes)


def _dense_order(t: Tensor) -> list[int]:
    """Dimensions of ``t`` from the largest stride to the smallest: ``t.permute`` of it is
    contiguous when ``t`` is non-overlapping and dense."""
    return sorted(range(t.dim()), key=lambda d: (-t.stride(d), -t.size(d)))


def _small_int(lo: int, hi: int) -> torch.dtype | None:
    """uint8 or int8 when it holds every ``b`` of ``lo..hi`` (then ``b - lo`` is ``b`` minus
    ``lo`` modulo 256 in place), else None."""
    if 0 <= lo and hi <= 255:
        return torch.uint8
    if -128 <= lo and hi <= 127:
        return torch.int8
    return None


def _codes(t: Tensor, b: Tensor, lo: int, hi: int) -> Tensor:
    """uint8 ``b - lo`` laid out like ``t`` (t's strides when t is dense, else dense)."""
    dtype = _small_int(lo, hi)
    if dtype is None:
        return torch.empty_like(t, dtype=torch.uint8).copy_(b - lo)
    code = torch.empty_like(t, dtype=dtype).copy_(b).view(torch.uint8)
    if lo:
        code.add_(-lo & 0xFF)
    return code


def _pack(t: Tensor):
    root = t._base if t._base is not None else t
    tag_ = getattr(root, "_ms_spike", None)
    if tag_ is None or not t.is_floating_point():
        return t
    if tag_.codes is not None:  # the kernel packed them already: keep a reference
        return _Codes(t, root, tag_)
    with torch.no_grad():
        amp = None if tag_.amp is None else tag_.amp.detach().clone()  # its value now
        # a·b was rounded once in t's dtype: dividing and rounding gives b back exactly
        # (|b| <= 16); with a = 0 every spike is 0 and so is any a·q
        b = t if amp is None else torch.round(t / amp)
        if tag_.bits is None:
            return _Packed(b.to(torch.int8), amp, t.dtype)
        bits, lo = tag_.bits, tag_.lo
        code = _codes(t, b, lo, tag_.hi)
        perm = _dense_order(code)
        if not code.permute(perm).is_contiguous():  # not expected: empty_like is dense
            code = code.contiguous()
            perm = list(range(code.dim()))
        flat = code.permute(perm).reshape(-1)  # the codes in memory order: a view
        if bits == 8:
            q = flat
        else:
            flat.bitwise_and_((1 << bits) - 1)  # out-of-range codes (a = 0) never spill over
            per = 8 // bits
            pad = -flat.numel() % per
            if pad:
                flat = torch.nn.functional.pad(flat, (0, pad))
            # planes: byte i holds codes i, m + i, 2m + i, ... (code j·m + i in bits
            # [bits·j, bits·(j + 1))), so every step reads and writes contiguous memory
            v = flat.view(per, -1)
            q = v[0] | (v[1] << bits)
            for j in range(2, per):
                q |= v[j] << (bits * j)
    return _Packed(q, amp, t.dtype, bits, lo, code.shape, code.stride(), tag_.hi)


def _unpack(p):
    if type(p) is _Codes:
        b = rebuild(p.codes, p.n, p.bits, p.lo, p.amp, p.dtype)
        return b.as_strided(p.shape, p.stride, p.offset)
    if not isinstance(p, _Packed):
        return p
    if p.bits is None:
        b = p.q.to(p.dtype)
        return b if p.amp is None else p.amp.to(p.dtype) * b
    lo, hi, bits = p.lo, p.hi, p.bits
    if bits == 8:
        codes = p.q.clone() if lo else p.q  # the hook may run more than once: keep q intact
    else:
        shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=p.q.device)
        codes = p.q >> shifts.unsqueeze(1)  # [8 // bits, bytes]: plane j in row j
        codes.bitwise_and_((1 << bits) - 1)
        codes = codes.view(-1)
    dtype = _small_int(lo, hi)
    if dtype is None:
        b = codes.to(p.dtype) + lo  # code + lo = b, an integer the saved dtype holds exactly
    else:
        if lo:
            codes.add_(lo & 0xFF)  # b = code + lo modulo 256, read as uint8 or int8
        b = codes.view(dtype).to(p.dtype)
    if p.amp is not None:
        b = p.amp.to(p.dtype) * b
    # b holds the codes in the saved tensor's memory order (and a padded tail): lay it out
    # with the saved strides
    return b.as_strided(p.shape, p.stride)


@contextlib.contextmanager
def compact_spikes() -> Iterator[None]:
    """Store saved spike tensors bit-packed inside the block (see the module docs)."""
    global _active
    _active += 1
    try:
        with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
            yield
    finally:
        _active -= 1
