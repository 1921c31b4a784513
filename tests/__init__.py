"""The test suite (a package, so that subprocesses can import ``tests.test_kernels``)."""

import sys
from pathlib import Path

# bench/common.py's measuring helpers (saved_bytes, PeakMemory) serve the tests too; set here
# rather than in conftest.py so that it also holds when a subprocess imports a test module
_BENCH = str(Path(__file__).resolve().parents[1] / "bench")
if _BENCH not in sys.path:
    sys.path.insert(0, _BENCH)
