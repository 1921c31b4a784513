"""The data a run trained on follows its model everywhere (issue 24, point 7).

- Every recipe builds its model for its dataset (input channels and size from the dataset
  spec, no hand-set ``in_channels``) and runs one batch of files written in the official
  formats, built as ``train`` and ``reproduce`` build it.
- A run's dataset options (``resize``) are stored and reused by eval, energy, analyze and
  reproduce; ``--data-option`` sets them; a relative ``--data-dir`` is stored absolute.
- eval's default T starts with the model's own, its default batch is the training batch.
- Checkpoints get the umask's permissions; a class count that does not fit the head is said.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from multispike import data
from multispike.cli import main
from multispike.data import testing
from multispike.engine import list_recipes, load_checkpoint, resolve_config
from multispike.engine.checkpoint import build_for_dataset, save_checkpoint
from multispike.engine.evaluate import default_batch_size, default_timesteps, to_model_input
from multispike.engine.train import check_class_count, load_data, model_args_for
from multispike.errors import ConfigError


# -- every recipe, as a user runs it ---------------------------------------------------------
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Tiny copies of every dataset the recipes name, in the official file formats."""
    root = tmp_path_factory.mktemp("data")
    testing.write_cifar(root / "cifar", "cifar10", per_batch=2, tarball=False)
    testing.write_cifar(root / "cifar", "cifar100", per_batch=2, tarball=False)
    testing.write_cifar10_dvs(root / "dvs", per_class=2, events=(20, 60))
    testing.write_imagenet(root / "imagenet", train_per_class=1, val_per_class=1)
    return root


FOLDERS = {"cifar10": "cifar", "cifar100": "cifar", "cifar10-dvs": "dvs",
           "imagenet": "imagenet", "digits": None}


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_runs_one_batch_as_train_builds_it(name, data_root):
    """The model and the batch come from the recipe alone (plus where its data lies), through
    the functions ``train`` calls: a model built with 3 input channels for 2-channel DVS
    frames failed here. T = 1: the number of steps changes neither the channels nor the
    size of the input, and keeps the 27 forwards within seconds."""
    folder = FOLDERS[resolve_config(name).dataset]
    cfg = resolve_config(name, {"data_dir": str(data_root / folder) if folder else None,
                                "timesteps": 1})
    assert "in_channels" not in cfg.model_options and "input_size" not in cfg.model_options
    spec = data.get_spec(cfg.dataset, **cfg.data_options)
    torch.manual_seed(0)
    model, args = build_for_dataset(model_args_for(cfg, spec), spec, cfg.model_options)
    assert args["in_channels"] == spec.input_shape[0]
    bundle = load_data(cfg, spec)
    x = torch.stack([bundle.test[0][0]])
    assert tuple(x.shape[-3:]) == tuple(spec.input_shape)
    x = bundle.test_transform(x) if bundle.test_transform is not None else x
    with torch.no_grad():
        out = model.eval()(to_model_input(x, spec))
    assert out.shape == (1, 1, spec.num_classes) and torch.isfinite(out).all()


def test_the_dvs_recipes_train_on_resized_two_channel_frames():
    names = [n for n in list_recipes() if "dvs" in n and "ternary" in n]
    assert len(names) == 4
    for name in names:
        cfg = resolve_config(name)
        spec = data.get_spec(cfg.dataset, **cfg.data_options)
        assert spec.input_shape == (2, 48, 48), name


