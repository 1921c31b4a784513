"""Operation counts against hand-computed MACs of small networks."""

import pytest
import torch
from torch import nn

from multispike.analysis import conv_macs, count_ops, linear_macs, ops, trace_ops
from multispike.errors import ConfigError, InputError
from multispike.models import create, list_models
from multispike.neurons import IFNode, LIFNode
from tests.test_analysis_nets import Fold, ShortcutNet, TinySNN
from tests.test_deploy import TINY


def test_conv_with_stride_padding_groups():
    # 4 -> 8 channels, 3x3, stride 2, pad 1, groups 2 on 9x9: out 8x5x5, 2 inputs per group
    net = nn.Sequential(Fold(nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)))
    (layer,) = count_ops(net, (4, 9, 9), timesteps=3)
    assert layer.out_shape == (8, 5, 5)
    assert layer.macs == 8 * 5 * 5 * (4 // 2) * 3 * 3 == 3600
    assert layer.runs == 3 and layer.macs_per_inference == 3 * 3600
    assert layer.encoder and not layer.spiking


def test_rectangular_kernel_dilation_and_no_bias_counted():
    conv = nn.Conv2d(3, 5, (1, 3), padding=(0, 2), dilation=(1, 2), bias=True)
    (layer,) = count_ops(nn.Sequential(Fold(conv)), (3, 4, 6), timesteps=1)
    # out 5 x 4 x 6 elements, each 3 channels x 1 x 3 taps; the bias adds nothing
    assert layer.macs == 5 * 4 * 6 * 3 * 3


def test_linear_and_time_folded_stack():
    net = nn.Sequential(
        Fold(nn.Conv2d(3, 8, 3, padding=1)),  # 8*8*8 * 27 = 13824
        IFNode(),
        Fold(nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2)),  # 16*4*4 * 36 = 9216
        LIFNode(firing="ternary"),
        Fold(nn.Flatten()),
        nn.Linear(256, 10),  # applied to [T, B, 256] directly: 2560 per step
    )
    ops = trace_ops(net, (3, 8, 8), timesteps=4)
    got = [(layer.name, layer.macs, layer.runs) for layer in ops.layers]
    assert got == [("0.m", 13824, 4), ("2.m", 9216, 4), ("5", 2560, 4)]
    assert [layer.sources for layer in ops.layers] == [(), ("1",), ("3",)]
    assert [layer.encoder for layer in ops.layers] == [True, False, False]
    assert ops.spiking_macs == 9216 + 2560 and ops.total_macs == 13824 + 9216 + 2560
    assert [(n.name, n.neurons, n.firing, n.signed) for n in ops.neurons] == [
        ("1", 512, "binary", False), ("3", 256, "ternary", True)]
    assert conv_macs(net[0].m, (8, 8, 8)) == 13824 and linear_macs(net[5]) == 2560


def test_batch_size_does_not_matter_and_per_step_calls():
    class PerStep(nn.Module):  # calls the linear layer once per time step on [B, F]
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 3)

        def forward(self, x):
            return torch.stack([self.fc(x[t].flatten(1)) for t in range(x.shape[0])])

    (layer,) = count_ops(PerStep(), (3, 2, 2), timesteps=5)
    assert (layer.macs, layer.runs) == (36, 5)


def test_static_encoder_runs_once_and_model_timesteps_restored():
    model = TinySNN(timesteps=7)
    ops = trace_ops(model, (1, 8, 8), timesteps=3)
    assert model.timesteps == 7 and model.training
    stem, conv, fc = ops.layers
    assert (stem.name, stem.macs, stem.runs, stem.encoder) == ("stem_conv", 4 * 64 * 9, 1, True)
    assert (conv.macs, conv.runs, conv.sources) == (6 * 16 * 4 * 9, 3, ("a",))
    assert (fc.macs, fc.sources) == (96 * 10, ("b",))
    assert ops.static_input and ops.encoder == [stem]


def test_event_input_runs_encoder_every_step():
    ops = trace_ops(ShortcutNet(), (2, 6, 6), timesteps=2, event=True)
    enc = ops.layers[0]
    assert enc.encoder and enc.runs == 2 and not ops.static_input


def test_shortcut_reads_the_neuron_that_feeds_it():
    ops = trace_ops(ShortcutNet(), (2, 6, 6), timesteps=2)
    by = {layer.name: layer for layer in ops.layers}
    assert by["main.m"].sources == ("a",)
    assert by["main2.m"].sources == ("b",)
    assert by["short.m.1"].sources == ("a",)  # through the average pooling
    assert by["short.m.1"].macs == 8 * 3 * 3 * 4
    assert by["enc.m"].analog_sources == ("<input>",)


def test_mt_neurons_can_fire_several_planes():
    net = nn.Sequential(Fold(nn.Linear(4, 6)), IFNode(firing="mt", deltas=(-0.5, 0.5, 1.0)),
                        Fold(nn.Linear(6, 2)))
    ops = trace_ops(net, (4,), timesteps=2)
    (n,) = ops.neurons
    assert (n.neurons, n.planes, n.max_spikes) == (6, 4, 4)
    assert ops.max_spikes == 4


