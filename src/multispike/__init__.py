"""multispike: spiking neural networks whose spikes carry more than one bit.

The names most used are here, imported on first use (PEP 562), so that ``import multispike``
(and ``multispike --help``) does not load PyTorch::

    from multispike import PLIFNode, LIFNode, IFNode, create, functional
"""

from importlib import import_module as _import_module

from multispike.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    InputError,
    MultispikeError,
)

__version__ = "0.1.0"

#: name -> the module that defines it, imported when the name is first read
_LAZY = {
    "Neuron": "multispike.neurons",
    "PLIFNode": "multispike.neurons",
    "LIFNode": "multispike.neurons",
    "IFNode": "multispike.neurons",
    "build_neuron": "multispike.neurons",
    "fix_thresholds": "multispike.neurons",
    "create": "multispike.models.registry",
    "list_models": "multispike.models.registry",
    "register_model": "multispike.models.registry",
    "record_activity": "multispike.monitor",
}
#: subpackages and modules reachable as attributes without an import of their own
_SUBMODULES = ("analysis", "data", "deploy", "engine", "functional", "kernels", "layers",
               "models", "monitor", "neurons")

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "IFNode",
    "InputError",
    "LIFNode",
    "MultispikeError",
    "Neuron",
    "PLIFNode",
    "__version__",
    "build_neuron",
    "create",
    "fix_thresholds",
    "functional",
    "list_models",
    "models",
    "neurons",
    "record_activity",
    "register_model",
]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(_import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = _import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # the next read does not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
