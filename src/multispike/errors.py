"""Errors multispike raises for bad input.

Every error is one line that names what is wrong and how to fix it. The command line catches
:class:`MultispikeError` and prints it without a traceback, exiting with code 2.
"""

from __future__ import annotations


class MultispikeError(ValueError):
    """Bad input to multispike: the message names the problem and the fix."""


class ConfigError(MultispikeError):
    """An option, name or setting that multispike cannot use."""


class DataError(MultispikeError):
    """A dataset folder, file or download that cannot be read."""


class CheckpointError(MultispikeError):
    """A checkpoint that is missing, corrupt or of another model."""


class InputError(MultispikeError):
    """A tensor of the wrong rank, dtype or content handed to a neuron or model."""
