"""A checkpoint evaluated at several numbers of time steps (``multispike eval``): the model
opened, the run's data resolved (its dataset, folder and options; those given win), checked
against the model's input and the device's memory, then
:func:`multispike.engine.evaluate_model` at each T. From Python::

    result = evaluate_checkpoint("runs/mt/best.pt", timesteps=[1, 2, 4])
    [(row["timesteps"], row["accuracy"]) for row in result.rows]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Evaluation:
    """What :func:`evaluate_checkpoint` measured: one row per T (``rows``), the model's name,
    the dataset and its options, and the T the model was trained at."""

    rows: list[dict[str, Any]]
    model: str
    dataset: str
    data_options: dict[str, Any]
    trained: int | None


def evaluate_checkpoint(checkpoint: str, *, timesteps: Sequence[int] | None = None,
                        dataset: str | None = None, data_dir: str | None = None,
                        data_options: dict[str, Any] | None = None,
                        batch_size: int | None = None, device: str = "auto",
                        compile: str = "off", progress: bool = True) -> Evaluation:
    """Evaluate ``checkpoint`` at each of ``timesteps`` (default: 1, 2, 4 and the trained T)
    on its run's test split, in batches of ``batch_size`` (default: one that fits, from the
    run's training batch)."""
    from multispike import data
    from multispike.engine import evaluate_model
    from multispike.engine.checkpoint import (
        check_input_fits,
        checkpoint_settings,
        load_model,
        run_data,
    )
    from multispike.engine.device import check_memory, pick_device
    from multispike.engine.evaluate import default_batch_size, default_timesteps

    dev = pick_device(device)
    model, ckpt = load_model(checkpoint)
    trained = getattr(model, "timesteps", None)
    ts = list(timesteps or default_timesteps(trained))
    batch = batch_size or default_batch_size(ckpt, trained, ts)
    run = run_data(checkpoint_settings(ckpt), dataset=dataset, data_dir=data_dir,
                   options=data_options or {}, default="digits")
    spec = data.get_spec(run.dataset, **run.options)
    check_input_fits(model, spec, run.given)
    check_memory(model, spec.input_shape, max(ts), batch, dev, training=False)
    rows = evaluate_model(model, run.dataset, ts, data_dir=run.data_dir,
                          data_options=run.options, batch_size=batch, device=device,
                          compile=compile, progress=progress)
    return Evaluation(rows, ckpt["model_args"]["name"], run.dataset, run.options, trained)
