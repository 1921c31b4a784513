"""compact_spikes(): saved spikes bit-packed to the bits their range needs, rebuilt exactly."""

from __future__ import annotations

import contextlib
import doctest
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from multispike.kernels import compact, compact_spikes, function
from multispike.kernels.compact import _pack, _Packed, _unpack, bits_for, tag
from multispike.neurons import IFNode, LIFNode, PLIFNode

# (rule, lo, hi, bits): binary, ternary, 3 thresholds, ternary with 3 thresholds
RULES = [
    ("binary", 0, 1, 1),
    ("ternary", -1, 1, 2),
    ("mt", 0, 3, 2),
    ("ternary-mt", -3, 3, 4),
]
RULE_IDS = [r[0] for r in RULES]
DTYPES = [torch.float32, torch.float64, torch.bfloat16]
INT_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64, torch.bfloat16: torch.int16,
            torch.float16: torch.int16}

# shapes (odd, prime, tiny, empty, 0-dim) and the views autograd may save of a neuron output
SHAPES = [(1,), (7,), (3, 5, 7), (2, 3, 4, 5), (4, 1, 9), (), (0, 3), (2, 0)]
VIEWS = {
    "same": lambda t: t,
    "flatten": lambda t: t.flatten(0, 1) if t.dim() >= 2 else t.view(-1),
    "transpose": lambda t: t.transpose(0, -1) if t.dim() >= 2 else t,
    "permute": lambda t: t.permute(list(reversed(range(t.dim())))),
    "slice": lambda t: t[1:] if t.dim() >= 1 and t.shape[0] > 1 else t,
    "step": lambda t: t[..., ::2] if t.dim() >= 1 else t,
}


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and bits (so -0.0 and 0.0 differ)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    as_int = INT_VIEW[a.dtype]
    return torch.equal(a.contiguous().view(as_int), b.contiguous().view(as_int))


