"""The MT ablation sweeps with a stand-in trainer, and with the engine's trainer that the
command line hands them (the analysis does not import the engine)."""

import json

import pytest

from multispike import engine
from multispike.analysis import delta_sweep, placement_ablation
from multispike.analysis.sweeps import zoo_check
from multispike.cli import main
from multispike.errors import ConfigError
from multispike.workflows.sweeps import engine_train_fn


class FakeTrainer:
    """Records the settings of each run and returns a made-up accuracy."""

    def __init__(self):
        self.runs = []

    def __call__(self, settings):
        self.runs.append(settings)
        opts = settings.get("model_options", {})
        acc = 0.8 + 0.01 * len(opts.get("deltas", [])) + 0.02 * bool(opts.get("mt_on_fc"))
        return {"best_accuracy": acc + 0.001 * settings["timesteps"], "model": None}


def test_delta_sweep(tmp_path):
    train = FakeTrainer()
    res = delta_sweep(magnitudes=(0.2, 0.4), epochs=1, out=tmp_path, train_fn=train)
    assert len(train.runs) == 7  # 3 modes x 2 sizes + the single-threshold baseline
    assert [r["model_options"]["deltas"] for r in train.runs[:6]] == [
        [-0.2], [-0.4], [0.2], [0.4], [-0.2, 0.2], [-0.4, 0.4]]
    assert all(r["timesteps"] == 1 and r["dataset"] == "digits" for r in train.runs)
    assert train.runs[-1]["firing"] == "binary" and res["baseline"] == pytest.approx(0.801)
    assert res["png"].is_file() and res["csv"].is_file()
    data = json.loads(res["json"].read_text())
    assert len(data["rows"]) == 6 and data["rows"][4]["mode"] == "both"


def test_placement_ablation(tmp_path):
    train = FakeTrainer()
    res = placement_ablation(timesteps=(1, 2), epochs=1, out=tmp_path, train_fn=train)
    assert [(r["timesteps"], r["firing"], r.get("model_options", {}).get("mt_on_fc"))
            for r in train.runs] == [(1, "mt", False), (1, "mt", True), (1, "binary", None),
                                     (2, "mt", False), (2, "mt", True), (2, "binary", None)]
    labels = {r["label"] for r in res["rows"]}
    assert labels == {"MT on conv", "MT on conv+fc", "single threshold"}
    assert res["png"].is_file() and res["csv"].is_file() and res["json"].is_file()


def test_delta_sweep_skips_impossible_neurons(tmp_path):
    def check(settings):
        if any(d <= -0.5 for d in settings.get("model_options", {}).get("deltas", [])):
            raise ConfigError("mt threshold V_th + delta <= 0 would fire at rest")

    train = FakeTrainer()
    res = delta_sweep(magnitudes=(0.3, 0.6), modes=("neg", "pos"), out=tmp_path,
                      train_fn=train, check_fn=check)
    skipped = [r for r in res["rows"] if r["accuracy"] is None]
    assert [(r["mode"], r["delta"]) for r in skipped] == [("neg", 0.6)]
    assert "fire at rest" in skipped[0]["skipped"]
    assert len(train.runs) == 3 + 1  # the impossible run is not trained
    assert len(_csv_rows(res["csv"])) == 3 + 1  # three runs drawn and the baseline
    with pytest.raises(ConfigError, match="no delta-sweep run"):
        delta_sweep(magnitudes=(0.6,), modes=("neg",), out=tmp_path, train_fn=train,
                    check_fn=check)


def test_zoo_check_builds_the_model():
    zoo_check({"dataset": "digits", "firing": "mt", "timesteps": 1,
               "model_options": {"deltas": [-0.5]}})
    with pytest.raises(ConfigError, match="fire at rest"):
        zoo_check({"dataset": "digits", "firing": "mt", "timesteps": 1,
                   "model_options": {"deltas": [-0.5], "v_threshold": 0.5}})


def _csv_rows(path):
    return path.read_text().strip().splitlines()[1:]


def test_sweep_bad_input(tmp_path):
    train = FakeTrainer()
    with pytest.raises(ConfigError, match="delta mode"):
        delta_sweep(modes=("up",), out=tmp_path, train_fn=train)
    with pytest.raises(ConfigError, match="> 0"):
        delta_sweep(magnitudes=(0.0,), out=tmp_path, train_fn=train)
    with pytest.raises(ConfigError, match="epochs"):
        placement_ablation(epochs=0, out=tmp_path, train_fn=train)
    with pytest.raises(ConfigError, match="time steps"):
        placement_ablation(timesteps=(0,), out=tmp_path, train_fn=train)
    assert not train.runs


def _engine_configs(monkeypatch):
    """engine.train_model replaced by one that records the TrainConfig it is given."""
    seen = []

    def train_model(cfg):
        seen.append(cfg)
        return {"best_accuracy": 0.5}

    monkeypatch.setattr(engine, "train_model", train_model)
    return seen


