"""Neuron modules: equal to the equations and the functional path, gradients, dtypes, errors."""

import math
from functools import partial

import pytest
import torch

from multispike.errors import ConfigError, InputError
from multispike.functional import NeuronParams, lif_charge, multistep, plif_charge
from multispike.neurons import IFNode, LIFNode, Neuron, PLIFNode, build_neuron

from .reference import (
    if_reference,
    lif_binary_reference,
    lif_ternary_reference,
    plif_mt_reference,
    reset_choice_reference,
    ternary_mt_reference,
)

FIRINGS = ["binary", "mt", "ternary", "ternary-mt"]


def _x(*shape, seed=0, scale=1.5, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


# -- equal to the papers' equations ------------------------------------------------------------
def test_plif_initial_tau():
    node = PLIFNode(init_tau=3.0)
    assert node.tau.item() == pytest.approx(3.0)
    assert isinstance(node, Neuron)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("deltas", [None, (-0.5, 0.5), (-0.4, -0.3, 0.3)])
def test_plif_equals_reference(dtype, deltas):
    x = _x(8, 4, 3, 5, dtype=dtype)
    firing = "binary" if deltas is None else "mt"
    node = PLIFNode(init_tau=2.5, firing=firing, deltas=deltas).to(dtype)
    out = node(x)
    assert out.dtype == dtype and out.shape == x.shape
    ref = plif_mt_reference(x, node.tau.detach(), 1.0, deltas or ())
    assert torch.equal(out, ref)


def test_mt_default_deltas_equal_reference():
    x = _x(5, 64)
    out = PLIFNode(firing="mt")(x)
    assert torch.equal(out, plif_mt_reference(x, torch.tensor(2.0), 1.0, (-0.5, 0.5)))


@pytest.mark.parametrize("amplitude", [False, True])
def test_lif_ternary_equals_reference(amplitude):
    x = _x(6, 5, 2, 4, 4, scale=0.8)
    node = LIFNode(firing="ternary", learn_amplitude=amplitude)
    if amplitude:
        with torch.no_grad():
            node.amplitude.fill_(0.6)
    ref = lif_ternary_reference(x, 0.25, 0.5, a=0.6 if amplitude else 1.0)
    assert torch.equal(node(x), ref)


def test_lif_binary_and_if_equal_reference():
    x = _x(7, 3, 50)
    assert torch.equal(LIFNode()(x), lif_binary_reference(x, 0.25, 0.5))
    assert torch.equal(IFNode()(x), if_reference(x, 1.0))


def test_ternary_mt_equals_reference():
    x = _x(6, 3, 50)
    node = LIFNode(decay=0.5, firing="ternary-mt", deltas=(-0.2, 0.3))
    assert torch.equal(node(x), ternary_mt_reference(x, 0.5, 0.5, (-0.2, 0.3)))


# -- functional == module; no state between calls; streaming -----------------------------------
@pytest.mark.parametrize("firing", FIRINGS)
def test_module_equals_functional(firing):
    x = _x(4, 2, 30)
    node = PLIFNode(firing=firing, learn_amplitude=True)
    params = NeuronParams(1.0, rule=node.rule, amplitude=node.amplitude)
    ref, _ = multistep(x, partial(plif_charge, w=node.w), params)
    assert torch.equal(node(x), ref)
    lif = LIFNode(firing=firing)
    ref, _ = multistep(x, partial(lif_charge, decay=0.25), NeuronParams(0.5, rule=lif.rule))
    assert torch.equal(lif(x), ref)


@pytest.mark.parametrize("v_reset", [0.0, 0.2])
@pytest.mark.parametrize("cls", [PLIFNode, LIFNode, IFNode])
def test_no_state_between_calls_and_streaming(cls, v_reset):
    x = _x(5, 3, 16)
    node = cls(firing="mt", v_reset=v_reset)
    first, second = node(x), node(x)
    assert torch.equal(first, second)
    state, outs = None, []
    for t in range(x.shape[0]):
        out, state = node.step(x[t], state)
        outs.append(out)
    assert torch.equal(torch.stack(outs), first)


def test_config_rebuilds_layer():
    node = LIFNode(decay=0.5, firing="ternary-mt", deltas=(0.2,), learn_amplitude=True,
                   surrogate="atan", surrogate_alpha=3.0, detach_reset=True,
                   reset_grad="spike")
    assert node.config()["reset_grad"] == "spike"
    again = build_neuron(node.config())
    assert again.config() == node.config()
    x = _x(3, 2, 10)
    assert torch.equal(again(x), node(x))


@pytest.mark.parametrize("cls", [PLIFNode, LIFNode, IFNode])
def test_membrane_starts_at_v_reset(cls):
    """The start state is V_reset (SpikingJelly's and Norse's convention), on every path."""
    node = cls(v_reset=0.3, firing="ternary")
    x = torch.zeros(1, 2, 5)
    assert torch.equal(node.init_state(x[0]).v, torch.full((2, 5), 0.3))
    # the first H is the charge of V = 0.3 with no input; it stays below threshold
    expect = node.charge(torch.full((2, 5), 0.3), x[0])
    for backend in ("torch", "fused"):
        node.backend = backend
        assert torch.equal(node(x), torch.zeros_like(x))
    _, state = node.step(x[0])
    assert torch.equal(state.v, expect.detach())
    assert not torch.equal(expect, torch.zeros_like(expect))


# -- gradients -----------------------------------------------------------------------------------
def _rect(x, a=1.0):
    return ((x.abs() <= a / 2).to(x.dtype)) / a


def test_plif_gradients_closed_form_t1():
    """T = 1: H = X/τ, S = Θ(H − V_th); dS/dX = g(H − V_th)/τ and
    dS/dw = g(H − V_th)·X·exp(−w)/τ² (τ = 1 + exp(−w), Eq 7-9)."""
    x = _x(1, 200, dtype=torch.float64).requires_grad_(True)
    node = PLIFNode(init_tau=2.0, firing="mt", deltas=(-0.5, 0.5)).double()
    node(x).sum().backward()
    tau = node.tau.detach()
    h = x.detach() / tau
    g = sum(_rect(h - th) for th in (1.0, 0.5, 1.5))  # summed over every threshold
    torch.testing.assert_close(x.grad, g / tau)
    w = node.w.detach()
    expected_w = (g * x.detach() * torch.exp(-w) / tau**2).sum()
    torch.testing.assert_close(node.w.grad, expected_w)


def test_ternary_amplitude_gradients_closed_form_t1():
    """T = 1: out = a·b, b = Θ(u − V) − Θ(−u − V); d/dx = a·(g(u − V) + g(u + V)), d/da = Σ b."""
    x = _x(1, 300, scale=0.8, dtype=torch.float64).requires_grad_(True)
    node = LIFNode(firing="ternary", learn_amplitude=True).double()
    with torch.no_grad():
        node.amplitude.fill_(0.8)
    out = node(x)
    weights = torch.linspace(-1, 1, 300, dtype=torch.float64)
    (out * weights).sum().backward()
    u = x.detach()
    b = (u >= 0.5).double() - (u <= -0.5).double()
    g = _rect(u - 0.5) + _rect(u + 0.5)
    torch.testing.assert_close(x.grad, weights * 0.8 * g)
    torch.testing.assert_close(node.amplitude.grad, (weights * b).sum())


@pytest.mark.parametrize("firing", FIRINGS)
def test_learnable_parameters_get_gradients(firing):
    x = _x(4, 8, 32, scale=2.0)
    node = PLIFNode(firing=firing, learn_amplitude=True)
    node(x).pow(2).sum().backward()
    for name, p in node.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("surrogate", ["rectangular", "clamp", "sigmoid", "atan"])
def test_surrogate_option_is_used(surrogate):
    x = _x(1, 100, dtype=torch.float64).requires_grad_(True)
    option = "surrogate_alpha" if surrogate in ("sigmoid", "atan") else "surrogate_width"
    node = IFNode(surrogate=surrogate, **{option: 0.7})
    node(x).sum().backward()
    sg = node.surrogate
    torch.testing.assert_close(x.grad, sg.derivative(x.detach() - 1.0))


# -- dtypes ----------------------------------------------------------------------------------------
def test_bfloat16_autocast_forward_backward():
    lin = torch.nn.Linear(16, 16)
    node = PLIFNode(firing="mt", learn_amplitude=True)
    x = _x(3, 4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = node(lin(x))
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert lin.weight.grad is not None and node.w.grad is not None
    assert node.amplitude.grad is not None
    assert set(torch.unique(y.float()).tolist()) <= {0.0, 1.0, 2.0, 3.0}


# -- bad input gets one line naming the fix --------------------------------------------------------
def _one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.randn(5), "time-first input"),
        (torch.ones(2, 3, dtype=torch.int64), "x.float()"),
        (torch.tensor([[0.0, float("nan")]]), "NaN or inf"),
        (torch.tensor([[0.0], [float("inf")]]), "NaN or inf"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_bad_input(x, match):
    with pytest.raises(InputError, match=match) as e:
        PLIFNode()(x)
    _one_line(e)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PLIFNode(v_threshold=0.0), "v_threshold must be > 0"),
        (lambda: LIFNode(v_threshold=-1.0), "v_threshold must be > 0"),
        (lambda: PLIFNode(init_tau=1.0), "init_tau must be > 1"),
        (lambda: PLIFNode(init_tau=0.5), "init_tau must be > 1"),
        (lambda: PLIFNode(firing="mt", deltas=(0.5, -0.5)), "not sorted"),
        (lambda: PLIFNode(firing="mt", deltas=(0.5, 0.5)), "duplicates"),
        (lambda: PLIFNode(firing="mt", deltas=(-1.5,)), "fire at rest"),
        (lambda: PLIFNode(firing="spiky"), "unknown firing 'spiky'"),
        (lambda: PLIFNode(surrogate="relu"), "unknown surrogate"),
        (lambda: LIFNode(decay=1.5), "decay must lie in"),
        (lambda: IFNode(v_threshold=float("nan")), "finite number"),
        (lambda: IFNode(v_reset=2.0), "fire forever"),
        (lambda: LIFNode(reset_grad="abs"), "unknown reset_grad"),
        (lambda: LIFNode(reset="hard"), "unknown reset 'hard'"),
        (lambda: IFNode(reset="soft", v_reset=0.2), "use v_reset=0 or a hard reset"),
        (lambda: LIFNode(firing="ternary", reset="soft", reset_grad="spike"),
         "use reset_grad='surrogate' or detach_reset=True"),
        (lambda: IFNode(surrogate_alpha=3.0), "use surrogate_width=3.0"),
        (lambda: IFNode(surrogate="clamp", surrogate_alpha=3.0), "clamp has a window width"),
        (lambda: IFNode(surrogate="atan", surrogate_width=1.0, surrogate_alpha=3.0),
         "atan takes surrogate_alpha only"),
        (lambda: IFNode(surrogate="sigmoid", surrogate_alpha=0.0), "surrogate_alpha must be a"),
        (lambda: IFNode(surrogate_width=-1.0), "surrogate_width must be a positive"),
    ],
)
def test_bad_options(make, match):
    with pytest.raises(ConfigError, match=match) as e:
        make()
    _one_line(e)


