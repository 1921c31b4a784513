"""Small file helpers shared by the dataset modules: data root, checksums, downloads.

Nothing here is dataset specific. Every failure becomes a one-line :class:`DataError`.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from multispike.errors import DataError

#: Environment variable naming the folder that holds all datasets when no data_dir is given.
DATA_ENV = "MULTISPIKE_DATA"
#: Environment variable naming multispike's per-user cache folder (kernels, dataset caches).
CACHE_ENV = "MULTISPIKE_CACHE"

_CHUNK = 1 << 20


def default_data_root() -> Path:
    """The folder used when no ``data_dir`` is given.

    ``$MULTISPIKE_DATA`` when set, otherwise ``~/.cache/multispike/data``.

    Example:
        ``MULTISPIKE_DATA=/scratch/data multispike train --dataset cifar10`` reads
        ``/scratch/data/cifar-10-python.tar.gz``.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "multispike" / "data"


def default_cache_root() -> Path:
    """multispike's per-user cache folder, for what it derives from a read-only dataset.

    ``$MULTISPIKE_CACHE`` when set, else ``$XDG_CACHE_HOME/multispike``, else
    ``~/.cache/multispike`` (the folder the compiled kernels use too).

    Example:
        >>> from unittest import mock
        >>> with mock.patch.dict("os.environ", {"MULTISPIKE_CACHE": "/scratch/ms"}):
        ...     str(default_cache_root())
        '/scratch/ms'
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "multispike"


def one_line(text: str) -> str:
    """``text`` with every run of line breaks and spaces folded into one space."""
    return re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()


def md5sum(path: str | os.PathLike[str]) -> str:
    """Hex MD5 digest of a file, read in 1 MiB chunks.

    Example:
        >>> import tempfile; p = Path(tempfile.mkdtemp()) / "a"; _ = p.write_bytes(b"")
        >>> md5sum(p)
        'd41d8cd98f00b204e9800998ecf8427e'
    """
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {one_line(exc.strerror or exc)}; "
                        "check the path and its permissions") from None
    return digest.hexdigest()


def download(url: str, dest: Path, *, md5: str | None, progress: bool = True,
             manual_hint: str = "") -> Path:
    """Download ``url`` to ``dest`` through a temporary file, checking its MD5.

    The bytes go to ``dest`` + ``.part`` with a tqdm progress bar; only when the whole file has
    arrived and its checksum matches is it renamed to ``dest``, so an interrupted or damaged
    download never looks like a good file.

    Args:
        url: where to fetch from (any scheme urllib opens, ``file://`` included).
        dest: final path of the file.
        md5: expected hex digest, or None to skip the check.
        progress: show a progress bar.
        manual_hint: appended to the error when the download fails (where to put the file).

    Returns:
        ``dest``.

    Example:
        ``download("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        Path("data/cifar-10-python.tar.gz"), md5="c58f30108f718f92721af3b95e74349a")``
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    hint = f"; {manual_hint}" if manual_hint else ""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create folder {dest.parent}: {one_line(exc.strerror or exc)}; "
                        "pass a writable data_dir") from None
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            total = response.headers.get("Content-Length") if response.headers else None
            bar = tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                       unit_divisor=1024, desc=f"download {dest.name}", disable=not progress,
                       leave=False)
            with bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise DataError(f"cannot download {url}: {one_line(reason)}{hint}") from None
    if md5 is not None:
        got = md5sum(part)
        if got != md5:
            part.unlink(missing_ok=True)
            raise DataError(f"download of {url} has md5 {got}, expected {md5}: the transfer was "
                            f"damaged; run again{hint}")
    os.replace(part, dest)
    return dest
