"""One run per folder: an exclusive lock on ``--out`` for as long as a training writes there.

Two trainings into one folder would interleave their checkpoints and metrics (``best.pt`` of
one, ``last.pt`` of the other). :func:`run_lock` takes an exclusive ``flock`` on
``<folder>/.lock`` and writes the holder's process id and host into it. A second run fails at
once with one line naming that process. The operating system drops the lock when its process
ends, however it ends, so the lock of a killed run is stale at once and the next run takes it
over without any clean-up.

Example::

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d, run_lock(d):
    ...     pass
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from multispike.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock
    fcntl = None

LOCK_NAME = ".lock"


class RunLocked(ConfigError):
    """Another process is training into the same folder."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text or "unknown"


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the run lock of ``folder`` (created if needed) inside the ``with`` block.

    A block that fails before writing anything (a bad option found once the lock is held, say)
    leaves no trace: the lock file and the folders this call created are removed again, so a
    refused run does not leave an empty run folder behind. Folders that existed are kept.

    Raises:
        RunLocked: another live process holds it.
    """
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    handle = open(path, "a+")  # noqa: SIM115 - held open for the whole block
    failed = False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLocked(
                    f"{folder} is in use by another training run ({_holder(path)}); wait for it "
                    "to finish or choose another --out"
                ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield path
    except BaseException:
        failed = True
        raise
    finally:
        handle.close()  # closing drops the lock
        if failed and created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            path.unlink(missing_ok=True)
            for p in created:  # deepest first
                with contextlib.suppress(OSError):  # not empty after all: keep it
                    p.rmdir()


def check_out_folder(out: str | None, flag: str = "--out") -> None:
    """Refuse (one line) an output folder that is an existing file, before anything runs."""
    if out is None:
        return
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {p} is a file, not a folder; choose a folder (the file is "
                          "left as it is)")
    for parent in p.parents:  # --out file.txt/run: a file on the way
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {p} lies under {parent}, which is a file; choose a "
                                  "folder elsewhere")
            break