def _spikes(shape, lo, hi, amp, dtype, seed=0, device="cpu"):
    """A tagged tensor ``amp·b`` (``b`` uniform in lo..hi), as a fused neuron would leave it."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(lo, hi + 1, shape, generator=g).to(dtype).to(device)
    a = None if amp is None else torch.tensor(amp, dtype=dtype, device=device)
    out = b if a is None else a * b
    tag(out, a, lo, hi)
    return out, b


# -- widths -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lo", "hi", "bits"),
    [(0, 1, 1), (0, 0, 1), (-1, 1, 2), (0, 2, 2), (0, 3, 2), (0, 4, 4), (0, 7, 4), (-2, 2, 4),
     (-3, 3, 4), (-7, 7, 4), (-7, 8, 4), (0, 15, 4), (0, 16, 8), (-8, 8, 8), (-128, 127, 8),
     (0, 255, 8)],
)
def test_bits_for(lo, hi, bits):
    assert bits_for(lo, hi) == bits
    assert bits in compact.WIDTHS and 1 << bits >= hi - lo + 1


def test_bits_for_rejects_bad_ranges():
    with pytest.raises(ValueError):
        bits_for(1, 0)
    with pytest.raises(ValueError):
        bits_for(0, 256)


def test_tag_needs_both_bounds_or_neither():
    out = torch.zeros(3)
    with pytest.raises(ValueError):
        tag(out, None, 0, None)
    with pytest.raises(ValueError):
        tag(out, None, None, 1)
    tag(out, None)  # the two-argument call: int8 storage
    assert out._ms_spike.bits is None and out._ms_spike.lo is None
    tag(out, None, 0, 1)
    assert out._ms_spike.bits == 1


# -- pack / unpack round trips ------------------------------------------------------------------
@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amp", [None, 0.37, -1.75])
@pytest.mark.parametrize(("rule", "lo", "hi", "bits"), RULES, ids=RULE_IDS)
def test_round_trip(rule, lo, hi, bits, amp, dtype, view):
    for seed, shape in enumerate(SHAPES):
        out, _ = _spikes(shape, lo, hi, amp, dtype, seed=seed)
        t = VIEWS[view](out)
        p = _pack(t)
        assert isinstance(p, _Packed)
        assert p.q.dtype == torch.uint8 and p.bits == bits
        assert p.nbytes == math.ceil(t.numel() * bits / 8)
        r = _unpack(p)
        assert _bitwise_equal(r, t), (shape, view)
        assert r.dtype == t.dtype and r.shape == t.shape and r.device == t.device
        if t.is_contiguous() or view in ("transpose", "permute"):
            assert r.stride() == t.stride(), (shape, view)  # dense views keep their layout


@pytest.mark.parametrize(("lo", "hi"), [(0, 1), (-1, 1), (0, 3), (-3, 3), (0, 7), (-7, 7),
                                        (0, 15), (-8, 8), (0, 255), (-128, 127), (2, 5)])
def test_round_trip_ranges(lo, hi):
    """Random sizes, every width, codes at both ends of the range (property-style)."""
    g = torch.Generator().manual_seed(lo * 1000 + hi)
    bits = bits_for(lo, hi)
    for trial in range(25):
        n = int(torch.randint(0, 300, (), generator=g))
        out, b = _spikes((n,), lo, hi, None, torch.float32, seed=trial)
        if n >= 2:
            out[0], out[-1] = lo, hi
        p = _pack(out)
        assert p.nbytes == math.ceil(n * bits / 8)
        assert _bitwise_equal(_unpack(p), out)


def test_byte_layout():
    """Planes: with m = ceil(n / per) bytes, byte i holds codes i, m + i, 2m + i, ... from the
    low bits up; the tail of the last plane is zero."""
    # binary, 9 spikes, m = 2: byte 0 holds spikes 0, 2, 4, ..., 14; byte 1 spikes 1, 3, ..., 15
    out = torch.tensor([1.0, 0, 1, 1, 0, 0, 0, 1, 1])
    tag(out, None, 0, 1)
    assert _pack(out).q.tolist() == [0b00010011, 0b00001010]
    # ternary, -1 0 1 1 -1 -> codes 0 1 2 2 0 (and 3 zeros of padding), m = 2
    out = torch.tensor([-1.0, 0, 1, 1, -1])
    tag(out, None, -1, 1)
    assert _pack(out).q.tolist() == [0 | 2 << 2, 1 | 2 << 2]
    # ternary-mt, -3..3 -> codes 0..6: -3 3 -1 -> codes 0 6 2, m = 2
    out = torch.tensor([-3.0, 3, -1])
    tag(out, None, -3, 3)
    assert _pack(out).q.tolist() == [0 | 2 << 4, 6]


@pytest.mark.parametrize("amp", [None, 0.37])
@pytest.mark.parametrize(("rule", "lo", "hi", "bits"), RULES, ids=RULE_IDS)
def test_no_data_dependence(rule, lo, hi, bits, amp):
    """On the meta device (no data at all) pack and unpack still run: no ``.item()``, no host
    round trip, no shape that depends on values; the sizes are those of real tensors."""
    b = torch.empty(3, 5, 7, device="meta")
    a = None if amp is None else torch.tensor(amp, device="meta")
    out = b if a is None else a * b
    tag(out, a, lo, hi)
    for view in VIEWS.values():
        t = view(out)
        p = _pack(t)
        assert p.q.device.type == "meta" and p.nbytes == math.ceil(t.numel() * bits / 8)
        r = _unpack(p)
        assert r.shape == t.shape and r.dtype == t.dtype and r.device == t.device


def test_zero_amplitude():
    """a = 0: every spike is ±0; the rebuilt tensor is 0 too, whatever the codes."""
    for lo, hi in [(0, 1), (-1, 1), (-3, 3)]:
        out, _ = _spikes((5, 7), lo, hi, 0.0, torch.float32)
        r = _unpack(_pack(out))
        assert torch.equal(r, out) and not r.isnan().any()


def test_two_argument_tag_keeps_int8():
    out = torch.tensor([[0.0, 1, 2], [3, -1, -3]]) * torch.tensor(0.5)
    tag(out, torch.tensor(0.5))
    p = _pack(out)
    assert p.q.dtype == torch.int8 and p.bits is None and p.nbytes == out.numel()
    assert _bitwise_equal(_unpack(p), out)


def test_untagged_and_integer_tensors_pass_through():
    x = torch.randn(4, 3)
    assert _pack(x) is x and _unpack(x) is x
    i = torch.arange(6)
    i._ms_spike = compact.SpikeTag(None, 0, 5)
    assert _pack(i) is i
    # a view of an untagged tensor, a new tensor computed from a tagged one
    v = torch.randn(4, 3).t()
    assert _pack(v) is v
    out, _ = _spikes((4, 3), 0, 1, None, torch.float32)
    y = out * 2
    assert _pack(y) is y


# -- saved bytes --------------------------------------------------------------------------------
def _kept(fn):
    """Bytes saved while ``fn`` runs: ``plain`` all of them as they came, ``spikes`` what
    compact_spikes keeps of the spike tensors, ``other`` the other tensors (kept as is)."""
    kept = {"plain": 0, "other": 0, "spikes": 0}

    def pack(t):
        p = _pack(t)
        kept["plain"] += t.numel() * t.element_size()
        if isinstance(p, (_Packed, compact._Codes)):
            kept["spikes"] += p.nbytes
        else:
            kept["other"] += t.numel() * t.element_size()
        return p

    # compact_spikes (the kernels write packed codes inside it), seen through a recorder
    with compact_spikes(), torch.autograd.graph.saved_tensors_hooks(pack, _unpack):
        fn()
    return kept


@pytest.mark.parametrize(("rule", "lo", "hi", "bits"), RULES, ids=RULE_IDS)
def test_saved_bytes(rule, lo, hi, bits):
    n = 3 * 7 * 11 * 13  # 3003: an odd number of spikes, a partial last byte
    out, _ = _spikes((3, 7, 11, 13), lo, hi, 0.5, torch.float32)
    p = _pack(out)
    assert p.nbytes == {1: 376, 2: 751, 4: 1502}[bits] == math.ceil(n * bits / 8)
    # through autograd: a linear layer saves its input, here a view of the spikes (flatten)
    w = torch.randn(5, 13, requires_grad=True)
    s = out.flatten(0, 1)
    kept = _kept(lambda: torch.nn.functional.linear(s, w))
    assert kept["spikes"] == math.ceil(n * bits / 8) and kept["other"] == 0
    kept = _kept(lambda: torch.nn.functional.linear(s * 1.0, w))  # a new tensor: not spikes
    assert kept["spikes"] == 0 and kept["other"] == kept["plain"] == 4 * n


# -- gradients of small networks: bit for bit with and without compact_spikes ------------------
class _Fire(torch.autograd.Function):
    """Spikes ``a·clamp(round(x), lo, hi)`` with a straight-through gradient, tagged as a fused
    neuron's output is (so the packing is tested apart from any neuron kernel)."""

    @staticmethod
    def forward(ctx, x, a, lo, hi):
        out = torch.clamp(torch.round(x), lo, hi)
        if a is not None:
            out = a * out
        tag(out, a, lo, hi)
        return out.view(x.shape)  # a view of the tagged tensor, as FusedMultistep returns

    @staticmethod
    def backward(ctx, g):  # straight through; the amplitude's gradient is a stand-in
        return g, (None if not ctx.needs_input_grad[1] else g.sum()), None, None


