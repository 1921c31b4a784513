"""Golden values and reference loops for the pure functions in multispike.functional."""

from functools import partial

import pytest
import torch

from multispike.errors import ConfigError
from multispike.functional import (
    Binary,
    MultiThreshold,
    NeuronParams,
    NeuronState,
    Rectangular,
    Ternary,
    TernaryMultiThreshold,
    get_firing,
    hard_reset,
    if_charge,
    lif_charge,
    multistep,
    plif_charge,
    plif_tau,
    reset_spike,
    step,
)

from .reference import lif_ternary_reference, plif_mt_reference, ternary_mt_reference


def test_heaviside_at_zero_fires():
    """Θ(0) = 1 (MT-SNN Eq 4): a membrane exactly at threshold fires."""
    b, s = Binary().fire(torch.tensor([0.999, 1.0, 1.001]), 1.0, Rectangular())
    assert b.tolist() == [0.0, 1.0, 1.0]
    assert s.tolist() == [0.0, 1.0, 1.0]


def test_mt_golden_values():
    """MT-SNN Eq 10-11 at V_th = 1, deltas (-0.5, 0.5): thresholds 0.5, 1, 1.5."""
    h = torch.tensor([0.2, 0.5, 0.9, 1.0, 1.49, 1.5, 3.0, -2.0])
    b, s = MultiThreshold(deltas=(-0.5, 0.5)).fire(h, 1.0, Rectangular())
    assert b.tolist() == [0, 1, 1, 2, 2, 3, 3, 0]
    assert s.tolist() == [0, 0, 0, 1, 1, 1, 1, 0]  # only the main spike resets


def test_ternary_golden_values():
    """Ternary Eq 8: +1 at u >= V_th, -1 at u <= -V_th; reset mask |b|."""
    h = torch.tensor([-0.6, -0.5, -0.49, 0.0, 0.49, 0.5, 2.0])
    b, s = Ternary().fire(h, 0.5, Rectangular())
    assert b.tolist() == [-1, -1, 0, 0, 0, 1, 1]
    assert s.tolist() == [1, 1, 0, 0, 0, 1, 1]


def test_ternary_mt_golden_values():
    h = torch.tensor([-1.0, -0.8, -0.5, 0.0, 0.5, 0.79, 0.8, 1.0])
    b, s = TernaryMultiThreshold(deltas=(0.3,)).fire(h, 0.5, Rectangular())
    assert b.tolist() == [-2, -2, -1, 0, 1, 1, 2, 2]
    assert s.tolist() == [1, 1, 1, 0, 1, 1, 1, 1]


def test_planes_sum_to_spike_value():
    h = torch.randn(1000) * 2
    for rule in (Binary(), MultiThreshold(), Ternary(), TernaryMultiThreshold(deltas=(-0.2, 0.4))):
        b, _ = rule.fire(h, 0.5, Rectangular())
        planes = rule.planes(h, 0.5)
        assert planes.shape[0] == len(rule.plane_signs) == rule.n_planes(0.5)
        signs = torch.tensor(rule.plane_signs, dtype=h.dtype)
        assert torch.equal(torch.tensordot(signs, planes, dims=1), b)


def test_default_deltas_follow_threshold():
    """Default deltas are (-0.5, +0.5) x V_th: both signs, |delta| >= 0.3 at V_th = 1."""
    assert MultiThreshold().thresholds(1.0) == (1.0, 0.5, 1.5)
    assert MultiThreshold().thresholds(0.5) == (0.5, 0.25, 0.75)


@pytest.mark.parametrize(
    "deltas, match",
    [
        ((0.5, -0.5), "not sorted"),
        ((0.3, 0.3), "duplicates"),
        ((0.0, 0.5), "contain 0"),
        ((), "empty"),
        ((float("nan"),), "finite"),
    ],
)
def test_bad_deltas(deltas, match):
    with pytest.raises(ConfigError, match=match):
        MultiThreshold(deltas=deltas)


def test_delta_below_minus_threshold_rejected():
    with pytest.raises(ConfigError, match="fire at rest"):
        MultiThreshold(deltas=(-1.0,)).validate(1.0)


def test_get_firing_names():
    assert isinstance(get_firing("binary"), Binary)
    assert isinstance(get_firing("ternary_mt", deltas=(0.3,)), TernaryMultiThreshold)
    with pytest.raises(ConfigError, match="unknown firing 'quaternary'; choose one of"):
        get_firing("quaternary")
    with pytest.raises(ConfigError, match="deltas apply"):
        get_firing("binary", deltas=(0.3,))


