"""The training function the sweeps of :mod:`multispike.analysis.sweeps` receive: the analysis
does not import the training engine, so ``multispike analyze --sweep`` hands it this one.

    >>> train = engine_train_fn()
    >>> train({"dataset": "digits", "nope": 1})
    Traceback (most recent call last):
    ...
    multispike.errors.ConfigError: unknown training setting 'nope' for the sweep runs; ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from multispike.errors import ConfigError


def engine_train_fn() -> Any:
    """The sweeps' trainer: :func:`multispike.engine.train_model` on the configuration that
    :func:`multispike.engine.resolve_config` builds (the run's ``recipe``, then its settings).

    A setting that is no :class:`~multispike.engine.TrainConfig` field is not dropped: the run
    raises :class:`ConfigError` (one line, naming it) before it trains. A run whose ``out``
    folder already holds a ``last.pt`` is resumed (or, finished, reused).
    """
    import dataclasses

    from multispike import engine

    fields = {f.name for f in dataclasses.fields(engine.TrainConfig)}

    def train(settings: dict[str, Any]) -> Any:
        settings = dict(settings)
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise ConfigError(
                f"unknown training setting {unknown[0]!r} for the sweep runs; known: "
                f"{', '.join(sorted(fields))}"
            )
        recipe = settings.pop("recipe", None)
        if settings.get("out") and (Path(settings["out"]) / "last.pt").is_file():
            settings["resume"] = True  # a re-run sweep continues (or reuses) finished runs
        return engine.train_model(engine.resolve_config(recipe=recipe, overrides=settings))

    return train