def test_check_input_can_be_disabled():
    node = IFNode(check_input=False)
    out = node(torch.tensor([[float("nan")]]))
    assert out.item() == 0.0
    assert not math.isnan(out.item())


# -- the neuron as data: dynamics records, reset choice, surrogate numbers, backend -------------
def test_dynamics_records():
    from multispike.functional import IF, LIF, PLIF

    assert PLIFNode(init_tau=3.0).dynamics_record == PLIF(init_tau=3.0)
    assert LIFNode(decay=0.5).dynamics_record == LIF(decay=0.5)
    assert IFNode().dynamics_record == IF()
    node = LIFNode(decay=0.5)
    assert node.dynamics_options() == {"decay": 0.5} and node.decay == 0.5
    node.decay = 0.75  # replaces the record; the kernels see it
    assert node.dynamics_record == LIF(0.75) and node.kernel_record.decay == 0.75
    x = _x(5, 2, 20, dtype=torch.float64)
    ref = reset_choice_reference(x, 0.5, decay=0.75)
    for backend in ("torch", "fused"):
        node.backend = backend
        assert torch.equal(node.double()(x), ref)
    assert PLIFNode(init_tau=3.0).dynamics_options() == {"init_tau": 3.0}
    assert IFNode().dynamics_options() == {}
    # the record is the charge
    v, xt = torch.tensor([0.4]), torch.tensor([1.0])
    assert torch.equal(LIF(0.25).charge(v, xt), lif_charge(v, xt, 0.25))
    w = PLIFNode(init_tau=3.0).w.detach()
    assert torch.equal(PLIF(3.0).charge(v, xt, w=w), plif_charge(v, xt, w))