def test_ann_layers_are_analog():
    net = nn.Sequential(Fold(nn.Conv2d(1, 2, 3)), nn.ReLU(), Fold(nn.Conv2d(2, 2, 1)))
    enc, second = count_ops(net, (1, 5, 5), timesteps=1)
    assert enc.encoder and not second.encoder and not second.spiking
    assert second.analog_sources == ("0.m",)


def test_bad_input():
    with pytest.raises(ConfigError, match="timesteps"):
        trace_ops(TinySNN(), (1, 8, 8), timesteps=0)
    with pytest.raises(ConfigError, match="no nn.Conv"):
        trace_ops(nn.Sequential(IFNode()), (4,), timesteps=1)
    with pytest.raises(ConfigError, match="frames"):
        trace_ops(ShortcutNet(), (3, 2, 6, 6), timesteps=2)


# -- the graph walk and the tracer give the same counts ------------------------------------------
def _traced(model, input_shape, timesteps, **kw):
    """``trace_ops`` through the tracer adapter (forward hooks), whatever the model."""
    probe = ops._probe(model, input_shape, timesteps, kw.get("event"), kw.get("time_first"))
    return ops._model_ops(model, ops._hook_records(model, probe), probe)


def _both(model, input_shape, timesteps, **kw):
    return (trace_ops(model, input_shape, timesteps, **kw).to_dict(),
            _traced(model, input_shape, timesteps, **kw).to_dict())


#: models cheap enough to trace under every firing family (the others: default and ANN)
EVERY_FIRING = ("digits_net", "resnet20m", "vgg9")


@pytest.mark.parametrize("name", list_models())
def test_the_graph_walk_equals_the_tracer_on_every_model(name):
    """Every registered model with its default firing and as the ANN twin (three of them with
    every firing family), static images (the stem runs once), event frames and time-first
    static input: the same ModelOps both ways."""
    opts, side = TINY[name]
    every = ("binary", "mt", "ternary", "integer") if name in EVERY_FIRING else ()
    for firing in (None, *every, "ann"):
        model = create(name, **{**opts, "firing": firing})
        shape = (model.in_channels, side, side)
        graph, traced = _both(model, shape, 2)
        assert graph == traced, (name, firing)
        assert graph["layers"][0]["runs"] == 1 and graph["neurons"] or firing == "ann"
    model = create(name, **opts)
    for kw in ({"event": True}, {"time_first": True}):
        graph, traced = _both(model, (model.in_channels, side, side), 2, **kw)
        assert graph == traced and graph["layers"][0]["runs"] == 2, (name, kw)


def test_the_graph_walk_equals_the_tracer_on_voting_heads_and_nir_graphs():
    for name in ("vgg8", "digits_net"):
        model = create(name, **TINY[name][0], output="vote", mt_on_fc=True)
        graph, traced = _both(model, (model.in_channels, TINY[name][1], TINY[name][1]), 4)
        assert graph == traced and graph["neurons"][-1]["name"] == "head.act"
    pytest.importorskip("nir")
    from multispike.deploy import export_nir
    from multispike.deploy.nir_import import from_nir

    model = from_nir(export_nir(create("resnet20m", firing="binary"), input_shape=(3, 16, 16)))
    graph, traced = _both(model, (3, 16, 16), 2)
    assert graph == traced and graph["layers"][0]["runs"] == 2  # its forward runs every node


def test_the_graph_walk_restores_mode_and_timesteps():
    model = create("digits_net", timesteps=5)
    ops_ = trace_ops(model, (1, 8, 8), timesteps=3)
    assert model.timesteps == 5 and model.training
    assert [n.runs for n in ops_.neurons] == [3] * len(ops_.neurons)
    with pytest.raises(InputError, match="channels"):
        trace_ops(model, (3, 8, 8), timesteps=2)
    assert model.timesteps == 5 and model.training


def test_a_deployed_model_is_refused_in_one_line():
    """Split MT planes wrap each conv, linear and neuron layer, and the plane convolutions run
    on the wrapped weights: neither the graph nor the tracer would count them (the counts
    would silently miss layers). The trained model is counted instead."""
    from multispike.deploy import fold_amplitudes, split_planes

    model = create("digits_net", firing="mt").eval()
    deployed = split_planes(fold_amplitudes(model))
    assert ops._wrapped(deployed) and not ops._wrapped(model)
    with pytest.raises(ConfigError, match="is a deployed model") as e:
        trace_ops(deployed, (1, 8, 8), 2)
    assert "\n" not in str(e.value)
    assert [layer.name for layer in trace_ops(model, (1, 8, 8), 2).layers] == [
        "stem_conv", "features.0.conv", "fc1", "head.fc"]