def _grads(loss_fn, params, compact_):
    for p in params:
        p.grad = None
    with compact_spikes() if compact_ else contextlib.nullcontext():
        loss = loss_fn()
    loss.backward()
    return [p.grad.clone() for p in params]


def _assert_same_grads(loss_fn, params):
    plain = _grads(loss_fn, params, False)
    packed = _grads(loss_fn, params, True)
    for g, h in zip(plain, packed, strict=True):
        assert _bitwise_equal(g, h)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize(("rule", "lo", "hi", "bits"), RULES, ids=RULE_IDS)
def test_network_gradients_exact(rule, lo, hi, bits, amp, dtype):
    torch.manual_seed(0)
    T, B, C, H, W = 3, 2, 3, 5, 7  # odd sizes: 630 spikes
    x = (torch.randn(T, B, C, H, W, dtype=torch.float64) * 2).to(dtype).requires_grad_(True)
    a = torch.tensor(0.37, dtype=dtype, requires_grad=True) if amp else None
    conv = torch.nn.Conv2d(C, 4, 3, padding=1).to(dtype)
    fc = torch.nn.Linear(W, 6).to(dtype)
    params = [x, *conv.parameters(), *fc.parameters()] + ([a] if amp else [])

    def loss():
        s = _Fire.apply(x, a, lo, hi)
        y = conv(s.flatten(0, 1))  # a view between the neuron and the conv
        z = fc(s.transpose(1, 2))  # and a non-contiguous one before a linear layer
        return y.square().sum() + z.square().sum()

    _assert_same_grads(loss, params)
    kept = _kept(loss)
    n = x.numel()
    # the conv's input (and the linear layer's, if it saves the transposed view rather than
    # a copy): `bits` per spike
    assert kept["spikes"] in (math.ceil(n * bits / 8), 2 * math.ceil(n * bits / 8))


