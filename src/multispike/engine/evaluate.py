"""Evaluation of one trained model at several numbers of time steps, with firing rates.

One trained model runs at T = 1, 2, 4, … by setting ``model.timesteps`` (static images are
repeated over T; event datasets are re-integrated into T frames). With ``compile`` the
accuracy comes from ``torch.compile(model)``; firing rates always from the eager model, whose
layers the activity monitor records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from multispike.engine.config import check_compile_mode
from multispike.engine.train import compile_model, evaluate, pick_device
from multispike.errors import ConfigError
from multispike.kernels.allocator import tune_cpu_allocator
from multispike.monitor import record_activity


def parse_timesteps(text: str | Sequence[int]) -> list[int]:
    """``"1,2,4"`` → ``[1, 2, 4]``; every T must be an integer >= 1."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = [int(str(t).strip()) for t in items if str(t).strip()]
    except ValueError:
        raise ConfigError(f"timesteps must be integers like 1,2,4; got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"timesteps must be integers >= 1, got {text!r}")
    return values


def evaluate_model(
    model: nn.Module,
    dataset: str,
    timesteps_list: Sequence[int],
    *,
    data_dir: str | None = None,
    batch_size: int = 256,
    device: str = "auto",
    rates: bool = True,
    max_batches_for_rates: int = 4,
    compile: str = "off",
) -> list[dict[str, Any]]:
    """Accuracy (and per-layer firing rates) of ``model`` on the test split at each T.

    Returns one row per T: ``timesteps``, ``accuracy``, ``loss``, ``firing_rates`` (layer →
    spikes per neuron per step, −1 and every MT plane counted) and ``mean_firing_rate``.
    ``compile``: ``off`` or a ``torch.compile`` mode for the accuracy pass (compiled on first
    use at each T); the firing-rate pass runs eagerly.
    """
    from multispike import data

    mode = check_compile_mode(compile)
    spec = data.get_spec(dataset)
    dev = pick_device(device)
    if dev.type == "cpu":
        tune_cpu_allocator()  # freed activations are reused, not page-faulted per batch
    model = model.to(dev)
    net = compile_model(model, mode, dev)  # shares its weights with `model`
    original_t = model.timesteps
    firing = getattr(model, "model_args", {}).get("firing")
    rows = []
    try:
        for t in timesteps_list:
            model.timesteps = t
            ds = data.build(dataset, data_dir=data_dir, train=False,
                            **({"timesteps": t} if spec.is_event else {}))
            loader = data.make_loader(ds, batch_size, shuffle=False)
            tf = data.batch_transform(dataset, train=False)
            result = evaluate(net, loader, spec=spec, transform=tf, device=dev)
            row: dict[str, Any] = {"model": getattr(model, "name", type(model).__name__),
                                   "firing": firing, "timesteps": t, **result}
            if rates:  # eager: statistics recording needs every layer's hooks and steps
                row.update(_rates(model, loader, spec, tf, dev, max_batches_for_rates))
            rows.append(row)
    finally:
        model.timesteps = original_t
    return rows


@torch.no_grad()
def _rates(model, loader, spec, transform, device, max_batches) -> dict[str, Any]:
    from multispike.engine.train import to_model_input

    model.eval()
    with record_activity(model) as mon:
        for i, (x, _) in enumerate(loader):
            if i >= max_batches:
                break
            x = x.to(device)
            if transform is not None:
                x = transform(x)
            model(to_model_input(x, spec))
    summary = mon.summary()
    per_layer = {r["layer"]: r["rate"] for r in summary}
    spikes = sum(r["spikes"] for r in summary)
    steps = sum(r["neuron_steps"] for r in summary)
    return {"firing_rates": per_layer, "mean_firing_rate": spikes / max(steps, 1)}
