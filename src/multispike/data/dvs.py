"""CIFAR10-DVS from the original ``.aedat`` recordings, integrated into T event-count frames.

Layout of ``data_dir`` (as the official figshare archives extract)::

    data_dir/airplane/cifar10_airplane_0.aedat ... cifar10_airplane_999.aedat
    data_dir/automobile/...   bird/ cat/ deer/ dog/ frog/ horse/ ship/ truck/

File format (AER-DAT 2.0 as written by jAER for the DVS128): ASCII header lines that start with
``#`` (the first one ``#!AER-DAT2.0``), then big-endian records of a uint32 address and a uint32
timestamp in microseconds. ``#!AER-DAT1.0`` files (uint16 address + uint32 timestamp) are read
too. The DVS128 address holds polarity in bit 0, x in bits 1-7 and y in bits 8-14; addresses
with any higher bit set are external/special events and are dropped.

Convention used throughout (:func:`read_aedat` and :func:`write_aedat` invert each other):
``p = addr & 1``, ``x = 127 - ((addr >> 1) & 0x7F)`` (the sensor's x is mirrored, as in jAER),
``y = (addr >> 8) & 0x7F``. Frame channel ``c`` holds the events of polarity ``p == c``.

Integration: the N events of a recording, in file (= time) order, are split by count into T
chunks of ``N // T`` events, the remainder going to the last chunk, and each chunk is summed
into a ``[2, 128, 128]`` count frame (PLIF's and MT-SNN's "split by number").

Cache: frames are written once per recording to
``<cache_dir>/frames_T{T}_<hash>/<class>/<stem>.npz``, where the hash covers every setting
that changes the frames (T, split method, sensor size and address convention, resize and its
mode, cache format version). ``meta.json`` in that folder repeats the settings and records
each source file's size and mtime; a cache with other settings is never read, and a recording
whose file changed is converted again. Conversion runs in a process pool with a progress bar.

Split: the dataset ships none; within each class the recordings are sorted by the number in
their name and the first 90 % (``9 * n // 10``, 900 of 1,000) are training, the rest test.

Transforms: an optional resize (e.g. 48 x 48, done once into the cache) and the random
horizontal flip + roll of up to 5 pixels (the common DVS pipeline the Ternary Spike recipes
choose), the latter batched
on the training device (:class:`multispike.data.transforms.DVSFlipRoll`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from multispike.checks import positive_int
from multispike.data._io import default_data_root, one_line
from multispike.errors import ConfigError, DataError

#: Class folders of the official dataset, in label order (the same order as CIFAR-10).
CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                            "horse", "ship", "truck")
#: (height, width) of the DVS128 sensor.
SENSOR_SIZE: tuple[int, int] = (128, 128)
#: Structured dtype of the arrays :func:`read_aedat` returns.
EVENT_DTYPE = np.dtype([("t", np.int64), ("x", np.int16), ("y", np.int16), ("p", np.int8)])
#: Version of the frame cache layout; bump it when the stored frames change meaning.
CACHE_FORMAT = 1
#: Fraction of each class used for training.
TRAIN_FRACTION = (9, 10)
#: Download page (manual: the archives have no published checksums).
SOURCE_URL = "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671"

_DVS_BITS = 0x7FFF
_RESIZE_MODES = ("area", "bilinear")


# --------------------------------------------------------------------------------------------
# .aedat reading and writing


def read_aedat(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a DVS128 AER-DAT 1.0/2.0 recording into a structured array.

    Args:
        path: the ``.aedat`` file.

    Returns:
        Events in file order, dtype :data:`EVENT_DTYPE` with fields ``t`` (µs, int64, unwrapped
        past 2**32), ``x`` and ``y`` (0..127) and ``p`` (0 or 1).

    Raises:
        DataError: unreadable file, an empty file, no ``#`` header (not a recording), a header
            line that never ends, or an event section whose length is not a whole number of
            records (a truncated download).

    Example:
        >>> ev = read_aedat("cifar10-dvs/cat/cifar10_cat_0.aedat")  # doctest: +SKIP
        >>> ev["x"].max() < 128, ev.dtype.names  # doctest: +SKIP
        (True, ('t', 'x', 'y', 'p'))
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path} ({one_line(exc.strerror or exc)}): check that the "
                        "recording exists and is readable") from None
    fix = "download this recording again, or remove it from the dataset folder"
    if not data:
        raise DataError(f"{path} is empty (0 bytes), not a recording: {fix}")
    if not data.startswith(b"#"):
        raise DataError(f"{path} is not a DVS128 recording: it has no AER-DAT header (its first "
                        f"byte is {data[:1]!r}, not '#'): {fix}")
    pos, record = 0, 8
    while data.startswith(b"#", pos):
        end = data.find(b"\n", pos)
        if end < 0:
            raise DataError(f"{path} is corrupt: its header never ends (line at byte {pos} has no "
                            "line break): download this recording again")
        line = data[pos:end].rstrip(b"\r")
        if line.startswith(b"#!AER-DAT"):
            version = line[9:].decode("ascii", "replace").strip()
            if version.startswith("1"):
                record = 6
            elif version.startswith("2"):
                record = 8
            else:
                raise DataError(f"{path} is AER-DAT {version}, not a DVS128 AER-DAT 1.0/2.0 "
                                "recording: use the original CIFAR10-DVS files")
        pos = end + 1
    body = len(data) - pos
    if body % record:
        raise DataError(f"{path} is corrupt: {body} bytes of events after the {pos}-byte header "
                        f"is not a multiple of {record} (truncated file): download this "
                        "recording again")
    if record == 8:
        words = np.frombuffer(data, dtype=">u4", offset=pos).reshape(-1, 2)
        addr, ts = words[:, 0], words[:, 1]
    else:
        rec = np.frombuffer(data, dtype=np.dtype([("a", ">u2"), ("t", ">u4")]), offset=pos)
        addr, ts = rec["a"].astype(np.uint32), rec["t"]
    keep = (addr & ~np.uint32(_DVS_BITS)) == 0
    if not keep.all():
        addr, ts = addr[keep], ts[keep]
    t = ts.astype(np.int64)
    if t.size > 1:  # undo 32-bit timestamp wrap-around
        wraps = np.concatenate(([0], np.cumsum(np.diff(t) < -(1 << 31))))
        t += wraps.astype(np.int64) << 32
    events = np.empty(t.size, dtype=EVENT_DTYPE)
    events["t"] = t
    events["p"] = addr & 1
    events["x"] = 127 - ((addr >> 1) & 0x7F).astype(np.int16)
    events["y"] = (addr >> 8) & 0x7F
    return events


def write_aedat(path: str | os.PathLike[str], events: np.ndarray, *,
                header: Sequence[str] | None = None) -> Path:
    """Write events as a DVS128 AER-DAT 2.0 file, the format of the CIFAR10-DVS recordings.

    The inverse of :func:`read_aedat` (same address convention); used to make test files.

    Args:
        path: file to write.
        events: structured array with fields ``t`` (0 <= t < 2**32), ``x``, ``y`` (0..127) and
            ``p`` (0/1), e.g. of dtype :data:`EVENT_DTYPE`.
        header: comment lines (each must start with ``#``); default: the jAER lines.

    Returns:
        ``path``.

    Example:
        >>> ev = np.zeros(3, EVENT_DTYPE); ev["t"] = [1, 2, 3]; ev["x"] = [0, 5, 127]
        >>> import tempfile; p = Path(tempfile.mkdtemp()) / "a.aedat"
        >>> np.array_equal(read_aedat(write_aedat(p, ev)), ev)
        True
    """
    path = Path(path)
    if header is None:
        header = ("#!AER-DAT2.0",
                  "# This is a raw AE data file - do not edit",
                  "# Data format is int32 address, int32 timestamp (8 bytes total), repeated "
                  "for each event",
                  "# Timestamps tick is 1 us",
                  "# written by multispike.data.write_aedat")
    lines = list(header)
    if any(not line.startswith("#") or "\n" in line for line in lines):
        raise DataError("every aedat header line must start with '#' and hold no line break: "
                        "fix the header argument")
    t = np.asarray(events["t"], dtype=np.int64)
    x = np.asarray(events["x"], dtype=np.int64)
    y = np.asarray(events["y"], dtype=np.int64)
    p = np.asarray(events["p"], dtype=np.int64)
    if t.size and (t.min() < 0 or t.max() >= 1 << 32 or x.min() < 0 or x.max() > 127
                   or y.min() < 0 or y.max() > 127 or not np.isin(p, (0, 1)).all()):
        raise DataError(f"events for {path} do not fit the DVS128 format (0 <= x, y < 128, "
                        "p in {0, 1}, 0 <= t < 2**32): clip or fix them first")
    addr = (y << 8) | ((127 - x) << 1) | p
    words = np.empty((t.size, 2), dtype=">u4")
    words[:, 0] = addr
    words[:, 1] = t
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write("".join(f"{line}\r\n" for line in lines).encode("ascii"))
        fh.write(words.tobytes())
    return path


# --------------------------------------------------------------------------------------------
# integration into frames


def _check_timesteps(timesteps: object) -> int:
    return positive_int("timesteps", timesteps)


def frame_counts(events: np.ndarray, timesteps: int,
                 size: tuple[int, int] = SENSOR_SIZE) -> np.ndarray:
    """Integer version of :func:`events_to_frames`: int64 counts ``[T, 2, H, W]`` (NumPy)."""
    T = _check_timesteps(timesteps)
    H, W = (int(s) for s in size)
    n = len(events)
    counts = np.zeros(T * 2 * H * W, dtype=np.int64)
    if n == 0:
        return counts.reshape(T, 2, H, W)
    x = np.asarray(events["x"], dtype=np.int64)
    y = np.asarray(events["y"], dtype=np.int64)
    p = np.asarray(events["p"], dtype=np.int64)
    if x.min() < 0 or x.max() >= W or y.min() < 0 or y.max() >= H \
            or p.min() < 0 or p.max() > 1:
        raise DataError(f"events fall outside a {H}x{W} frame with 2 polarities (x 0..{x.max()}, "
                        f"y 0..{y.max()}, p {p.min()}..{p.max()}): pass the sensor size as size")
    chunk = n // T
    if chunk:
        frame = np.minimum(np.arange(n, dtype=np.int64) // chunk, T - 1)
    else:  # fewer events than frames: all of them are the remainder, in the last frame
        frame = np.full(n, T - 1, dtype=np.int64)
    flat = ((frame * 2 + p) * H + y) * W + x
    counts += np.bincount(flat, minlength=counts.size)
    return counts.reshape(T, 2, H, W)


def events_to_frames(events: np.ndarray, timesteps: int,
                     size: tuple[int, int] = SENSOR_SIZE) -> torch.Tensor:
    """Integrate events into ``timesteps`` frames holding equal numbers of events.

    The events are taken in the order given (a recording's order is time order) and split
    into T chunks of ``N // T`` events; the last frame also takes the ``N % T`` remainder (all
    events when N < T). ``frame[t, p, y, x]`` counts the events of chunk t at that pixel and
    polarity, so the frames hold every event exactly once: ``frames.sum() == N``.

    Args:
        events: structured array with fields ``x``, ``y``, ``p`` (as from :func:`read_aedat`).
        timesteps: T >= 1.
        size: (H, W) of the frame; the events must lie inside it.

    Returns:
        float32 tensor ``[T, 2, H, W]``.

    Example:
        >>> ev = np.zeros(5, EVENT_DTYPE); ev["x"] = [0, 1, 2, 3, 4]
        >>> f = events_to_frames(ev, 2, size=(1, 5))
        >>> f[:, 0, 0].tolist()   # 5 // 2 = 2 events in frame 0, 2 + 1 in frame 1
        [[1.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0, 1.0]]
    """
    return torch.from_numpy(frame_counts(events, timesteps, size).astype(np.float32))


def _resize_weights(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """Matrix [n_out, n_in] resampling one axis ('area': exact box average; 'bilinear')."""
    if mode == "area":
        scale = n_in / n_out
        lo = (np.arange(n_out) * scale)[:, None]
        hi = lo + scale
        j = np.arange(n_in)[None, :]
        return np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None) / scale
    # bilinear with aligned corners: output i samples input i * (n_in - 1) / (n_out - 1)
    src = np.arange(n_out) * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    j0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    j1 = np.minimum(j0 + 1, n_in - 1)
    frac = src - j0
    w = np.zeros((n_out, n_in))
    np.add.at(w, (np.arange(n_out), j0), 1.0 - frac)
    np.add.at(w, (np.arange(n_out), j1), frac)
    return w


def resize_frames(frames: np.ndarray | torch.Tensor, size: tuple[int, int],
                  mode: str = "area") -> np.ndarray | torch.Tensor:
    """Resize ``[..., H, W]`` frames to ``size`` with separable resampling.

    ``"area"`` averages the input area each output pixel covers (exact, fractional box
    filter: good for shrinking event counts); ``"bilinear"`` samples with aligned corners.
    Returns the same kind (NumPy float32 or torch tensor) as given.

    Example:
        >>> resize_frames(np.ones((3, 2, 128, 128)), (48, 48)).shape
        (3, 2, 48, 48)
    """
    if mode not in _RESIZE_MODES:
        raise ConfigError(f"resize mode {mode!r} is unknown: use one of {', '.join(_RESIZE_MODES)}")
    h, w = (int(s) for s in size)
    is_torch = isinstance(frames, torch.Tensor)
    arr = frames.detach().cpu().numpy() if is_torch else np.asarray(frames)
    wy = _resize_weights(arr.shape[-2], h, mode).astype(np.float32)
    wx = _resize_weights(arr.shape[-1], w, mode).astype(np.float32)
    out = wy @ arr.astype(np.float32) @ wx.T
    if is_torch:
        return torch.from_numpy(np.ascontiguousarray(out)).to(frames.device)
    return out


# --------------------------------------------------------------------------------------------
# the recordings on disk and their split


class Recording(NamedTuple):
    """One ``.aedat`` file and its class label."""

    path: Path
    label: int


def _natural_key(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _root(data_dir: str | os.PathLike[str] | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None \
        else default_data_root() / "cifar10-dvs"


def list_recordings(data_dir: str | os.PathLike[str] | None = None, *,
                    train: bool | None = None) -> list[Recording]:
    """The recordings of the 10 class folders, in label then natural-name order.

    Args:
        data_dir: folder holding the class folders (default ``<data root>/cifar10-dvs``).
        train: None for all recordings; True / False for the deterministic 9:1 per-class split
            (first ``9 * n // 10`` files of each class by natural name order train, rest test).

    Raises:
        DataError: missing folder, missing class folder, or a class folder without ``.aedat``.

    Example:
        >>> recs = list_recordings("cifar10-dvs", train=True)  # doctest: +SKIP
        >>> len(recs), recs[0].path.name  # doctest: +SKIP
        (9000, 'cifar10_airplane_0.aedat')
    """
    root = _root(data_dir)
    if not root.is_dir():
        raise DataError(f"CIFAR10-DVS folder {root} does not exist: download the 10 class "
                        f"archives from {SOURCE_URL} and extract them so that "
                        f"{root}/airplane/*.aedat ... {root}/truck/*.aedat exist")
    out: list[Recording] = []
    for label, cls in enumerate(CLASSES):
        folder = root / cls
        if not folder.is_dir():
            raise DataError(f"CIFAR10-DVS folder {root} lacks the class folder {cls}/: extract "
                            f"{cls}.zip from {SOURCE_URL} there")
        files = sorted((f for f in folder.iterdir()
                        if f.suffix.lower() == ".aedat" and f.is_file()),
                       key=lambda f: _natural_key(f.name))
        if not files:
            raise DataError(f"CIFAR10-DVS class folder {folder} holds no .aedat recordings: "
                            f"extract {cls}.zip from {SOURCE_URL} into it")
        if train is not None:
            n_train = TRAIN_FRACTION[0] * len(files) // TRAIN_FRACTION[1]
            files = files[:n_train] if train else files[n_train:]
        out.extend(Recording(f, label) for f in files)
    return out


# --------------------------------------------------------------------------------------------
# the frame cache


def _normalise_resize(resize: int | Sequence[int] | None) -> tuple[int, int] | None:
    if resize is None:
        return None
    size = (resize, resize) if isinstance(resize, (int, np.integer)) else tuple(resize)
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer))
                             or s < 1 for s in size):
        raise ConfigError(f"resize must be a size like 48 or (48, 48), got {resize!r}")
    size = (int(size[0]), int(size[1]))
    return None if size == SENSOR_SIZE else size


def cache_settings(timesteps: int, *, resize: int | Sequence[int] | None = None,
                   resize_mode: str = "area") -> dict[str, object]:
    """Every setting that changes the cached frames; the cache folder name hashes it.

    Example:
        >>> cache_settings(10, resize=48)["resize"]
        [48, 48]
    """
    T = _check_timesteps(timesteps)
    size = _normalise_resize(resize)
    if resize_mode not in _RESIZE_MODES:
        raise ConfigError(f"resize_mode {resize_mode!r} is unknown: use one of "
                          f"{', '.join(_RESIZE_MODES)}")
    return {
        "format": CACHE_FORMAT,
        "timesteps": T,
        "split_by": "number",
        "remainder": "last",
        "sensor": list(SENSOR_SIZE),
        "address": "p=a&1 x=127-((a>>1)&127) y=(a>>8)&127",
        "resize": list(size) if size else None,
        "resize_mode": resize_mode if size else None,
    }


def cache_folder(cache_dir: str | os.PathLike[str], settings: dict[str, object]) -> Path:
    """``<cache_dir>/frames_T{T}_<12 hex digits of the settings' SHA-256>``."""
    blob = json.dumps(settings, sort_keys=True).encode()
    digest = hashlib.sha256(blob).hexdigest()[:12]
    return Path(cache_dir) / f"frames_T{settings['timesteps']}_{digest}"


def _frames_for(src: str, settings: dict[str, object]) -> np.ndarray:
    counts = frame_counts(read_aedat(src), int(settings["timesteps"]))  # type: ignore[arg-type]
    if settings["resize"] is None:
        return counts.astype(np.uint16 if counts.max(initial=0) <= 0xFFFF else np.int32)
    size = tuple(settings["resize"])  # type: ignore[arg-type]
    return resize_frames(counts, size, str(settings["resize_mode"])).astype(np.float32)


def _convert_job(job: tuple[str, str, str, dict[str, object]]) -> tuple[str, str | None]:
    """Convert one recording to its cache file; returns (its key, an error message or None)."""
    rel, src, dst, settings = job
    try:
        frames = _frames_for(src, settings)
        out = Path(dst)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, frames=frames)
        os.replace(tmp, out)
    except DataError as exc:
        return rel, str(exc)
    except OSError as exc:
        return rel, (f"cannot write the frames of {src} to {dst} "
                     f"({one_line(exc.strerror or exc)}): pass a writable cache_dir")
    except Exception as exc:  # report, never a traceback from a worker process
        return rel, (f"converting {src} failed ({type(exc).__name__}: {one_line(exc)}): "
                     "check the file")
    return rel, None


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _read_meta(folder: Path, settings: dict[str, object]) -> dict[str, list[int]]:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict) or meta.get("settings") != settings:
        return {}  # other settings (or damaged): never reuse anything in this folder
    sources = meta.get("sources")
    return sources if isinstance(sources, dict) else {}


