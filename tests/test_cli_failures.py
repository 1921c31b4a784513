"""Every failure of the command line is one line on stderr, exit code 2, no traceback, and
leaves an existing ``--out`` file as it was.

Table-driven: each command that reads a checkpoint × each kind of bad file, each command that
writes into ``--out`` × an ``--out`` that is a file, and the flags a run must refuse before it
starts. The CLI runs in-process (``multispike.cli.main``), with one tiny digits checkpoint
trained once for the module.
"""

from __future__ import annotations

import errno
import json
import random
import shutil

import pytest
import torch

from multispike.cli import main
from multispike.engine import TrainConfig, save_checkpoint, train_model
from multispike.models import create

QUICK = dict(dataset="digits", epochs=1, batch_size=128, progress=False, num_workers=0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained digits run (MT firing, T = 4): its folder holds last.pt, best.pt, config.json."""
    out = tmp_path_factory.mktemp("run") / "run"
    train_model(TrainConfig(**QUICK, timesteps=4, firing="mt", out=str(out)))
    return out


def _bad_file(kind: str, tmp_path, run) -> str:
    """A path that is not a usable checkpoint, of the given kind."""
    p = tmp_path / f"bad-{kind}.pt"
    if kind == "missing":
        return str(p)
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "random":
        p = tmp_path / "broken.safetensors"  # the suffix torch routes to safetensors
        p.write_bytes(random.Random(0).randbytes(1000))
    elif kind == "directory":
        p = tmp_path / "a-folder"
        p.mkdir()
    elif kind == "png":
        p = tmp_path / "figure.png"
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    elif kind == "json":
        p = tmp_path / "rows.json"
        p.write_text(json.dumps([{"accuracy": 0.9}]))
    elif kind == "truncated":
        p.write_bytes((run / "best.pt").read_bytes()[:4000])
    elif kind == "foreign-torch":  # a torch.save file, but not written by multispike train
        torch.save({"weights": torch.zeros(3)}, p)
    else:  # pragma: no cover
        raise AssertionError(kind)
    return str(p)


BAD_FILES = ["missing", "empty", "random", "directory", "png", "json", "truncated",
             "foreign-torch"]
EXPECTED = {"missing": "does not exist", "empty": "is empty", "random": "not a multispike",
            "directory": "is a directory, not a checkpoint file", "png": "PNG image",
            "json": "JSON text", "truncated": "corrupt or truncated",
            "foreign-torch": "lacks model_args"}


def _fails(capsys, argv: list[str], text: str) -> str:
    rc = main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 2, (argv, captured.out, err)
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("multispike: error: "), err
    assert text in err, err
    return err


# -- commands that read a checkpoint ---------------------------------------------------------------
READERS = {
    "eval": lambda ck, out: ["eval", "--checkpoint", ck, "--no-progress"],
    "energy": lambda ck, out: ["energy", "--checkpoint", ck, "--no-progress"],
    "analyze": lambda ck, out: ["analyze", "--checkpoint", ck, "--out", out, "--no-progress"],
    "deploy": lambda ck, out: ["deploy", "--checkpoint", ck, "--out", out],
}


@pytest.mark.parametrize("kind", BAD_FILES)
@pytest.mark.parametrize("command", sorted(READERS))
def test_a_bad_checkpoint_is_one_line(command, kind, tmp_path, run, capsys):
    ckpt = _bad_file(kind, tmp_path, run)
    out = tmp_path / "out"
    err = _fails(capsys, READERS[command](ckpt, str(out)), EXPECTED[kind])
    assert ckpt in err
    assert "best.pt beside it" not in err and "`torch.load` fr" not in err
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("kind", ["empty", "random", "png", "truncated", "foreign-torch"])
def test_resume_from_a_bad_last_pt_says_it_cannot_resume(kind, tmp_path, run, capsys):
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copy(run / "config.json", out / "config.json")
    shutil.copy(_bad_file(kind, tmp_path, run), out / "last.pt")
    before = (out / "last.pt").read_bytes()
    err = _fails(capsys, ["train", "--resume", "--out", str(out), "--no-progress"],
                 "cannot be resumed")
    assert "best.pt beside it" not in err
    assert (out / "last.pt").read_bytes() == before


def test_resume_with_another_models_checkpoint(tmp_path, run, capsys):
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copy(run / "config.json", out / "config.json")
    other = create("digits_net", firing="binary", timesteps=4, neuron="lif")
    ckpt = torch.load(run / "last.pt", weights_only=True)
    save_checkpoint(out / "last.pt", {**ckpt, "model_args": other.model_args,
                                      "model": other.state_dict()})
    _fails(capsys, ["train", "--resume", "--out", str(out), "--no-progress"],
           "another model")


def test_analyze_and_energy_refuse_another_datasets_input(run, tmp_path, capsys):
    ckpt = str(run / "best.pt")
    _fails(capsys, ["energy", "--checkpoint", ckpt, "--dataset", "cifar10"], "1x8x8 input")
    _fails(capsys, ["analyze", "--checkpoint", ckpt, "--dataset", "cifar10", "--out",
                    str(tmp_path / "a")], "drop --dataset")
    _fails(capsys, ["energy", "--checkpoint", ckpt, "--firing", "binary"], "drop --firing")
    _fails(capsys, ["energy", "--checkpoint", ckpt, "--model", "vgg9"], "drop --model")


# -- other files a command reads: a recipe, evaluation rows ---------------------------------------
@pytest.mark.parametrize("kind, name, text", [
    ("missing", "nope.toml", "does not exist"),
    ("random", "broken.toml", "not UTF-8 text"),
    ("directory", "folder.toml", "is a directory"),
    ("png", "figure.png", "not a .toml file"),
    ("bad-toml", "bad.toml", "not valid TOML"),
])
def test_train_with_a_bad_recipe_file(kind, name, text, tmp_path, capsys):
    p = tmp_path / name
    if kind == "random":
        p.write_bytes(b"\xff\xfe" + random.Random(1).randbytes(300))
    elif kind == "directory":
        p.mkdir()
    elif kind == "png":
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    elif kind == "bad-toml":
        p.write_text("epochs = = 3\n")
    _fails(capsys, ["train", "--recipe", str(p), "--out", str(tmp_path / "run")], text)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind, name, text", [
    ("missing", "eval.json", "no such file"),
    ("empty", "eval.json", "not valid JSON"),
    ("random", "eval.csv", "not UTF-8 text"),
    ("directory", "evals", "is a directory"),
    ("png", "eval.png", "not valid JSON"),
])
def test_analyze_with_a_bad_eval_json(kind, name, text, tmp_path, capsys):
    p = tmp_path / name
    if kind == "empty":
        p.write_text("")
    elif kind == "random":
        p.write_bytes(b"\xff\xfe" + random.Random(2).randbytes(300))
    elif kind == "directory":
        p.mkdir()
    elif kind == "png":
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    out = tmp_path / "a"
    _fails(capsys, ["analyze", "--eval-json", str(p), "--out", str(out)], text)
    assert not out.exists()


# -- --out an existing file ------------------------------------------------------------------------
WRITERS = {
    "train": lambda run, out: ["train", "--dataset", "digits", "--epochs", "1", "--out", out],
    "train-seeds": lambda run, out: ["train", "--dataset", "digits", "--epochs", "1",
                                     "--seeds", "0,1", "--out", out],
    "deploy": lambda run, out: ["deploy", "--checkpoint", str(run / "best.pt"), "--out", out],
    "analyze": lambda run, out: ["analyze", "--checkpoint", str(run / "best.pt"), "--out", out,
                                 "--no-progress"],
    "demo": lambda run, out: ["demo", "--epochs", "1", "--seeds", "0", "--out", out],
}


@pytest.mark.parametrize("command", sorted(WRITERS))
@pytest.mark.parametrize("under", [False, True])
def test_out_an_existing_file_is_left_alone(command, under, tmp_path, run, capsys, monkeypatch):
    import multispike.workflows.demo as demo

    def no_training(*a, **k):  # demo must refuse before it trains anything
        raise AssertionError("trained before checking --out")

    monkeypatch.setattr(demo, "train_model", no_training)
    target = tmp_path / "results.txt"
    target.write_text("keep me\n")
    out = target / "sub" if under else target
    _fails(capsys, WRITERS[command](run, str(out)), str(target))
    assert target.read_text() == "keep me\n"


# -- settings a run must refuse before it starts --------------------------------------------
@pytest.mark.parametrize("flags, text", [
    (["--workers", "-1"], "--workers must be an integer >= 0"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "0"], "--lr must be a finite number > 0"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number"),
    (["--weight-decay", "-1"], "--weight-decay must be a finite number >= 0"),
    (["--momentum", "1"], "--momentum must be in [0, 1)"),
    (["--momentum", "-0.1"], "--momentum must be in [0, 1)"),
    (["--seeds", "0,0"], "seed 0 twice"),
    (["--seeds", "a"], "--seeds takes integers"),
    (["--epochs", "0"], "--epochs must be an integer >= 1"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["--timesteps", "100000000"], "lower --timesteps or --batch-size"),
])
def test_train_refuses_before_training(flags, text, tmp_path, capsys, monkeypatch):
    import multispike.engine as engine

    def no_training(*a, **k):
        raise AssertionError("trained a run that should have been refused")

    monkeypatch.setattr(engine, "train_model", no_training)
    out = tmp_path / "run"
    _fails(capsys, ["train", "--dataset", "digits", "--out", str(out), *flags], text)
    assert not out.exists()


def test_demo_refuses_bad_flags_before_training(tmp_path, capsys, monkeypatch):
    import multispike.workflows.demo as demo

    monkeypatch.setattr(demo, "train_model", lambda *a, **k: pytest.fail("trained"))
    out = str(tmp_path / "demo")
    _fails(capsys, ["demo", "--seeds", "1,1", "--out", out], "seed 1 twice")
    _fails(capsys, ["demo", "--epochs", "0", "--out", out], "--epochs must be")
    if not torch.cuda.is_available():
        _fails(capsys, ["demo", "--device", "cuda", "--out", out], "no CUDA GPU")


def test_huge_timesteps_are_refused_from_a_memory_estimate(run, capsys):
    err = _fails(capsys, ["eval", "--checkpoint", str(run / "best.pt"), "--timesteps",
                          "100000000"], "GiB")
    assert "memory" in err
    _fails(capsys, ["energy", "--checkpoint", str(run / "best.pt"), "--timesteps",
                    "100000000"], "memory")
    _fails(capsys, ["energy", "--model", "digits_net", "--dataset", "digits", "--timesteps",
                    "100000000", "--firing-rate", "0.1"], "memory")


def test_out_of_memory_is_one_line(run, capsys, monkeypatch):
    import multispike.engine as engine

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(engine, "evaluate_model", oom)
    _fails(capsys, ["eval", "--checkpoint", str(run / "best.pt"), "--no-progress"],
           "ran out of memory")

    def cpu_oom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 1000000000000 bytes.")

    monkeypatch.setattr(engine, "train_model", cpu_oom)
    _fails(capsys, ["train", "--dataset", "digits", "--epochs", "1"], "lower --batch-size")


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    import multispike.engine.train as train

    real = train.save_checkpoint
    kept = {}

    def writer(path, payload):
        if payload["epoch"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, payload)
        kept[path.name] = path.read_bytes()

    monkeypatch.setattr(train, "save_checkpoint", writer)
    out = tmp_path / "run"
    err = _fails(capsys, ["train", "--dataset", "digits", "--epochs", "2", "--schedule",
                          "constant", "--batch-size", "128", "--workers", "0", "--no-progress",
                          "--out", str(out)], "no space left")
    assert str(out) in err and "--resume" in err
    assert (out / "last.pt").read_bytes() == kept["last.pt"]


@pytest.mark.parametrize("accuracy", [150, "nan", None, "high", -1])
def test_analyze_refuses_eval_rows_it_cannot_plot(accuracy, tmp_path, capsys):
    rows = [{"firing": "mt", "timesteps": 1, "accuracy": 0.9},
            {"firing": "mt", "timesteps": 2, "accuracy": accuracy}]
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps(rows))
    out = tmp_path / "a"
    err = _fails(capsys, ["analyze", "--eval-json", str(ev), "--out", str(out)], "row 1")
    assert "accuracy" in err
    assert not out.exists()


@pytest.mark.parametrize("flags, text", [
    (["--firing", "mt", "--option", "levels=3"],
     "levels apply to firing 'integer' and 'signed-integer', not to 'mt'"),
    (["--firing", "integer", "--option", "levels=0"], "levels must be an integer >= 1"),
    (["--firing", "integer", "--deltas", "0.5"], "deltas apply to firing 'mt'"),
    (["--firing", "integer", "--option", "reset=hard"], "unknown reset 'hard'"),
    (["--firing", "signed-integer", "--option", "reset_grad=spike"], "reset_grad='spike'"),
    (["--firing", "quaternary"], "unknown firing"),
])
def test_train_refuses_wrong_neuron_option_combinations(flags, text, tmp_path, capsys):
    """Integer spikes, levels and the reset choice are model options; a wrong combination is
    one line (exit code 2) before any epoch."""
    out = tmp_path / "run"
    _fails(capsys, ["train", "--dataset", "digits", "--epochs", "1", "--no-progress",
                    "--out", str(out), *flags], text)
    assert not (out / "last.pt").exists()
