"""multispike: spiking neural networks whose spikes carry more than one bit."""

from multispike.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    InputError,
    MultispikeError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "InputError",
    "MultispikeError",
    "__version__",
]
