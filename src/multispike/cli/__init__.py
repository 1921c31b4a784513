"""The ``multispike`` command: the only place where strings from the user become objects.

One module per command group; each adds its subcommands with ``register(subparsers)``, and
each subcommand is a small function ``cmd_NAME(args) -> int`` that turns the flags into
objects (models, dataset specs, paths, numbers, training functions) and calls the library:

=====================  ========================================================================
module                 commands
=====================  ========================================================================
:mod:`.train`          ``demo``, ``train``, ``eval`` (:mod:`multispike.engine`)
:mod:`.info`           ``recipes``, ``models``, ``datasets``, ``neurons``
:mod:`.analysis`       ``energy``, ``analyze`` (:mod:`multispike.analysis`; hands the sweeps
                       the engine's training function)
:mod:`.deploy`         ``deploy`` (:mod:`multispike.deploy`)
:mod:`.reproduce`      ``reproduce`` (:mod:`multispike.workflows.reproduce`)
=====================  ========================================================================

Every :class:`~multispike.errors.MultispikeError` becomes one line on stderr and exit code 2;
a warning becomes one line ``multispike: warning: ...``. Nothing in the package imports this
one: the arrows point from here down.

    >>> parser = build_parser()
    >>> parser.parse_args(["neurons", "--timesteps", "4"]).timesteps
    4
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from multispike.cli._common import _warning_line as _warning_line  # one-line warnings
from multispike.cli._common import run_command

__all__ = ["build_parser", "main", "package_version"]


def package_version() -> str:
    """The installed package's version (``multispike.__version__`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("multispike")
    except PackageNotFoundError:
        import multispike

        return str(getattr(multispike, "__version__", "unknown"))


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand, in the order ``multispike --help`` lists them."""
    # imported here: `python -m multispike.cli.deploy` runs that module without a second copy
    from multispike.cli import analysis, deploy, info, nir_import, reproduce, train

    parser = argparse.ArgumentParser(
        prog="multispike",
        description="Spiking neural networks whose spikes carry more than one bit.",
    )
    parser.add_argument("--version", action="version",
                        version=f"multispike {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in (train.register, info.register, analysis.register, deploy.register,
                     nir_import.register, reproduce.register, info.register_neurons):
        register(sub)
    return parser


def joined_number_lists(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``FLAG -0.5,0.5`` written ``FLAG=-0.5,0.5``: argparse takes a value that
    starts with ``-`` (and is not one plain number) for a flag of its own, so the form
    ``--help`` shows would be refused.

    >>> joined_number_lists(["train", "--deltas", "-0.5,0.5", "--lr", "0.1"])
    ['train', '--deltas=-0.5,0.5', '--lr', '0.1']
    """
    out: list[str] = []
    for arg in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _number_list(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _number_list(text: str) -> bool:
    """``-0.5,0.5`` or ``-1e-3,2``: a comma-separated list of numbers that starts with ``-``."""
    if not text.startswith("-") or "," not in text:
        return False
    try:
        [float(part) for part in text.split(",")]
    except ValueError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``multispike ARGV``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(joined_number_lists(argv))
    return run_command(args)
