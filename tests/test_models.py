"""The model zoo contract: registry, forward/backward, shapes, encoder broadcast, input errors,
rebuild from ``model_args``, BN variants, MT on FC, output modes."""

import json

import pytest
import torch
from torch import nn

from multispike.errors import ConfigError, InputError
from multispike.layers import (
    BatchNormPerStep,
    NeuronFactory,
    Run,
    TDBatchNorm,
    neuron_option_names,
    run_node,
)
from multispike.models import COMMON_OPTIONS, SpikingModel, create, list_models
from multispike.neurons import LIFNode, Neuron, PLIFNode

#: small but valid construction options and input side per model (keeps the suite fast)
TINY = {
    "vgg8": ({"input_size": 16}, 16),
    "vgg9": ({"input_size": 16}, 16),
    "vgg12": ({"input_size": 32}, 32),
    "digits_net": ({}, 8),
    "resnet20": ({}, 8),
    "resnet19": ({}, 8),
    "resnet20m": ({}, 16),
    "resnet18": ({}, 32),
    "resnet34": ({}, 32),
}
FIRINGS = [
    ("ann", {}),
    ("binary", {}),
    ("mt", {}),
    ("ternary", {"learn_amplitude": True}),
]


def tiny(name, **kw):
    opts, side = TINY[name]
    model = create(name, **{**opts, **kw})
    return model, side


def image(model, side, batch=2, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, model.in_channels, side, side, generator=g, dtype=dtype)


def test_registry_lists_every_model():
    assert set(list_models()) == set(TINY)
    assert list_models() == sorted(list_models())


def test_dataset_default_models_exist():
    for name in ("digits_net", "vgg9", "vgg12", "resnet18"):
        assert name in list_models()


def test_unknown_model_is_a_one_line_config_error():
    with pytest.raises(ConfigError) as err:
        create("vgg7")
    msg = str(err.value)
    assert "\n" not in msg and "vgg7" in msg and "vgg9" in msg and "resnet20m" in msg


# -- forward and backward ----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("firing,extra", FIRINGS, ids=[f for f, _ in FIRINGS])
@pytest.mark.parametrize("timesteps", [1, 2])
def test_forward_backward_every_parameter_gets_a_gradient(name, firing, extra, timesteps):
    model, side = tiny(name, timesteps=timesteps, firing=firing, **extra)
    batch = 2
    out = model(image(model, side, batch))
    assert out.shape == (timesteps, batch, model.num_classes)
    assert torch.isfinite(out).all()
    w = torch.randn_like(out)
    (out * w).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient: {missing}"
    if firing == "ann":  # no surrogate windows: every gradient is non-zero
        zero = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
        assert not zero, f"zero gradient: {zero}"


def test_forward_at_paper_size_vgg9():
    model = create("vgg9", num_classes=100, timesteps=1)
    assert model.input_size == (32, 32)
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 1, 100)


def test_defaults():
    m = create("vgg9")
    assert (m.timesteps, m.firing, m.output, m.num_classes) == (4, "mt", "membrane", 10)
    assert isinstance(m.stem_act, PLIFNode) and m.stem_act.rule.name == "mt"
    assert not m.stem_act.check_input
    d = create("vgg12", input_size=32)
    assert (d.in_channels, d.output, d.timesteps) == (2, "vote", 5)
    r = create("resnet19")
    assert (r.timesteps, r.firing) == (2, "ternary")
    assert isinstance(r.stem_act, LIFNode) and r.stem_act.v_threshold == 0.5
    i = create("resnet18")
    assert (i.timesteps, i.num_classes, i.input_size) == (4, 1000, (224, 224))
    assert create("digits_net").timesteps == 2


def test_ann_twin_has_no_neurons_and_one_step():
    model, side = tiny("vgg9", firing="ann")
    assert model.timesteps == 1
    assert not any(isinstance(m, Neuron) for m in model.modules())
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 8  # 7 convs + hidden FC
    snn, _ = tiny("vgg9")
    n_snn = sum(p.numel() for p in snn.parameters() if p.dim() > 0)
    assert n_snn == sum(p.numel() for p in model.parameters())  # same architecture
    assert create("vgg9", firing="ann", timesteps=3).timesteps == 3


# -- time steps and the encoder broadcast ------------------------------------------------------
def test_changing_timesteps_changes_t_of_the_output():
    model, side = tiny("resnet20", timesteps=4)
    x = image(model, side)
    model.eval()
    assert model(x).shape[0] == 4
    for t in (1, 2, 6):
        model.timesteps = t
        assert model(x).shape == (t, 2, 10)
    with pytest.raises(ConfigError):
        model.timesteps = 0
    assert model.predict(x).shape == (2, 10)