def test_a_model_option_that_contradicts_the_dataset_is_one_line(tmp_path, capsys):
    for argv, text in (
            (["--dataset", "cifar10-dvs", "--option", "in_channels=3"],
             "--option in_channels=3 contradicts dataset cifar10-dvs, whose input is 2 "
             "channels of 128x128"),
            (["--dataset", "digits", "--option", "input_size=16"],
             "--option input_size=16 contradicts dataset digits"),
            (["--dataset", "cifar10-dvs", "--option", "resize=48"],
             "give --data-option resize=48"),
            (["--dataset", "digits", "--data-option", "resize=48"],
             "option 'resize' is not known for dataset 'digits'"),
            (["--dataset", "cifar10-dvs", "--data-option", "resize"],
             "--data-option takes KEY=VALUE, e.g. resize=48; got 'resize'"),
            (["--dataset", "cifar100", "--data-option", "coarse=maybe"],
             "--data-option coarse takes true or false")):
        assert main(["train", *argv, "--epochs", "1", "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and text in err and "Traceback" not in err, err
        assert not (tmp_path / "r").exists()


def test_the_untrained_model_of_energy_takes_the_dataset_input(capsys):
    assert main(["energy", "--model", "vgg12", "--dataset", "cifar10-dvs", "--data-option",
                 "resize=64", "--firing-rate", "0.1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["input_shape"] == [2, 64, 64]


# -- a run's dataset options follow its checkpoint ----------------------------------------------
@pytest.fixture(scope="module")
def dvs_run(tmp_path_factory):
    """One epoch of a small model on CIFAR10-DVS frames resized to 16 x 16, trained with a
    relative --data-dir from the run's parent folder."""
    base = tmp_path_factory.mktemp("dvs_run")
    testing.write_cifar10_dvs(base / "data", per_class=3, events=(20, 60))
    here = Path.cwd()
    os.chdir(base)
    try:
        rc = main(["train", "--dataset", "cifar10-dvs", "--model", "digits_net", "--firing",
                   "ternary", "--data-dir", "data", "--timesteps", "2", "--epochs", "1",
                   "--batch-size", "8", "--out", "run", "--no-progress", "--device", "cpu",
                   "--data-option", "resize=16", "--data-option", "convert_workers=0"])
    finally:
        os.chdir(here)
    assert rc == 0
    return base / "run"


def _shapes_seen(monkeypatch) -> list:
    """The input shapes that evaluation passes feed the model, recorded."""
    from multispike.engine import evaluate as ev

    seen: list = []
    real = ev.evaluate

    def spy(net, loader, **kwargs):
        def shapes():
            for x, y in loader:
                seen.append(tuple(x.shape[-3:]))
                yield x, y
        return real(net, shapes(), **kwargs)

    monkeypatch.setattr(ev, "evaluate", spy)
    return seen


def test_the_run_stores_its_options_and_an_absolute_data_dir(dvs_run):
    cfg = load_checkpoint(dvs_run / "best.pt")["config"]
    assert cfg["data_options"]["resize"] == 16
    assert cfg["data_dir"] == str((dvs_run.parent / "data").resolve())
    assert json.loads((dvs_run / "config.json").read_text())["data_dir"] == cfg["data_dir"]


def test_eval_reads_the_frames_the_run_trained_on(dvs_run, monkeypatch, capsys, tmp_path):
    """From another folder (the relative --data-dir was stored absolute), at 16 x 16, with
    the loss training measured on the same checkpoint."""
    seen = _shapes_seen(monkeypatch)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(dvs_run / "best.pt"), "--device", "cpu",
                 "--json", "--no-progress"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["timesteps"] for r in rows] == [2, 1, 4]  # the trained T first
    assert set(seen) == {(2, 16, 16)}
    final = load_checkpoint(dvs_run / "best.pt")["history"][-1]
    assert rows[0]["loss"] == pytest.approx(final["test_loss"], rel=1e-5)
    assert rows[0]["accuracy"] == pytest.approx(final["test_accuracy"])


def test_eval_refuses_data_the_model_cannot_take_naming_the_flag(dvs_run, capsys):
    assert main(["eval", "--checkpoint", str(dvs_run / "best.pt"), "--device", "cpu",
                 "--data-option", "resize=32", "--timesteps", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "takes 2x16x16 input" in err and "--data-option" in err


def test_energy_and_analyze_use_the_run_s_data(dvs_run, tmp_path, capsys):
    assert main(["energy", "--checkpoint", str(dvs_run / "best.pt"), "--device", "cpu",
                 "--no-progress", "--json", "--batches", "1"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["input_shape"] == [2, 16, 16] and d["dataset"] == "cifar10-dvs"
    assert main(["analyze", "--checkpoint", str(dvs_run / "best.pt"), "--device", "cpu",
                 "--out", str(tmp_path / "a"), "--no-progress", "--membrane-samples", "0",
                 "--batches", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mean_rate"] >= 0


def test_reproduce_evaluates_at_the_run_s_options(dvs_run, monkeypatch):
    from multispike.workflows import reproduce as rp

    seen = _shapes_seen(monkeypatch)
    claim = {"timesteps": 2, "source": "test"}
    r = rp.evaluate_seed(dvs_run, "cifar10-dvs", None, claim, "cpu", eval_ts=[2])
    assert set(seen) == {(2, 16, 16)}
    assert r["accuracy"]["2"] == pytest.approx(100 * load_checkpoint(
        dvs_run / "best.pt")["best_accuracy"])
    deploy = r["deploy"]  # a one-epoch model may leave layers silent: then not "ok", and why
    assert r["energy"]["energy_uj"] > 0 and deploy["max_abs_diff_float64"] <= 1e-6
    assert deploy["ok"] == (deploy["note"] is None)


def test_eval_shows_the_progress_of_every_pass(dvs_run, capsys):
    assert main(["eval", "--checkpoint", str(dvs_run / "best.pt"), "--device", "cpu",
                 "--timesteps", "2"]) == 0
    err = capsys.readouterr().err
    assert "eval T=2:" in err and "rates T=2:" in err
    assert main(["eval", "--checkpoint", str(dvs_run / "best.pt"), "--device", "cpu",
                 "--timesteps", "2", "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_a_checkpoint_without_stored_options_reads_the_dataset_defaults():
    from multispike.engine.checkpoint import checkpoint_settings, run_data

    old = {"config": {"dataset": "cifar10-dvs", "data_dir": "/d"}, "model_args": {}}
    run = run_data(checkpoint_settings(old))
    assert (run.dataset, run.data_dir, run.options) == ("cifar10-dvs", "/d", {})


# -- eval's defaults -----------------------------------------------------------------------------
def test_eval_starts_with_the_trained_t_and_bounds_its_batch():
    assert default_timesteps(10) == [10, 1, 2, 4] and default_timesteps(4) == [4, 1, 2]
    assert default_batch_size({"config": {"batch_size": 128}}, 2, [2, 1]) == 128
    assert default_batch_size({"config": {"batch_size": 128}}, 2, [2, 1, 4]) == 64
    assert default_batch_size({"config": {}}, None, [1, 2, 4]) == 64


def test_eval_help_says_its_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the T the model was trained at, then 1,2,4" in text
    assert "the run's training batch size" in text and "--data-option" in text


# -- files and classes ---------------------------------------------------------------------------
@pytest.mark.parametrize("mask, mode", [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_checkpoints_get_the_permissions_of_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        path = save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.ones(2)},
                                                   "model_args": {"name": "digits_net"}})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left


class _Folder(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.classes = [f"n{i:08d}" for i in range(n)]


def test_a_class_count_that_does_not_fit_the_head_is_said():
    with pytest.warns(UserWarning, match="dataset imagenet has 3 classes but the model's head "
                      "has 1000 outputs"):
        check_class_count(torch.utils.data.Subset(_Folder(3), [0]), 1000, "imagenet")
    with pytest.raises(ConfigError, match="has 12 classes but the model's head has 10"):
        check_class_count(_Folder(12), 10, "x")
    check_class_count(_Folder(10), 10, "x")  # silent


def test_cifar100_coarse_has_a_20_class_head():
    assert data.get_spec("cifar100", coarse=True).num_classes == 20


def test_a_resumed_run_keeps_its_data_but_may_move_its_cache(dvs_run, capsys):
    from multispike.engine.config import differing_settings

    before = (dvs_run / "last.pt").read_bytes()
    assert main(["train", "--out", str(dvs_run), "--resume", "--data-option", "resize=32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--data-option resize=32 (the run has 16)" in err
    assert (dvs_run / "last.pt").read_bytes() == before
    saved = {"data_options": {"resize": 16, "cache_dir": "/a"}}
    assert differing_settings(saved, {"data_options": {"cache_dir": "/b"}}) == []


def test_train_counts_skipped_images_at_the_end_of_an_epoch(tmp_path, capsys):
    """ImageNet with skip_bad=True: the run goes on past an undecodable image, and train says
    at the end of the epoch how many it skipped and which came first."""
    root = testing.write_imagenet(tmp_path / "imagenet")
    bad = sorted((root / "train" / "n01440764").glob("*.JPEG"))[1]
    testing.damage_image(bad, "garbage")
    rc = main(["train", "--dataset", "imagenet", "--model", "digits_net", "--data-dir",
               str(root), "--data-option", "crop=16", "--data-option", "resize=18",
               "--data-option", "skip_bad=true", "--epochs", "1", "--batch-size", "4",
               "--device", "cpu", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0
    lines = [ln for ln in err.splitlines() if "undecodable image skipped" in ln]
    assert len(lines) == 1 and str(bad) in lines[0] and "1 undecodable" in lines[0]


def test_deploy_records_the_size_a_resnet_trained_at(tmp_path):
    """A ResNet pools globally and trains at any size: deploy records (and checks at) the
    size of the run's data, 16 x 16 here, not the paper's 32 x 32."""
    testing.write_cifar10_dvs(tmp_path / "data", per_class=3, events=(20, 40))
    assert main(["train", "--dataset", "cifar10-dvs", "--model", "resnet20m", "--firing",
                 "ternary", "--data-dir", str(tmp_path / "data"), "--timesteps", "2",
                 "--epochs", "1", "--batch-size", "10", "--out", str(tmp_path / "run"),
                 "--no-progress", "--device", "cpu", "--data-option", "resize=16",
                 "--data-option", "convert_workers=0"]) == 0
    assert main(["deploy", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--out",
                 str(tmp_path / "dep"), "--no-nir", "--verify-batches", "1", "--batch-size",
                 "2", "--no-progress"]) in (0, 1)
    cfg = json.loads((tmp_path / "dep" / "config.json").read_text())
    assert cfg["input_shape"] == [2, 16, 16]
