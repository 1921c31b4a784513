"""The command line: exit codes, one-line errors, JSON output."""

import json
import subprocess
import sys

from multispike.cli import main


def test_neurons_json(capsys):
    assert main(["neurons", "--timesteps", "4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {(r["neuron"], r["firing"]): r for r in rows}
    assert set(by) == {(n, f) for n in ("plif", "lif") for f in ("binary", "mt", "ternary",
                                                                  "ternary-mt")}
    # more bits per spike never tells fewer inputs apart
    for n in ("plif", "lif"):
        assert by[(n, "ternary-mt")]["distinct_codes"] >= by[(n, "binary")]["distinct_codes"]
        assert "-1" in by[(n, "ternary")]["values"]


def test_bad_timesteps_exit_code_2(capsys):
    assert main(["neurons", "--timesteps", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--timesteps must be >= 1" in err


def test_python_dash_m():
    r = subprocess.run([sys.executable, "-m", "multispike", "neurons", "--timesteps", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_recipes_lists_every_recipe(capsys):
    from multispike.engine import list_recipes

    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == list_recipes()
    assert any(ln.startswith("mt-vgg9-cifar10 ") and "vgg9" in ln and "T=2" in ln for ln in lines)


def test_compile_flag(capsys):
    from multispike.cli import build_parser, train_overrides

    parser = build_parser()
    assert train_overrides(parser.parse_args(["train"]))["compile"] is None  # the recipe's
    assert train_overrides(parser.parse_args(["train", "--compile"]))["compile"] == "default"
    args = parser.parse_args(["train", "--compile", "max-autotune", "--epochs", "1"])
    assert train_overrides(args)["compile"] == "max-autotune"
    assert parser.parse_args(["eval", "--checkpoint", "x.pt", "--compile"]).compile == "default"
    assert main(["train", "--dataset", "digits", "--compile", "fast"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown compile mode 'fast'" in err
