"""The workflows called from Python give what their commands print: ``multispike energy``,
``eval`` and ``import`` are the command line's flags parsed, one workflow call, and printing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multispike.analysis import get_cost_table
from multispike.cli import main
from multispike.engine import TrainConfig, train_model
from multispike.errors import ConfigError
from multispike.workflows.evaluate_checkpoint import evaluate_checkpoint
from multispike.workflows.measure import (
    build_target_model,
    dataset_spec,
    measure_energy,
    resolve_target,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """``best.pt`` of a one-epoch MT digits run at T = 3."""
    out = tmp_path_factory.mktemp("run")
    train_model(TrainConfig(dataset="digits", epochs=1, batch_size=128, progress=False,
                            num_workers=0, out=str(out), firing="mt", timesteps=3))
    return out / "best.pt"


def test_measure_energy_equals_the_energy_command(checkpoint, capsys):
    target = resolve_target(str(checkpoint))
    assert (target.dataset, target.timesteps, target.notes) == ("digits", 3, [])
    spec = dataset_spec(target)
    model = build_target_model(target, spec)
    report = measure_energy(model, spec, get_cost_table("hu2021"), target, device="cpu",
                            batches=2, progress=False).to_dict()
    assert main(["energy", "--checkpoint", str(checkpoint), "--json", "--batches", "2",
                 "--device", "cpu", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {k: v for k, v in report.items() if k not in ("layers", "neuron_layers")}
    assert report["rate_source"].startswith("measured") and report["energy_uj"] > 0


def test_a_target_notes_what_overrides_the_checkpoint(checkpoint):
    target = resolve_target(str(checkpoint), timesteps=2)
    assert target.timesteps == 2 and target.notes == [
        "note: --timesteps 2 overrides the checkpoint's T = 3"]
    with pytest.raises(ConfigError, match="differs from the checkpoint's firing mt"):
        resolve_target(str(checkpoint), firing="ternary")
    with pytest.raises(ConfigError, match="drop --option"):
        build_target_model(target, dataset_spec(target), options={"levels": 3})


def test_evaluate_checkpoint_equals_the_eval_command(checkpoint, capsys):
    result = evaluate_checkpoint(str(checkpoint), timesteps=[1, 3], device="cpu",
                                 progress=False)
    assert (result.model, result.dataset, result.trained) == ("digits_net", "digits", 3)
    assert main(["eval", "--checkpoint", str(checkpoint), "--timesteps", "1,3", "--json",
                 "--device", "cpu", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out) == result.rows
    assert [r["timesteps"] for r in result.rows] == [1, 3]