@pytest.mark.parametrize("norm", ["fold", "per-step", "tdbn"])
@pytest.mark.parametrize("name", ["vgg9", "resnet20", "resnet20m"])
def test_broadcast_encoder_equals_repeating_the_image(name, norm):
    """Static input (stem conv once, broadcast) == the image repeated T times as events."""
    torch.manual_seed(0)
    model, side = (
        tiny(name, timesteps=3, norm=norm, dropout=0.0)
        if name == "vgg9"
        else tiny(name, timesteps=3, norm=norm)
    )
    model.double().train()
    twin = create(**model.model_args).double().train()
    twin.load_state_dict(model.state_dict())
    x = image(model, side, dtype=torch.float64)
    out_static = model(x)
    out_events = twin(x.unsqueeze(0).expand(3, *x.shape))  # [T, B, C, H, W]
    torch.testing.assert_close(out_static, out_events, atol=1e-6, rtol=0)
    for (k, a), b in zip(model.state_dict().items(), twin.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0, msg=k)  # running BN statistics too
    model.eval()
    twin.eval()
    torch.testing.assert_close(
        model(x), twin(x.unsqueeze(0).expand(3, *x.shape)), atol=1e-6, rtol=0
    )


def test_event_input_path():
    model, side = tiny("vgg12", timesteps=3)
    g = torch.Generator().manual_seed(1)
    frames = (torch.rand(3, 2, 2, side, side, generator=g) > 0.8).float()  # [T, B, 2, H, W]
    out = model(frames)
    assert out.shape == (3, 2, 10)
    # voting over spikes: a class score is a fraction of a group that fired
    assert ((out * 10).round() == out * 10).all() and (out >= 0).all() and (out <= 1).all()


# -- bad input ---------------------------------------------------------------------------------
def _one_line(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_bad_input_is_a_one_line_input_error():
    model, side = tiny("resnet20", timesteps=2)
    with pytest.raises(InputError) as e:
        model(torch.rand(2, 1, side, side))
    _one_line(e, "3 input channels", "(2, 1, 8, 8)")
    with pytest.raises(InputError) as e:
        model(torch.rand(3, side, side))
    _one_line(e, "rank 3", "[B, 3, H, W]")
    with pytest.raises(InputError) as e:
        model(torch.rand(1, 2, 2, 3, side, side))
    _one_line(e, "rank 6")
    with pytest.raises(InputError) as e:
        model(torch.rand(5, 2, 3, side, side))
    _one_line(e, "T=5", "model.timesteps=2")
    with pytest.raises(InputError) as e:
        model(torch.zeros(2, 3, side, side, dtype=torch.int64))
    _one_line(e, "integer")
    with pytest.raises(InputError) as e:
        model([1, 2, 3])
    _one_line(e, "torch.Tensor")
    with pytest.raises(InputError) as e:
        model(torch.rand(2, 3, 2, 2))
    _one_line(e, "at least 4x4")


def test_vgg_checks_its_input_size():
    model, _ = tiny("vgg9")
    with pytest.raises(InputError) as e:
        model(torch.rand(2, 3, 32, 32))
    _one_line(e, "16x16", "32x32", "input_size=32")
    with pytest.raises(ConfigError):
        create("vgg9", input_size=20)  # not a multiple of 8 (three poolings)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown firing"):
        create("vgg9", firing="quaternary")
    with pytest.raises(ConfigError, match="unknown output"):
        create("vgg9", output="rate")
    with pytest.raises(ConfigError, match="unknown norm"):
        create("vgg9", norm="group", input_size=16)
    with pytest.raises(ConfigError, match="num_classes"):
        create("vgg9", num_classes=0)
    with pytest.raises(ConfigError, match="unknown option.*dropout"):
        create("resnet19", dropout=0.2)
    with pytest.raises(ConfigError, match="do not apply"):
        create("resnet19", shortcut_kernel=3)
    with pytest.raises(ConfigError, match="unknown option"):
        create("resnet20", tau=3.0)
    with pytest.raises(ConfigError, match="shortcut_kernel"):
        create("resnet20", shortcut_kernel=2)
    with pytest.raises(ConfigError, match="pool"):
        create("vgg9", pool="min")


# -- rebuild from model_args -------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,kw",
    [
        ("vgg9", {"firing": "mt", "deltas": (-0.3, 0.4), "mt_on_fc": True, "norm": "per-step"}),
        ("vgg12", {"firing": "ternary", "learn_amplitude": True, "neuron": LIFNode}),
        ("resnet20", {"shortcut_kernel": 1, "norm": "tdbn", "surrogate": "atan"}),
        ("resnet20m", {"firing": "ann"}),
        ("digits_net", {"output": "vote", "vote_group": 4, "init_tau": 3.0}),
    ],
)
def test_model_args_rebuild_an_identical_model(name, kw):
    torch.manual_seed(0)
    model, side = tiny(name, **kw)
    args = json.loads(json.dumps(model.model_args))  # what a checkpoint stores
    assert args["name"] == name
    for k, v in kw.items():
        if k != "neuron":
            assert args[k] == (list(v) if isinstance(v, tuple) else v)
    torch.manual_seed(1)
    twin = create(**args)
    assert type(twin) is type(model) and twin.model_args == model.model_args
    twin.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    twin.eval()
    x = image(model, side)
    torch.testing.assert_close(model(x), twin(x), atol=0, rtol=0)
    assert isinstance(model, SpikingModel) and repr(model)