def test_engine_trainer_builds_the_train_config(tmp_path, monkeypatch):
    seen = _engine_configs(monkeypatch)
    res = delta_sweep(magnitudes=(0.3,), modes=("both",), epochs=2, out=tmp_path,
                      settings={"model_options": {"v_threshold": 0.8}},
                      train_fn=engine_train_fn())
    assert [r["accuracy"] for r in res["rows"]] == [0.5] and res["baseline"] == 0.5
    mt, single = seen
    assert isinstance(mt, engine.TrainConfig)
    assert (mt.dataset, mt.firing, mt.timesteps, mt.epochs, mt.progress) == (
        "digits", "mt", 1, 2, False)
    assert mt.model_options == {"v_threshold": 0.8, "deltas": [-0.3, 0.3]}
    assert mt.out == str(tmp_path / "both-0.3") and not mt.resume
    assert single.firing == "binary" and single.out == str(tmp_path / "single-threshold")


def test_engine_trainer_resumes_and_reads_the_recipe(tmp_path, monkeypatch):
    seen = _engine_configs(monkeypatch)
    (tmp_path / "st-T1").mkdir()
    (tmp_path / "st-T1" / "last.pt").write_bytes(b"")  # a finished (or stopped) run
    placement_ablation(timesteps=(1,), epochs=1, out=tmp_path, recipe="mt-vgg9-cifar10",
                       train_fn=engine_train_fn())
    assert [c.resume for c in seen] == [False, False, True]
    assert all(c.model == "vgg9" and c.recipe == "mt-vgg9-cifar10" for c in seen)
    assert all(c.dataset == "digits" and c.epochs == 1 for c in seen)  # the sweep overrides


def test_engine_trainer_names_an_unknown_setting(tmp_path, monkeypatch):
    seen = _engine_configs(monkeypatch)
    with pytest.raises(ConfigError, match="unknown training setting 'warmup'") as e:
        placement_ablation(timesteps=(1,), out=tmp_path, settings={"warmup": 5},
                           train_fn=engine_train_fn())
    assert "\n" not in str(e.value) and not seen
    with pytest.raises(ConfigError, match="'nope'"):
        engine_train_fn()({"dataset": "digits", "nope": None})


def test_the_sweeps_need_a_training_function(tmp_path):
    with pytest.raises(TypeError, match="train_fn"):
        delta_sweep(out=tmp_path)  # no trainer of their own: the caller hands one
    with pytest.raises(TypeError, match="train_fn"):
        placement_ablation(out=tmp_path)


