"""The few checks and conversions every layer of multispike shares, in one place.

Each check raises a one-line :class:`~multispike.errors.ConfigError` that names the option and
what it got; the command line prints it without a traceback. ``where`` prefixes the message
(a model name, a command) when the option alone does not say where it came from.

Example::

    >>> positive_int("timesteps", 4)
    4
    >>> positive_int("--batches", 0)
    Traceback (most recent call last):
    ...
    multispike.errors.ConfigError: --batches must be an integer >= 1, got 0
    >>> boolean("learn_thresholds", "no")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    multispike.errors.ConfigError: learn_thresholds must be true or false, got 'no'; ...
    >>> parse_boolean("--option learn_thresholds", "no")
    False
    >>> plain({"deltas": (-0.5, 0.5), "lr": float("nan")})
    {'deltas': [-0.5, 0.5], 'lr': None}
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from multispike.errors import ConfigError


def _prefix(where: str | None) -> str:
    return f"{where}: " if where else ""


def positive_int(name: str, value: Any, where: str | None = None) -> int:
    """``int(value)`` if it is a whole number ``>= 1`` (a Python or NumPy integer, not a
    bool), else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{_prefix(where)}{name} must be an integer >= 1, got {value!r}")
    return int(value)


def finite_number(name: str, value: Any, where: str | None = None) -> float:
    """``float(value)`` if it is a finite real number (not a bool), else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{_prefix(where)}{name} must be a finite number, got {value!r}")
    return float(value)


def positive_number(name: str, value: Any, where: str | None = None) -> float:
    """``float(value)`` if it is a finite number > 0, else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value > 0
    ):
        raise ConfigError(f"{_prefix(where)}{name} must be a positive number, got {value!r}")
    return float(value)


def seed(name: str, value: Any, where: str | None = None) -> int:
    """``int(value)`` if it is a whole number in ``[0, 2**63)`` (what every random generator
    takes), else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or not 0 <= value < 2**63:
        raise ConfigError(f"{_prefix(where)}{name} must be an integer in [0, 2**63), got "
                          f"{value!r}; e.g. {name} 0")
    return int(value)


#: spellings of true and false the command line and TOML files accept (case-insensitive)
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def boolean(name: str, value: Any, where: str | None = None) -> bool:
    """``value`` if it is a real boolean (``True``/``False``, NumPy's too), else
    :class:`ConfigError`: ``"no"`` or ``"False"`` would otherwise count as true."""
    if type(value).__name__ == "bool_" and hasattr(value, "item"):  # numpy.bool_
        value = value.item()
    if not isinstance(value, bool):
        raise ConfigError(f"{_prefix(where)}{name} must be true or false, got {value!r}; pass "
                          "True or False (on the command line: true/false, yes/no, 1/0)")
    return value


def parse_boolean(name: str, value: Any) -> bool:
    """A yes/no setting as the command line or a TOML file spells it: a boolean, or one of
    :data:`TRUE_WORDS`/:data:`FALSE_WORDS` (text, or the numbers 1 and 0); else
    :class:`ConfigError` naming ``name`` and the spellings."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} takes true or false (or yes/no, on/off, 1/0), got {value!r}")


def plain(value: Any, *, keep_inf: bool = False) -> Any:
    """``value`` as plain containers that JSON and ``torch.load(weights_only=True)`` accept.

    Tuples become lists, mapping keys strings, NaN ``None`` (NaN equals nothing, not even
    itself, so a saved NaN could never be compared again), numpy/torch scalars Python numbers;
    everything else passes through unchanged. ±inf become ``None`` as well, unless
    ``keep_inf``: a run's configuration keeps them, since they compare equal after a JSON round
    trip and a resumed run checks its settings against the saved ones.

    >>> plain({"clip": float("inf"), "lr": float("nan")}, keep_inf=True)
    {'clip': inf, 'lr': None}
    """
    if isinstance(value, float):
        if math.isnan(value) or (math.isinf(value) and not keep_inf):
            return None
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v, keep_inf=keep_inf) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, keep_inf=keep_inf) for v in value]
    if not isinstance(value, (str, bytes, int)) and callable(getattr(value, "item", None)):
        try:  # numpy / torch scalars
            return plain(value.item(), keep_inf=keep_inf)
        except (TypeError, ValueError):
            return str(value)
    return value
