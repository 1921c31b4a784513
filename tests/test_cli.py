"""The command line: exit codes, one-line errors, JSON output."""

import json
import subprocess
import sys

from multispike.cli import main


def test_neurons_json(capsys):
    assert main(["neurons", "--timesteps", "4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {(r["neuron"], r["firing"]): r for r in rows}
    assert set(by) == {(n, f) for n in ("plif", "lif") for f in (
        "binary", "mt", "ternary", "ternary-mt", "integer", "signed-integer")}
    # more bits per spike never tells fewer inputs apart
    for n in ("plif", "lif"):
        assert by[(n, "ternary-mt")]["distinct_codes"] >= by[(n, "binary")]["distinct_codes"]
        assert by[(n, "signed-integer")]["distinct_codes"] > by[(n, "integer")]["distinct_codes"]
        assert "-1" in by[(n, "ternary")]["values"]
        assert all(int(v) >= 0 for v in by[(n, "integer")]["values"])
    # the LIF integer neuron (D = 4) reaches its top level on the largest currents
    assert "4" in by[("lif", "integer")]["values"]


def test_bad_timesteps_exit_code_2(capsys):
    assert main(["neurons", "--timesteps", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--timesteps must be an integer >= 1, got 0" in err


def test_neurons_refuse_a_timesteps_beyond_memory(capsys):
    assert main(["neurons", "--timesteps", "100000000000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GiB" in err


def test_python_dash_m():
    r = subprocess.run([sys.executable, "-m", "multispike", "neurons", "--timesteps", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_recipes_lists_every_recipe(capsys):
    from multispike.engine import list_recipes

    assert main(["recipes"]) == 0
    header, *lines = capsys.readouterr().out.strip().split("\n\n")[0].splitlines()
    assert header.split() == ["name", "dataset", "model", "firing", "T", "epochs", "lr",
                              "paper"]
    assert [ln.split()[0] for ln in lines] == list_recipes()
    assert any(ln.split() == ["mt-vgg9-cifar10", "cifar10", "vgg9", "mt", "2", "500", "0.1",
                              "94.71%", "(MT-SNN", "Table", "3)"] for ln in lines)
    assert main(["recipes", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_recipes()
    assert set(rows[0]) == {"name", "dataset", "model", "firing", "timesteps", "epochs", "lr",
                            "paper"}
    # every recipe of the papers' tables carries its claim; the two beyond the papers none
    beyond = {"ilif-resnet20m-cifar10", "mt-learnable-vgg9-cifar10"}
    assert all(r["paper"]["source"] for r in rows if r["name"] not in beyond)
    assert {r["name"] for r in rows if r["paper"] is None} == beyond


def test_the_recipes_beyond_the_papers_are_listed_without_a_claim(capsys):
    assert main(["recipes"]) == 0
    lines = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines()
             if ln.strip()}
    assert lines["ilif-resnet20m-cifar10"][:7] == ["ilif-resnet20m-cifar10", "cifar10",
                                                   "resnet20m", "integer", "1", "300", "0.1"]
    assert lines["mt-learnable-vgg9-cifar10"][:7] == ["mt-learnable-vgg9-cifar10", "cifar10",
                                                      "vgg9", "mt", "2", "500", "0.1"]
    assert " ".join(lines["ilif-resnet20m-cifar10"][7:]) == (
        "- (beyond the papers: no published number)")
    assert main(["recipes", "ilif-resnet20m-cifar10"]) == 0
    out = capsys.readouterr().out
    assert '"levels": 4, "reset": "soft", "decay": 0.25, "v_threshold": 1.0}' in out
    assert "the paper: - (beyond the papers" in out and "reproduce it (" not in out
    assert main(["recipes", "mt-learnable-vgg9-cifar10", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["paper"] is None and shown["config"]["model_options"]["learn_thresholds"]


def test_one_recipe_in_full(capsys):
    assert main(["recipes", "mt-vgg9-cifar10"]) == 0
    out = capsys.readouterr().out
    assert "milestones" in out and "[100]" in out and "mt_on_fc" in out
    assert main(["recipes", "mt-vgg9-cifar10", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["recipe"]["lr"] == 0.1 and d["config"]["seed"] == 0 and "paper" not in d["recipe"]
    assert main(["recipes", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown recipe 'nope'" in err


def test_models_datasets_and_version(capsys):
    from multispike.models import list_models

    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(list_models())
    assert rows["vgg9"]["family"] == "vgg" and rows["vgg9"]["firing"] == "mt"
    assert rows["resnet19"]["timesteps"] == 2 and rows["resnet19"]["neuron"] == "lif"
    assert main(["models"]) == 0
    assert "digits_net" in capsys.readouterr().out
    assert main(["datasets", "--json"]) == 0
    ds = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert ds["cifar10-dvs"]["kind"] == "event" and ds["digits"]["input_shape"] == [1, 8, 8]
    assert ds["imagenet"]["num_classes"] == 1000 and ds["cifar10"]["default_model"] == "vgg9"
    assert main(["datasets"]) == 0
    assert "cifar100" in capsys.readouterr().out
    r = subprocess.run([sys.executable, "-m", "multispike", "--version"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and r.stdout.startswith("multispike 0.")


def test_train_help_points_to_the_recipes_command(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--list-recipes" not in out and "multispike recipes" in out


def test_compile_flag(capsys):
    from multispike.cli import build_parser
    from multispike.cli.train import train_overrides

    parser = build_parser()
    assert train_overrides(parser.parse_args(["train"]))["compile"] is None  # the recipe's
    assert train_overrides(parser.parse_args(["train", "--compile"]))["compile"] == "default"
    args = parser.parse_args(["train", "--compile", "max-autotune", "--epochs", "1"])
    assert train_overrides(args)["compile"] == "max-autotune"
    assert parser.parse_args(["eval", "--checkpoint", "x.pt", "--compile"]).compile == "default"
    assert main(["train", "--dataset", "digits", "--compile", "fast"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown compile mode 'fast'" in err


def test_option_pairs_parse_and_refuse_one_line(capsys):
    from multispike.cli import build_parser
    from multispike.cli.train import train_overrides

    args = build_parser().parse_args(["train", "--option", "norm=tdbn", "--option",
                                      "v-threshold=0.5", "--deltas=-0.3,0.3"])
    assert train_overrides(args)["model_options"] == {"norm": "tdbn", "v_threshold": 0.5,
                                                      "deltas": [-0.3, 0.3]}
    assert main(["train", "--dataset", "digits", "--option", "norm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--option takes KEY=VALUE, got 'norm'" in err


def test_python_dash_m_deploy_alone(tmp_path):
    r = subprocess.run([sys.executable, "-m", "multispike.cli.deploy", "--checkpoint",
                        str(tmp_path / "missing.pt"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_demo_rows_name_the_design_and_its_firing_rule(tmp_path, capsys, monkeypatch):
    """Training stubbed: the demo's table, reading, JSON and plot from made-up accuracies."""
    import multispike.workflows.demo as demo

    def train_model(cfg, on_epoch=None):
        learned = bool(cfg.model_options.get("learn_amplitude"))
        acc = {"ann": 0.97, "binary": 0.9, "mt": 0.95, "ternary": 0.91,
               "integer": 0.93}[cfg.firing]
        return {"best_accuracy": acc + 0.01 * learned + 0.001 * cfg.seed, "threads": 1}

    monkeypatch.setattr(demo, "train_model", train_model)
    assert main(["demo", "--seeds", "0,1", "--epochs", "1", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ternary + learned a" in out and "trainable-ternary" not in out
    assert "T=2: ternary + learned a vs binary +2.00 points (better, spread 0.07)" in out
    assert "T=1: mt vs binary +5.00 points (better" in out and "ANN twin: 97.05%." in out
    rows = json.loads((tmp_path / "demo.json").read_text())
    assert {(r["label"], r["firing"]) for r in rows} == {
        ("ann", "ann"), ("binary", "binary"), ("mt", "mt"), ("ternary", "ternary"),
        ("ternary + learned a", "ternary"), ("integer D=3", "integer"),
        ("mt + learned thresholds", "mt")}
    # a trainer that returns no model: the spike rates are unknown, not made up
    assert all(r["rate"] is None for r in rows if r["firing"] != "ann")
    assert "T=1: integer D=3 vs mt -2.00 points (worse" in out and "Cost:" not in out
    assert (tmp_path / "accuracy_vs_T.png").stat().st_size > 1000