def test_one_firing_vocabulary():
    """The rule classes answer what the other layers ask (options, planes, the FC fallback);
    the model-level names and the deploy's plane test are read from them, not kept apart."""
    from multispike import layers
    from multispike.deploy.planes import is_multi_plane
    from multispike.functional import FIRING_RULES, firing

    assert layers.FIRINGS == (*FIRING_RULES, "ann")
    assert layers.MT_FIRINGS == ("mt", "ternary-mt")
    assert layers.INTEGER_FIRINGS == ("integer", "signed-integer")
    for name, cls in FIRING_RULES.items():
        assert cls.name == name and firing.firing_key(name.upper().replace("-", "_")) == name
        rule = get_firing(name)
        # more than one plane per sign: exactly the rules deployment splits
        assert rule.multi_plane == is_multi_plane(rule) == (
            len(rule.plane_signs) > (2 if rule.signed else 1))
    assert [n for n, c in FIRING_RULES.items() if c.single_threshold] == ["mt", "ternary-mt"]
    assert get_firing("integer", levels=1).multi_plane is False
    assert get_firing("signed-integer", levels=2).multi_plane is True
    with pytest.raises(ConfigError, match="unknown firing 'relu'; choose one of binary"):
        layers.model_firing("relu")
    assert layers.model_firing("ANN") == "ann"


def test_charge_equations():
    v, x = torch.tensor([0.4]), torch.tensor([1.0])
    assert if_charge(v, x).item() == pytest.approx(1.4)
    assert lif_charge(v, x, 0.25).item() == pytest.approx(1.1)
    w = torch.tensor(0.0)  # tau = 2
    assert plif_tau(w).item() == 2.0
    assert plif_charge(v, x, w).item() == pytest.approx(0.5 * 0.4 + 0.5)
    # Eq 6 with V_reset = 0 equals Eq 8
    assert plif_charge(v, x, w, v_reset=-0.0).item() == pytest.approx(0.7)
    # Eq 6 with V_reset = -1: H = V + (X - (V - V_reset)) / tau
    assert plif_charge(v, x, w, v_reset=-1.0).item() == pytest.approx(0.4 + (1.0 - 1.4) / 2)
    assert hard_reset(torch.tensor([0.3, 1.2]), torch.tensor([0.0, 1.0]), -0.1).tolist() == [
        pytest.approx(0.3),
        pytest.approx(-0.1),
    ]


@pytest.mark.parametrize("deltas", [(), (-0.5, 0.5), (-0.3, 0.2, 0.6)])
def test_multistep_plif_equals_reference(deltas):
    torch.manual_seed(0)
    x = torch.randn(6, 4, 33, dtype=torch.float64) * 1.5
    w = torch.tensor(0.3, dtype=torch.float64)
    rule = MultiThreshold(deltas=deltas) if deltas else Binary()
    out, _ = multistep(x, partial(plif_charge, w=w), NeuronParams(v_threshold=1.0, rule=rule))
    ref = plif_mt_reference(x, plif_tau(w), 1.0, deltas)
    assert torch.equal(out, ref)


def test_multistep_ternary_equals_reference():
    torch.manual_seed(1)
    x = torch.randn(5, 3, 40)
    a = torch.tensor(0.7)
    out, _ = multistep(
        x, partial(lif_charge, decay=0.25), NeuronParams(0.5, rule=Ternary(), amplitude=a)
    )
    assert torch.equal(out, lif_ternary_reference(x, 0.25, 0.5, a=a))


def test_multistep_ternary_mt_equals_reference():
    torch.manual_seed(2)
    x = torch.randn(5, 3, 40)
    rule = TernaryMultiThreshold(deltas=(-0.2, 0.3))
    out, _ = multistep(x, partial(lif_charge, decay=0.5), NeuronParams(0.5, rule=rule))
    assert torch.equal(out, ternary_mt_reference(x, 0.5, 0.5, (-0.2, 0.3)))


def test_step_state_carries_membrane():
    """Streaming: steps threaded by hand equal multistep; the final state matches too."""
    torch.manual_seed(3)
    x = torch.randn(4, 2, 7)
    charge = partial(lif_charge, decay=0.25)
    params = NeuronParams(0.5, rule=Ternary())
    seq, last = multistep(x, charge, params)
    state = NeuronState(torch.zeros(2, 7))
    outs = []
    for t in range(4):
        out, state, _ = step(x[t], state, charge, params)
        outs.append(out)
    assert torch.equal(torch.stack(outs), seq)
    assert torch.equal(state.v, last.v)


def test_reset_uses_main_spike_not_amplitude():
    """With amplitude a, the reset still uses b in {0,1} (Ternary Eq 13: (1 - |b|))."""
    x = torch.tensor([[0.6], [0.0]])
    params = NeuronParams(0.5, rule=Ternary(), amplitude=torch.tensor(3.0))
    out, state = multistep(x, partial(lif_charge, decay=0.25), params)
    assert out.flatten().tolist() == [3.0, 0.0]
    assert state.v.item() == 0.0  # reset to 0 at t=0, decays to 0 + 0


