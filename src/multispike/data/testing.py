"""Tiny datasets in the exact official file formats, for tests and offline demos.

Each writer produces a few samples laid out byte for byte like the real download (CIFAR
pickles in a gzip tarball, DVS128 AER-DAT 2.0 recordings in the 10 class folders, JPEGs in
ImageNet class folders), so that reading them exercises the real loading code.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> tarball, arrays = write_cifar(root, "cifar10", per_batch=2)
    >>> tarball.name, arrays["test"][0].shape
    ('cifar-10-python.tar.gz', (2, 3, 32, 32))
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from multispike.data import cifar
from multispike.data.dvs import CLASSES, EVENT_DTYPE, write_aedat

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")


def _cifar_files(key: str, per_batch: int,
                 rng: np.random.Generator) -> tuple[dict[str, dict], dict[str, tuple]]:
    fmt = cifar.FORMATS[key]
    files: dict[str, dict] = {}
    arrays: dict[str, list] = {"train": [[], []], "test": [[], []]}
    for split, names in (("train", fmt.train_files), ("test", fmt.test_files)):
        for i, fname in enumerate(names):
            n = per_batch
            data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
            labels = rng.integers(0, fmt.num_classes, size=n).tolist()
            batch: dict[bytes, object] = {
                b"batch_label": (f"training batch {i + 1} of {len(names)}" if split == "train"
                                 else "testing batch 1 of 1").encode(),
                b"data": data,
                b"filenames": [f"img_{split}_{i}_{j}.png".encode() for j in range(n)],
            }
            if key == "cifar10":
                batch[b"labels"] = labels
            else:
                batch[b"fine_labels"] = labels
                batch[b"coarse_labels"] = [lab // 5 for lab in labels]
            files[fname] = batch
            arrays[split][0].append(data.reshape(n, 3, 32, 32))
            arrays[split][1].append(np.asarray(labels, dtype=np.int64))
    if key == "cifar10":
        files[fmt.meta_file] = {b"num_cases_per_batch": per_batch,
                                b"label_names": [n.encode() for n in CIFAR10_NAMES],
                                b"num_vis": 3072}
    else:
        files[fmt.meta_file] = {
            b"fine_label_names": [f"fine_{i:02d}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse_{i:02d}".encode() for i in range(20)]}
    out = {split: (np.concatenate(x), np.concatenate(y)) for split, (x, y) in arrays.items()}
    return files, out


def write_cifar(root: str | os.PathLike[str], key: str = "cifar10", *, per_batch: int = 4,
                tarball: bool = True, seed: int = 0) -> tuple[Path, dict[str, tuple]]:
    """Write a tiny CIFAR-10/100 in the official layout: the tarball or its extracted folder.

    Args:
        root: the data folder to write into.
        key: ``"cifar10"`` (5 training batches + test batch) or ``"cifar100"``.
        per_batch: images per batch file.
        tarball: write ``cifar-10-python.tar.gz`` (else the extracted folder).
        seed: random pixels and labels.

    Returns:
        ``(path written, {"train": (images, labels), "test": (images, labels)})`` with the
        images uint8 [N, 3, 32, 32] and labels int64 [N] (fine labels for CIFAR-100).
    """
    fmt = cifar.FORMATS[key]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    files, arrays = _cifar_files(key, per_batch, np.random.default_rng(seed))
    blobs = {name: pickle.dumps(obj, protocol=2) for name, obj in files.items()}
    if not tarball:
        folder = root / fmt.folder
        folder.mkdir(parents=True, exist_ok=True)
        for name, blob in blobs.items():
            (folder / name).write_bytes(blob)
        return folder, arrays
    path = root / fmt.tarball
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(fmt.folder)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        for name, blob in blobs.items():
            info = tarfile.TarInfo(f"{fmt.folder}/{name}")
            info.size, info.mode = len(blob), 0o644
            tar.addfile(info, io.BytesIO(blob))
    return path, arrays


def random_events(n: int, *, seed: int = 0, duration_us: int = 1_000_000) -> np.ndarray:
    """``n`` random DVS128 events in time order (dtype :data:`EVENT_DTYPE`)."""
    rng = np.random.default_rng(seed)
    events = np.empty(n, dtype=EVENT_DTYPE)
    events["t"] = np.sort(rng.integers(0, duration_us, size=n))
    events["x"] = rng.integers(0, 128, size=n)
    events["y"] = rng.integers(0, 128, size=n)
    events["p"] = rng.integers(0, 2, size=n)
    return events


def write_cifar10_dvs(root: str | os.PathLike[str], *, per_class: int = 10,
                      events: tuple[int, int] = (20, 200),
                      seed: int = 0) -> dict[Path, np.ndarray]:
    """Write a tiny CIFAR10-DVS: ``root/<class>/cifar10_<class>_<i>.aedat`` for the 10 classes.

    Args:
        root: the data folder.
        per_class: recordings per class.
        events: (min, max) number of events per recording.
        seed: randomness.

    Returns:
        The events written, by file path.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    written: dict[Path, np.ndarray] = {}
    for cls in CLASSES:
        for i in range(per_class):
            ev = random_events(int(rng.integers(events[0], events[1] + 1)),
                               seed=int(rng.integers(1 << 31)))
            path = write_aedat(root / cls / f"cifar10_{cls}_{i}.aedat", ev)
            written[path] = ev
    return written


