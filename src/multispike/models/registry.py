"""The model registry: ``register_model``, ``list_models()``, ``create(name, ...)``.

Builders are short functions named after their registry key that call a family class with
keyword-only options; ``None`` means "the model's own default". Example::

    >>> from multispike.models import create, list_models
    >>> "vgg9" in list_models()
    True
    >>> model = create("vgg9", num_classes=100, timesteps=2, firing="mt")
    >>> same = create(**model.model_args)          # what a checkpoint stores
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from multispike.errors import ConfigError

Builder = Callable[..., Any]
B = TypeVar("B", bound=Builder)

_MODELS: dict[str, Builder] = {}


def register_model(fn: B) -> B:
    """Decorator: register ``fn`` under its function name (the registry key)."""
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ConfigError(f"model {name!r} is registered twice; rename one builder")
    _MODELS[name] = fn
    return fn


#: families whose architecture is data (``nir_graph``: an imported NIR graph): ``create`` and
#: checkpoints resolve them, but they have no default model, so :func:`list_models` (the zoo)
#: leaves them out
_DATA_MODELS: dict[str, Builder] = {}


def register_data_model(fn: B) -> B:
    """Decorator: register a builder that needs its architecture as an argument (not listed)."""
    _DATA_MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """The registry keys, sorted."""
    return sorted(_MODELS)


def get_builder(name: str) -> Builder:
    """The builder function of a registry key; unknown names raise :class:`ConfigError`."""
    fn = _MODELS.get(str(name)) or _DATA_MODELS.get(str(name))
    if fn is None:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    return fn


def create(
    name: str,
    *,
    num_classes: int | None = None,
    timesteps: int | None = None,
    firing: str | None = None,
    neuron: Any = None,
    **options: Any,
) -> Any:
    """Build a registered model.

    Args:
        name: registry key (see :func:`list_models`).
        num_classes: classes of the output layer.
        timesteps: T (can be changed later through ``model.timesteps``).
        firing: ``"binary"``, ``"mt"``, ``"ternary"``, ``"ternary-mt"``, ``"integer"``,
            ``"signed-integer"`` or ``"ann"`` (the ANN twin: same architecture, ReLU instead
            of neurons).
        neuron: ``"plif"``, ``"lif"``, ``"if"`` or a :class:`~multispike.neurons.Neuron` class.
        **options: model options (``norm``, ``output``, ``mt_on_fc``, ``in_channels``,
            ``vote_group`` and per-family ones such as ``input_size``, ``dropout``,
            ``shortcut_kernel``) and neuron options (``deltas``, ``levels``, ``reset``,
            ``learn_thresholds``, ``learn_amplitude``, ``surrogate``, ``v_threshold``,
            ``init_tau``, ``decay``, ...; see ``docs/neurons.md``).

    Example (SpikeYOLO's integer spikes, D = 4, and learned thresholds)::

        >>> m = create("resnet20m", firing="integer", levels=4, learn_thresholds=True)
        >>> m.model_args["levels"], m.stem_act.reset, m.stem_act.learn_thresholds
        (4, 'soft', True)

    Every option left as ``None`` takes the model's default. The result keeps the resolved
    arguments in ``model.model_args``.
    """
    return get_builder(name)(
        num_classes=num_classes, timesteps=timesteps, firing=firing, neuron=neuron, **options
    )
