"""The MT ablation sweeps with a stand-in trainer, and with the engine's trainer that the
command line hands them (the analysis does not import the engine)."""

import json

import pytest

from multispike import engine
from multispike.analysis import delta_sweep, placement_ablation
from multispike.analysis.sweeps import zoo_check
from multispike.cli import main
from multispike.cli.analysis import engine_train_fn
from multispike.errors import ConfigError


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