def _reference_for(node, x, reset):
    kw = {"signed": node.rule.signed, "reset": reset, "v_reset": node.v_reset}
    deltas = getattr(node.rule, "deltas", None)
    if deltas is None and node.rule.name in ("mt", "ternary-mt"):
        deltas = (-0.5 * node.v_threshold, 0.5 * node.v_threshold)
    if node.dynamics == "plif":
        kw["tau"] = node.tau.item()
    elif node.dynamics == "lif":
        kw["decay"] = node.decay
    return reset_choice_reference(x, node.v_threshold, deltas or (), **kw)


@pytest.mark.parametrize("reset", ["main", "any", "soft"])
@pytest.mark.parametrize("firing", FIRINGS)
@pytest.mark.parametrize("cls", [PLIFNode, LIFNode, IFNode])
def test_reset_choice_equals_reference(cls, firing, reset):
    """Every rule x dynamics x reset, on the reference loop and the fused path, against the
    loop written from the equations (tests/reference.py)."""
    x = _x(8, 3, 40, dtype=torch.float64, scale=2.0)
    node = cls(firing=firing, reset=reset).double()
    ref = _reference_for(node, x, reset)
    for backend in ("torch", "fused"):
        node.backend = backend
        assert torch.equal(node(x), ref), backend


@pytest.mark.parametrize("firing", FIRINGS)
def test_reset_defaults_are_todays_behaviour(firing):
    """reset=None is the rule's default: "main" (binary, MT, ternary-MT), "any" (ternary,
    where it is "main" too): the spikes of the equations' loops above, unchanged."""
    node = LIFNode(firing=firing)
    assert node.reset == node.rule.default_reset
    assert node.reset == ("any" if firing == "ternary" else "main")
    x = _x(6, 3, 50, dtype=torch.float64)
    assert torch.equal(node.double()(x), _reference_for(node, x, "main"))
    if firing in ("binary", "ternary"):  # one threshold (pair): "main" and "any" coincide
        assert torch.equal(node(x), _reference_for(node, x, "any"))


