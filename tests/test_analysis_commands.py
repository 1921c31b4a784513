"""The energy and analyze subcommands: JSON keys, files written, one-line errors."""

import argparse
import json

import pytest

from multispike import data, models
from multispike.cli import analysis as commands
from multispike.cli._common import parse_options
from multispike.deploy import event_model
from multispike.engine.evaluate import split_loader
from multispike.errors import ConfigError, MultispikeError
from multispike.workflows import measure
from tests.test_analysis_nets import TinySNN


def _parser():
    parser = argparse.ArgumentParser(prog="multispike")
    commands.register(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(argv):
    args = _parser().parse_args(argv)
    return args.func(args)


@pytest.fixture
def fake_zoo(monkeypatch):
    """A zoo with one model, 'tiny', so the glue is tested without the real model zoo."""

    def create(name, *, num_classes=None, timesteps=None, firing=None, **options):
        if name != "tiny":
            raise ConfigError(f"unknown model {name!r}; choose one of tiny")
        return TinySNN(firing=firing or "binary", timesteps=timesteps or 2)

    monkeypatch.setattr(models, "create", create)


def test_energy_json_has_the_keys(fake_zoo, capsys):
    argv = ["energy", "--model", "tiny", "--dataset", "digits", "--timesteps", "2",
            "--firing-rate", "0.2", "--cost-table", "hu2021", "--json"]
    assert _run(argv) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("first_layer_flops", "sops", "spikes", "signs", "energy_uj", "ann_energy_uj"):
        assert key in d
    assert d["first_layer_flops"] == 2 * 4 * 64 * 9
    assert d["sops"] == pytest.approx(0.2 * 2 * (6 * 16 * 4 * 9 + 96 * 10))
    assert d["model"] == "tiny" and d["dataset"] == "digits" and d["rate_source"] == "assumed"


def test_energy_table_and_ternary(fake_zoo, capsys):
    argv = ["energy", "--model", "tiny", "--dataset", "digits", "--firing", "ternary",
            "--firing-rate", "0.3", "--cost-table", "45nm"]
    assert _run(argv) == 0
    out = capsys.readouterr().out
    assert "stem_conv" in out and "encoder" in out and "ANN twin" in out


def test_energy_measured_rates_from_model(fake_zoo, monkeypatch, capsys):
    monkeypatch.setattr(measure, "_load_checkpoint", lambda path: (TinySNN(timesteps=2), {}))
    argv = ["energy", "--checkpoint", "x.pt", "--dataset", "digits", "--json", "--layers"]
    assert _run(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["rate_source"].startswith("measured")
    assert {r["name"] for r in d["neuron_layers"]} == {"a", "b"}


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--model", "nope", "--firing-rate", "0.1"], "unknown model"),
        (["--model", "tiny", "--firing-rate", "0.1", "--cost-table", "7nm"], "unknown cost"),
        (["--model", "tiny", "--firing-rate", "1.5"], "outside"),
        (["--model", "tiny", "--firing-rate", "-0.1"], "outside"),
        (["--model", "tiny", "--firing-rate", "0.1", "--timesteps", "0"], "timesteps"),
        (["--model", "tiny"], "--firing-rate"),
        (["--model", "tiny", "--firing-rate", "0.1", "--dataset", "mnist"], "unknown dataset"),
    ],
)
def test_energy_bad_input_is_one_line(fake_zoo, argv, match):
    base = ["energy", "--dataset", "digits"]
    with pytest.raises(MultispikeError, match=match) as e:
        _run(base + argv)
    assert "\n" not in str(e.value)


def test_analyze_writes_figures(fake_zoo, tmp_path, capsys):
    rows = [{"firing": "binary", "timesteps": t, "accuracy": 0.7 + 0.05 * t} for t in (1, 2)]
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps(rows))
    argv = ["analyze", "--model", "tiny", "--firing", "ternary", "--dataset", "digits",
            "--membrane-samples", "20", "--eval-json", str(ev), "--out", str(tmp_path / "a"),
            "--json"]
    assert _run(argv) == 0
    result = json.loads(capsys.readouterr().out)
    names = {p.split("/")[-1] for p in result["written"].values()}
    assert names == {"accuracy_vs_timesteps.png", "accuracy_vs_timesteps.csv",
                     "firing_stats.png", "firing_stats.csv", "entropy.png", "entropy.csv",
                     "membrane.png", "membrane.json"}
    assert 0 < result["mean_rate"] <= 1


def test_analyze_needs_something(tmp_path):
    with pytest.raises(ConfigError, match="nothing to analyze"):
        _run(["analyze", "--out", str(tmp_path)])


