"""``multispike deploy`` end to end: a trained digits checkpoint in, a verified deployed model
(safetensors + JSON, NIR where it exists) out; one-line errors with exit code 2."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from multispike.cli.deploy import main, register
from multispike.deploy import fold_amplitudes, load_deployed
from multispike.engine import TrainConfig, load_model, save_checkpoint, train_model
from multispike.models import create
from tests.test_deploy import build

try:
    import nir  # noqa: F401
    import nirtorch  # noqa: F401

    HAS_NIR = True
except ImportError:
    HAS_NIR = False


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits checkpoint with trainable ternary spikes (one epoch)."""
    out = tmp_path_factory.mktemp("train")
    train_model(TrainConfig(dataset="digits", epochs=1, firing="ternary",
                            model_options={"learn_amplitude": True}, out=str(out),
                            progress=False, num_workers=0))
    return out / "best.pt"


def exercised_checkpoint(path, **kw):
    """A checkpoint (training format) of a digits net whose every layer fires."""
    model, _ = build("digits_net", **kw)
    model = model.float()
    save_checkpoint(path, {"model_args": model.model_args, "model": model.state_dict()})
    return path


def cli(argv):
    """The subcommand as the command line runs it (``register`` on a fresh parser)."""
    parser = argparse.ArgumentParser(prog="multispike")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["deploy", *argv])
    return args.func(args)


