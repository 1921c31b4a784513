"""ImageNet (ILSVRC-2012) from the standard class-folder layout, decoded with Pillow.

Layout of ``data_dir``::

    data_dir/train/n01440764/n01440764_10026.JPEG ...   (one folder per class)
    data_dir/val/n01440764/ILSVRC2012_val_00000293.JPEG ...   (val sorted into the same folders)

Class indices are the sorted folder names of ``train/`` (so train and val agree). Hidden files
and folders (names starting with ``.``: macOS's ``._*`` twins, ``.DS_Store``) are not listed.
An undecodable image stops with a one-line error naming it, or with ``skip_bad=True`` is
replaced by the next image and counted (:attr:`ImageFolder.skipped`).

Transforms: images differ in size, so cropping runs per image in the loader workers, with
Pillow (no torchvision): training takes a random resized crop (area 8-100 %, aspect 3/4-4/3)
resized to 224 x 224 and a random horizontal flip; evaluation resizes the shorter side to 256
and takes the centre 224 x 224. Items are float images in [0, 1]; the ImageNet mean/std
normalisation runs batched on the device (:func:`multispike.data.batch_transform`).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from multispike.checks import boolean
from multispike.data._io import default_data_root, one_line
from multispike.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: File endings read as images (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand(()).item()


def _randint(lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, ()).item())


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB float tensor ``[3, H, W]`` in [0, 1] from a Pillow image (any mode)."""
    arr = np.array(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


class RandomResizedCropFlip:
    """Training transform: random resized crop to ``size`` x ``size`` + random horizontal flip.

    A crop covering a random fraction ``scale`` of the image area with a log-uniform aspect
    ratio in ``ratio`` is tried up to 10 times; if none fits, the largest centred crop with an
    allowed aspect ratio is used. Crop and resize are one bilinear Pillow call. Random numbers
    come from torch, so each loader worker draws its own (seeded) sequence.

    Example:
        >>> RandomResizedCropFlip(224)(Image.new("RGB", (500, 375))).shape
        torch.Size([3, 224, 224])
    """

    def __init__(self, size: int = 224, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True) -> None:
        self.size, self.scale, self.ratio, self.flip = int(size), scale, ratio, flip

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """A random crop box ``(left, top, right, bottom)`` for an image of this size."""
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * _uniform(*self.scale)
            aspect = math.exp(_uniform(log_lo, log_hi))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                left, top = _randint(0, width - w), _randint(0, height - h)
                return left, top, left + w, top + h
        aspect = width / height
        if aspect < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.convert("RGB")
        out = img.resize((self.size, self.size), Image.Resampling.BILINEAR,
                         box=self.box(*img.size))
        if self.flip and torch.rand(()).item() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return pil_to_tensor(out)


class ResizeCenterCrop:
    """Evaluation transform: shorter side to ``resize``, then the centre ``crop`` x ``crop``.

    Done as one bilinear Pillow resize of the matching box of the original image.

    Example:
        >>> ResizeCenterCrop(256, 224)(Image.new("RGB", (500, 375))).shape
        torch.Size([3, 224, 224])
    """

    def __init__(self, resize: int = 256, crop: int = 224) -> None:
        self.resize, self.crop = int(resize), int(crop)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.convert("RGB")
        width, height = img.size
        side = self.crop * min(width, height) / self.resize  # crop size in original pixels
        left, top = (width - side) / 2, (height - side) / 2
        out = img.resize((self.crop, self.crop), Image.Resampling.BILINEAR,
                         box=(left, top, left + side, top + side))
        return pil_to_tensor(out)


def _is_image(entry: os.DirEntry[str]) -> bool:
    """An image file by its name; hidden files (``.DS_Store``, macOS's ``._*`` twins) are not."""
    return not entry.name.startswith(".") and entry.name.lower().endswith(IMAGE_EXTENSIONS) \
        and entry.is_file()


def find_classes(split_dir: str | os.PathLike[str]) -> list[str]:
    """Sorted names of the class folders in ``split_dir`` (hidden folders ignored).

    Raises:
        DataError: the folder is missing, holds no class folders, or holds images directly.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DataError(f"ImageNet folder {split_dir} does not exist: put the ILSVRC-2012 "
                        f"images there as one sub-folder per class ({split_dir.name}/<wnid>/"
                        "*.JPEG)")
    entries = list(os.scandir(split_dir))
    classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not classes:
        loose = any(_is_image(e) for e in entries)
        why = "holds its images directly" if loose else "holds no class folders"
        raise DataError(f"ImageNet folder {split_dir} {why}: sort the images into one "
                        "sub-folder per class (for val/, e.g. with the devkit's valprep.sh)")
    return classes


def scan_images(split_dir: str | os.PathLike[str],
                classes: list[str]) -> list[tuple[str, int]]:
    """``(path, label)`` of every image under ``split_dir/<class>/``, in class and name order
    (hidden files, whose names start with ``.``, are not images).

    Raises:
        DataError: a class folder that is not in ``classes`` or that holds no images.
    """
    split_dir = Path(split_dir)
    index = {c: i for i, c in enumerate(classes)}
    samples: list[tuple[str, int]] = []
    for cls in find_classes(split_dir):
        folder = split_dir / cls
        if cls not in index:
            raise DataError(f"class folder {folder} is not a class of the training set: remove "
                            "it or add it to train/ too")
        files = sorted(e.path for e in os.scandir(folder) if _is_image(e))
        if not files:
            raise DataError(f"class folder {folder} holds no images "
                            f"({'/'.join(IMAGE_EXTENSIONS)}): add its images or remove the "
                            "folder")
        samples.extend((f, index[cls]) for f in files)
    return samples


#: What Pillow raises for a file it cannot decode (a truncated or foreign file, a bomb).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class ImageFolder(Dataset):
    """Images in class folders, decoded with Pillow and passed through ``transform``.

    Hidden files and folders (names starting with ``.``, e.g. macOS's ``._*`` twins) are not
    listed. An image Pillow cannot decode raises a one-line :class:`DataError` naming it,
    unless ``skip_bad``: then it is replaced by the next decodable image in list order (the
    same class, unless it is the class's last), batches keep their size, one line on stderr
    names it the first time, and :attr:`skipped` / :meth:`skip_report` count such files,
    loader worker processes included.

    Args:
        split_dir: folder of class folders (e.g. ``imagenet/train``).
        transform: PIL image -> tensor (default :class:`ResizeCenterCrop`).
        classes: class names in label order (default: the sorted folder names).
        skip_bad: skip undecodable images instead of stopping.

    Example (a tiny stand-in: 3 classes, 2 validation JPEGs each):
        >>> import tempfile
        >>> from multispike.data.testing import write_imagenet
        >>> with tempfile.TemporaryDirectory() as root:
        ...     _ = write_imagenet(root)
        ...     ds = ImageFolder(f"{root}/val")
        ...     ds[0][0].shape, len(ds), ds.classes[0]
        (torch.Size([3, 224, 224]), 6, 'n01440764')
    """

    #: Suggested loader workers: JPEG decoding and cropping are the bottleneck, so use most
    #: CPU cores (one is left for the training process).
    loader_workers = max(1, min(16, (os.cpu_count() or 2) - 1))

    def __init__(self, split_dir: str | os.PathLike[str],
                 transform: Callable[[Image.Image], torch.Tensor] | None = None,
                 classes: list[str] | None = None, *, skip_bad: bool = False) -> None:
        self.root = Path(split_dir)
        self.skip_bad = boolean("skip_bad", skip_bad)
        self.classes = list(classes) if classes is not None else find_classes(self.root)
        self.samples = scan_images(self.root, self.classes)
        self.targets = [label for _, label in self.samples]
        self.transform = transform if transform is not None else ResizeCenterCrop()
        # which samples failed to decode, in shared memory: loader workers mark, all read
        self._bad = torch.zeros(len(self.samples) if self.skip_bad else 0, dtype=torch.bool)
        if self.skip_bad:
            self._bad.share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def skipped(self) -> list[str]:
        """The files skipped so far as undecodable (``skip_bad=True``), in list order."""
        return [self.samples[i][0] for i in self._bad.nonzero().flatten().tolist()]

    def skip_report(self) -> str:
        """One line counting the skipped files (``""`` when none), e.g. for the end of an
        epoch."""
        bad = self.skipped
        if not bad:
            return ""
        return (f"{self.root}: {len(bad)} undecodable image{'s' * (len(bad) > 1)} skipped "
                f"(skip_bad=True), first {bad[0]}: replace or delete them")

    def _decode(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        with Image.open(path) as img:
            img.load()
            return self.transform(img), label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not (self.skip_bad and self._bad[index]):  # a known bad file is not read again
            try:
                return self._decode(index)
            except DECODE_ERRORS as exc:
                if not self.skip_bad:
                    raise DataError(f"cannot decode image {self.samples[index][0]} "
                                    f"({type(exc).__name__}: {one_line(exc)}): replace or "
                                    "delete the file, or skip undecodable images with the "
                                    "dataset option skip_bad=True (--data-option "
                                    "skip_bad=true)") from None
                self._mark(index, exc)
        n = len(self.samples)
        for step in range(1, n):
            other = (index + step) % n
            if self._bad[other]:
                continue
            try:
                return self._decode(other)
            except DECODE_ERRORS as exc:
                self._mark(other, exc)
        raise DataError(f"no image in {self.root} can be decoded (skip_bad=True skipped "
                        f"{n}): check the folder, e.g. open a few of its files")

    def _mark(self, index: int, exc: BaseException) -> None:
        """Record a bad file and say so in one line, the first time."""
        if self._bad[index]:
            return
        self._bad[index] = True
        print(f"skipped undecodable image {self.samples[index][0]} ({type(exc).__name__}: "
              f"{one_line(exc)}); {int(self._bad.sum())} skipped so far", file=sys.stderr,
              flush=True)


def imagenet(data_dir: str | os.PathLike[str] | None = None, *, train: bool,
             augment: str = "rrcflip", crop: int = 224, resize: int = 256,
             skip_bad: bool = False) -> ImageFolder:
    """The ImageNet train or val split with its per-image transform.

    Args:
        data_dir: folder holding ``train/`` and ``val/`` (default ``<data root>/imagenet``).
        train: ``train/`` with ``augment``, else ``val/`` resized and centre-cropped.
        augment: ``"rrcflip"`` (random resized crop + flip) or ``"none"`` (evaluation
            transform also for training).
        crop: output side (224).
        resize: evaluation shorter side before the centre crop (256).
        skip_bad: replace undecodable images by the next one and count them (see
            :class:`ImageFolder`), instead of stopping with an error naming the file.

    Example (a tiny stand-in: 3 classes, 3 training JPEGs each):
        >>> import tempfile
        >>> from multispike.data.testing import write_imagenet
        >>> with tempfile.TemporaryDirectory() as root:
        ...     _ = write_imagenet(root)
        ...     ds = imagenet(root, train=True)
        ...     ds[0][0].shape, len(ds)
        (torch.Size([3, 224, 224]), 9)
    """
    root = Path(data_dir).expanduser() if data_dir is not None \
        else default_data_root() / "imagenet"
    if not root.is_dir():
        raise DataError(f"ImageNet folder {root} does not exist: put the ILSVRC-2012 train/ and "
                        "val/ class folders there (ImageNet cannot be downloaded automatically; "
                        "get it from https://image-net.org)")
    class_dir = root / "train" if (root / "train").is_dir() else root / "val"
    classes = find_classes(class_dir)
    if train and augment == "rrcflip":
        transform: Callable[[Image.Image], torch.Tensor] = RandomResizedCropFlip(crop)
    else:
        transform = ResizeCenterCrop(resize, crop)
    return ImageFolder(root / ("train" if train else "val"), transform, classes,
                       skip_bad=skip_bad)
