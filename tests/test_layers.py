"""Layers of the model zoo: time folding, BN variants, voting, neuron slots, residual blocks."""

import math

import pytest
import torch
from torch import nn

from multispike.errors import ConfigError
from multispike.layers import (
    NORMS,
    BatchNormFold,
    BatchNormPerStep,
    ConvUnit,
    MembraneBlock,
    NeuronFactory,
    Record,
    SpikeBlock,
    TDBatchNorm,
    TimeDropout,
    TimeFold,
    VotingLayer,
    build_norm,
    get_norm,
    run_node,
)
from multispike.neurons import LIFNode, PLIFNode


def _x(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


# -- time folding ------------------------------------------------------------------------------
def test_timefold_equals_loop_over_steps():
    conv = nn.Conv2d(3, 5, 3, padding=1).double()
    x = _x(4, 2, 3, 8, 8)
    y = TimeFold(conv)(x)
    assert y.shape == (4, 2, 5, 8, 8)
    ref = torch.stack([conv(x[t]) for t in range(4)])
    torch.testing.assert_close(y, ref)


def test_timedropout_shares_mask_over_time():
    drop = TimeDropout(0.5).train()
    x = torch.ones(6, 3, 40)
    y = drop(x)
    assert torch.equal(y, y[:1].expand_as(y))  # same mask at every step
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(drop.eval()(x), x)
    with pytest.raises(ConfigError):
        TimeDropout(1.0)


# -- BN variants -------------------------------------------------------------------------------
def test_bn_fold_is_batchnorm_over_t_times_b():
    x = _x(3, 4, 6, 5, 5)
    norm = BatchNormFold(6).double().train()
    ref = nn.BatchNorm2d(6).double().train()
    torch.testing.assert_close(norm(x), ref(x.flatten(0, 1)).unflatten(0, (3, 4)))
    torch.testing.assert_close(norm.bn.running_var, ref.running_var)


@pytest.mark.parametrize("name", list(NORMS))
def test_every_norm_takes_conv_and_fc_shapes(name):
    norm = build_norm(name, 6, timesteps=3).double()
    for shape in [(3, 4, 6, 5, 5), (3, 4, 6)]:
        y = norm(_x(*shape))
        assert y.shape == shape
        # normalised per channel over everything but C (per step for per-step BN)
        dims = (1,) + tuple(range(3, len(shape))) if name == "per-step" else None
        mean = y.mean(dims) if dims else y.transpose(0, 2).flatten(1).mean(1)
        torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-9, rtol=0)


def test_per_step_bn_uses_one_bn_per_step_and_reuses_the_last():
    norm = BatchNormPerStep(4, timesteps=2).double()
    with torch.no_grad():
        for i, bn in enumerate(norm.bns):
            bn.weight.fill_(i + 1.0)
    x = _x(4, 8, 4, 3, 3)
    y = norm(x)  # T=4 > 2 trained steps: steps 2, 3 use bns[1]
    assert y.shape == x.shape
    for t in range(4):
        ref = nn.BatchNorm2d(4).double()
        with torch.no_grad():
            ref.weight.fill_(min(t, 1) + 1.0)
        torch.testing.assert_close(y[t], ref(x[t]))
    assert norm(x[:1]).shape == (1, 8, 4, 3, 3)
    with pytest.raises(ConfigError):
        BatchNormPerStep(4, timesteps=0)


def test_tdbn_scales_by_alpha_vth():
    x = _x(3, 4, 6, 5, 5)
    norm = TDBatchNorm(6, v_threshold=0.5, alpha=1 / math.sqrt(2)).double()
    plain = BatchNormFold(6).double()
    torch.testing.assert_close(norm(x), plain(x) * 0.5 / math.sqrt(2))
    assert "alpha" in repr(norm)


def test_get_norm_names():
    assert get_norm("fold") is BatchNormFold
    assert get_norm("per_step") is BatchNormPerStep
    assert get_norm("tdBN") is TDBatchNorm
    with pytest.raises(ConfigError, match="fold, per-step, tdbn"):
        get_norm("layer")