def test_model_args_record_resolved_defaults():
    args = create("resnet19").model_args
    assert args == {
        "name": "resnet19",
        "num_classes": 10,
        "timesteps": 2,
        "firing": "ternary",
        "neuron": "lif",
        "norm": "fold",
        "output": "membrane",
        "mt_on_fc": False,
        "in_channels": 3,
        "vote_group": 10,
        "stem_norm": None,
        "init": "default",
        "zero_init_residual": False,
    }


# -- options -----------------------------------------------------------------------------------
@pytest.mark.parametrize("norm,cls", [("per-step", BatchNormPerStep), ("tdbn", TDBatchNorm)])
def test_norm_variants_are_used(norm, cls):
    model, side = tiny("resnet19", norm=norm)
    norms = [m for m in model.modules() if isinstance(m, cls)]
    assert len(norms) == 1 + 8 * 2 + 2  # stem, two per block, two downsampling shortcuts
    assert model(image(model, side)).shape == (2, 2, 10)
    if norm == "tdbn":
        alphas = sorted({round(m.alpha, 4) for m in norms})
        assert alphas == [0.7071, 1.0] and {m.v_threshold for m in norms} == {0.5}


def test_per_step_bn_runs_beyond_the_trained_steps():
    model, side = tiny("vgg9", norm="per-step", timesteps=2)
    assert len(model.stem_norm.bns) == 2
    x = image(model, side)
    model.eval()
    short = model(x)
    model.timesteps = 5  # steps 2..4 reuse the last BN
    long = model(x)
    assert long.shape == (5, 2, 10)
    torch.testing.assert_close(long[:2], short)  # the first steps are unchanged


def test_mt_on_fc_switches_the_fc_neuron_rule():
    conv_only, _ = tiny("vgg9")
    assert conv_only.stem_act.rule.name == "mt" and conv_only.fc1_act.rule.name == "binary"
    both, _ = tiny("vgg9", mt_on_fc=True)
    assert both.fc1_act.rule.name == "mt"
    tern, _ = tiny("vgg9", firing="ternary-mt")
    assert tern.fc1_act.rule.name == "ternary"
    vote, _ = tiny("vgg12", firing="mt", mt_on_fc=True)
    assert vote.head.act.rule.name == "mt"


def test_vote_output_path():
    model, side = tiny("vgg9", output="vote", vote_group=5, num_classes=7)
    assert model.head.fc.out_features == 35
    out = model(image(model, side))
    assert out.shape == (4, 2, 7)
    membrane, _ = tiny("vgg9", num_classes=7)
    assert membrane.head.fc.out_features == 7 and membrane.head.vote is None


def test_neuron_choice_and_options():
    model, _ = tiny("vgg9", neuron="lif", decay=0.5, v_threshold=0.8, surrogate="sigmoid")
    node = model.stem_act
    assert isinstance(node, LIFNode) and node.decay == 0.5 and node.v_threshold == 0.8
    assert node.surrogate.name == "sigmoid"
    model, _ = tiny("resnet20", neuron="if", firing="binary")
    assert model.model_args["neuron"] == "if"
    amp, _ = tiny("resnet20m", learn_amplitude=True)
    assert all(m.amplitude is not None for m in amp.modules() if isinstance(m, Neuron))