def _write_meta(folder: Path, settings: dict[str, object], sources: dict[str, list[int]]) -> None:
    tmp = folder / f"meta.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"settings": settings, "sources": sources}, indent=1,
                              sort_keys=True))
    os.replace(tmp, folder / "meta.json")


def _cache_path(folder: Path, rec: Recording) -> Path:
    return folder / rec.path.parent.name / (rec.path.stem + ".npz")


def convert_recordings(data_dir: str | os.PathLike[str] | None, timesteps: int, *,
                       resize: int | Sequence[int] | None = None, resize_mode: str = "area",
                       cache_dir: str | os.PathLike[str] | None = None,
                       num_workers: int | None = None, progress: bool = True) -> Path:
    """Make sure every recording has its frames in the cache for these settings.

    Recordings whose cache file is missing, or whose ``.aedat`` changed size or mtime since it
    was converted, are (re)converted in a process pool of ``num_workers`` processes (0: in this
    process; None: one per CPU) with a tqdm progress bar.

    Args:
        data_dir: folder of the class folders.
        timesteps: T.
        resize: None for 128 x 128, or a size such as 48 / (48, 48).
        resize_mode: ``"area"`` or ``"bilinear"``.
        cache_dir: where the ``frames_T*`` folders go (default: ``data_dir``).
        num_workers: conversion processes.
        progress: show the progress bar.

    Returns:
        The cache folder of these settings.

    Raises:
        DataError: a corrupt recording (naming it) or an unwritable cache.

    Example:
        >>> convert_recordings("cifar10-dvs", 10, resize=48, num_workers=8)  # doctest: +SKIP
        PosixPath('cifar10-dvs/frames_T10_3f0c...')
    """
    settings = cache_settings(timesteps, resize=resize, resize_mode=resize_mode)
    recordings = list_recordings(data_dir)
    root = _root(data_dir)
    folder = cache_folder(Path(cache_dir).expanduser() if cache_dir is not None else root,
                          settings)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the frame cache {folder} "
                        f"({one_line(exc.strerror or exc)}): pass a writable cache_dir") from None
    known = _read_meta(folder, settings)
    sources: dict[str, list[int]] = {}
    todo: list[tuple[str, str, str, dict[str, object]]] = []
    for rec in recordings:
        rel = f"{rec.path.parent.name}/{rec.path.name}"
        stamp = _stamp(rec.path)
        sources[rel] = stamp
        dst = _cache_path(folder, rec)
        # a 0-byte source is converted again (and refused): frames cached from it before
        # read_aedat refused empty files are not a recording
        if known.get(rel) != stamp or not dst.is_file() or stamp[0] == 0:
            todo.append((rel, str(rec.path), str(dst), settings))
    if todo:
        workers = (os.cpu_count() or 1) if num_workers is None else int(num_workers)
        desc = f"CIFAR10-DVS -> frames T={settings['timesteps']}"
        errors: dict[str, str] = {}
        bar = tqdm(total=len(todo), desc=desc, unit="file", disable=not progress, leave=False)
        with bar:
            if workers <= 0 or len(todo) == 1:
                for rel, err in map(_convert_job, todo):
                    if err:
                        errors[rel] = err
                    bar.update()
            else:
                chunk = max(1, min(64, len(todo) // (workers * 8)))
                try:
                    with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
                        for rel, err in pool.map(_convert_job, todo, chunksize=chunk):
                            if err:
                                errors[rel] = err
                            bar.update()
                except BrokenProcessPool:
                    raise DataError(f"a conversion process died while filling {folder} (out of "
                                    "memory?): run again with fewer workers (num_workers=0 "
                                    "converts in this process)") from None
        if errors:
            _write_meta(folder, settings,
                        {rel: st for rel, st in sources.items() if rel not in errors})
            first = next(iter(errors.values()))
            more = f" ({len(errors) - 1} more recordings failed too)" if len(errors) > 1 else ""
            raise DataError(one_line(first) + more)
    _write_meta(folder, settings, sources)
    return folder


class CIFAR10DVS(Dataset):
    """CIFAR10-DVS as cached event-count frames, items ``(float32 [T, 2, H, W], label)``.

    Builds (or reuses) the frame cache on construction, then reads one ``.npz`` per item.
    Frames are raw event counts (not normalised); augmentation is batched on the device
    (:class:`multispike.data.transforms.DVSFlipRoll`).

    Args:
        data_dir: folder of the 10 class folders of ``.aedat`` files.
        train: the first 90 % of each class (else the last 10 %).
        timesteps: T frames per recording.
        resize: None (128 x 128) or 48 / (48, 48) as the Ternary Spike DVS recipes choose.
        resize_mode: ``"area"`` (default) or ``"bilinear"``.
        cache_dir: where the frame cache goes (default ``data_dir``).
        convert_workers: processes for the one-off conversion (None: one per CPU).
        progress: progress bar during conversion.

    Example:
        >>> ds = CIFAR10DVS("cifar10-dvs", train=True, timesteps=10, resize=48)  # doctest: +SKIP
        >>> ds[0][0].shape  # doctest: +SKIP
        torch.Size([10, 2, 48, 48])
    """

    #: Suggested loader workers: each item is one small compressed file to read and inflate.
    loader_workers = 4

    def __init__(self, data_dir: str | os.PathLike[str] | None = None, *, train: bool,
                 timesteps: int, resize: int | Sequence[int] | None = None,
                 resize_mode: str = "area", cache_dir: str | os.PathLike[str] | None = None,
                 convert_workers: int | None = None, progress: bool = True) -> None:
        self.cache = convert_recordings(data_dir, timesteps, resize=resize,
                                        resize_mode=resize_mode, cache_dir=cache_dir,
                                        num_workers=convert_workers, progress=progress)
        self.train = train
        self.timesteps = int(timesteps)
        self.classes = list(CLASSES)
        recordings = list_recordings(data_dir, train=train)
        self.samples = [(_cache_path(self.cache, rec), rec.label) for rec in recordings]
        self.targets = [label for _, label in self.samples]
        self.recordings = [rec.path for rec in recordings]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            with np.load(path) as npz:
                frames = npz["frames"]
        except Exception as exc:  # missing or damaged cache file
            raise DataError(f"cannot read cached frames {path} ({type(exc).__name__}): delete "
                            f"the cache folder {self.cache} and build the dataset again") from None
        return torch.from_numpy(frames.astype(np.float32)), label
