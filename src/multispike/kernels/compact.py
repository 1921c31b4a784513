"""Keep spikes as int8 wherever autograd saves them: ``with compact_spikes(): loss = ...``.

The layer after a spiking neuron (a convolution, a linear layer) saves its input, the spikes,
for its own backward: in float32 that is 4 bytes per neuron and time step, as much as the
membrane the neuron itself keeps. Spikes are small integers ``b`` (times the layer's
amplitude ``a``), so inside this context every saved tensor that is the output of a fused
neuron (or a view of it) is stored as ``int8`` ``b`` and rebuilt as ``a·b`` in the same dtype
when the backward needs it: bit for bit the tensor that was saved, a quarter of the memory.
Other saved tensors pass through untouched.

It uses :func:`torch.autograd.graph.saved_tensors_hooks`, so it applies to whatever layers
follow the neurons. PyTorch applies only the innermost such hooks: inside another
``saved_tensors_hooks`` context (activation offloading, say) this one does nothing. Only
outputs of the fused path are recognised (``backend="auto"`` or ``"fused"``); the reference
loop's are not.

Example::

    >>> with compact_spikes():
    ...     loss = criterion(model(images), labels)
    >>> loss.backward()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor


class SpikeTag:
    """Attached to a fused neuron's output: the amplitude its spikes carry (None: 1)."""

    __slots__ = ("amp",)

    def __init__(self, amp: Tensor | None) -> None:
        self.amp = amp


class _Packed:
    __slots__ = ("q", "amp", "dtype")

    def __init__(self, q: Tensor, amp: Tensor | None, dtype: torch.dtype) -> None:
        self.q, self.amp, self.dtype = q, amp, dtype


def tag(out: Tensor, amp: Tensor | None) -> None:
    """Mark ``out`` (a fused neuron's output, not a view) as spikes ``amp · b``."""
    out._ms_spike = SpikeTag(None if amp is None else amp.detach().clone())


def _pack(t: Tensor):
    root = t._base if t._base is not None else t
    tag_ = getattr(root, "_ms_spike", None)
    if tag_ is None or not t.is_floating_point():
        return t
    with torch.no_grad():
        if tag_.amp is None:
            q = t.to(torch.int8)
        else:
            # a·b was rounded once in t's dtype: dividing and rounding gives b back exactly
            # (|b| <= 16); with a = 0 every spike is 0 and so is any a·q
            q = torch.round(t / tag_.amp).to(torch.int8)
    return _Packed(q, tag_.amp, t.dtype)


def _unpack(p):
    if not isinstance(p, _Packed):
        return p
    b = p.q.to(p.dtype)
    return b if p.amp is None else p.amp.to(p.dtype) * b


@contextlib.contextmanager
def compact_spikes() -> Iterator[None]:
    """Store saved spike tensors as int8 inside the block (see the module docs)."""
    with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
        yield