NEURONS = {"LIF": LIFNode, "PLIF": PLIFNode, "IF": IFNode}


@pytest.fixture
def declare_range(monkeypatch):
    """Make the fused Function tag its output with ``lo``/``hi`` (what its author will pass)."""

    def set_range(lo, hi):
        monkeypatch.setattr(
            function, "tag", lambda out, amp, *args, **kwargs: tag(out, amp, lo, hi),
            raising=False,
        )

    return set_range


@pytest.mark.parametrize("neuron", list(NEURONS))
@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize(("rule", "lo", "hi", "bits"), RULES, ids=RULE_IDS)
def test_neuron_network_gradients_exact(declare_range, neuron, rule, lo, hi, bits, amp):
    """End to end through fused neurons: with the range declared, packed to ``bits``."""
    declare_range(lo, hi)
    torch.manual_seed(0)
    dtype = torch.float32
    node = NEURONS[neuron](firing=rule, learn_amplitude=amp, backend="fused",
                           check_input=False).to(dtype)
    if amp:
        with torch.no_grad():
            node.amplitude.fill_(0.37)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).to(dtype)
    x = (torch.randn(3, 2, 3, 5, 7) * 1.5).to(dtype).requires_grad_(True)
    params = [x, *node.parameters(), *conv.parameters()]

    def loss():
        return conv(node(x).flatten(0, 1)).square().sum()

    _assert_same_grads(loss, params)
    kept = _kept(loss)
    # the C++ kernel's codes: a row of ceil(N·bits/8) bytes per step
    assert kept["spikes"] == 3 * math.ceil(x.numel() // 3 * bits / 8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("firing", [r[0] for r in RULES])
def test_neuron_without_range_int8_or_better(firing, dtype):
    """As the neurons call tag today (with or without lo/hi): exact, at most a byte a spike."""
    torch.manual_seed(1)
    node = PLIFNode(firing=firing, learn_amplitude=True, backend="fused",
                    check_input=False).to(dtype)
    fc = torch.nn.Linear(7, 5).to(dtype)
    x = (torch.randn(3, 2, 5, 7, dtype=torch.float64) * 1.5).to(dtype).requires_grad_(True)
    params = [x, *node.parameters(), *fc.parameters()]

    def loss():
        return fc(node(x).flatten(0, 1)).square().sum()

    _assert_same_grads(loss, params)
    kept = _kept(loss)
    assert 0 < kept["spikes"] <= x.numel()


def test_module_example_runs():
    failures, tried = doctest.testmod(compact, verbose=False)
    assert tried > 0 and failures == 0


# -- CUDA ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
@pytest.mark.parametrize(("rule", "lo", "hi", "bits"), RULES, ids=RULE_IDS)
def test_cuda_round_trip_and_gradients_without_sync(rule, lo, hi, bits):
    dev = "cuda"
    for dtype in DTYPES:
        for amp in (None, 0.37):
            out, _ = _spikes((3, 5, 7, 11), lo, hi, amp, dtype, device=dev)
            for view in VIEWS.values():
                t = view(out)
                torch.cuda.set_sync_debug_mode("error")  # any host sync raises
                try:
                    p = _pack(t)
                    r = _unpack(p)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
                assert p.q.device == t.device and p.nbytes == math.ceil(t.numel() * bits / 8)
                assert r.device == t.device and _bitwise_equal(r, t)
    torch.manual_seed(0)
    x = torch.randn(3, 2, 3, 5, 7, device=dev, requires_grad=True)
    a = torch.tensor(0.37, device=dev, requires_grad=True)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).to(dev)

    def loss():
        return conv(_Fire.apply(x, a, lo, hi).flatten(0, 1)).square().sum()

    _assert_same_grads(loss, [x, a, *conv.parameters()])


