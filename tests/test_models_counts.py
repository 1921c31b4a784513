"""Parameter counts against MT-SNN Tables 1-2, MACs of the Ternary Spike energy network."""

import pytest
import torch
from torch import nn

from multispike.models import count_macs, count_params, create


def _close(measured, expected, tol=0.015):
    return abs(measured - expected) / expected <= tol


@pytest.mark.parametrize(
    "name,kw,expected",
    [
        ("vgg8", {"num_classes": 100}, 36.72e6),  # MT-SNN Table 1
        ("vgg8", {"num_classes": 10, "output": "vote"}, 36.72e6),  # PLIF: 100 voting neurons
        ("vgg9", {"num_classes": 100}, 19.72e6),  # MT-SNN Table 1
        ("vgg12", {}, 2.88e6),  # MT-SNN Table 1: 2x128x128 input, voting layer
        ("resnet20", {}, 4.66e6),  # MT-SNN Table 2
        ("resnet20", {"num_classes": 100}, 4.66e6),
        ("resnet20", {"shortcut_kernel": 1, "num_classes": 100}, 4.34e6),
    ],
)
def test_parameter_counts_match_the_tables(name, kw, expected):
    model = create(name, **kw)
    n = count_params(model)
    assert _close(n, expected), f"{name} {kw}: {n / 1e6:.3f}M vs {expected / 1e6:.2f}M"


@pytest.mark.parametrize(
    "name,expected",
    [
        ("resnet19", 12.57e6),
        ("resnet20m", 11.25e6),
        ("resnet18", 11.69e6),  # torchvision ResNet-18 has 11.69M too
        ("resnet34", 21.80e6),
        ("digits_net", 38.3e3),
    ],
)
def test_parameter_counts_of_the_other_models(name, expected):
    assert _close(count_params(create(name)), expected, tol=0.005)


def test_parameter_count_does_not_depend_on_firing_except_neurons():
    snn = create("resnet20", firing="ternary", learn_amplitude=True)
    ann = create("resnet20", firing="ann")
    extra = sum(p.numel() for n, p in snn.named_parameters() if p.dim() == 0)
    assert count_params(snn) - extra == count_params(ann)


def _reference_macs(model, input_shape):
    """Independent count: walk the convolutions' output sizes with a plain forward hook."""
    total = 0

    def hook(m, _i, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out[0].numel() * m.weight[0].numel()
        else:
            total += out.shape[-1] * m.in_features

    hs = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    model.eval()
    model.timesteps = 1
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for h in hs:
        h.remove()
    return total


def test_resnet20m_macs_match_the_ternary_energy_table():
    """Ternary Spike Table 5: 3.54M FLOPs = 1.77M first-layer MACs x T=2; the rest ~214M."""
    model = create("resnet20m")
    macs = count_macs(model, (3, 32, 32), per_layer=True)
    assert macs["stem_conv"] == 3 * 64 * 9 * 32 * 32 == 1_769_472
    rest = sum(macs.values()) - macs["stem_conv"]
    assert abs(rest - 214e6) / 214e6 < 0.01, rest
    assert sum(macs.values()) == _reference_macs(create("resnet20m"), (3, 32, 32))
    assert model.timesteps == 2 and model.training  # restored


def test_macs_per_step_do_not_depend_on_t_or_firing():
    a = count_macs(create("resnet20", timesteps=4), (3, 32, 32))
    b = count_macs(create("resnet20", firing="ann"), (3, 32, 32))
    assert a == b == _reference_macs(create("resnet20"), (3, 32, 32))


@pytest.mark.parametrize("name,shape", [("resnet20m", (3, 32, 32)), ("vgg8", (3, 32, 32)),
                                        ("digits_net", (1, 8, 8))])
def test_count_macs_and_trace_ops_are_one_count(name, shape):
    """One walk of the graph, one MAC count per layer: count_macs per layer is trace_ops'."""
    from multispike.analysis import trace_ops

    model = create(name)
    ops = trace_ops(model, shape, timesteps=3)
    per_layer = {layer.name: layer.macs for layer in ops.layers}
    assert count_macs(model, shape, per_layer=True) == per_layer