def write_imagenet(root: str | os.PathLike[str], *,
                   classes: tuple[str, ...] = ("n01440764", "n01443537", "n01484850"),
                   train_per_class: int = 3, val_per_class: int = 2,
                   seed: int = 0) -> Path:
    """Write a tiny ImageNet: ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``.

    Images are random colours of random sizes (some smaller than 224, some not square, one
    greyscale per class) saved as JPEG with Pillow.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for wnid in classes:
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                w, h = (int(v) for v in rng.integers(40, 300, size=2))
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                img = Image.fromarray(pixels, "RGB")
                if i == 0:
                    img = img.convert("L")
                name = f"{wnid}_{i}.JPEG" if split == "train" else \
                    f"ILSVRC2012_val_{len(classes) * i + classes.index(wnid):08d}.JPEG"
                img.save(folder / name, "JPEG", quality=85)
    return root


def add_macos_litter(root: str | os.PathLike[str]) -> list[Path]:
    """Add what a Mac leaves in copied folders to every folder under ``root``: an AppleDouble
    twin ``._<name>`` of each file (bytes no image decoder reads, but the same ending), a
    ``.DS_Store`` and a hidden ``.thumbnails`` folder holding a real JPEG. A loader must list
    none of them; returns the paths written.

    Example:
        >>> import tempfile
        >>> root = write_imagenet(tempfile.mkdtemp(), classes=("n01",), val_per_class=1)
        >>> sorted(p.name for p in add_macos_litter(root / "val"))[:2]
        ['.DS_Store', '.DS_Store']
    """
    root = Path(root)
    written: list[Path] = []
    folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
    for folder in folders:
        for f in [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]:
            twin = folder / f"._{f.name}"
            twin.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64))
            written.append(twin)
        store = folder / ".DS_Store"
        store.write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(32))
        hidden = folder / ".thumbnails" / "thumb.JPEG"
        hidden.parent.mkdir(exist_ok=True)
        Image.new("RGB", (32, 32)).save(hidden, "JPEG")
        written += [store, hidden]
    return written


def damage_image(path: str | os.PathLike[str], how: str = "garbage") -> Path:
    """Make an image file undecodable: ``"garbage"`` (a JPEG start marker and then text, as an
    HTML error page saved under the name would be), ``"truncated"`` (its first half, an
    interrupted copy) or ``"empty"`` (0 bytes).

    Example:
        >>> import tempfile; p = Path(tempfile.mkdtemp()) / "a.JPEG"
        >>> Image.new("RGB", (64, 64)).save(p); damage_image(p, "empty").stat().st_size
        0
    """
    path = Path(path)
    blobs = {"garbage": b"\xff\xd8\xff\xe0 <html>this is not really a jpeg</html>",
             "truncated": path.read_bytes()[:path.stat().st_size // 2], "empty": b""}
    path.write_bytes(blobs[how])
    return path
