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

Cache: each recording is decoded once into its events, packed as uint16
``(p * 128 + y) * 128 + x`` in file order, one ``.npy`` per recording in
``<cache>/events_<hash>/<class>/<stem>.npy``; ``<cache>`` is ``cache_dir``, else the dataset
folder when it is writable, else a per-user folder keyed by the dataset folder's path
(:func:`cache_location`). The hash covers the cache format, sensor size and address
convention; ``meta.json`` records each source file's size and mtime, and a recording whose file
changed is decoded again. T and the resize are applied when an item is read (a bincount and,
if asked, two small matrix products), so one cache serves every T. Under torch.distributed
rank 0 decodes while the other ranks wait.

Split: the dataset ships none; within each class the recordings are sorted by the number in
their name and the first 90 % (``9 * n // 10``, 900 of 1,000) are training, the rest test.

Transforms: an optional resize (e.g. 48 x 48, done as each item is read) and the random
horizontal flip + roll of up to 5 pixels (the common DVS pipeline the Ternary Spike recipes
choose), the latter batched on the training device
(:class:`multispike.data.transforms.DVSFlipRoll`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from multispike.checks import boolean, positive_int
from multispike.data._io import default_cache_root, default_data_root, one_line
from multispike.errors import ConfigError, DataError

#: Class folders of the official dataset, in label order (the same order as CIFAR-10).
CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                            "horse", "ship", "truck")
#: (height, width) of the DVS128 sensor.
SENSOR_SIZE: tuple[int, int] = (128, 128)
#: Structured dtype of the arrays :func:`read_aedat` returns.
EVENT_DTYPE = np.dtype([("t", np.int64), ("x", np.int16), ("y", np.int16), ("p", np.int8)])
#: Version of the frame cache layout; bump it when the stored frames change meaning.
CACHE_FORMAT = 2
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


def pack_events(events: np.ndarray, size: tuple[int, int] = SENSOR_SIZE) -> np.ndarray:
    """Each event's polarity and pixel as one integer ``(p * H + y) * W + x`` (int64).

    This is the form the event cache stores (as uint16: it is below 2 * 128 * 128) and
    :func:`bin_packed` integrates.

    Raises:
        DataError: an event outside the ``H x W`` frame or a polarity other than 0/1.

    Example:
        >>> ev = np.zeros(2, EVENT_DTYPE); ev["x"] = [1, 2]; ev["y"] = [0, 1]; ev["p"] = [0, 1]
        >>> pack_events(ev, size=(2, 3)).tolist()   # (0*2 + 0)*3 + 1, (1*2 + 1)*3 + 2
        [1, 11]
    """
    H, W = (int(s) for s in size)
    x = np.asarray(events["x"], dtype=np.int64)
    y = np.asarray(events["y"], dtype=np.int64)
    p = np.asarray(events["p"], dtype=np.int64)
    if x.size and (x.min() < 0 or x.max() >= W or y.min() < 0 or y.max() >= H
                   or p.min() < 0 or p.max() > 1):
        raise DataError(f"events fall outside a {H}x{W} frame with 2 polarities (x 0..{x.max()}, "
                        f"y 0..{y.max()}, p {p.min()}..{p.max()}): pass the sensor size as size")
    return (p * H + y) * W + x


def bin_packed(packed: np.ndarray, timesteps: int, size: tuple[int, int] = SENSOR_SIZE,
               dtype: type = np.int64) -> np.ndarray:
    """Integrate packed events (:func:`pack_events`) into counts ``[T, 2, H, W]`` of ``dtype``.

    The split by number of :func:`events_to_frames`: chunks of ``N // T`` events in the order
    given, the ``N % T`` remainder (all events when N < T) in the last frame. One bincount
    per frame, into one array: no temporary as large as the events or the T frames.

    Example:
        >>> bin_packed(np.array([0, 1, 1, 2, 3]), 2, size=(1, 2)).reshape(2, 4).tolist()
        [[1, 1, 0, 0], [0, 1, 1, 1]]
    """
    T = _check_timesteps(timesteps)
    H, W = (int(s) for s in size)
    plane = 2 * H * W
    packed = np.asarray(packed)
    if packed.dtype.kind not in "iu":
        packed = packed.astype(np.int64)
    chunk = len(packed) // T
    out = np.empty((T, plane), dtype=dtype)
    for t in range(T):  # frame t: events [t * chunk, (t + 1) * chunk), the last to the end
        part = packed[t * chunk:(t + 1) * chunk if t < T - 1 else None]
        out[t] = np.bincount(part, minlength=plane)
    return out.reshape(T, 2, H, W)


def frame_counts(events: np.ndarray, timesteps: int,
                 size: tuple[int, int] = SENSOR_SIZE) -> np.ndarray:
    """Integer version of :func:`events_to_frames`: int64 counts ``[T, 2, H, W]`` (NumPy)."""
    T = _check_timesteps(timesteps)
    return bin_packed(pack_events(events, size), T, size)


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


def _area_last_axis(arr: np.ndarray, n_out: int) -> np.ndarray:
    """Area-resize the last axis. The weight matrix of n_in -> n_out is block diagonal: with
    g = gcd(n_in, n_out), g copies of the (n_in/g) -> (n_out/g) matrix (128 -> 48: 16 blocks
    of 8 -> 3), so one product with a block does it, 16 times fewer operations."""
    n_in = arr.shape[-1]
    g = math.gcd(n_in, n_out)
    block = _resize_weights(n_in // g, n_out // g, "area").astype(np.float32)
    flat = np.ascontiguousarray(arr).reshape(-1, n_in // g)
    return (flat @ block.T).reshape(*arr.shape[:-1], n_out)


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
    arr = arr.astype(np.float32, copy=False)
    if mode == "area":  # x, then y: each a product with one small block of the weights
        out = np.swapaxes(_area_last_axis(np.swapaxes(_area_last_axis(arr, w), -1, -2), h),
                          -1, -2)
    else:
        wy = _resize_weights(arr.shape[-2], h, mode).astype(np.float32)
        wx = _resize_weights(arr.shape[-1], w, mode).astype(np.float32)
        out = wy @ arr @ wx.T
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
# the event cache: each recording decoded once, whatever T


def _normalise_resize(resize: int | Sequence[int] | None) -> tuple[int, int] | None:
    if resize is None:
        return None
    try:
        size = (resize, resize) if isinstance(resize, (int, np.integer)) else tuple(resize)
    except TypeError:
        size = ()
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer))
                             or s < 1 for s in size):
        raise ConfigError(f"resize must be a size like 48 or (48, 48), got {resize!r}")
    size = (int(size[0]), int(size[1]))
    return None if size == SENSOR_SIZE else size


