"""A NIR graph written as a multispike checkpoint (``multispike import``): read and mapped by
:func:`multispike.deploy.nir_import.from_nir`, saved as ``OUT/model.pt`` with
:func:`multispike.engine.checkpoint.save_checkpoint`, and described in ``OUT/import.json`` (how
each neuron node was mapped). From Python::

    summary = import_nir("net.nir", "runs/imported-mt", firing="mt")
    summary["checkpoint"], [row["neuron"] for row in summary["neurons"]]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from multispike.errors import ConfigError

#: the checkpoint file written into the output folder
CHECKPOINT = "model.pt"


def neuron_lines(model: Any) -> list[dict[str, Any]]:
    """One row per neuron layer: its path, class and the parameters it got."""
    from multispike.neurons import Neuron

    rows = []
    for name, m in model.named_modules():
        if isinstance(m, Neuron):
            cfg = m.config()
            rows.append({"node": name, "neuron": type(m).__name__,
                         **{k: cfg[k] for k in ("decay", "init_tau") if k in cfg},
                         "v_threshold": m.v_threshold, "v_reset": m.v_reset,
                         "firing": m.rule.name, "reset": m.reset})
    return rows


def import_nir(file: str | Path, out: str | Path, *, firing: str | None = None,
               dt: float | None = None, timesteps: int | None = None,
               input_shape: list[int] | None = None, options: dict[str, Any] | None = None,
               force: bool = False) -> dict[str, Any]:
    """Import the NIR graph ``file`` into ``out`` (refused in one line where ``out`` already
    holds a checkpoint, unless ``force``); returns the summary ``import.json`` holds."""
    from multispike.deploy.nir_import import from_nir
    from multispike.engine.checkpoint import save_checkpoint

    out = Path(out)
    target = out / CHECKPOINT
    if target.exists() and not force:
        raise ConfigError(f"{target} exists; give another --out or --force to overwrite it")
    model = from_nir(file, firing=firing, dt=dt, timesteps=timesteps, input_shape=input_shape,
                     **(options or {}))
    save_checkpoint(target, {"model_args": model.model_args, "model": model.state_dict()})
    summary = {"source": str(file), "checkpoint": str(target),
               "timesteps": model.timesteps, "firing": model.firing,
               "input_shape": list(model.input_shape), "num_classes": model.num_classes,
               "nodes": len(model.model_args["graph"]["nodes"]), "neurons": neuron_lines(model)}
    (out / "import.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
