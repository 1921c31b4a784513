"""CIFAR-10 and CIFAR-100 from the official python tarballs.

Layout of ``data_dir`` (either form works, the extracted folder wins when both are there)::

    data_dir/cifar-10-python.tar.gz     or  data_dir/cifar-10-batches-py/{data_batch_1..5,
                                                                      test_batch, batches.meta}
    data_dir/cifar-100-python.tar.gz    or  data_dir/cifar-100-python/{train, test, meta}

Each batch is a pickle (written by Python 2) of a dict with byte keys: ``b'data'`` a uint8
array [N, 3072] holding the red, green and blue 32 x 32 planes row by row, and ``b'labels'``
(CIFAR-10) or ``b'fine_labels'`` / ``b'coarse_labels'`` (CIFAR-100).

Safety: pickles can run code, so this module unpickles only members of a tarball whose MD5
matched the official checksum, or files in a folder the user pointed ``data_dir`` at.

Transforms: the dataset returns clean float images in [0, 1]; augmentation (MT-SNN's flip /
rotate / shift, or Ternary Spike's crop + flip with optional AutoAugment and Cutout) and the
per-dataset normalisation run batched on the training device, see
:func:`multispike.data.batch_transform` and :mod:`multispike.data.transforms`.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from multispike.data._io import default_data_root, download, md5sum, one_line
from multispike.errors import ConfigError, DataError

#: Official download addresses.
URLS: dict[str, str] = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}
#: Official MD5 checksums of the tarballs.
MD5: dict[str, str] = {
    "cifar10": "c58f30108f718f92721af3b95e74349a",
    "cifar100": "eb9058c3a382ffc7106e4002c42a8d85",
}

#: Per-channel mean and std of the training images (RGB, values in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


@dataclass(frozen=True)
class CifarFormat:
    """Where the pieces of one CIFAR variant live in its tarball."""

    key: str
    title: str
    tarball: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int


FORMATS: dict[str, CifarFormat] = {
    "cifar10": CifarFormat(
        key="cifar10", title="CIFAR-10", tarball="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_files=("test_batch",),
        meta_file="batches.meta", label_key=b"labels", names_key=b"label_names",
        num_classes=10),
    "cifar100": CifarFormat(
        key="cifar100", title="CIFAR-100", tarball="cifar-100-python.tar.gz",
        folder="cifar-100-python", train_files=("train",), test_files=("test",),
        meta_file="meta", label_key=b"fine_labels", names_key=b"fine_label_names",
        num_classes=100),
}

# Tarballs whose checksum already matched in this process: (path, size, mtime_ns).
_VERIFIED: set[tuple[str, int, int]] = set()
_IMAGE_BYTES = 3 * 32 * 32


def _format(key: str) -> CifarFormat:
    try:
        return FORMATS[key]
    except KeyError:
        raise ConfigError(f"unknown CIFAR variant {key!r}: use 'cifar10' or 'cifar100'") from None


def _check_tarball(path: Path, fmt: CifarFormat) -> None:
    """Raise DataError unless ``path`` has the official MD5 (memoised per file version)."""
    st = path.stat()
    stamp = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if stamp in _VERIFIED:
        return
    want = MD5[fmt.key]
    got = md5sum(path)
    if got != want:
        raise DataError(
            f"{path} has md5 {got}, expected {want} (truncated or not the official "
            f"{fmt.title} tarball): delete it and download it again from {URLS[fmt.key]} "
            "(or pass download=True)")
    _VERIFIED.add(stamp)


def _read_tar_members(path: Path, names: list[str]) -> dict[str, bytes]:
    """The bytes of the wanted members, read in one pass without extracting anything."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name in names and member.isfile():
                    fh = tar.extractfile(member)
                    if fh is not None:
                        found[member.name] = fh.read()
                if len(found) == len(names):
                    break
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{path} is truncated or damaged ({one_line(exc)}): delete it and "
                        "download it again (or pass download=True)") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise DataError(f"{path} lacks {missing[0]} (truncated or not the official tarball): "
                        "delete it and download it again (or pass download=True)")
    return found


