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
        model = _recipe_model(name)  # as train builds it: no hand-set input channels
        assert model.in_channels == 2, name
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


# -- issue 23: the Ternary Spike recipes follow the authors' code, or say which choice is ours ---
def _ternary_rows() -> list[str]:
    return [n for n in _paper_rows() if "ternary" in n]


def _recipe_model(name: str):
    """The model of a recipe as ``train`` builds it: its input channels and size from the
    dataset spec (tests/test_dataset_facts.py runs one batch through every recipe's)."""
    from multispike.data import get_spec
    from multispike.engine.checkpoint import build_for_dataset
    from multispike.engine.train import model_args_for

    cfg = resolve_config(name, {"timesteps": 2})
    spec = get_spec(cfg.dataset, **cfg.data_options)
    return build_for_dataset(model_args_for(cfg, spec), spec, cfg.model_options)[0]


def _model(name: str):
    with torch.device("meta"):
        return _recipe_model(name)


def _stem_norms(model) -> list[nn.Module]:
    """Every BN of the stem: ``stem_norm`` and, for resnet20m, the two in ``stem_rest``."""
    rest = [m.norm for m in model.stem_rest if hasattr(m, "norm")]
    return [model.stem_norm, *rest]


def test_every_ternary_recipe_starts_its_convolutions_as_the_authors_code():
    names = _ternary_rows()
    assert len(names) == 16
    for name in names:
        assert resolve_config(name).model_options.get("init") == "kaiming-fan-out", name
        assert "a choice of\n# ours" in _text(name) or "a choice of ours" in _text(name), name


def test_resnet20m_recipes_zero_their_residual_bns_and_normalise_the_stem_per_step():
    """The authors' resnet20_cifar_modified: bn2.weight = 0 in every block, and its three stem
    BNs normalise each time step; their ResNet-19 and ImageNet ResNets zero nothing."""
    for name in _ternary_rows():
        model, opts = _model(name), resolve_config(name).model_options
        zero = "resnet20m" in name
        assert bool(opts.get("zero_init_residual")) == zero, name
        assert "zero_init_residual" in _text(name), name  # followed, or its absence explained
        if zero:
            stem = _stem_norms(model)
            assert len(stem) == 3 and all(isinstance(m, BatchNormStepStats) for m in stem), name


def test_zero_init_residual_zeroes_the_last_bn_of_every_branch_and_still_trains():
    from multispike.layers import SpikeBlock

    for norm in ("fold", "per-step", "tdbn"):
        model = create("resnet19", norm=norm, zero_init_residual=True)
        blocks = [m for m in model.modules() if isinstance(m, SpikeBlock)]
        assert len(blocks) == 8
        for b in blocks:
            weights = [p for n, p in b.bn2.named_parameters() if n.endswith("weight")]
            assert weights and all(float(p.detach().abs().sum()) == 0 for p in weights), norm
            first = [p for n, p in b.bn1.named_parameters() if n.endswith("weight")]
            assert all(float(p.detach().abs().sum()) > 0 for p in first), norm
    assert not create("resnet19").model_args["zero_init_residual"]
    model = create("resnet20m", zero_init_residual=True, stem_norm="step-stats",
                   init="kaiming-fan-out")
    x = torch.rand(2, 3, 16, 16)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_step_stats_covers_all_three_stem_bns_of_resnet20m():
    model = create("resnet20m", stem_norm="step-stats")
    stem = _stem_norms(model)
    assert len(stem) == 3 and all(isinstance(m, BatchNormStepStats) for m in stem)
    blocks = [m for m in model.stages.modules() if isinstance(m, BatchNormStepStats)]
    assert not blocks  # the stages keep the model's norm
    assert all(type(m) is BatchNormFold for m in _stem_norms(create("resnet20m")))


def test_imagenet_recipes_state_the_global_batch_and_the_recipes_command_shows_it(capsys):
    from multispike.cli import main

    names = [n for n in _ternary_rows() if "imagenet" in n]
    assert len(names) == 4
    for name in names:
        text = _text(name)
        assert "a global batch of 320" in text and "batch_size is per process" in text, name
        assert load_recipe(name)["batch_size"] == 40
    assert main(["recipes", names[0]]) == 0
    out = capsys.readouterr().out
    assert "batch_size is per process" in out and "a choice of ours" in out
    assert "per process: the global batch is batch_size x processes" in out


def test_the_mt_dvs_recipe_does_not_cite_the_static_section_for_its_training():
    text = _text("mt-vgg12-cifar10-dvs")
    assert "(MT-SNN Sec 5.2)" not in text
    assert "Sec 5.3 (CIFAR10-DVS) states no training settings" in text


def _words(path: Path) -> str:
    return " ".join(path.read_text().split())


def test_mt_snn_defaults_the_paper_does_not_state_are_marked_as_ours():
    models = _words(DOCS / "models.md")
    assert "Paper defaults" not in models
    assert "It states no value for the rest, so these defaults are **ours**: `init_tau = 2`" \
        in models
    for ours in ("`V_th = 1`", "deltas (−0.5, +0.5)·V_th", "T = 4 for CIFAR"):
        assert ours in models.split("**ours**", 1)[1].split("Ternary Spike:", 1)[0], ours


def test_the_readme_claims_no_more_than_was_measured():
    readme = _words(DOCS.parent / "README.md")
    assert "Table 5 reproduced approximately (energy within 0.2%, #SOPs 1.3% under" in readme
    assert "#Sign from a definition we fitted" in readme
    assert "equals the addition-only executor's exact count on every layer in float64" in readme
    assert "come with ResNets on CIFAR-100 and ImageNet" not in readme
    assert "come with ResNets on CIFAR-10, CIFAR-100, ImageNet and CIFAR10-DVS" in readme