def test_the_command_hands_the_sweep_the_engine_and_checks_the_neurons(tmp_path, monkeypatch,
                                                                        capsys):
    seen = _engine_configs(monkeypatch)
    argv = ["analyze", "--sweep", "deltas", "--deltas", "0.5", "--sweep-option",
            "v_threshold=0.5", "--epochs", "1", "--out", str(tmp_path), "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["sweep_rows"]
    # V_th - 0.5 = 0 cannot exist: built (zoo_check) and skipped, never trained
    assert [(r["mode"], r["accuracy"]) for r in rows] == [("neg", None), ("pos", 0.5),
                                                          ("both", None)]
    assert [c.firing for c in seen] == ["mt", "binary"]
    assert all(isinstance(c, engine.TrainConfig) and c.epochs == 1 for c in seen)
    assert seen[0].model_options == {"v_threshold": 0.5, "deltas": [0.5]}


# -- integer levels and learned thresholds against spike bits (issue #15) --------------------
def test_levels_sweep_with_a_stand_in_trainer(tmp_path):
    from multispike.analysis.sweeps import levels_sweep

    train = FakeTrainer()
    res = levels_sweep(levels=(1, 2, 4), epochs=1, out=tmp_path, train_fn=train,
                       settings={"model_options": {"deltas": [-0.4, 0.4]}},
                       check_fn=zoo_check)
    rows = res["rows"]
    assert [(r["label"], r["point"]) for r in rows] == [
        ("integer", "D=1"), ("integer", "D=2"), ("integer", "D=4"), ("binary", "binary"),
        ("mt", "mt")]
    # integer D carries log2(D + 1) bits; binary 1; MT with two deltas 2
    assert [r["spike_bits"] for r in rows] == pytest.approx(
        [1.0, 1.5849625, 2.3219281, 1.0, 2.0])
    fired = [(s["firing"], s["model_options"]) for s in train.runs]
    assert fired[:3] == [("integer", {"levels": d}) for d in (1, 2, 4)]  # deltas: MT only
    assert fired[3:] == [("binary", {}), ("mt", {"deltas": [-0.4, 0.4]})]
    assert all(s["timesteps"] == 1 and s["epochs"] == 1 for s in train.runs)
    assert train.runs[0]["out"] == str(tmp_path / "integer-D1")
    assert res["png"].stat().st_size > 1000
    csv = res["csv"].read_text().splitlines()
    assert csv[0] == "group,point,spike_bits,accuracy_percent" and len(csv) == 6
    saved = json.loads(res["json"].read_text())
    assert saved["sweep"] == "levels" and [r["levels"] for r in saved["rows"]] == [
        1, 2, 4, None, None]


def test_learn_thresholds_sweep_with_a_stand_in_trainer(tmp_path):
    from multispike.analysis.sweeps import learn_thresholds_sweep

    train = FakeTrainer()
    res = learn_thresholds_sweep(rules=("mt", "integer"), levels=4, out=tmp_path,
                                 train_fn=train, check_fn=zoo_check)
    rows = res["rows"]
    assert [(r["point"], r["label"]) for r in rows] == [
        ("mt", "fixed thresholds"), ("mt", "learned thresholds"),
        ("integer D=4", "fixed thresholds"), ("integer D=4", "learned thresholds")]
    assert [r["spike_bits"] for r in rows] == pytest.approx([2, 2, 2.3219281, 2.3219281])
    assert [(s["firing"], s["model_options"]) for s in train.runs] == [
        ("mt", {"learn_thresholds": False}), ("mt", {"learn_thresholds": True}),
        ("integer", {"levels": 4, "learn_thresholds": False}),
        ("integer", {"levels": 4, "learn_thresholds": True})]
    assert res["png"].stat().st_size > 1000
    assert json.loads(res["json"].read_text())["sweep"] == "learn-thresholds"


def test_bits_sweeps_refuse_bad_input_before_training(tmp_path):
    from multispike.analysis.sweeps import learn_thresholds_sweep, levels_sweep

    train = FakeTrainer()
    with pytest.raises(ConfigError, match="levels must be an integer >= 1"):
        levels_sweep(levels=(0, 2), out=tmp_path, train_fn=train)
    with pytest.raises(ConfigError, match="unknown reference rule 'integer'"):
        levels_sweep(references=("integer",), out=tmp_path, train_fn=train)
    with pytest.raises(ConfigError, match="unknown firing 'quaternary'"):
        learn_thresholds_sweep(rules=("mt", "quaternary"), out=tmp_path, train_fn=train)
    # a model that cannot be built stops the sweep before any run trains, in one line
    with pytest.raises(ConfigError, match="run integer D=1: .*reset_grad='spike'") as e:
        levels_sweep(out=tmp_path, train_fn=train, check_fn=zoo_check,
                     settings={"model_options": {"reset_grad": "spike"}})
    assert "\n" not in str(e.value) and not train.runs
    with pytest.raises(TypeError, match="train_fn"):
        levels_sweep(out=tmp_path)
    with pytest.raises(TypeError, match="train_fn"):
        learn_thresholds_sweep(out=tmp_path)


@pytest.mark.parametrize("sweep, flags, n_rows", [
    ("levels", ["--levels", "1,2"], 4),
    ("learn-thresholds", ["--rules", "mt,integer", "--levels", "2"], 4),
])
def test_the_bits_sweeps_train_on_the_digits(sweep, flags, n_rows, tmp_path, capsys):
    """The command trains each run with the engine (one epoch: a tiny budget), then draws
    accuracy against spike bits."""
    argv = ["analyze", "--sweep", sweep, *flags, "--epochs", "1", "--out", str(tmp_path),
            "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["sweep_rows"]
    assert len(rows) == n_rows
    assert all(0 < r["accuracy"] <= 1 and r["spike_bits"] >= 1 for r in rows)
    # integer spikes learn the digits in one epoch (binary at T = 1 may still be at chance)
    assert all(r["accuracy"] > 0.5 for r in rows if r["firing"] == "integer")
    png = result["written"]["sweep_png"]
    assert png.endswith(("levels_sweep.png", "learn_thresholds.png"))
    from pathlib import Path

    assert Path(png).stat().st_size > 1000
    # each run trained into its own folder under --out
    assert len({p.parent for p in tmp_path.rglob("best.pt")}) == n_rows
    if sweep == "learn-thresholds":
        assert [r["learn_thresholds"] for r in rows] == [False, True, False, True]


def test_the_bits_sweeps_refuse_several_timesteps(tmp_path, capsys):
    assert main(["analyze", "--sweep", "levels", "--sweep-timesteps", "1,2",
                 "--out", str(tmp_path)]) == 2
    assert "--sweep levels runs at one T" in capsys.readouterr().err
    assert main(["analyze", "--sweep", "learn-thresholds", "--levels", "2,3",
                 "--out", str(tmp_path)]) == 2
    assert "takes one --levels D" in capsys.readouterr().err