def _unpickle(raw: bytes, source: str) -> dict:
    try:
        obj = pickle.load(io.BytesIO(raw), encoding="bytes")
    except Exception as exc:  # any unpickling failure means a damaged file
        raise DataError(f"{source} is not a readable CIFAR pickle ({type(exc).__name__}): "
                        "replace it with the file from the official tarball") from None
    if not isinstance(obj, dict):
        raise DataError(f"{source} holds a {type(obj).__name__}, not a CIFAR batch dict: "
                        "replace it with the file from the official tarball")
    return obj


def _parse_batch(obj: dict, source: str, label_key: bytes,
                 num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if b"data" not in obj or label_key not in obj:
        raise DataError(f"{source} lacks the keys b'data' / {label_key!r}: replace it with the "
                        "file from the official tarball")
    data = np.asarray(obj[b"data"])
    labels = np.asarray(obj[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _IMAGE_BYTES:
        raise DataError(f"{source} b'data' is {data.dtype} {list(data.shape)}, expected uint8 "
                        f"[N, {_IMAGE_BYTES}]: replace it with the file from the official tarball")
    if labels.shape != (data.shape[0],) or (labels.size and (
            labels.min() < 0 or labels.max() >= num_classes)):
        raise DataError(f"{source} labels do not match its {data.shape[0]} images in 0.."
                        f"{num_classes - 1}: replace it with the file from the official tarball")
    return data.reshape(-1, 3, 32, 32), labels


def locate(key: str, data_dir: str | os.PathLike[str] | None = None, *,
           download_ok: bool = False, progress: bool = True) -> Path:
    """Find (or download) the CIFAR data in ``data_dir``: the extracted folder or the tarball.

    Args:
        key: ``"cifar10"`` or ``"cifar100"``.
        data_dir: folder holding the tarball or its extracted folder (the extracted folder or
            the tarball itself may also be given). None: :func:`default_data_root`.
        download_ok: fetch the tarball (with checksum) when neither is there.
        progress: progress bar for the download.

    Returns:
        The extracted folder, or the tarball path (checksum verified).

    Example (a tiny stand-in for the extracted tarball, in the official layout; the real
    tarball's checksum is verified, so a stand-in tarball would be refused):
        >>> import tempfile
        >>> from multispike.data.testing import write_cifar
        >>> with tempfile.TemporaryDirectory() as data:
        ...     folder, _ = write_cifar(data, "cifar10", tarball=False)
        ...     locate("cifar10", data) == folder, folder.name
        (True, 'cifar-10-batches-py')
    """
    fmt = _format(key)
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_root()
    if root.name == fmt.folder and root.is_dir():
        return root
    if root.name == fmt.tarball and root.is_file():
        _check_tarball(root, fmt)
        return root
    folder, tarball = root / fmt.folder, root / fmt.tarball
    if folder.is_dir():
        return folder
    if tarball.is_file():
        _check_tarball(tarball, fmt)
        return tarball
    where = (f"put {fmt.tarball} (from {URLS[fmt.key]}) or its extracted folder "
             f"{fmt.folder}/ into {root}")
    if not download_ok:
        state = f"holds neither {fmt.tarball} nor {fmt.folder}/" if root.is_dir() \
            else "does not exist"
        raise DataError(f"{fmt.title} data folder {root} {state}: {where}, or pass "
                        "download=True (--download) when online")
    download(URLS[fmt.key], tarball, md5=MD5[fmt.key], progress=progress,
             manual_hint=f"when offline, {where}")
    _check_tarball(tarball, fmt)
    return tarball


def load_arrays(key: str, data_dir: str | os.PathLike[str] | None = None, *, train: bool,
                download: bool = False, coarse: bool = False,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read one CIFAR split into memory.

    Args:
        key: ``"cifar10"`` or ``"cifar100"``.
        data_dir: see :func:`locate`.
        train: the 50,000 training images, else the 10,000 test images.
        download: fetch the tarball when absent.
        coarse: CIFAR-100 only: the 20 super-class labels instead of the 100 fine ones.
        progress: progress bar for the download.

    Returns:
        ``(images, labels, class_names)``: uint8 [N, 3, 32, 32] RGB, int64 [N], list of names.

    Example (a tiny stand-in with 2 images per batch file; the real test split gives
    ``(10000, 3, 32, 32)``):
        >>> import tempfile
        >>> from multispike.data.testing import write_cifar
        >>> with tempfile.TemporaryDirectory() as data:
        ...     _ = write_cifar(data, "cifar10", per_batch=2, tarball=False)
        ...     x, y, names = load_arrays("cifar10", data, train=False)
        >>> x.shape, x.dtype, y.dtype, names[0]
        ((2, 3, 32, 32), dtype('uint8'), dtype('int64'), 'airplane')
    """
    fmt = _format(key)
    if coarse and key != "cifar100":
        raise ConfigError("coarse labels exist only for cifar100: drop the coarse option")
    label_key, names_key, num_classes = fmt.label_key, fmt.names_key, fmt.num_classes
    if coarse:
        label_key, names_key, num_classes = b"coarse_labels", b"coarse_label_names", 20
    src = locate(key, data_dir, download_ok=download, progress=progress)
    files = list(fmt.train_files if train else fmt.test_files) + [fmt.meta_file]
    if src.is_dir():
        raw: dict[str, bytes] = {}
        for name in files:
            path = src / name
            try:
                raw[name] = path.read_bytes()
            except OSError as exc:
                raise DataError(f"cannot read {path} ({one_line(exc.strerror or exc)}): the "
                                f"folder {src} must hold the files of the official {fmt.tarball}")\
                    from None
        sources = {name: str(src / name) for name in files}
    else:
        members = [f"{fmt.folder}/{name}" for name in files]
        got = _read_tar_members(src, members)
        raw = {name: got[m] for name, m in zip(files, members, strict=True)}
        sources = {name: f"{src}:{m}" for name, m in zip(files, members, strict=True)}

    meta = _unpickle(raw[fmt.meta_file], sources[fmt.meta_file])
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(names_key, [])]
    if len(names) != num_classes:
        raise DataError(f"{sources[fmt.meta_file]} lists {len(names)} class names, expected "
                        f"{num_classes}: replace it with the file from the official tarball")
    images, labels = [], []
    for name in files[:-1]:
        x, y = _parse_batch(_unpickle(raw[name], sources[name]), sources[name], label_key,
                            num_classes)
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels), names


class CIFAR(Dataset):
    """CIFAR-10 or CIFAR-100 held in memory, items ``(float image [3, 32, 32] in [0, 1], label)``.

    Images are not augmented or normalised here: apply
    ``multispike.data.batch_transform(key, train=...)`` to each batch on the device.

    Example (a tiny stand-in: 5 training batch files of 2 images):
        >>> import tempfile
        >>> from multispike.data.testing import write_cifar
        >>> with tempfile.TemporaryDirectory() as data:
        ...     _ = write_cifar(data, "cifar10", per_batch=2, tarball=False)
        ...     ds = CIFAR("cifar10", data, train=True)
        >>> x, y = ds[0]; x.shape, len(ds)
        (torch.Size([3, 32, 32]), 10)
    """

    #: Suggested loader workers: items are slices of an in-memory tensor, cheap to fetch.
    loader_workers = 2

    def __init__(self, key: str, data_dir: str | os.PathLike[str] | None = None, *, train: bool,
                 download: bool = False, coarse: bool = False, progress: bool = True) -> None:
        images, labels, names = load_arrays(key, data_dir, train=train, download=download,
                                            coarse=coarse, progress=progress)
        self.key = key
        self.train = train
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.targets = labels.tolist()
        self.classes = names

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float().div_(255.0), self.targets[index]