def test_digits_net_hidden_fc_fires_so_binary_can_learn():
    """Without BN on its hidden FC, digits_net's binary FC neurons never fire (no gradient)."""
    from multispike.monitor import record_activity

    torch.manual_seed(0)
    x = torch.randn(64, 1, 8, 8)
    for fc_norm, fires in ((True, True), (False, False)):
        model = create("digits_net", firing="binary", fc_norm=fc_norm).train()
        with record_activity(model) as mon:
            model(x)
        rate = {r["layer"]: r["rate"] for r in mon.summary()}["fc1_act"]
        assert (rate > 0.01) == fires, (fc_norm, rate)


# -- one description of the graph --------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TINY))
def test_the_graph_description_is_the_forward(name):
    """Evaluating ``model.graph()`` node by node gives ``model(x)``: one description."""
    model, side = tiny(name, timesteps=2, learn_amplitude=True)
    model.double().eval()
    x = image(model, side, dtype=torch.float64)
    nodes = model.graph()
    values = {}
    for node in nodes:
        values[node.name] = run_node(node, values, x, model.timesteps)
    assert torch.equal(values["output"], model(x))
    names = [n.name for n in nodes]
    assert len(set(names)) == len(names) and names[:2] == ["input", "stem_conv"]
    assert names[-1] == "output"
    for node in nodes:  # module nodes are named by the module's path in the model
        if node.module is not None:
            assert model.get_submodule(node.name) is node.module
    # every weight of the model is in the graph
    in_graph = {id(p) for n in nodes if n.module is not None for p in n.module.parameters()}
    assert all(id(p) in in_graph for p in model.parameters())


def test_forward_runs_the_description():
    """A family's forward is its describe() run on tensors: changing one changes the other."""
    model, side = tiny("digits_net")
    calls = []

    class Spy(Run):
        def call(self, module, path, x):
            calls.append(path)
            return super().call(module, path, x)

    model.eval()
    x = image(model, side)
    stem = model.stem_conv(x).unsqueeze(0).expand(model.timesteps, -1, -1, -1, -1)
    torch.testing.assert_close(model.describe(Spy(), stem), model(x), atol=0, rtol=0)
    recorded = [n.name for n in model.graph() if n.kind == "call"]
    assert calls == recorded


# -- one keyword schema ------------------------------------------------------------------------
def test_one_schema_per_family():
    vgg, resnet = create("vgg9"), create("resnet20")
    assert set(vgg.model_args) - {"name"} == set(COMMON_OPTIONS) | set(type(vgg).family_options)
    assert set(resnet.model_args) - {"name"} == (
        set(COMMON_OPTIONS) | set(type(resnet).family_options))
    assert create("resnet19").model_args.keys().isdisjoint({"shortcut_kernel", "dropout"})
    assert not hasattr(vgg, "options") and not hasattr(vgg, "neurons")
    assert isinstance(vgg.neuron_factory, NeuronFactory)
    assert "neuron=plif" in repr(vgg)
    with pytest.raises(ConfigError, match=r"vgg9: timesteps must be an integer >= 1, got 0"):
        create("vgg9", timesteps=0)
    with pytest.raises(ConfigError, match=r"vgg9: dropout must lie in \[0, 1\), got 1.5"):
        create("vgg9", dropout=1.5)
    with pytest.raises(ConfigError, match="resnet19: unknown init 'xavier'"):
        create("resnet19", init="xavier")
    with pytest.raises(ConfigError, match="unknown norm 'group'"):
        create("resnet19", stem_norm="group")


def test_neuron_options_pass_through_unchanged():
    """Any keyword the neuron class takes is a model option (e.g. ``surrogate_alpha``)."""

    class AlphaLIF(LIFNode):
        def __init__(self, *, surrogate_alpha: float = 4.0, **kwargs):
            super().__init__(**kwargs)
            self.surrogate_alpha = surrogate_alpha

    model = create("digits_net", neuron=AlphaLIF, surrogate_alpha=2.5)
    slots = [m for m in model.modules() if isinstance(m, AlphaLIF)]
    assert slots and all(m.surrogate_alpha == 2.5 for m in slots)
    assert model.model_args["surrogate_alpha"] == 2.5
    assert "surrogate_alpha" in neuron_option_names(AlphaLIF)
    with pytest.raises(ConfigError, match=r"digits_net: unknown option\(s\) surrogate_beta;"):
        create("digits_net", neuron="lif", surrogate_beta=1.0)


def test_surrogate_alpha_is_a_model_option():
    """The sharpness of the sigmoid / atan surrogates reaches every neuron, and rebuilds."""
    model = create("digits_net", surrogate="sigmoid", surrogate_alpha=3.0)
    neurons = [m for m in model.modules() if isinstance(m, Neuron)]
    assert neurons and all(m.surrogate.alpha == 3.0 for m in neurons)
    assert model.model_args["surrogate_alpha"] == 3.0
    assert create(**model.model_args).fc1_act.surrogate.alpha == 3.0


