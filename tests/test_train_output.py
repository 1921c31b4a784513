"""What ``multispike train`` and ``eval`` tell a user (issue 24, points 5 and 6): one line per
epoch under ``--no-progress``, the thread count at the start and ``--threads N``, the T of
``eval``'s per-layer rates, and ``curves.png`` at the end of a run."""

from __future__ import annotations

import json

import pytest
import torch

from multispike.cli import main
from multispike.engine import load_checkpoint

TRAIN = ["train", "--dataset", "digits", "--batch-size", "128", "--workers", "0",
         "--no-progress", "--device", "cpu", "--schedule", "constant"]


@pytest.fixture()
def no_thread_env(monkeypatch):
    """``--threads`` sets MULTISPIKE_THREADS in this process: put it back after the test."""
    monkeypatch.delenv("MULTISPIKE_THREADS", raising=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch digits run with --threads 1 and what it printed."""
    import os

    out = tmp_path_factory.mktemp("train") / "run"
    before = os.environ.pop("MULTISPIKE_THREADS", None)
    try:
        with pytest.MonkeyPatch.context() as mp:
            lines: list[str] = []
            mp.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
            assert main([*TRAIN, "--epochs", "1", "--threads", "1", "--out", str(out)]) == 0
    finally:
        os.environ.pop("MULTISPIKE_THREADS", None)
        if before is not None:
            os.environ["MULTISPIKE_THREADS"] = before
    return out, lines


def test_no_progress_prints_the_thread_count_then_one_line_per_epoch(run):
    out, lines = run
    assert lines[0].startswith("training on cpu with 1 thread ")
    assert "same seed and thread count" in lines[0]
    (epoch,) = [ln for ln in lines if ln.startswith("epoch ")]
    row = load_checkpoint(out / "last.pt")["history"][0]
    assert epoch.startswith(f"epoch 1/1  loss {row['train_loss']:.4f}  "
                            f"train {row['train_accuracy']:.4f}  test {row['test_accuracy']:.4f}")
    assert epoch.endswith("img/s")
    assert json.loads((out / "config.json").read_text())["threads"] == 1


def test_a_run_writes_its_training_curves(run):
    out, _ = run
    png = out / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_the_same_seed_and_thread_count_give_the_same_weights(tmp_path, no_thread_env):
    for name in ("a", "b"):
        assert main([*TRAIN, "--epochs", "1", "--threads", "1", "--out",
                     str(tmp_path / name)]) == 0
    a, b = (load_checkpoint(tmp_path / n / "last.pt")["model"] for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_threads_must_be_positive(capsys, no_thread_env):
    assert main([*TRAIN, "--threads", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threads" in err[0]


def test_eval_says_the_T_of_its_per_layer_rates(run, capsys):
    out, _ = run
    assert main(["eval", "--checkpoint", str(out / "best.pt"), "--timesteps", "1,3",
                 "--device", "cpu", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "firing rate per layer at T = 3 " in text