def test_reset_golden_values():
    """Small sequences worked by hand from the equations (IF, so H = V + X)."""
    def run(firing, reset, x, **kw):
        node = IFNode(firing=firing, reset=reset, **kw)
        out, state = multistep(torch.tensor(x).unsqueeze(1), node.charge, node.params())
        return out.flatten().tolist(), state.v.item()

    # MT, thresholds 1, 0.5, 1.5. "main": 0.7 fires the 0.5 plane without reset, then
    # 0.7 + 0.5 = 1.2 fires 2 and resets; "any": 0.7 fires and resets, 0.5 fires 1 and resets;
    # "soft": 0.7 − 1·1 = −0.3, then 0.2 fires nothing
    assert run("mt", "main", [0.7, 0.5]) == ([1.0, 2.0], 0.0)
    assert run("mt", "any", [0.7, 0.5]) == ([1.0, 1.0], 0.0)
    out, v = run("mt", "soft", [0.7, 0.5])
    assert out == [1.0, 0.0] and v == pytest.approx(0.2)
    # soft reset keeps what exceeds the spikes paid for: 2.7 fires 3 (V_th = 1) and keeps −0.3
    out, v = run("mt", "soft", [2.7])
    assert out == [3.0] and v == pytest.approx(-0.3)
    # ternary-MT at V_th = 0.5, deltas (−0.2,): thresholds ±0.5, ±0.3
    assert run("ternary-mt", "main", [-0.4, -0.2], v_threshold=0.5, deltas=(-0.2,))[0] == [
        -1.0, -2.0]
    assert run("ternary-mt", "any", [-0.4, -0.2], v_threshold=0.5, deltas=(-0.2,))[0] == [
        -1.0, 0.0]
    out, v = run("ternary-mt", "soft", [-0.4, -0.2], v_threshold=0.5, deltas=(-0.2,))
    assert out == [-1.0, 0.0] and v == pytest.approx(-0.1)  # −0.4 + 0.5 = 0.1; 0.1 − 0.2
    # ternary: a soft reset keeps 1.3 − 0.5 = 0.8, which fires again; a hard one does not
    assert run("ternary", "soft", [1.3, 0.0], v_threshold=0.5)[0] == [1.0, 1.0]
    assert run("ternary", "main", [1.3, 0.0], v_threshold=0.5)[0] == [1.0, 0.0]


