"""A user's day, II: no silent wrong experiment, no traceback, no dead end, no false hint.

The table: every command × every failure class that applies to it (an unwritable ``--out``:
under a file, read-only, a name too long; a full disk while a checkpoint is written; an
unsupported device; a seed no generator takes; a class count the dataset contradicts;
SyncBatchNorm on the CPU). Each case asserts exit code 2, one line on stderr, no traceback, and
that no file that existed before changed. The CLI runs in-process with one tiny digits run
trained once for the module.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from multispike.cli import main
from multispike.engine import TrainConfig, resolve_config, train_model
from multispike.errors import ConfigError

QUICK = dict(dataset="digits", epochs=1, batch_size=128, progress=False, num_workers=0,
             device="cpu", schedule="constant")
TRAIN = ["train", "--dataset", "digits", "--epochs", "1", "--batch-size", "128", "--workers",
         "0", "--no-progress", "--device", "cpu", "--schedule", "constant"]
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained digits run (MT firing, T = 2, constant schedule): last.pt, best.pt, config.json."""
    out = tmp_path_factory.mktemp("run") / "run"
    train_model(TrainConfig(**QUICK, timesteps=2, firing="mt", out=str(out)))
    return out


def _snapshot(*roots: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``roots``: its size and content hash."""
    files = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                files[str(p)] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return files


def _one_line(capsys, argv: list[str], text: str, rc: int = 2) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert code == rc, (argv, captured.out, err)
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("multispike: "), err
    assert text in err, err
    return err


# -- the table: command x failure class ------------------------------------------------------
#: each command as a user runs it, writing into ``out``
COMMANDS = {
    "train": lambda run, out: [*TRAIN, "--out", out],
    "deploy": lambda run, out: ["deploy", "--checkpoint", str(run / "best.pt"), "--out", out],
    "analyze": lambda run, out: ["analyze", "--checkpoint", str(run / "best.pt"), "--out", out,
                                 "--no-progress"],
    "demo": lambda run, out: ["demo", "--epochs", "1", "--seeds", "0", "--out", out,
                              "--no-progress"],
    "reproduce": lambda run, out: ["reproduce", "mt-digits", "--epochs", "1", "--seeds", "0",
                                   "--out", out, "--no-progress"],
    "eval": lambda run, out: ["eval", "--checkpoint", str(run / "best.pt"), "--no-progress"],
    "energy": lambda run, out: ["energy", "--checkpoint", str(run / "best.pt"),
                                "--no-progress"],
}
WRITERS = ("train", "deploy", "analyze", "demo", "reproduce")


def _out_under_file(tmp_path: Path, monkeypatch) -> str:
    f = tmp_path / "notes.txt"
    f.write_text("keep me\n")
    return str(f / "run")


def _out_read_only(tmp_path: Path, monkeypatch) -> str:
    ro = tmp_path / "read-only"
    ro.mkdir()
    if ROOT:  # root writes through chmod: simulate what the file system would answer
        import multispike.engine.runlock as runlock

        real = os.access
        monkeypatch.setattr(runlock.os, "access",
                            lambda p, mode: False if Path(p) == ro else real(p, mode))
        monkeypatch.setattr(runlock, "_read_only", lambda p: Path(p) == ro)
    else:
        ro.chmod(0o555)
    return str(ro / "run")


def _out_name_too_long(tmp_path: Path, monkeypatch) -> str:
    return str(tmp_path / ("n" * 300) / "run")


def _out_not_creatable(tmp_path: Path, monkeypatch) -> str:
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here: no folder that even root cannot create")
    return "/proc/multispike-test/run"  # the kernel refuses it, root or not


#: failure class -> (how to make it: flags or an --out, the text of the line, the commands)
FAILURES = {
    "out-under-file": (_out_under_file, "which is a file", WRITERS),
    "out-read-only": (_out_read_only, "is not writable", WRITERS),
    "out-name-too-long": (_out_name_too_long, "more than the 255", WRITERS),
    "out-not-creatable": (_out_not_creatable, "cannot be written", WRITERS),
    "device-mps": (["--device", "mps"], "device 'mps' is not supported", tuple(COMMANDS)),
    "huge-seed": ({"train": ["--seed", "1180591620717411303424"],
                   "deploy": ["--seed", "1180591620717411303424"],
                   "demo": ["--seeds", "1180591620717411303424"],
                   "reproduce": ["--seeds", "1180591620717411303424"]},
                  "must be an integer in [0, 2**63)", ("train", "deploy", "demo", "reproduce")),
    "num-classes": (["--option", "num_classes=3"], "the class count comes from the dataset",
                    ("train",)),
    "sync-bn-on-cpu": (["--sync-bn"], "SyncBatchNorm works only on CUDA GPUs", ("train",)),
}
CASES = [(c, f) for f, (_, _, commands) in FAILURES.items() for c in commands]


@pytest.mark.parametrize("command, failure", CASES)
def test_every_command_and_failure_is_one_line(command, failure, run, tmp_path, capsys,
                                               monkeypatch):
    import multispike.engine as engine
    import multispike.workflows.demo as demo

    def no_training(*a, **k):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(engine, "train_model", no_training)
    monkeypatch.setattr(demo, "train_model", no_training)
    make, text, _ = FAILURES[failure]
    out, extra = str(tmp_path / "out"), []
    if callable(make):
        out = make(tmp_path, monkeypatch)
    else:
        extra = make[command] if isinstance(make, dict) else make
    if failure == "sync-bn-on-cpu":  # as under torchrun, two processes
        monkeypatch.setenv("WORLD_SIZE", "2")
    before = _snapshot(tmp_path, run)
    argv = COMMANDS[command](run, out)
    if "--device" in extra and "--device" in argv:
        i = argv.index("--device")
        del argv[i:i + 2]
    _one_line(capsys, [*argv, *extra], text)
    assert _snapshot(tmp_path, run) == before
    if failure == "num-classes":
        assert not Path(out).exists()  # no folder holding only config.json


@pytest.mark.parametrize("resumed", [False, True])
def test_a_full_disk_mid_checkpoint_is_one_line(resumed, run, tmp_path, capsys, monkeypatch):
    """torch.save reports a full disk as a RuntimeError on top of the OSError: one line, and
    the previous last.pt (if any) is intact and said to be."""
    out = tmp_path / "run"
    argv = [*TRAIN, "--out", str(out)]
    if resumed:
        shutil.copytree(run, out)
        argv = [*TRAIN, "--epochs", "2", "--out", str(out), "--resume"]
    before = _snapshot(tmp_path)
    real = torch.save

    def full(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a checkpoint")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                               "failed writing file data/0: file write failed") from None

    monkeypatch.setattr(torch, "save", full)
    text = "is intact" if resumed else "no checkpoint had been written yet"
    err = _one_line(capsys, argv, text)
    monkeypatch.setattr(torch, "save", real)
    assert "no space left" in err and str(out) in err
    after = _snapshot(tmp_path)
    for name, value in before.items():  # config.json of a resumed run says resume = true
        if not name.endswith("config.json"):
            assert after[name] == value  # last.pt, best.pt and metrics.csv survive
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# -- 1. no silent wrong experiment ------------------------------------------------------------
@pytest.mark.parametrize("text, value", [("no", False), ("yes", True), ("0", False),
                                         ("1", True), ("false", False), ("True", True)])
def test_yes_no_options_parse_at_the_command_line(text, value, tmp_path, capsys, monkeypatch):
    import multispike.engine as engine

    seen = {}
    monkeypatch.setattr(engine, "train_model",
                        lambda cfg, **_: seen.setdefault("cfg", cfg) and pytest.skip("seen"))
    with pytest.raises(pytest.skip.Exception):
        main([*TRAIN, "--option", f"learn_thresholds={text}"])
    assert seen["cfg"].model_options["learn_thresholds"] is value


@pytest.mark.parametrize("option", ["learn_thresholds=maybe", "mt_on_fc=2",
                                    "detach_reset=nein"])
def test_other_yes_no_spellings_are_one_line(option, tmp_path, capsys):
    _one_line(capsys, [*TRAIN, "--option", option, "--out", str(tmp_path / "r")],
              f"--option {option.split('=')[0]} takes true or false")
    assert not (tmp_path / "r").exists()


def test_yes_no_options_in_a_recipe(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('dataset = "digits"\n[model_options]\nlearn_thresholds = "no"\n'
                      'mt_on_fc = 1\n')
    cfg = resolve_config(str(recipe))
    assert cfg.model_options == {"learn_thresholds": False, "mt_on_fc": True}
    recipe.write_text('dataset = "digits"\n[model_options]\nlearn_thresholds = "sometimes"\n')
    with pytest.raises(ConfigError, match="learn_thresholds takes true or false"):
        resolve_config(str(recipe))


@pytest.mark.parametrize("make", [
    lambda: __import__("multispike.models", fromlist=["create"]).create(
        "digits_net", learn_thresholds="no"),
    lambda: __import__("multispike.models", fromlist=["create"]).create(
        "vgg9", mt_on_fc="no"),
    lambda: __import__("multispike.neurons", fromlist=["LIFNode"]).LIFNode(
        learn_amplitude="no"),
    lambda: __import__("multispike.neurons", fromlist=["LIFNode"]).LIFNode(
        detach_reset="False"),
    lambda: __import__("multispike.neurons", fromlist=["LIFNode"]).LIFNode(
        learn_thresholds=1),
])
def test_python_takes_real_booleans_only(make):
    with pytest.raises(ConfigError, match="must be true or false") as e:
        make()
    assert "\n" not in str(e.value)


def test_real_booleans_still_work():
    from multispike.models import create
    from multispike.neurons import LIFNode

    assert LIFNode(learn_amplitude=True, detach_reset=False).amplitude is not None
    assert create("digits_net", learn_thresholds=True).model_args["learn_thresholds"] is True


@pytest.mark.parametrize("flags, text", [
    (["--timesteps", "2", "--option", "timesteps=5"], "sets what --timesteps sets"),
    (["--option", "firing=ternary"], "sets what --firing sets"),
    (["--seed", "3", "--seeds", "0,1"], "--seed 3 and --seeds 0,1 both set the seed"),
    (["--sync-bn"], "this run is one process"),
])
def test_conflicting_flags_are_one_line(flags, text, tmp_path, capsys):
    out = tmp_path / "r"
    _one_line(capsys, [*TRAIN, *flags, "--out", str(out)], text)
    assert not out.exists()


# -- 2. never overwrite a training run ---------------------------------------------------------
@pytest.mark.parametrize("force", [False, True])
def test_a_training_run_is_never_a_deploy_target(force, run, capsys):
    before = _snapshot(run)
    _one_line(capsys, ["deploy", "--checkpoint", str(run / "best.pt"), "--out", str(run),
                       *(["--force"] if force else [])], "holds a training run")
    assert _snapshot(run) == before


# -- 4. no dead ends, no false hints -----------------------------------------------------------
@pytest.mark.parametrize("damage", ["deleted", "corrupt"])
def test_resume_takes_the_configuration_from_last_pt(damage, run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    if damage == "deleted":
        (out / "config.json").unlink()
    else:
        (out / "config.json").write_text("{ not json")
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress",
                 "--workers", "0"]) == 0
    assert "best test accuracy" in capsys.readouterr().out
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    assert (out / "config.json").read_text().startswith("{")


def test_resume_without_config_or_last_pt_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    _one_line(capsys, ["train", "--out", str(out), "--resume"], "nothing to resume")


def test_divergence_before_the_first_checkpoint_claims_none(tmp_path, capsys):
    err = _one_line(capsys, ["train", "--dataset", "digits", "--epochs", "1", "--lr", "1e6",
                             "--workers", "0", "--no-progress", "--device", "cpu", "--out",
                             str(tmp_path / "r")], "no checkpoint exists yet")
    assert "is kept" not in err


def test_the_missing_data_hint_names_only_flags_the_command_has(tmp_path):
    from multispike import data
    from multispike.cli._common import DOWNLOAD_HINT, _for_this_command
    from multispike.errors import DataError

    with pytest.raises(DataError) as e:
        data.build("cifar10", data_dir=str(tmp_path), train=False)
    assert DOWNLOAD_HINT in str(e.value)  # the text the command line rewrites
    for command in ("eval", "analyze", "energy", "reproduce"):
        text = _for_this_command(str(e.value), argparse.Namespace(command=command))
        assert "(--download)" not in text and "multispike train --download" in text
    train = argparse.Namespace(command="train", download=False)
    assert _for_this_command(str(e.value), train) == str(e.value)


def test_recipes_of_digits_ask_for_no_data_dir(capsys):
    assert main(["recipes", "mt-digits"]) == 0
    assert "--data-dir" not in capsys.readouterr().out


def test_deploy_nir_asked_for_and_not_possible_exits_2(run, tmp_path, capsys):
    pytest.importorskip("nir")
    out = tmp_path / "dep"
    _one_line(capsys, ["deploy", "--checkpoint", str(run / "best.pt"), "--out", str(out),
                       "--nir"], "--nir asked for model.nir")
    assert not out.exists() or not any(out.iterdir())


def test_deltas_in_the_form_help_shows(capsys, monkeypatch):
    import multispike.engine as engine

    seen = {}
    monkeypatch.setattr(engine, "train_model",
                        lambda cfg, **_: seen.setdefault("cfg", cfg) and pytest.skip("seen"))
    with pytest.raises(pytest.skip.Exception):
        main([*TRAIN, "--deltas", "-0.5,0.5"])
    assert seen["cfg"].model_options["deltas"] == [-0.5, 0.5]


def test_an_interrupt_says_how_to_resume(run, tmp_path, capsys, monkeypatch):
    import multispike.engine as engine

    def interrupted(cfg, **_):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "train_model", interrupted)
    out = tmp_path / "run"
    shutil.copytree(run, out)
    err = _one_line(capsys, ["train", "--out", str(out), "--resume"], "interrupted", rc=130)
    assert f"multispike train --out {out} --resume" in err
    fresh = tmp_path / "fresh"
    err = _one_line(capsys, [*TRAIN, "--out", str(fresh)], "interrupted", rc=130)
    assert "nothing was kept" in err


def test_a_dataset_split_without_samples_is_one_line(tmp_path, capsys):
    """A CIFAR10-DVS folder too small to hold a training split: one line naming the split
    and the folder, exit 2, no run folder (PyTorch's sampler raised a ValueError before)."""
    from multispike.data.testing import write_cifar10_dvs

    write_cifar10_dvs(tmp_path / "data", per_class=1, events=(20, 40))
    before = _snapshot(tmp_path)
    _one_line(capsys, ["train", "--dataset", "cifar10-dvs", "--data-dir",
                       str(tmp_path / "data"), "--timesteps", "2", "--epochs", "1", "--out",
                       str(tmp_path / "run"), "--no-progress", "--device", "cpu"],
              "the training split of cifar10-dvs in")
    after = _snapshot(tmp_path)  # the decoded-events cache is new; nothing else changed
    assert {k: after.get(k) for k in before} == before and not (tmp_path / "run").exists()