def test_large_kernel_outputs_from_the_pool_are_packed_too():
    """The CPU kernel's large outputs are views of a pooled buffer: compact_spikes must still
    recognise them (a 16 MiB spike tensor kept as 1 bit per spike, not 4 bytes)."""
    from multispike.kernels import compact, pool
    from multispike.neurons import LIFNode

    node = LIFNode(firing="binary", check_input=False)
    x = torch.randn(4, 1 << 20, requires_grad=True)  # 16 MiB: from the pool
    assert 4 * x.numel() >= pool.MIN_BYTES
    with compact_spikes():  # the kernel writes the codes
        out = node(x)
    assert out._base is not None  # a view of the pool's buffer
    packed = compact._pack(out.view(4, 1024, 1024))
    assert isinstance(packed, compact._Codes)
    assert packed.nbytes == x.numel() // 8
    assert torch.equal(compact._unpack(packed), out.view(4, 1024, 1024))


# -- the compiled kernels write the packed codes themselves ------------------------------------

KERNEL_CASES = [  # (layer options, bits per code)
    ({"firing": "binary"}, 1),
    ({"firing": "ternary", "learn_amplitude": True}, 2),
    ({"firing": "mt"}, 2),
    ({"firing": "mt", "deltas": (0.25, 0.5, 0.75, 1.0)}, 4),
    ({"firing": "signed-integer", "levels": 2}, 4),
    ({"firing": "integer", "levels": 20}, 8),
]


def kernel_compact_errors(device: str = "cpu") -> list[str]:
    """What differs, per case and dtype, between a layer after a neuron saving its spikes as
    they are and keeping the kernel's packed codes inside compact_spikes (gradients bit for
    bit; every saved spike tensor a reference to the codes, ``bits`` per spike)."""
    from multispike.neurons import LIFNode, PLIFNode

    errors = []
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        for i, (opts, bits) in enumerate(KERNEL_CASES):
            g = torch.Generator().manual_seed(i)
            node = (PLIFNode if i % 2 else LIFNode)(**opts).to(device, dtype)
            if "learn_amplitude" in opts:
                with torch.no_grad():
                    node.amplitude.fill_(0.3)
            conv = torch.nn.Conv2d(3, 2, 3, bias=False).to(device, dtype)
            x = (1.5 * torch.randn(3, 2, 3, 5, 7, generator=g)).to(device, dtype)  # odd N
            grads, kept = [], []
            for compact_ in (False, True):
                node.zero_grad(set_to_none=True)
                conv.zero_grad(set_to_none=True)
                xi = x.clone().requires_grad_(True)

                def pack(t, kept=kept):
                    p = compact._pack(t)
                    kept.append(p)
                    return p

                with contextlib.ExitStack() as stack:
                    if compact_:  # its hooks, seen through a recorder (the innermost hooks)
                        stack.enter_context(compact_spikes())
                        stack.enter_context(
                            torch.autograd.graph.saved_tensors_hooks(pack, compact._unpack))
                    s = node(xi)
                    y = conv(s.flatten(0, 1)).sum() + conv(s[1:].flatten(0, 1)).square().sum()
                y.backward()
                grads.append([xi.grad, conv.weight.grad] + [p.grad for p in node.parameters()])
            case = f"{opts}/{dtype}"
            codes = [p for p in kept if type(p) is compact._Codes]
            if len(codes) != 2 or any(p.bits != bits for p in codes):
                errors.append(f"{case}: saved spikes not kept as {bits}-bit kernel codes")
            if len(codes) == 2 and codes[0].codes is not codes[1].codes:
                errors.append(f"{case}: two views of one output keep two code buffers")
            for a, b in zip(*grads, strict=True):
                if a is None or b is None or not torch.equal(a, b):
                    errors.append(f"{case}: gradients differ")
    return errors


def test_cpu_kernel_writes_the_packed_codes():
    assert kernel_compact_errors("cpu") == []


@pytest.mark.skipif(__import__("importlib").util.find_spec("triton") is None,
                    reason="triton not installed")
def test_triton_kernel_writes_the_packed_codes():
    """The Triton forward writes the codes and one launch rebuilds them (in Triton's
    interpreter on a machine without CUDA)."""
    if torch.cuda.is_available():
        assert kernel_compact_errors("cuda") == []
        return
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), str(root), env.get("PYTHONPATH", "")])
    code = ("import json; from multispike import kernels; n = kernels.native_impl; "
            "kernels.native_impl = lambda s, x: 'triton' if n(s, x) else None; "
            "from multispike.kernels import compact; "
            "compact.TRITON_DEVICES.add('cpu'); "
            "from tests.test_compact import kernel_compact_errors as f; "
            "print(json.dumps(f()))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
