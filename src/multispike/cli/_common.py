"""What the command groups of the command line share: ``KEY=VALUE`` options, the
``--compile`` flag, and running one parsed command with the command line's error handling.

    >>> parse_options(["norm=tdbn", "v-threshold=0.5", "deltas=[-0.3, 0.3]"])
    {'norm': 'tdbn', 'v_threshold': 0.5, 'deltas': [-0.3, 0.3]}
    >>> parse_options(["norm"], "--sweep-option")
    Traceback (most recent call last):
    ...
    multispike.errors.ConfigError: --sweep-option takes KEY=VALUE, got 'norm'
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from multispike.errors import ConfigError, MultispikeError


def parse_options(pairs: list[str], flag: str = "--option") -> dict[str, Any]:
    """``KEY=VALUE`` pairs of a repeatable flag as a dict: values parsed as JSON where they
    parse (else kept as text), dashes in keys become underscores."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"{flag} takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def add_compile_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile", nargs="?", const="default", metavar="MODE",
                   help="run the model through torch.compile: default (MODE left out), "
                        "reduce-overhead (CUDA graphs of the forward and backward) or "
                        "max-autotune; off (default) runs it eagerly")


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"multispike: warning: {message}\n"


def run_command(args: argparse.Namespace) -> int:
    """``args.func(args)``, with every failure as one line on stderr: a
    :class:`~multispike.errors.MultispikeError`, running out of memory or disk space (exit code
    2), an interrupt (130); a warning is one line ``multispike: warning: ...``."""
    formatwarning, warnings.formatwarning = warnings.formatwarning, _warning_line
    try:
        return int(args.func(args) or 0)
    except MultispikeError as e:
        print(f"multispike: error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        from multispike.engine.evaluate import allocation_failure

        if not allocation_failure(e):
            raise
        print(f"multispike: error: {args.command} ran out of memory: lower --batch-size or "
              "--timesteps (or use a device with more memory)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("multispike: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `multispike energy --json | head`: the reader left early
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        where = Path(e.filename).parent if e.filename else "the output folder"
        print(f"multispike: error: no space left on the device of {where}; free space and "
              "run again", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = formatwarning