def _check_resize_mode(mode: object) -> str:
    if mode not in _RESIZE_MODES:
        raise ConfigError(f"resize_mode {mode!r} is unknown: use one of "
                          f"{', '.join(_RESIZE_MODES)}")
    return str(mode)


def cache_settings() -> dict[str, object]:
    """Every setting that changes what the cache stores; the cache folder name hashes it.

    The cache holds each recording's events in file order, packed (:func:`pack_events`): T,
    the resize and its mode are applied when an item is read, so they are not settings of the
    cache and one cache serves every T.

    Example:
        >>> cache_settings()["content"]
        'events'
    """
    return {
        "format": CACHE_FORMAT,
        "content": "events",
        "packing": "(p*128+y)*128+x as uint16, in file order",
        "sensor": list(SENSOR_SIZE),
        "address": "p=a&1 x=127-((a>>1)&127) y=(a>>8)&127",
    }


def cache_folder(cache_dir: str | os.PathLike[str],
                 settings: dict[str, object] | None = None) -> Path:
    """``<cache_dir>/events_<12 hex digits of the settings' SHA-256>``.

    Example:
        >>> cache_folder("/scratch").name.startswith("events_")
        True
    """
    blob = json.dumps(settings or cache_settings(), sort_keys=True).encode()
    return Path(cache_dir) / f"events_{hashlib.sha256(blob).hexdigest()[:12]}"