def test_deploy_a_trained_ternary_checkpoint(trained, tmp_path, capsys):
    out = tmp_path / "deployed"
    assert cli(["--checkpoint", str(trained), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "largest output difference" in text
    config = json.loads((out / "config.json").read_text())
    v = config["summary"]["verification"]
    # random images can leave layers of a one-epoch model silent: then the check is not "ok"
    assert (": ok" in text) == v["conclusive"] == (not v["silent_layers"])
    assert ("INCONCLUSIVE" in text) != v["conclusive"]
    assert "NIR: not written" in text
    if HAS_NIR:  # the documented one-line reason; without nir: "not installed"
        assert "'ternary'" in text and "reset on their own spike" in text
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not (out / "model.nir").exists()
    assert config["summary"]["verification"]["passed"]
    assert config["summary"]["folded_amplitudes"] == 3
    # the written model is the folded checkpoint
    model, _ = load_model(trained)
    loaded = load_deployed(out)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(loaded(x), fold_amplitudes(model)(x))
    assert all(getattr(m, "amplitude", None) is None for m in loaded.modules())


@pytest.mark.skipif(not HAS_NIR, reason="needs nir and nirtorch")
def test_deploy_writes_nir_and_runs_the_executor(tmp_path, capsys):
    import nir
    ckpt = exercised_checkpoint(tmp_path / "bin.pt", firing="binary", neuron="lif",
                                learn_amplitude=True)
    out = tmp_path / "deployed"
    rc = cli(["--checkpoint", str(ckpt), "--out", str(out), "--executor", "--json",
              "--dt", "1e-4"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["verification"]["passed"]
    assert summary["verification"]["max_abs_diff_float64"] <= 1e-10
    assert summary["nir"]["written"] and summary["nir"]["max_abs_diff_float64"] <= 1e-10
    assert summary["executor"]["total_sops"] > 0
    assert summary["executor"]["max_abs_diff_float64"] <= 1e-10
    graph = nir.read(out / "model.nir")
    assert graph.nodes["fc1_act"].tau.shape == (64,)


def test_deploy_splits_mt_planes(tmp_path, capsys):
    ckpt = exercised_checkpoint(tmp_path / "mt.pt", firing="mt", learn_amplitude=True)
    out = tmp_path / "deployed"
    assert cli(["--checkpoint", str(ckpt), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "spike planes split: yes" in text
    assert load_deployed(out).deployment["split_planes"]


def test_deploy_fixes_learned_thresholds(tmp_path, capsys):
    """A checkpoint whose thresholds were learnt deploys with them as constants: verified,
    counted by the executor, written to NIR with the learned values, loaded back fixed."""
    model, _ = build("digits_net", firing="binary", neuron="if", learn_thresholds=True)
    gains = {}
    with torch.no_grad():
        for i, (name, m) in enumerate(model.named_modules()):
            if getattr(m, "threshold_rho", None) is not None:
                m.threshold_rho.fill_(0.05 * (i % 3 + 1))  # moved, as after training
                gains[name] = float(m.fixed_firing()[0])
    assert len(gains) == 3
    model = model.float()
    ckpt = tmp_path / "learned.pt"
    save_checkpoint(ckpt, {"model_args": model.model_args, "model": model.state_dict()})
    out = tmp_path / "deployed"
    assert cli(["--checkpoint", str(ckpt), "--out", str(out), "--executor"]) == 0
    text = capsys.readouterr().out
    assert "learned thresholds of 3 neuron layers fixed as constants" in text
    assert ": ok" in text
    summary = json.loads((out / "config.json").read_text())["summary"]
    assert summary["fixed_thresholds"] == 3 and summary["verification"]["passed"]
    assert summary["executor"]["max_abs_diff_float64"] <= 1e-9
    loaded = load_deployed(out)
    assert sorted(loaded.deployment["fixed_thresholds"]) == sorted(gains)
    for name, v in gains.items():
        neuron = loaded.get_submodule(name)
        assert not neuron.learn_thresholds
        assert neuron.v_threshold == pytest.approx(v, rel=1e-6) and v != 1.0
    if HAS_NIR:
        import nir

        assert summary["nir"]["written"], summary["nir"]
        graph = nir.read(out / "model.nir")
        for name, v in gains.items():
            np_v = graph.nodes[name].v_threshold
            assert float(abs(np_v - v).max()) <= 1e-6


def test_deploy_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err

    ckpt = exercised_checkpoint(tmp_path / "bin.pt", firing="binary")
    out = tmp_path / "deployed"
    assert main(["--checkpoint", str(ckpt), "--out", str(out), "--no-nir"]) == 0
    capsys.readouterr()
    assert main(["--checkpoint", str(ckpt), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["--checkpoint", str(ckpt), "--out", str(out), "--force"]) == 0
    capsys.readouterr()

    assert main(["--checkpoint", str(ckpt), "--out", str(out), "--verify-batches", "0"]) == 2
    assert "--verify-batches must be an integer >= 1, got 0" in capsys.readouterr().err

    twin = create("digits_net", firing="ann")
    save_checkpoint(tmp_path / "ann.pt", {"model_args": twin.model_args,
                                          "model": twin.state_dict()})
    assert main(["--checkpoint", str(tmp_path / "ann.pt"), "--out", str(tmp_path / "a")]) == 2
    assert "ANN twin" in capsys.readouterr().err


def _untrained_checkpoint(path, zero_head=False, **kw):
    """A freshly built digits net as a checkpoint: it fires no spike on random images (its BN
    holds identity statistics), so its outputs are the head's bias; ``zero_head``: 0 too."""
    torch.manual_seed(0)
    model = create("digits_net", **kw)
    if zero_head:
        with torch.no_grad():
            model.head.fc.weight.zero_()
            model.head.fc.bias.zero_()
    save_checkpoint(path, {"model_args": model.model_args, "model": model.state_dict()})
    return path


@pytest.mark.parametrize("zero_head, found", [
    (False, "no neuron fired on the check images, so only the biases were compared"),
    (True, "the outputs are all zero on the check images, so the comparison proves nothing"),
])
def test_a_check_that_proves_nothing_is_not_called_ok(zero_head, found, tmp_path, capsys):
    """A model that never spiked, or whose outputs are all zero, differs by 0 from anything
    deployed from it: the line says what was found (INCONCLUSIVE, not ok) and config.json
    records it; exit code 0 (files written, nothing found to differ: random images unlike the
    data can leave even a trained model silent)."""
    ckpt = _untrained_checkpoint(tmp_path / "u.pt", zero_head, firing="binary")
    out = tmp_path / "deployed"
    assert cli(["--checkpoint", str(ckpt), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if "largest output difference" in x)
    assert ": ok" not in line and f"INCONCLUSIVE: {found}" in line, line
    v = json.loads((out / "config.json").read_text())["summary"]["verification"]
    assert v["passed"] and not v["conclusive"] and v["note"] == found
    assert v["neuron_layers"] == 3
    if not zero_head:
        assert v["silent_layers"] == ["stem_act", "features.0.act", "fc1_act"]


def test_a_check_with_every_layer_firing_is_ok(tmp_path, capsys):
    ckpt = exercised_checkpoint(tmp_path / "t.pt", firing="ternary", learn_amplitude=True)
    assert cli(["--checkpoint", str(ckpt), "--out", str(tmp_path / "d"), "--no-progress"]) == 0
    assert "at output scale" in (text := capsys.readouterr().out) and ": ok\n" in text
    v = json.loads((tmp_path / "d" / "config.json").read_text())["summary"]["verification"]
    assert v["conclusive"] and v["silent_layers"] == [] and v["note"] is None


def test_deploy_shows_its_stages_and_the_check_batches(tmp_path, capsys):
    """One line per stage with its duration on stdout (stderr under --json), the check's
    batches on stderr; --no-progress: neither."""
    ckpt = exercised_checkpoint(tmp_path / "mt.pt", firing="mt")
    argv = ["--checkpoint", str(ckpt), "--verify-batches", "3", "--no-nir", "--executor"]
    assert cli([*argv, "--out", str(tmp_path / "a")]) == 0
    cap = capsys.readouterr()
    stages = [x for x in cap.out.splitlines() if x.startswith("deploy: ")]
    assert [x.split(" (")[0] for x in stages] == [
        f"deploy: loaded {ckpt}", "deploy: folded BN and amplitudes, split the spike planes",
        "deploy: verified on 3 x 8 random images",
        "deploy: ran the addition-only executor on one image", f"deploy: wrote {tmp_path / 'a'}"]
    assert all(x.endswith(" s)") for x in stages)
    assert "deploy: checking outputs: 3/3 batches" in cap.err

    assert cli([*argv, "--out", str(tmp_path / "b"), "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["verification"]["conclusive"]  # stdout: the JSON alone
    assert "deploy: verified on 3 x 8" in cap.err

    assert cli([*argv, "--out", str(tmp_path / "c"), "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert "deploy: " not in cap.out and cap.err == ""


@pytest.mark.skipif(not HAS_NIR, reason="needs nir")
def test_nir_asked_for_is_refused_before_the_check(tmp_path, capsys):
    ckpt = exercised_checkpoint(tmp_path / "mt.pt", firing="mt")
    assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "d"), "--nir"]) == 2
    cap = capsys.readouterr()
    assert "--nir asked for model.nir" in cap.err and cap.err.count("\n") == 1
    assert "deploy: folded" in cap.out and "verified" not in cap.out


@pytest.mark.parametrize("name", ["resnet20", "resnet20m", "resnet19", "vgg9"])
def test_the_check_sees_every_neuron_layer_fire(name):
    """The silent-layer count hooks every neuron layer of the graph (a layer it missed would
    read as silent and make every check INCONCLUSIVE)."""
    from multispike.deploy import split_planes, trace
    from multispike.workflows.deploy_checkpoint import verify

    model, x = build(name, firing="mt")
    deployed = split_planes(fold_amplitudes(model))
    v = verify(model, deployed, tuple(x.shape[1:]), 1, 2, seed=0)
    assert v["neuron_layers"] == len(trace(model).of_op("neuron"))
    assert v["silent_layers"] == [] and v["conclusive"] and v["passed"]
