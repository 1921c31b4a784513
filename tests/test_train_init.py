"""``multispike train --init CHECKPOINT``: fine-tuning starts from a checkpoint's model and
weights (a zoo run's, or an imported NIR graph upgraded to multi-bit spikes), as a new run
whose checkpoints every command reads like any other; the flags that would choose another
model are refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

from multispike.cli import main
from multispike.engine.checkpoint import load_checkpoint, load_model

RUN = ["--dataset", "digits", "--batch-size", "128", "--no-progress", "--workers", "0",
       "--device", "cpu"]


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("init") / "binary"
    assert main(["train", *RUN, "--model", "digits_net", "--firing", "binary", "--neuron",
                 "lif", "--timesteps", "3", "--epochs", "2", "--out", str(out)]) == 0
    return out


def test_init_starts_from_the_checkpoint_s_weights(binary_run, tmp_path):
    """A learning rate of 1e-12 leaves the weights where --init put them: the checkpoint's
    (a model built afresh would differ everywhere), and the model's description is kept."""
    out = tmp_path / "ft"
    assert main(["train", *RUN, "--init", str(binary_run), "--epochs", "1", "--lr", "1e-12",
                 "--weight-decay", "0", "--momentum", "0", "--out", str(out)]) == 0
    start, tuned = load_model(binary_run / "best.pt")[0], load_model(out / "last.pt")[0]
    assert tuned.model_args == start.model_args
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["config"]["init"] == str(binary_run) and ckpt["epoch"] == 1
    assert ckpt["config"]["timesteps"] == 3 == tuned.timesteps  # the checkpoint's own T
    weights = dict(tuned.named_parameters())  # (BN's running statistics move at any lr)
    for key, value in start.named_parameters():
        assert torch.allclose(weights[key], value, atol=1e-6), key


def test_init_of_an_imported_graph_upgraded_to_mt_trains_and_resumes(binary_run, tmp_path,
                                                                      capsys):
    """The README's path: a binary network as NIR, imported with MT spikes, fine-tuned; the
    run's checkpoints keep the graph (eval rebuilds it) and --resume continues it."""
    pytest.importorskip("nir")  # the optional NIR extra (make test installs it)
    assert main(["deploy", "--checkpoint", str(binary_run / "best.pt"), "--out",
                 str(tmp_path / "nir"), "--nir", "--no-progress"]) == 0
    assert main(["import", str(tmp_path / "nir" / "model.nir"), "--out",
                 str(tmp_path / "mt"), "--firing", "mt"]) == 0
    capsys.readouterr()
    out = tmp_path / "ft"
    assert main(["train", *RUN, "--init", str(tmp_path / "mt"), "--epochs", "1", "--lr",
                 "0.02", "--schedule", "constant", "--out", str(out)]) == 0
    model, ckpt = load_model(out / "best.pt")
    assert ckpt["model_args"]["name"] == "nir_graph" and ckpt["model_args"]["firing"] == "mt"
    assert "graph" in ckpt["model_args"]
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "best.pt"), "--no-progress", "--json",
                 "--timesteps", "2"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["timesteps"] == 2 and 0 <= row["accuracy"] <= 1
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 2


@pytest.mark.parametrize(("extra", "match"), [
    (["--firing", "mt"], "drop --firing"),
    (["--option", "levels=3"], "drop --option"),
    (["--model", "vgg9"], "drop --model"),
    (["--recipe", "mt-digits"], "drop --recipe"),
])
def test_flags_that_choose_another_model_are_refused(binary_run, tmp_path, capsys, extra,
                                                     match):
    assert main(["train", *RUN, "--init", str(binary_run), "--epochs", "1", "--out",
                 str(tmp_path / "x"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_a_folder_without_a_checkpoint_and_another_dataset_are_one_line(binary_run, tmp_path,
                                                                       capsys):
    from multispike.data.testing import write_cifar

    (tmp_path / "empty").mkdir()
    assert main(["train", *RUN, "--init", str(tmp_path / "empty"), "--out",
                 str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no model.pt, best.pt or last.pt" in err and "\n" not in err
    write_cifar(tmp_path / "cifar")
    assert main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "cifar"),
                 "--init", str(binary_run), "--no-progress", "--device", "cpu", "--out",
                 str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert "takes 1x8x8 input" in err and "cifar10 gives 3x32x32" in err and "\n" not in err
    assert not (tmp_path / "y").exists()
