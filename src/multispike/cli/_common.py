"""What the command groups of the command line share: ``KEY=VALUE`` options, the
``--compile`` flag, and running one parsed command with the command line's error handling.

    >>> parse_options(["norm=tdbn", "v-threshold=0.5", "deltas=[-0.3, 0.3]"])
    {'norm': 'tdbn', 'v_threshold': 0.5, 'deltas': [-0.3, 0.3]}
    >>> parse_options(["learn-thresholds=no", "mt_on_fc=1"])
    {'learn_thresholds': False, 'mt_on_fc': True}
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
    parse (else kept as text), dashes in keys become underscores; yes/no options take
    true/false, yes/no, on/off or 1/0 (anything else is refused in one line)."""
    from multispike.engine.config import parse_boolean_options  # here: the engine loads torch

    return parse_boolean_options(_key_values(pairs, f"{flag} takes KEY=VALUE,"), flag)


def _key_values(pairs: list[str] | None, usage: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a dict: values parsed as JSON where they parse (else kept as
    text), dashes in keys become underscores; a pair without ``=`` is ``usage got …``."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = str(pair).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"{usage} got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


#: dataset options that are yes/no (cifar100 ``coarse``, the download/conversion ``progress``,
#: imagenet ``skip_bad``)
DATA_BOOLEANS = frozenset({"coarse", "progress", "skip_bad"})


def parse_data_options(pairs: list[str] | None) -> dict[str, Any]:
    """``--data-option KEY=VALUE`` pairs as dataset options: values parsed as JSON where they
    parse (``resize=48`` is a number, ``cache_dir=/scratch/dvs`` stays text), yes/no ones from
    true/false, yes/no, on/off or 1/0. Which keys a dataset knows is checked once, by the
    dataset registry.

    >>> parse_data_options(["resize=48", "cache-dir=/scratch/dvs", "coarse=yes"])
    {'resize': 48, 'cache_dir': '/scratch/dvs', 'coarse': True}
    """
    from multispike.checks import parse_boolean

    out = _key_values(pairs, "--data-option takes KEY=VALUE, e.g. resize=48;")
    for key in DATA_BOOLEANS & set(out):
        out[key] = parse_boolean(f"--data-option {key}", out[key])
    return out


def add_data_option_flag(p: argparse.ArgumentParser, default: str) -> None:
    """The repeatable ``--data-option KEY=VALUE`` flag; ``default``: what it does without."""
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a dataset option, e.g. resize=48 or cache_dir=DIR for cifar10-dvs, "
                   f"coarse=true for cifar100 (repeatable; {default}; `multispike datasets` "
                   "lists each dataset's options)")


def add_compile_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile", nargs="?", const="default", metavar="MODE",
                   help="run the model through torch.compile: default (MODE left out), "
                        "reduce-overhead (CUDA graphs of the forward and backward) or "
                        "max-autotune; off (default) runs it eagerly")


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"multispike: warning: {message}\n"


#: failures to write a file that are the place's, not the program's: one line each
WRITE_ERRORS = {
    errno.EACCES: "permission denied", errno.EPERM: "not permitted",
    errno.EROFS: "a read-only file system", errno.ENAMETOOLONG: "a name too long for the file "
    "system", errno.ENOTDIR: "a file where a folder is needed", errno.EDQUOT: "disk quota full",
}


def _os_error_line(e: OSError) -> str | None:
    """The one line of an :class:`OSError` that the place caused (no space, no permission, a
    read-only disk, a name too long), or ``None`` for others (a bug: keep the traceback)."""
    if e.errno == errno.ENOSPC:
        where = Path(e.filename).parent if e.filename else "the output folder"
        return f"no space left on the device of {where}; free space and run again"
    if e.errno not in WRITE_ERRORS:
        return None
    where = e.filename if e.filename else "a file"
    return (f"cannot use {where} ({WRITE_ERRORS[e.errno]}); for an output, choose another --out "
            "(a writable folder with short names), else check the path and its permissions")


#: the hint of a missing dataset (written for ``train``, which has ``--download``)
DOWNLOAD_HINT = "pass download=True (--download) when online"


def _for_this_command(text: str, args: argparse.Namespace) -> str:
    """``text`` without a hint at a flag this command does not have: ``--download`` belongs
    to ``train``, not to ``eval``, ``analyze``, ``energy`` or ``reproduce``."""
    if DOWNLOAD_HINT in text and not hasattr(args, "download"):
        return text.replace(DOWNLOAD_HINT, "download it once when online with `multispike "
                            "train --download` (download=True in Python)")
    return text


def _resume_hint(args: argparse.Namespace) -> str:
    """How to continue an interrupted ``train``: its last.pt, and the command."""
    out = getattr(args, "out", None)
    if getattr(args, "command", None) != "train" or not out:
        return ""
    if getattr(args, "seeds", None):
        return (f"; each seed's run keeps its last finished epoch in {out}/seedN/last.pt: "
                f"continue one with `multispike train --out {out}/seedN --resume`")
    if not (Path(out) / "last.pt").is_file():
        return "; no epoch had finished, so nothing was kept: run the command again"
    return (f"; {out}/last.pt holds the last finished epoch: continue with "
            f"`multispike train --out {out} --resume`")


def run_command(args: argparse.Namespace) -> int:
    """``args.func(args)``, with every failure as one line on stderr: a
    :class:`~multispike.errors.MultispikeError`, running out of memory or disk space (exit code
    2), an interrupt (130); a warning is one line ``multispike: warning: ...``."""
    formatwarning, warnings.formatwarning = warnings.formatwarning, _warning_line
    try:
        return int(args.func(args) or 0)
    except MultispikeError as e:
        print(f"multispike: error: {_for_this_command(str(e), args)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        from multispike.engine.device import allocation_failure

        if not allocation_failure(e):
            raise
        print(f"multispike: error: {args.command} ran out of memory: lower --batch-size or "
              "--timesteps (or use a device with more memory)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"multispike: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `multispike energy --json | head`: the reader left early
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except OSError as e:
        line = _os_error_line(e)
        if line is None:
            raise
        print(f"multispike: error: {line}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = formatwarning