# -- integer spikes, levels, reset choice and learned thresholds as model options (issue #15) --
NEW_RULES = [
    ("integer", {"levels": 3}),
    ("signed-integer", {"levels": 2}),
    ("integer", {"levels": 4, "learn_thresholds": True}),
    ("mt", {"learn_thresholds": True}),
    ("ternary", {"learn_thresholds": True, "reset": "soft"}),
]


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("firing,extra", NEW_RULES,
                         ids=["-".join([f, *map(str, e)]) for f, e in NEW_RULES])
def test_new_rules_forward_backward_every_parameter_gets_a_gradient(name, firing, extra):
    """Every model trains with an integer rule and with learned thresholds: every parameter,
    the thresholds' log-gains included, gets a finite gradient, and the thresholds' gradients
    are not all zero where the weights' are not (vgg12 votes with output neurons that a
    random tiny input may leave silent, far from every threshold: then nothing has one)."""
    model, side = tiny(name, timesteps=2, firing=firing, **extra)
    neurons = [m for m in model.modules() if isinstance(m, Neuron)]
    assert neurons and all(n.rule.name in (firing, "binary", "ternary") for n in neurons)
    if "levels" in extra:
        assert all(n.rule.levels == extra["levels"] for n in neurons)
    out = model(image(model, side, 4))
    assert out.shape == (2, 4, model.num_classes) and torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    gains = [p for n, p in model.named_parameters() if n.endswith("threshold_rho")]
    if extra.get("learn_thresholds"):
        assert len(gains) == len(neurons)
        weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
        if name != "vgg12" or sum(float(p.grad.abs().sum()) for p in weights) > 0:
            assert sum(float(p.grad.abs().sum()) for p in gains) > 0
    else:
        assert not gains


def test_integer_options_reach_every_slot_and_rebuild():
    model, _ = tiny("vgg9", firing="integer", levels=4, reset="main", neuron="lif",
                    decay=0.25)
    neurons = [m for m in model.modules() if isinstance(m, Neuron)]
    # the integer rule has no single-threshold form: the FC slot keeps it (mt_on_fc is MT's)
    assert model.fc1_act.rule.name == "integer"
    assert {(n.rule.name, n.rule.levels, n.reset) for n in neurons} == {("integer", 4, "main")}
    assert model.model_args["levels"] == 4 and model.model_args["firing"] == "integer"
    again = create(**json.loads(json.dumps(model.model_args)))
    assert again.model_args == model.model_args
    assert {n.config()["levels"] for n in again.modules() if isinstance(n, Neuron)} == {4}
    # default reset of the integer rules: soft
    soft, _ = tiny("resnet20m", firing="signed-integer")
    assert {n.reset for n in soft.modules() if isinstance(n, Neuron)} == {"soft"}
    learned, _ = tiny("resnet19", firing="mt", learn_thresholds=True)
    assert all(n.learn_thresholds for n in learned.modules() if isinstance(n, Neuron))
    assert create(**learned.model_args).model_args["learn_thresholds"] is True
    # the ANN twin ignores neuron options, levels included (as it does deltas)
    twin = create("digits_net", firing="ann", levels=3)
    assert not any(isinstance(m, Neuron) for m in twin.modules())


@pytest.mark.parametrize("kw, words", [
    ({"firing": "mt", "levels": 3}, ("levels apply to firing 'integer'", "'mt'")),
    ({"firing": "binary", "levels": 2}, ("levels apply", "'binary'")),
    ({"firing": "integer", "deltas": [0.5]}, ("deltas apply to firing 'mt'", "'integer'")),
    ({"firing": "integer", "levels": 0}, ("levels must be an integer >= 1",)),
    ({"firing": "integer", "levels": 500}, ("levels must be at most 127",)),
    ({"firing": "integer", "reset_grad": "spike"}, ("reset_grad='spike'", "soft")),
    ({"firing": "integer", "reset": "soft", "v_reset": 0.2}, ("v_reset=0.2",)),
    ({"firing": "integer", "reset": "hard"}, ("unknown reset 'hard'", "main, any, soft")),
    ({"firing": "quaternary"}, ("unknown firing", "integer", "signed-integer")),
])
def test_wrong_integer_combinations_are_one_line_config_errors(kw, words):
    with pytest.raises(ConfigError) as e:
        create("digits_net", **kw)
    _one_line(e, *words)
