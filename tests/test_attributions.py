"""What the recipes and docs attribute to the papers and the authors' code, and the authors'
settings offered as options: per-step stem BN and He fan-out initialisation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from multispike.engine import list_recipes, load_recipe, resolve_config
from multispike.engine.config import recipe_dir
from multispike.layers import BatchNormFold, BatchNormStepStats, build_norm
from multispike.models import create

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _text(name: str) -> str:
    return (recipe_dir() / f"{name}.toml").read_text()


def _paper_rows(prefix: str = "") -> list[str]:
    """The recipes of the papers' tables (the digits rows are the demo's, not a paper's)."""
    return [n for n in list_recipes() if n.startswith(prefix) and not n.endswith("-digits")]


def test_mt_resnet20_cites_its_own_row():
    text = _text("mt-resnet20-cifar10")
    assert "94.71% at T = 4" in text and "94.51" not in text  # 94.51% is MT-VGG-9's


def test_data_settings_are_not_attributed_to_the_authors_code():
    """The public Ternary Spike code has only an ImageNet script: the CIFAR and DVS data
    settings are chosen, and the recipes say so."""
    for name in _paper_rows():
        if "ternary" not in name or "imagenet" in name:
            continue
        text = _text(name)
        assert "chosen, not the authors'" in text, name
        assert "ternary code's" not in text, name


def test_mt_recipes_say_how_they_read_the_decay_sentence():
    for name in _paper_rows("mt-"):
        text = _text(name)
        assert "read as once, at epoch 100" in text, name
        assert load_recipe(name)["milestones"] == [100], name


def test_ternary_spike_recipes_use_the_authors_reset_gradient():
    for name in [n for n in _paper_rows() if "ternary" in n]:
        assert resolve_config(name).model_options.get("reset_grad") == "spike", name


def test_ternary_dvs_recipes_use_the_authors_stem_bn_and_initialisation():
    names = [n for n in _paper_rows() if "ternary" in n and "dvs" in n]
    assert len(names) == 4
    for name in names:
        cfg = resolve_config(name)
        opts = {k: v for k, v in cfg.model_options.items()}
        model = create(cfg.model, timesteps=2, in_channels=2, **opts)
        assert isinstance(model.stem_norm, BatchNormStepStats), name
        assert model.model_args["init"] == "kaiming-fan-out"


def test_table5_flops_reading_is_stated_once_in_the_docs():
    models = (DOCS / "models.md").read_text()
    assert "the stem convolution at both steps" not in models
    assert "computed **once** per" in models and "7.08M" in models


# -- the options ------------------------------------------------------------------------------
def test_step_stats_bn_equals_the_authors_per_step_loop():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 6, 6) * torch.arange(1, 4).view(3, 1, 1, 1, 1)  # steps differ
    norm = build_norm("step-stats", 5)
    ref = nn.BatchNorm2d(5)  # SpikeConv: the same BN called on each step in turn
    out = norm(x)
    expected = torch.stack([ref(x[t]) for t in range(3)])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(norm.bn.running_mean, ref.running_mean)
    torch.testing.assert_close(norm.bn.running_var, ref.running_var)
    assert not torch.allclose(out, BatchNormFold(5)(x))  # not the B*T statistics
    norm.eval()
    fold = BatchNormFold(5)
    fold.load_state_dict(norm.state_dict())
    fold.eval()
    torch.testing.assert_close(norm(x), fold(x))  # eval: the running averages, as fold


def test_kaiming_fan_out_initialisation():
    torch.manual_seed(0)
    model = create("resnet19", init="kaiming-fan-out")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    big = max(convs, key=lambda m: m.weight.numel())
    k = big.kernel_size[0] * big.kernel_size[1] * big.out_channels
    std = float(big.weight.detach().std())
    assert abs(std - math.sqrt(2.0 / k)) < 0.02 * math.sqrt(2.0 / k)
    default = create("resnet19")
    big_default = max((m for m in default.modules() if isinstance(m, nn.Conv2d)),
                      key=lambda m: m.weight.numel())
    he = math.sqrt(2.0 / k)
    assert abs(float(big_default.weight.detach().std()) - he) > 0.1 * he


def test_unknown_init_is_one_line():
    from multispike.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown init 'xavier'"):
        create("resnet20m", init="xavier")


def test_a_step_stats_stem_deploys_exactly():
    from multispike.deploy import fold_amplitudes, fold_batchnorm
    from tests.test_deploy import assert_close, build

    model, x = build("resnet20m", stem_norm="step-stats", init="kaiming-fan-out")
    assert isinstance(model.stem_norm, BatchNormStepStats)
    assert_close(fold_amplitudes(model)(x), model(x))
    folded = fold_batchnorm(model)
    assert_close(folded(x), model(x))
    assert not any(isinstance(m, BatchNormFold) for m in folded.modules())
