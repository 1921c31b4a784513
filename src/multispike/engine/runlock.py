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
import tempfile
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
    """Refuse (one line) an output folder that cannot be written, before anything runs: an
    existing file, a path under a file, a name longer than the file system allows, a folder
    (or the nearest existing one above it) that is read-only or not ours to write."""
    if out is None:
        return
    p = Path(out)
    existing = next((q for q in (p, *p.parents) if _exists(q)), Path("."))
    if existing == p and not p.is_dir():
        raise ConfigError(f"{flag} {p} is a file, not a folder; choose a folder (the file is "
                          "left as it is)")
    if not existing.is_dir():  # --out file.txt/run: a file on the way
        raise ConfigError(f"{flag} {p} lies under {existing}, which is a file; choose a folder "
                          "elsewhere")
    _check_names(p, existing, flag)
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "a read-only file system" if _read_only(existing) else "no write permission"
        raise ConfigError(f"{flag} {p} cannot be written: {existing} is not writable ({why}); "
                          "choose a writable folder")
    _probe(p, flag)


def _probe(p: Path, flag: str) -> None:
    """Create ``p`` and a file in it, then remove what this call created: a folder the system
    refuses (``/proc/x``, a read-only mount seen as writable) fails here, before any work."""
    if os.environ.get("RANK", "0") not in ("", "0"):  # under torchrun rank 0 alone writes
        return
    missing = [q for q in (p, *p.parents) if not _exists(q)]  # deepest first
    try:
        p.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=p).close()
    except OSError as e:
        raise ConfigError(f"{flag} {p} cannot be written ({e.strerror or type(e).__name__}); "
                          "choose a writable folder") from None
    finally:
        for q in missing:
            with contextlib.suppress(OSError):
                q.rmdir()


def _check_names(p: Path, existing: Path, flag: str) -> None:
    """Refuse a component of ``p`` (below ``existing``) longer than its file system allows."""
    try:
        longest = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        longest = 255
    for name in p.parts[len(existing.parts):]:
        if len(os.fsencode(name)) > longest:
            raise ConfigError(f"{flag}: the name {name[:24]}... has {len(os.fsencode(name))} "
                              f"bytes, more than the {longest} its file system allows; choose a "
                              "shorter name")


def _exists(path: Path) -> bool:
    """``path.exists()``, False where even asking fails (a name too long, say)."""
    try:
        return path.exists()
    except OSError:
        return False


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


#: what a training run leaves in its folder (``multispike train --out``)
RUN_FILES = ("last.pt", "best.pt", "metrics.csv")


def holds_training_run(folder: str | os.PathLike) -> bool:
    """True if ``folder`` holds a training run: its checkpoints or metrics, or a config.json of
    training settings (a deployed model's config.json has none)."""
    folder = Path(folder)
    if any((folder / name).exists() for name in RUN_FILES):
        return True
    try:
        import json

        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"dataset", "epochs", "model_options"} <= set(config)