# -- voting ------------------------------------------------------------------------------------
def test_voting_averages_consecutive_groups():
    vote = VotingLayer(3, group=2)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0, 0.0]])
    assert torch.equal(vote(x), torch.tensor([[0.5, 1.0, 0.0]]))
    assert VotingLayer(10)(torch.rand(4, 2, 100)).shape == (4, 2, 10)
    with pytest.raises(ConfigError):
        VotingLayer(0)


# -- neuron slots ------------------------------------------------------------------------------
def test_factory_mt_on_fc_switches_the_fc_rule():
    conv_only = NeuronFactory("plif", "mt", options={"deltas": (-0.4, 0.3)})
    assert conv_only.conv().rule.name == "mt"
    assert conv_only.conv().rule.deltas == (-0.4, 0.3)
    assert conv_only.fc().rule.name == "binary"
    assert conv_only.out().rule.name == "binary"
    both = NeuronFactory("plif", "mt", mt_on_fc=True)
    assert both.fc().rule.name == "mt"
    tern = NeuronFactory("lif", "ternary-mt")
    assert tern.fc().rule.name == "ternary" and tern.conv().rule.name == "ternary-mt"
    assert NeuronFactory("lif", "ternary").fc().rule.name == "ternary"


def test_factory_builds_unchecked_neurons_with_options():
    f = NeuronFactory(LIFNode, "ternary", options={"learn_amplitude": True, "decay": 0.5})
    node = f.conv()
    assert isinstance(node, LIFNode) and not node.check_input
    assert node.amplitude is not None and node.decay == 0.5
    assert f.v_threshold == 0.5
    assert isinstance(NeuronFactory("plif").conv(), PLIFNode)


def test_factory_ann_twin():
    f = NeuronFactory("plif", "ann", options={"deltas": (-0.5, 0.5)})
    assert isinstance(f.conv(), nn.ReLU) and isinstance(f.fc(), nn.ReLU)
    assert isinstance(f.out(), nn.Identity)
    assert f.v_threshold == 1.0


def test_factory_errors():
    with pytest.raises(ConfigError, match="unknown firing"):
        NeuronFactory("plif", "quaternary")
    with pytest.raises(ConfigError, match="unknown neuron option"):
        NeuronFactory("plif", "mt", options={"tau": 2.0})
    with pytest.raises(ConfigError, match="deltas apply"):
        NeuronFactory("plif", "binary", options={"deltas": (0.5,)})
    with pytest.raises(ConfigError, match="unknown neuron"):
        NeuronFactory("hh", "mt")
    with pytest.raises(ConfigError):
        NeuronFactory("plif", "mt", options={"init_tau": 0.5})