def test_detach_reset_cuts_reset_gradient():
    """IF, V_th = 1, x = (1.2, 0.8): the spike at t=0 resets V; the rectangular window is
    open at both steps. Through the reset dV0/dH0 = (1 - S0) - H0 * g(H0 - 1) = -1.2, so
    dL/dx0 = g(H0 - 1) + g(H1 - 1) * (-1.2) = 1 - 1.2; detached, the second term vanishes."""
    x = torch.tensor([[1.2], [0.8]], requires_grad=True)
    grads = {}
    for detach in (False, True):
        x.grad = None
        out, _ = multistep(x, if_charge, NeuronParams(1.0, detach_reset=detach))
        out.sum().backward()
        grads[detach] = x.grad.flatten().tolist()
    assert grads[False] == [pytest.approx(-0.2), 1.0]
    assert grads[True] == [1.0, 1.0]


@pytest.mark.parametrize("rule", [Binary(), Ternary(), TernaryMultiThreshold(deltas=(0.25,))])
def test_reset_grad_spike_is_zero_where_nothing_fired(rule):
    """reset_grad="spike": S = |b_main|, same values as s; dS/dH = sign(b_main)·db_main/dH,
    zero where no main spike fired. "surrogate": dS/dH = g(H − θ) − g(−H − θ) everywhere."""
    h = torch.tensor([-1.3, -0.9, -0.4, 0.0, 0.3, 0.7, 1.1, 1.6], requires_grad=True)
    sg = Rectangular(width=1.0)
    g = sg.derivative
    _, s = rule.fire(h, 1.0, sg)
    fired = s.detach()
    for reset_grad in ("surrogate", "spike"):
        params = NeuronParams(1.0, rule=rule, surrogate=sg, reset_grad=reset_grad)
        _, s = rule.fire(h, 1.0, sg)
        S = reset_spike(h, s, params)
        assert torch.equal(S.detach(), fired)
        (dS,) = torch.autograd.grad(S.sum(), h)
        hd = h.detach()
        if rule.signed:
            if reset_grad == "surrogate":
                expect = g(hd - 1.0) - g(-hd - 1.0)
            else:
                sign = (hd >= 1.0).double() - (hd <= -1.0).double()
                expect = sign.to(hd.dtype) * (g(hd - 1.0) + g(-hd - 1.0))
        else:
            expect = g(hd - 1.0) * (1.0 if reset_grad == "surrogate" else fired)
        assert torch.equal(dS, expect), reset_grad
        if reset_grad == "spike":
            assert torch.all(dS[fired == 0] == 0)
    detached = reset_spike(h, s, NeuronParams(1.0, rule=rule, detach_reset=True,
                                              reset_grad="spike"))
    assert not detached.requires_grad


def test_multistep_starts_at_v_reset():
    """IF, V_th = 1, V_reset = 0.5: x = 0.6 fires at t = 0 (0.5 + 0.6 >= 1); from 0 it would not."""
    x = torch.tensor([[0.6], [0.3], [0.3]])
    out, state = multistep(x, if_charge, NeuronParams(1.0, v_reset=0.5))
    assert out.flatten().tolist() == [1.0, 0.0, 1.0]
    assert state.v.item() == pytest.approx(0.5)
    from_zero, _ = multistep(x, if_charge, NeuronParams(1.0, v_reset=0.5),
                             state=NeuronState(torch.zeros(1)))
    assert from_zero.flatten().tolist() == [0.0, 0.0, 1.0]


# -- dynamics records and the reset choice ----------------------------------------------------
def test_dynamics_records_validate_and_charge():
    from multispike.functional import DYNAMICS, IF, LIF, PLIF

    assert set(DYNAMICS) == {"plif", "lif", "if"} and DYNAMICS["lif"] is LIF
    v, x = torch.tensor([0.4]), torch.tensor([1.0])
    assert IF().charge(v, x).item() == pytest.approx(1.4)
    assert LIF(0.25).charge(v, x).item() == pytest.approx(1.1)
    assert PLIF(2.0).init_w() == pytest.approx(0.0)  # tau = 1 + exp(0) = 2
    assert PLIF(2.0).charge(v, x, w=torch.tensor(0.0)).item() == pytest.approx(0.7)
    assert PLIF(2.0).charge(v, x, w=torch.tensor(0.0), v_reset=-1.0).item() == pytest.approx(0.2)
    assert LIF(0.5).options() == {"decay": 0.5} and IF().options() == {}
    for make, match in ((lambda: LIF(1.5), "decay must lie in"),
                        (lambda: LIF(float("nan")), "finite number"),
                        (lambda: PLIF(1.0), "init_tau must be > 1"),
                        (lambda: PLIF(2.0).charge(v, x), "needs the learnable w")):
        with pytest.raises(ConfigError, match=match):
            make()