def test_energy_table5_through_the_command(capsys):
    argv = ["energy", "--model", "resnet20m", "--dataset", "cifar10", "--timesteps", "2",
            "--firing-rate", "0.1642", "--cost-table", "hu2021", "--json"]
    assert _run(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["energy_uj"] == pytest.approx(50.14, rel=0.02)
    assert d["first_layer_flops"] == pytest.approx(3.54e6, rel=0.01)


def test_sweep_options_parse():
    assert parse_options(["v_threshold=0.5", "neuron=lif", "deltas=[-0.3, 0.3]"],
                         "--sweep-option") == {
        "v_threshold": 0.5, "neuron": "lif", "deltas": [-0.3, 0.3]}
    with pytest.raises(ConfigError, match="--sweep-option takes KEY=VALUE"):
        parse_options(["v_threshold"], "--sweep-option")


def test_digits_loader_feeds_a_model():
    spec = data.get_spec("digits")
    loader, transform = split_loader("digits", data_dir=None, batch_size=16, timesteps=2)
    x, _ = next(iter(loader))
    assert tuple(x.shape[1:]) == tuple(spec.input_shape) == (1, 8, 8)
    model = TinySNN()
    from multispike.analysis import measure_rates

    rates = measure_rates(model, loader, batches=1, transform=transform, events=event_model)
    assert set(rates.rates) == {"a", "b"} and rates.batches == 1


SAVED = {"dataset": "digits", "timesteps": 4, "firing": "ternary", "model": "tiny",
         "data_dir": None}


def test_energy_takes_dataset_and_t_from_the_checkpoint(fake_zoo, monkeypatch, capsys):
    monkeypatch.setattr(measure, "_load_checkpoint",
                        lambda path: (TinySNN(firing="ternary", timesteps=4), dict(SAVED)))
    argv = ["energy", "--checkpoint", "x.pt", "--json", "--no-progress"]
    assert _run(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["dataset"] == "digits" and d["timesteps"] == 4 and d["firing"] == "ternary"
    assert "notes" not in d
    assert _run(argv[:-2] + ["--timesteps", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "note: --timesteps 2 overrides the checkpoint's T = 4"
    with pytest.raises(ConfigError, match="drop --firing"):
        _run(argv + ["--firing", "binary"])
    with pytest.raises(ConfigError, match="drop --model"):
        _run(argv + ["--model", "vgg9"])
    with pytest.raises(ConfigError, match="drop --option"):
        _run(argv + ["--option", "levels=3"])


def test_analyze_takes_dataset_and_t_from_the_checkpoint(fake_zoo, monkeypatch, tmp_path,
                                                         capsys):
    seen = {}

    def load(path):
        model = TinySNN(timesteps=4)
        seen["model"] = model
        return model, dict(SAVED, firing="binary")

    monkeypatch.setattr(measure, "_load_checkpoint", load)
    argv = ["analyze", "--checkpoint", "x.pt", "--out", str(tmp_path / "a"),
            "--membrane-samples", "0", "--no-progress"]
    assert _run(argv + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert seen["model"].timesteps == 4 and "notes" not in result and result["mean_rate"] > 0
    assert _run(argv + ["--timesteps", "1", "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert "note: --timesteps 1 overrides the checkpoint's T = 4" in out
    assert seen["model"].timesteps == 1


def test_analyze_refuses_eval_rows_out_of_range(tmp_path):
    for bad in (150, "nan", float("inf"), None, True):
        ev = tmp_path / "eval.json"
        ev.write_text(json.dumps([{"firing": "mt", "timesteps": 1, "accuracy": bad}]))
        with pytest.raises(ConfigError, match="row 0 has accuracy") as e:
            _run(["analyze", "--eval-json", str(ev), "--out", str(tmp_path / "a")])
        assert "\n" not in str(e.value)
    ev.write_text(json.dumps([{"firing": "mt", "timesteps": 0, "accuracy": 0.5}]))
    with pytest.raises(ConfigError, match="row 0 has timesteps 0"):
        _run(["analyze", "--eval-json", str(ev), "--out", str(tmp_path / "a")])
    assert not (tmp_path / "a").exists()


def test_energy_option_reaches_the_untrained_model(capsys):
    """--option builds the real zoo model with it: integer spikes at D = 3 (the SOPs the
    paper convention bills do not depend on D, the model record says D)."""
    argv = ["energy", "--model", "digits_net", "--dataset", "digits", "--firing", "integer",
            "--option", "levels=3", "--firing-rate", "0.2", "--json"]
    assert _run(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["firing"] == "integer"
    built = {}
    real_create = models.create

    def spy(name, **kwargs):
        built.update(kwargs)
        return real_create(name, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(models, "create", spy)
        assert _run(argv) == 0
    assert built["levels"] == 3 and built["firing"] == "integer"
    with pytest.raises(ConfigError, match="levels apply to firing"):
        _run(["energy", "--model", "digits_net", "--dataset", "digits", "--option", "levels=3",
              "--firing-rate", "0.2"])