# -- blocks ------------------------------------------------------------------------------------
def test_conv_unit_shapes():
    f = NeuronFactory("plif", "mt")
    unit = ConvUnit(nn.Conv2d(3, 8, 3, padding=1), BatchNormFold(8), f.conv())
    assert unit(torch.rand(2, 4, 3, 6, 6)).shape == (2, 4, 8, 6, 6)


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("kernel", [1, 3])
def test_membrane_block_shapes_and_params(norm, kernel):
    f = NeuronFactory("plif", "mt")
    blk = MembraneBlock(8, 16, stride=2, neuron_factory=f, norm=norm, timesteps=2,
                        shortcut_kernel=kernel)
    assert blk.shortcut.kernel_size == (kernel, kernel)
    x = torch.randn(2, 3, 8, 8, 8, requires_grad=True)
    y = blk(x)
    assert y.shape == (2, 3, 16, 4, 4)
    assert torch.is_floating_point(y) and not set(y.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    same = MembraneBlock(8, 8, stride=1, neuron_factory=f, norm=norm, timesteps=2)
    assert same.shortcut is None
    with pytest.raises(ConfigError):
        MembraneBlock(8, 16, stride=2, neuron_factory=f, norm=norm, timesteps=2, shortcut_kernel=5)


def test_membrane_block_ann_twin_is_preactivation_resnet():
    f = NeuronFactory("plif", "ann")
    blk = MembraneBlock(4, 4, stride=1, neuron_factory=f, norm="fold", timesteps=1).double().eval()
    x = _x(1, 2, 4, 5, 5)
    relu = torch.relu
    y = blk.bn2.bn(blk.conv2(relu(blk.bn1.bn(blk.conv1(relu(x[0]))))))
    torch.testing.assert_close(blk(x)[0], x[0] + y)


@pytest.mark.parametrize("avg_down", [False, True])
def test_spike_block_emits_spikes(avg_down):
    f = NeuronFactory("lif", "ternary")
    blk = SpikeBlock(8, 16, stride=2, neuron_factory=f, norm="fold", timesteps=2, avg_down=avg_down)
    y = blk(torch.randn(2, 3, 8, 8, 8))
    assert y.shape == (2, 3, 16, 4, 4)
    assert set(y.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert isinstance(blk.shortcut, nn.Sequential) == avg_down


@pytest.mark.parametrize("block", [MembraneBlock, SpikeBlock])
def test_blocks_scale_only_the_bns_before_the_residual_addition(block):
    """tdBN: α = 1/√2 on the second BN and the shortcut BN, α = 1 on the first; V_th the
    factory's."""
    f = NeuronFactory("lif", "binary", options={"v_threshold": 0.5})
    b = block(4, 8, stride=2, neuron_factory=f, norm="tdbn", timesteps=2)
    assert (b.bn1.alpha, b.bn2.alpha, b.shortcut_bn.alpha) == (1.0, 1 / math.sqrt(2),
                                                                 1 / math.sqrt(2))
    assert {m.v_threshold for m in (b.bn1, b.bn2, b.shortcut_bn)} == {0.5}


def test_the_package_re_exports_its_rooms():
    """Each public name lives in one room of the package (``multispike.layers.<room>``);
    deep copies of the blocks still run."""
    import copy

    from multispike import layers

    rooms = {"blocks", "graph", "neuron_slots", "norm", "temporal", "voting"}
    for name in layers.__all__:
        obj = getattr(layers, name)
        module = getattr(obj, "__module__", None)
        if module is not None and module.startswith("multispike.layers"):
            assert module.rpartition(".")[2] in rooms, (name, module)
    b = SpikeBlock(4, 4, stride=1, neuron_factory=NeuronFactory("lif"), norm="fold",
                   timesteps=2)
    x = torch.rand(2, 1, 4, 6, 6)
    torch.testing.assert_close(copy.deepcopy(b)(x), b(x))


# -- graph descriptions ------------------------------------------------------------------------
def test_blocks_record_the_dataflow_their_forward_runs():
    f = NeuronFactory("lif", "ternary")
    blk = SpikeBlock(4, 8, stride=2, neuron_factory=f, norm="fold", timesteps=2, avg_down=True)
    g = Record()
    out = blk.describe(g, "b", g.input())
    assert out == ("b.sn2",)
    assert [(n.name, n.kind, n.inputs) for n in g.nodes[1:]] == [
        ("b.conv1", "fold", ("input",)),
        ("b.bn1", "call", ("b.conv1",)),
        ("b.sn1", "call", ("b.bn1",)),
        ("b.conv2", "fold", ("b.sn1",)),
        ("b.bn2", "call", ("b.conv2",)),
        ("b.shortcut.0", "fold", ("input",)),
        ("b.shortcut.1", "fold", ("b.shortcut.0",)),
        ("b.shortcut_bn", "call", ("b.shortcut.1",)),
        ("b.sn2", "call", ("b.bn2", "b.shortcut_bn")),  # the neuron sums its two inputs
    ]
    blk.eval()
    x = torch.randn(2, 3, 4, 8, 8)
    values: dict = {}
    for node in g.nodes:
        values[node.name] = run_node(node, values, x, 2)
    assert torch.equal(values["b.sn2"], blk(x))