def test_soft_reset_gradient_golden():
    """IF, V_th = 1, rectangular width 0.5 (g = 2 on |x| <= 0.25), x = (1.2, 0.8), soft reset:
    H0 = 1.2 fires, V0 = 0.2, H1 = 1.0 fires. dL/dx1 = g(0) = 2;
    dL/dx0 = g(0.2) + g(0)·dV0/dH0 = 2 + 2·(1 − 1·g(0.2)) = 2 + 2·(1 − 2) = 0;
    with detach_reset dV0/dH0 = 1: 2 + 2 = 4."""
    for detach, expect in ((False, [0.0, 2.0]), (True, [4.0, 2.0])):
        node = IFNode(reset="soft", surrogate_width=0.5, detach_reset=detach).double()
        for backend in ("torch", "fused"):
            node.backend = backend
            x = torch.tensor([[1.2], [0.8]], dtype=torch.float64, requires_grad=True)
            node(x).sum().backward()
            assert x.grad.flatten().tolist() == pytest.approx(expect), (detach, backend)


def test_any_reset_gradient_golden():
    """MT deltas (−0.5,) at V_th = 1 (thresholds 1, 0.5), IF, rectangular width 1, x = (0.7, 0.1).
    "any" resets where H >= 0.5: H0 = 0.7 fires and resets, so V0 = H0·(1 − S0),
    dV0/dH0 = (1 − S0) − H0·g(H0 − 0.5) = −0.7 (surrogate); H1 = 0.1 and
    dL/dH1 = g(0.1 − 1) + g(0.1 − 0.5) = 0 + 1. dL/dx0 = g(−0.3) + g(0.2) + 1·(−0.7) = 1.3.
    "main" resets where H >= 1: V0 = H0, dV0/dH0 = 1 − 0.7·g(−0.3) = 0.3, dL/dx1 at
    H1 = 0.8: g(−0.2) + g(0.3) = 2; dL/dx0 = 2 + 2·0.3 = 2.6."""
    for reset, expect in (("any", [1.3, 1.0]), ("main", [2.6, 2.0])):
        node = IFNode(firing="mt", deltas=(-0.5,), reset=reset).double()
        for backend in ("torch", "fused"):
            node.backend = backend
            x = torch.tensor([[0.7], [0.1]], dtype=torch.float64, requires_grad=True)
            node(x).sum().backward()
            assert x.grad.flatten().tolist() == pytest.approx(expect), (reset, backend)


