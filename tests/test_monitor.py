"""Opt-in firing statistics: every non-zero spike counts, -1 included; MT counts planes."""

import torch
from torch import nn

from multispike.monitor import record_activity
from multispike.neurons import IFNode, LIFNode, PLIFNode


def test_ternary_counts_minus_one():
    node = LIFNode(firing="ternary")  # V_th = 0.5
    x = torch.tensor([[0.6, -0.7, 0.1, 0.0]])  # [T=1, B=4]
    with record_activity(node) as mon:
        node(x)
    (row,) = mon.summary()
    assert row["spikes"] == 2 and row["neuron_steps"] == 4
    assert row["rate"] == 0.5
    assert row["value_fractions"] == {-1: 0.25, 0: 0.5, 1: 0.25}
    assert row["plane_rates"] == [0.25, 0.25]


def test_mt_counts_every_plane():
    node = IFNode(firing="mt", deltas=(-0.5, 0.5))  # thresholds 1, 0.5, 1.5
    x = torch.tensor([[0.7, 1.2, 2.0, 0.1]])
    with record_activity(node) as mon:
        out = node(x)
    assert out.flatten().tolist() == [1, 2, 3, 0]
    (row,) = mon.summary()
    assert row["spikes"] == 6  # 1 + 2 + 3 planes
    assert row["rate"] == 1.5
    assert row["plane_rates"] == [0.5, 0.75, 0.25]  # main, V_th - 0.5, V_th + 0.5
    assert row["value_fractions"] == {0: 0.25, 1: 0.25, 2: 0.25, 3: 0.25}


def test_named_layers_per_timestep_and_membrane_samples():
    model = nn.Sequential(PLIFNode(), LIFNode(firing="ternary", learn_amplitude=True))
    x = torch.randn(3, 5, 40)
    with record_activity(model, membrane_samples=25) as mon:
        y = model(x)
    rows = {r["layer"]: r for r in mon.summary()}
    assert set(rows) == {"0", "1"}
    assert set(rows["0"]["rate_per_t"]) == {0, 1, 2}
    assert rows["1"]["spikes"] == float((y != 0).sum())
    assert mon.layers["1"].membrane_samples(2).shape == (25,)
    # hooks are gone after the block: statistics cost nothing when off
    assert all(m.monitor is None for m in model)
    assert torch.equal(model(x), y)


def test_monitor_forces_the_reference_loop_visibly():
    """The monitor needs every step's H: the layers say they run the reference loop while it
    records, and their fused path (with the same spikes) once it stops."""
    node = LIFNode(firing="mt", backend="fused")
    x = torch.randn(4, 3, 20)
    assert node.runs_fused
    fused = node(x)
    with record_activity(node) as mon:
        assert node.path.impl is None and "monitor" in node.path.reason
        recorded = node(x)
    assert mon.summary()[0]["neuron_steps"] == x.numel()
    assert node.runs_fused and torch.equal(recorded, fused)
