"""Energy formula golden values, cost tables, measured rates and Ternary Spike Table 5."""

import json

import pytest
import torch

from multispike.analysis import (
    COST_TABLES,
    CostTable,
    LayerOps,
    NeuronLayerOps,
    estimate_energy,
    format_report,
    get_cost_table,
    measure_rates,
    trace_ops,
)
from multispike.deploy import event_model
from multispike.errors import ConfigError
from multispike.models import create
from tests.test_analysis_nets import TinySNN


def _layer(name, macs, runs, encoder=False, sources=()):
    return LayerOps(name, "conv", macs, runs, encoder, tuple(sources),
                    ("<input>",) if encoder else (), (), ())


def _ops():
    layers = [_layer("enc", 1000, 1, encoder=True), _layer("conv", 10_000, 4, sources=("n",))]
    neurons = [NeuronLayerOps("n", "binary", 500, 4, 1, 1, False)]
    return layers, neurons


def test_golden_hu2021():
    layers, neurons = _ops()
    r = estimate_energy(layers, 0.2, 4, "hu2021", neurons=neurons)
    assert r.first_layer_flops == 2000  # 2 x MACs, once for a static image
    assert r.sops == pytest.approx(0.2 * 4 * 10_000)
    assert r.spikes == pytest.approx(0.2 * 4 * 500) == r.signs
    # 2000 x 12.5 pJ + 8000 x 0.077 pJ + 400 x 3.7 pJ = 25000 + 616 + 1480 pJ
    assert r.energy_uj == pytest.approx(27096e-6)
    assert r.ann_energy_uj == pytest.approx(11_000 * 25.0e-6)


def test_golden_45nm_and_ternary_signs():
    layers, _ = _ops()
    neurons = [NeuronLayerOps("n", "ternary", 500, 4, 2, 1, True)]
    r = estimate_energy(layers, 0.25, 4, "45nm", neurons=neurons)
    # encoder 1000 MACs x 4.6 pJ, SOPs 10000 x 0.9 pJ; 45 nm bills no spikes
    assert r.energy_uj == pytest.approx((1000 * 4.6 + 0.25 * 4 * 10_000 * 0.9) * 1e-6)
    assert r.spikes == pytest.approx(500) and r.signs == pytest.approx(1000)  # two per ±1
    assert r.ann_energy_uj == pytest.approx(11_000 * 4.6e-6)


def test_measured_rates_per_layer():
    model = TinySNN(timesteps=2)
    ops = trace_ops(model, (1, 8, 8), timesteps=2)
    gen = torch.Generator().manual_seed(0)
    loader = [(torch.rand(5, 1, 8, 8, generator=gen) * 2, None) for _ in range(3)]
    rates = measure_rates(model, loader, batches=2, events=event_model)
    assert rates.batches == 2 and set(rates.rates) == {"a", "b"}
    r = estimate_energy(ops, rates.rates, 2, "hu2021")
    conv, fc = r.layers[1], r.layers[2]
    assert conv["rate"] == pytest.approx(rates.rates["a"])
    assert fc["rate"] == pytest.approx(rates.rates["b"])
    assert r.sops == pytest.approx(2 * (rates.rates["a"] * 3456 + rates.rates["b"] * 960))
    assert r.rate_source == "measured"
    with pytest.raises(ConfigError, match="no firing rate"):
        estimate_energy(ops, {"a": 0.1}, 2, "hu2021")


def test_rate_limits_follow_the_firing_rule():
    ops = trace_ops(TinySNN(firing="mt", deltas=(-0.25, 0.25)), (1, 8, 8), timesteps=2)
    assert estimate_energy(ops, 2.5, 2, "hu2021").sops > 0  # MT: up to 3 planes per step
    with pytest.raises(ConfigError, match=r"outside \[0, 3\]"):
        estimate_energy(ops, 3.5, 2, "hu2021")
    binary = trace_ops(TinySNN(), (1, 8, 8), timesteps=2)
    for bad in (-0.1, 1.2):
        with pytest.raises(ConfigError) as e:
            estimate_energy(binary, bad, 2, "hu2021")
        assert "\n" not in str(e.value)


def test_cost_tables(tmp_path):
    assert set(COST_TABLES) >= {"hu2021", "45nm"}
    hu = get_cost_table("hu2021")
    assert (hu.flop_pj, hu.sop_pj, hu.spike_pj) == (12.5, 0.077, 3.7)
    assert get_cost_table("45nm").mac_pj == 4.6 and get_cost_table("45nm").sop_pj == 0.9
    f = tmp_path / "mine.json"
    f.write_text(json.dumps({"mac_pj": 3.0, "sop_pj": 0.1}))
    t = get_cost_table(str(f))
    assert (t.name, t.flop_pj, t.spike_pj) == ("mine", 1.5, 0.0)
    assert get_cost_table({"name": "x", "mac_pj": 1, "sop_pj": 1}).name == "x"
    with pytest.raises(ConfigError, match="unknown cost table"):
        get_cost_table("22nm")
    with pytest.raises(ConfigError):
        CostTable("bad", -1.0, 1.0, 1.0, 0.0)
    with pytest.raises(ConfigError, match="missing"):
        get_cost_table({"mac_pj": 1})


def test_report_dict_and_table():
    layers, neurons = _ops()
    r = estimate_energy(layers, 0.2, 4, "hu2021", neurons=neurons)
    d = r.to_dict()
    for key in ("first_layer_flops", "sops", "spikes", "signs", "energy_uj", "ann_energy_uj"):
        assert key in d
    json.dumps(d)
    text = format_report(r)
    assert "enc" in text and "#SOPs" in text


# -- Ternary Spike Table 5 -------------------------------------------------------------------
TABLE5 = {  # firing: (rate, #Flops, #Sops, #Sign, energy µJ)
    "binary": (0.1642, 3.54e6, 71.20e6, 0.11e6, 50.14),
    "ternary": (0.1827, 3.54e6, 79.21e6, 0.23e6, 51.20),
}


@pytest.mark.parametrize("firing", ["binary", "ternary"])
def test_table5_reproduction(firing):
    rate, flops, sops, signs, energy = TABLE5[firing]
    model = create("resnet20m", num_classes=10, firing=firing, timesteps=2)
    ops = trace_ops(model, (3, 32, 32), timesteps=2)
    assert ops.encoder[0].macs == 1_769_472  # 64 x 32 x 32 x 27
    r = estimate_energy(ops, rate, 2, "hu2021")
    assert r.first_layer_flops == pytest.approx(flops, rel=0.01)
    assert r.sops == pytest.approx(sops, rel=0.02)
    assert r.energy_uj == pytest.approx(energy, rel=0.02)
    assert r.signs == pytest.approx(signs, rel=0.05)  # the paper rounds #Sign to 0.01M
