"""Build the C++ CPU kernel into its cache now (at install time) instead of at first use.

``python -m multispike.kernels.build`` compiles ``csrc/multistep.cpp`` exactly as the first
neuron call would (:mod:`multispike.kernels.cpu`: same compiler, flags and cache key), loads
it, checks its ABI version and prints the cached library's path. A library already in the cache
is only loaded (no compiler run). The first-use build stays the fallback: a machine where this
was never run, or whose CPU or compiler changed, builds on the first neuron call as before.

Exit codes: 0 built (or already cached) or disabled by ``MULTISPIKE_NO_CPU_KERNEL``; 1 the build
or the load failed (one line on stderr saying why: the neurons then use the slower eager path).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from multispike.kernels import cpu


def build() -> Path:
    """Build (or find) the CPU kernel in its cache, load it and return the library's path;
    raises RuntimeError with the reason when that is impossible."""
    cxx = cpu._compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    path = cpu._build(cxx)
    if cpu.library() is None:
        raise RuntimeError(cpu.failure() or "the library did not load")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m multispike.kernels.build``: build, then print the cached library's path."""
    import argparse
    import warnings

    parser = argparse.ArgumentParser(prog="python -m multispike.kernels.build",
                                     description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    if os.environ.get("MULTISPIKE_NO_CPU_KERNEL"):
        print("multispike: CPU kernel not built: disabled by MULTISPIKE_NO_CPU_KERNEL")
        return 0
    try:
        with warnings.catch_warnings():  # the reason is printed once below
            warnings.simplefilter("ignore", RuntimeWarning)
            path = build()
    except Exception as e:  # noqa: BLE001 - any failure: say why in one line, keep the fallback
        why = "; ".join(e.args[0]) if e.args and isinstance(e.args[0], list) else str(e)
        print(f"multispike: the CPU kernel could not be built ({why}); neurons use the slower "
              "eager path, and the first neuron call tries the build again",
              file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