def test_surrogate_alpha_and_old_configs():
    node = IFNode(surrogate="atan", surrogate_alpha=3.0)
    assert node.surrogate.alpha == 3.0
    cfg = node.config()
    assert cfg["surrogate_alpha"] == 3.0 and "surrogate_width" not in cfg
    assert IFNode().config()["surrogate_width"] == 1.0
    assert build_neuron(cfg).config() == cfg
    # a checkpoint of an older version: surrogate_width for every surrogate, no reset key
    old = {"dynamics": "plif", "init_tau": 2.0, "v_threshold": 1.0, "v_reset": 0.0,
           "firing": "mt", "deltas": [-0.5, 0.5], "learn_amplitude": False,
           "surrogate": "sigmoid", "surrogate_width": 3.0, "detach_reset": False,
           "reset_grad": "surrogate"}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt without a deprecation warning
        again = build_neuron(old)
    assert again.surrogate.alpha == 3.0 and again.reset == "main"
    x = _x(4, 2, 30, dtype=torch.float64).requires_grad_(True)
    ref = PLIFNode(firing="mt", surrogate="sigmoid", surrogate_alpha=3.0).double()
    out = again.double()(x)
    assert torch.equal(out, ref(x))
    # the old spelling on a constructor still means alpha, and says so
    with pytest.warns(DeprecationWarning, match="surrogate_alpha=3.0"):
        legacy = IFNode(surrogate="atan", surrogate_width=3.0)
    assert legacy.surrogate == IFNode(surrogate="atan", surrogate_alpha=3.0).surrogate


def test_options_method_renamed():
    assert not hasattr(Neuron, "options")
    assert PLIFNode().dynamics_options() == {"init_tau": 2.0}


def test_path_says_which_backend_and_why():
    from multispike.kernels import cpu
    from multispike.monitor import record_activity

    node = LIFNode(firing="ternary")
    assert node.path.impl == ("cpu" if cpu.library() is not None else None)
    assert node.runs_fused == (cpu.library() is not None)
    node.backend = "torch"
    assert node.path.impl is None and "backend='torch'" in node.path.reason
    node.backend = "fused"
    assert node.runs_fused
    with record_activity(node):
        assert not node.runs_fused and "monitor" in node.path.reason
    assert node.runs_fused


def test_backend_decided_once_and_again_after_changes():
    from multispike import kernels

    node = PLIFNode(firing="mt")
    x = _x(3, 2, 16)
    calls = []
    choose = kernels.choose

    def counting(neuron, xs):
        calls.append(xs.dtype)
        return choose(neuron, xs)

    kernels.choose = counting
    try:
        for _ in range(3):
            node(x)
        assert calls == [torch.float32]  # decided on the first call, read after
        node(x.double())
        assert calls == [torch.float32, torch.float64]  # another dtype: decided once for it
        node.to(torch.float64)  # moved or cast: decided again
        node(x.double())
        assert len(calls) == 3
        node.reset = "soft"  # an option changed: decided again
        node(x.double())
        assert len(calls) == 4
    finally:
        kernels.choose = choose


class OutsideSubclass(LIFNode):
    """A subclass defined outside multispike.neurons that keeps the charge: fused."""

    def describe(self):
        return "leaky"


class OutsideCustomCharge(LIFNode):
    def charge(self, v, x):
        return 0.5 * v + x


def test_subclasses_dispatch_on_records():
    assert OutsideSubclass.__module__ != "multispike.neurons"
    node = OutsideSubclass(firing="mt", backend="fused")
    assert node.kernel_record is not None and node.runs_fused
    x = _x(4, 2, 30)
    ref = LIFNode(firing="mt", backend="torch")(x)
    assert torch.equal(node(x), ref)
    custom = OutsideCustomCharge(firing="mt")
    assert OutsideCustomCharge.custom_charge and custom.kernel_record is None
    assert not custom.runs_fused and "overrides charge()" in custom.path.reason
    ref = multistep(x, lambda v, xt: 0.5 * v + xt, custom.params())[0]
    assert torch.equal(custom(x), ref)