def cache_location(data_dir: str | os.PathLike[str] | None = None,
                   cache_dir: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The folder that holds the ``events_<hash>`` cache of a dataset folder, and why there.

    ``cache_dir`` when given; else the dataset folder itself when it is writable; else a
    per-user folder, ``<multispike cache>/cifar10-dvs/<name>-<hash of the dataset folder's
    absolute path>`` (:func:`multispike.data._io.default_cache_root`), so that two dataset
    folders never share a cache. The reason is ``""`` except for that fall-back.

    Example:
        >>> cache_location("/data/cifar10-dvs", "/scratch/dvs")
        (PosixPath('/scratch/dvs'), '')
    """
    root = _root(data_dir)
    if cache_dir is not None:
        return Path(cache_dir).expanduser(), ""
    if os.access(root, os.W_OK | os.X_OK):
        return root, ""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return (default_cache_root() / "cifar10-dvs" / f"{root.name}-{key}",
            f"the dataset folder {root} is not writable")


def _events_job(job: tuple[str, str, str]) -> tuple[str, str | None]:
    """Decode one recording into its cache file; returns (its key, an error message or None)."""
    rel, src, dst = job
    try:
        packed = pack_events(read_aedat(src)).astype(np.uint16)
        out = Path(dst)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, packed)
        os.replace(tmp, out)
    except DataError as exc:
        return rel, str(exc)
    except OSError as exc:
        return rel, (f"cannot write the events of {src} to {dst} "
                     f"({one_line(exc.strerror or exc)}): pass a writable cache_dir "
                     "(--data-option cache_dir=DIR)")
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


def _write_meta(folder: Path, settings: dict[str, object], sources: dict[str, list[int]],
                root: Path) -> None:
    tmp = folder / f"meta.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"settings": settings, "dataset": str(root.resolve()),
                               "sources": sources}, indent=1, sort_keys=True))
    os.replace(tmp, folder / "meta.json")


def _cache_path(folder: Path, rec: Recording) -> Path:
    return folder / rec.path.parent.name / (rec.path.stem + ".npy")


def _plan(recordings: list[Recording], folder: Path, known: dict[str, list[int]]
          ) -> tuple[dict[str, list[int]], list[tuple[str, str, str]]]:
    """Each recording's stamp, and the jobs of those whose cache file is missing or stale."""
    sources: dict[str, list[int]] = {}
    todo: list[tuple[str, str, str]] = []
    for rec in recordings:
        rel = f"{rec.path.parent.name}/{rec.path.name}"
        stamp = _stamp(rec.path)
        sources[rel] = stamp
        dst = _cache_path(folder, rec)
        # a 0-byte source is converted again (and refused): events cached from it before
        # read_aedat refused empty files are not a recording
        if known.get(rel) != stamp or not dst.is_file() or stamp[0] == 0:
            todo.append((rel, str(rec.path), str(dst)))
    return sources, todo


def _run_jobs(todo: list[tuple[str, str, str]], workers: int, folder: Path,
              show: bool) -> dict[str, str]:
    """Run the jobs (in a process pool unless ``workers <= 0``); the errors, by recording."""
    errors: dict[str, str] = {}
    bar = tqdm(total=len(todo), desc="CIFAR10-DVS: decoding recordings", unit="file",
               disable=not show, leave=False)
    with bar:
        if workers <= 0 or len(todo) == 1:
            results = map(_events_job, todo)
            for rel, err in results:
                if err:
                    errors[rel] = err
                bar.update()
            return errors
        chunk = max(1, min(64, len(todo) // (workers * 8)))
        try:
            with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
                for rel, err in pool.map(_events_job, todo, chunksize=chunk):
                    if err:
                        errors[rel] = err
                    bar.update()
        except BrokenProcessPool:
            raise DataError(f"a conversion process died while filling {folder} (out of "
                            "memory?): run again with fewer workers (convert_workers=0 "
                            "converts in this process)") from None
    return errors


def _convert_here(data_dir: str | os.PathLike[str] | None,
                  cache_dir: str | os.PathLike[str] | None, num_workers: int | None,
                  progress: bool, speak: bool) -> Path:
    """:func:`convert_recordings` in this process alone; ``speak``: this process may print."""
    settings = cache_settings()
    recordings = list_recordings(data_dir)
    root = _root(data_dir)
    base, why = cache_location(data_dir, cache_dir)
    folder = cache_folder(base, settings)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the event cache {folder} "
                        f"({one_line(exc.strerror or exc)}"
                        f"{'; ' + why if why else ''}): pass a writable cache_dir "
                        "(--data-option cache_dir=DIR)") from None
    known = _read_meta(folder, settings)
    sources, todo = _plan(recordings, folder, known)
    if todo:
        if speak and (progress or why):
            where = f" ({why}; --data-option cache_dir=DIR chooses another)" if why else ""
            print(f"CIFAR10-DVS: decoding {len(todo)} recordings once into {folder}{where}",
                  file=sys.stderr, flush=True)
        workers = (os.cpu_count() or 1) if num_workers is None else num_workers
        errors = _run_jobs(todo, workers, folder, progress and speak)
        if errors:
            _write_meta(folder, settings,
                        {rel: st for rel, st in sources.items() if rel not in errors}, root)
            first = next(iter(errors.values()))
            more = f" ({len(errors) - 1} more recordings failed too)" if len(errors) > 1 else ""
            raise DataError(one_line(first) + more)
    if todo or known != sources:
        _write_meta(folder, settings, sources, root)
    return folder


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size when torch.distributed is initialised."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def convert_recordings(data_dir: str | os.PathLike[str] | None,
                       timesteps: int | None = None, *,
                       cache_dir: str | os.PathLike[str] | None = None,
                       num_workers: int | None = None, progress: bool = True) -> Path:
    """Make sure every recording has its decoded events in the cache; the cache folder.

    Recordings whose cache file is missing, or whose ``.aedat`` changed size or mtime since it
    was decoded, are (re)decoded in a process pool of ``num_workers`` processes (0: in this
    process; None: one per CPU). The cache holds no frames, so it does not depend on T: a
    dataset at another T (or resize) reuses it as it is.

    Under ``torch.distributed`` (every rank must call this, e.g. by building the dataset) rank
    0 decodes while the others wait, then they check the cache (where a node does not see rank
    0's cache folder, it fills it itself); an error on rank 0 is raised on every rank.

    Args:
        data_dir: folder of the class folders.
        timesteps: ignored (checked if given): the cache serves every T.
        cache_dir: where the ``events_*`` folder goes (default: :func:`cache_location`).
        num_workers: conversion processes.
        progress: a progress bar and the cache's place, in one line (rank 0 only); the place
            is printed anyway when the dataset folder is not writable.

    Raises:
        DataError: a corrupt recording (naming it) or an unwritable cache.

    Example:
        >>> convert_recordings("cifar10-dvs", num_workers=8)  # doctest: +SKIP
        PosixPath('cifar10-dvs/events_3f0c...')
    """
    if timesteps is not None:
        _check_timesteps(timesteps)
    progress = boolean("progress", progress)
    if num_workers is not None and (isinstance(num_workers, bool)
                                    or not isinstance(num_workers, (int, np.integer))
                                    or num_workers < 0):
        raise ConfigError(f"convert_workers must be a whole number >= 0 (0: convert in this "
                          f"process) or None (one per CPU), got {num_workers!r}")
    rank, world = _rank_and_world()
    if world == 1:
        return _convert_here(data_dir, cache_dir, num_workers, progress, True)
    failure: Exception | None = None
    if rank == 0:
        try:
            folder = _convert_here(data_dir, cache_dir, num_workers, progress, True)
        except Exception as exc:  # reaches every rank below; re-raised here
            failure = exc
    status = [None if failure is None else (type(failure).__name__, one_line(failure))]
    torch.distributed.broadcast_object_list(status, src=0)  # the others wait for rank 0
    if failure is not None:
        raise failure
    if status[0] is not None:
        kind, message = status[0]
        raise (ConfigError if kind == "ConfigError" else DataError)(
            message if kind in ("ConfigError", "DataError")
            else f"rank 0 failed to decode the recordings ({kind}: {message}): see its error")
    if rank != 0:  # normally finds everything done; converts what this node cannot see
        folder = _convert_here(data_dir, cache_dir, num_workers, False, False)
    return folder


class CIFAR10DVS(Dataset):
    """CIFAR10-DVS as event-count frames, items ``(float32 [T, 2, H, W], label)``.

    Decodes the recordings into the event cache once (:func:`convert_recordings`), then each
    item reads one recording's packed events and integrates them into T frames
    (:func:`bin_packed`, resized if asked): a dataset at another T reuses the cache. Frames
    are raw event counts (not normalised); augmentation is batched on the device
    (:class:`multispike.data.transforms.DVSFlipRoll`).

    Args:
        data_dir: folder of the 10 class folders of ``.aedat`` files.
        train: the first 90 % of each class (else the last 10 %).
        timesteps: T frames per recording.
        resize: None (128 x 128) or 48 / (48, 48) as the Ternary Spike DVS recipes choose.
        resize_mode: ``"area"`` (default) or ``"bilinear"``.
        cache_dir: where the event cache goes (default: :func:`cache_location`).
        convert_workers: processes for the one-off conversion (None: one per CPU).
        progress: progress bar during conversion (rank 0 only).

    Example:
        >>> ds = CIFAR10DVS("cifar10-dvs", train=True, timesteps=10, resize=48)  # doctest: +SKIP
        >>> ds[0][0].shape  # doctest: +SKIP
        torch.Size([10, 2, 48, 48])
    """

    #: Suggested loader workers: each item is one small file to read and integrate.
    loader_workers = 4

    def __init__(self, data_dir: str | os.PathLike[str] | None = None, *, train: bool,
                 timesteps: int, resize: int | Sequence[int] | None = None,
                 resize_mode: str = "area", cache_dir: str | os.PathLike[str] | None = None,
                 convert_workers: int | None = None, progress: bool = True) -> None:
        self.timesteps = _check_timesteps(timesteps)
        self.size = _normalise_resize(resize)
        self.resize_mode = _check_resize_mode(resize_mode)
        self.cache = convert_recordings(data_dir, cache_dir=cache_dir,
                                        num_workers=convert_workers, progress=progress)
        self.train = train
        self.classes = list(CLASSES)
        recordings = list_recordings(data_dir, train=train)
        self.samples = [(_cache_path(self.cache, rec), rec.label) for rec in recordings]
        self.targets = [label for _, label in self.samples]
        self.recordings = [rec.path for rec in recordings]

    def __len__(self) -> int:
        return len(self.samples)

    def frames(self, packed: np.ndarray) -> np.ndarray:
        """float32 ``[T, 2, H, W]`` frames of one recording's packed events."""
        counts = bin_packed(packed, self.timesteps, dtype=np.float32)  # exact below 2**24
        if self.size is None:
            return counts
        return np.ascontiguousarray(resize_frames(counts, self.size, self.resize_mode))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            packed = np.load(path)
            bad = packed.ndim != 1 or packed.dtype != np.uint16 or (
                packed.size > 0 and int(packed.max()) >= 2 * SENSOR_SIZE[0] * SENSOR_SIZE[1])
        except Exception:  # missing or damaged cache file
            bad = True
        if bad:
            raise DataError(f"cannot read the cached events {path} (missing or damaged): "
                            f"delete the cache folder {self.cache} and build the dataset again")
        return torch.from_numpy(self.frames(packed)), label