def test_reset_thresholds_per_rule():
    """"main" resets at V_th, "any" at the lowest threshold; they coincide for binary,
    ternary and MT with positive deltas; each rule's default is today's behaviour."""
    assert Binary().reset_threshold(1.0, "any") == Binary().reset_threshold(1.0, "main") == 1.0
    assert Ternary().reset_threshold(0.5, "any") == 0.5
    mt = MultiThreshold(deltas=(-0.5, 0.5))
    assert mt.reset_threshold(1.0, "main") == 1.0 and mt.reset_threshold(1.0, "any") == 0.5
    assert MultiThreshold(deltas=(0.5,)).reset_threshold(1.0, "any") == 1.0
    assert TernaryMultiThreshold(deltas=(-0.2,)).reset_threshold(0.5, "any") == 0.3
    assert [r.default_reset for r in (Binary(), mt, Ternary(), TernaryMultiThreshold())] == [
        "main", "main", "any", "main"]


@pytest.mark.parametrize("rule", [MultiThreshold(deltas=(-0.5,)),
                                  TernaryMultiThreshold(deltas=(-0.5,))])
def test_any_reset_spike_values_and_gradients(rule):
    """reset="any": S = Θ(H − θ_r) (+ Θ(−H − θ_r)), θ_r = 0.5 the lowest threshold;
    dS/dH = g(H − θ_r) (− g(−H − θ_r)) ("surrogate") or sign(b_r)·(…) where it fired
    ("spike")."""
    from multispike.functional import reset as reset_fn

    h = torch.tensor([-1.3, -0.7, -0.4, 0.0, 0.3, 0.7, 1.1], requires_grad=True)
    sg = Rectangular(width=1.0)
    g = sg.derivative
    hd = h.detach()
    fired = (hd >= 0.5).double() + (rule.signed * (hd <= -0.5)).double()
    for reset_grad in ("surrogate", "spike"):
        params = NeuronParams(1.0, rule=rule, surrogate=sg, reset_grad=reset_grad, reset="any")
        b, s = rule.fire(h, 1.0, sg)
        S = reset_spike(h, s, params)
        assert S.detach().tolist() == fired.tolist()
        (dS,) = torch.autograd.grad(S.sum(), h)
        pos, neg = g(hd - 0.5), (g(-hd - 0.5) if rule.signed else torch.zeros_like(hd))
        if reset_grad == "surrogate":
            expect = pos - neg
        else:
            sign = (hd >= 0.5).to(hd.dtype) - (rule.signed * (hd <= -0.5)).to(hd.dtype)
            expect = sign * (pos + neg)
        assert torch.equal(dS, expect), reset_grad
        v = reset_fn(h, b, s, params)
        assert torch.equal(v.detach(), hd * (1 - fired.to(hd.dtype)))


def test_soft_reset_subtracts_emitted_value_before_amplitude():
    """V = H − b·V_th with b the emitted value, never a·b (and V_reset stays out of it)."""
    x = torch.tensor([[1.3], [0.0]])
    params = NeuronParams(0.5, rule=Ternary(), amplitude=torch.tensor(3.0), reset="soft")
    out, state = multistep(x, partial(lif_charge, decay=1.0), params)
    assert out.flatten().tolist() == [3.0, 3.0]  # 1.3 fires, keeps 0.8, fires again
    assert state.v.item() == pytest.approx(0.3)
    rule = MultiThreshold(deltas=(-0.5, 0.5))
    out, state = multistep(torch.tensor([[2.7]]), if_charge,
                           NeuronParams(1.0, rule=rule, reset="soft"))
    assert out.item() == 3.0 and state.v.item() == pytest.approx(-0.3)


def test_reset_choice_errors():
    from multispike.functional import check_reset, resolve_reset

    with pytest.raises(ConfigError, match="unknown reset 'hard'; choose one of main, any, soft"):
        resolve_reset(Binary(), "hard")
    with pytest.raises(ConfigError, match="use v_reset=0"):
        check_reset(Binary(), "soft", 0.2, "surrogate", False)
    with pytest.raises(ConfigError, match="reset_grad='spike'"):
        check_reset(Ternary(), "soft", 0.0, "spike", False)
    assert check_reset(Ternary(), "soft", 0.0, "spike", True) == "soft"  # detached: no gradient
    x = torch.tensor([[1.3]], requires_grad=True)
    with pytest.raises(ConfigError, match="reset_grad='spike'"):
        multistep(x, if_charge, NeuronParams(1.0, reset="soft", reset_grad="spike"))
