"""The dataset registry: command-line keys -> specs, datasets, loaders and batch transforms.

Keys: ``digits``, ``cifar10``, ``cifar100``, ``cifar10-dvs``, ``imagenet``.

Contract shared by all datasets: ``build(...)`` returns a ``torch.utils.data.Dataset`` of
``(float tensor, int label)``, images ``[C, H, W]`` in [0, 1] (event datasets: count frames
``[T, 2, H, W]``), not normalised. ``batch_transform(...)`` returns the module the training
loop applies to each batch on its device: augmentation (training only) and normalisation::

    ds = build("cifar10", data_dir="data", train=True)
    loader = make_loader(ds, 128, shuffle=True)
    tf = batch_transform("cifar10", train=True)            # None when there is nothing to do
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        x = tf(x) if tf is not None else x
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from multispike.checks import positive_int
from multispike.data import cifar, digits, dvs, imagenet
from multispike.data._io import default_data_root, one_line
from multispike.data.transforms import (
    AutoAugment,
    CifarCropFlip,
    Cutout,
    DVSFlipRoll,
    MTSNNAugment,
    Normalize,
)
from multispike.errors import ConfigError, DataError, MultispikeError

Builder = Callable[..., Dataset]


@dataclass(frozen=True)
class DatasetSpec:
    """What the rest of multispike needs to know about one dataset key.

    Attributes:
        name: the command-line key.
        num_classes: number of labels.
        input_shape: (C, H, W) of one image or one event frame.
        is_event: items are ``[T, C, H, W]`` frame sequences (else single images ``[C, H, W]``).
        default_model: model name used when none is given.
        mean, std: per-channel normalisation (None: the data is not normalised).
        augments: accepted base augmentation names (``"none"`` disables augmentation).
        augment_extras: names that may be appended with ``+`` (e.g. ``"cropflip+cutout"``).
        default_augment: the augmentation used when ``augment`` is None.
        augment_on_device: augmentation runs batched on the training device
            (:func:`batch_transform`); False: per image in the loader workers (:func:`build`).
        options: extra keyword options :func:`build` accepts for this dataset.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    is_event: bool
    default_model: str
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    augments: tuple[str, ...]
    augment_extras: tuple[str, ...]
    default_augment: str
    augment_on_device: bool
    options: tuple[str, ...]
    builder: Builder = field(repr=False, compare=False)

    def build(self, **kwargs: Any) -> Dataset:
        """Shortcut for :func:`build` with this key."""
        return build(self.name, **kwargs)


def _opts(name: str, opts: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        known = ", ".join(allowed) if allowed else "none"
        raise ConfigError(f"option {unknown[0]!r} is not known for dataset {name!r} "
                          f"(known: {known}): drop it")


def _build_digits(data_dir: Any, train: bool, timesteps: Any, augment: str, download: bool,
                  opts: dict[str, Any]) -> Dataset:
    _opts("digits", opts, ())
    return digits.Digits(train=train)


def _cifar_builder(key: str) -> Builder:
    def _build(data_dir: Any, train: bool, timesteps: Any, augment: str, download: bool,
               opts: dict[str, Any]) -> Dataset:
        _opts(key, opts, DATASETS[key].options)
        return cifar.CIFAR(key, data_dir, train=train, download=download, **opts)

    return _build


def _build_dvs(data_dir: Any, train: bool, timesteps: Any, augment: str, download: bool,
               opts: dict[str, Any]) -> Dataset:
    _opts("cifar10-dvs", opts, DATASETS["cifar10-dvs"].options)
    if timesteps is None:
        raise ConfigError("dataset 'cifar10-dvs' needs timesteps (the number of event frames): "
                          "pass timesteps=T (--timesteps T)")
    root = Path(data_dir).expanduser() if data_dir is not None \
        else default_data_root() / "cifar10-dvs"
    if download and not root.is_dir():
        raise DataError(f"CIFAR10-DVS cannot be downloaded automatically (its archives have no "
                        f"published checksums): download them from {dvs.SOURCE_URL} and extract "
                        f"the 10 class folders into {root}")
    return dvs.CIFAR10DVS(root, train=train, timesteps=timesteps, **opts)


def _build_imagenet(data_dir: Any, train: bool, timesteps: Any, augment: str, download: bool,
                    opts: dict[str, Any]) -> Dataset:
    _opts("imagenet", opts, DATASETS["imagenet"].options)
    return imagenet.imagenet(data_dir, train=train, augment=augment, **opts)


_CIFAR_AUG = ("none", "mtsnn", "cropflip")
_CIFAR_EXTRAS = ("autoaugment", "cutout")

#: Every dataset key and its spec.
DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        name="digits", num_classes=10, input_shape=(1, 8, 8), is_event=False,
        default_model="digits_net", mean=digits.DIGITS_MEAN, std=digits.DIGITS_STD,
        augments=("none",), augment_extras=(), default_augment="none", augment_on_device=True,
        options=(), builder=_build_digits),
    "cifar10": DatasetSpec(
        name="cifar10", num_classes=10, input_shape=(3, 32, 32), is_event=False,
        default_model="vgg9", mean=cifar.CIFAR10_MEAN, std=cifar.CIFAR10_STD,
        augments=_CIFAR_AUG, augment_extras=_CIFAR_EXTRAS, default_augment="cropflip",
        augment_on_device=True, options=("progress",), builder=_cifar_builder("cifar10")),
    "cifar100": DatasetSpec(
        name="cifar100", num_classes=100, input_shape=(3, 32, 32), is_event=False,
        default_model="vgg9", mean=cifar.CIFAR100_MEAN, std=cifar.CIFAR100_STD,
        augments=_CIFAR_AUG, augment_extras=_CIFAR_EXTRAS, default_augment="cropflip",
        augment_on_device=True, options=("progress", "coarse"),
        builder=_cifar_builder("cifar100")),
    "cifar10-dvs": DatasetSpec(
        name="cifar10-dvs", num_classes=10, input_shape=(2, 128, 128), is_event=True,
        default_model="vgg12", mean=None, std=None, augments=("none", "fliproll"),
        augment_extras=(), default_augment="fliproll", augment_on_device=True,
        options=("resize", "resize_mode", "cache_dir", "convert_workers", "progress"),
        builder=_build_dvs),
    "imagenet": DatasetSpec(
        name="imagenet", num_classes=1000, input_shape=(3, 224, 224), is_event=False,
        default_model="resnet18", mean=imagenet.IMAGENET_MEAN, std=imagenet.IMAGENET_STD,
        augments=("none", "rrcflip"), augment_extras=(), default_augment="rrcflip",
        augment_on_device=False, options=("crop", "resize", "skip_bad"),
        builder=_build_imagenet),
}


def names() -> list[str]:
    """The dataset keys, e.g. for ``argparse`` choices."""
    return list(DATASETS)


def get_spec(name: str, **opts: Any) -> DatasetSpec:
    """The spec of a dataset key, with ``input_shape`` matching the build options given.

    Args:
        name: a key of :data:`DATASETS`.
        **opts: the same dataset options as for :func:`build`; the ones that change the input
            size (cifar10-dvs ``resize``, imagenet ``crop``) or the class count (cifar100
            ``coarse``) are applied, others are checked.

    Example:
        >>> get_spec("cifar10-dvs", resize=48).input_shape
        (2, 48, 48)
    """
    try:
        spec = DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}") from None
    _opts(name, opts, spec.options)
    size = opts.get("resize") if spec.is_event else opts.get("crop") if name == "imagenet" \
        else None
    if size is not None:
        if isinstance(size, int):
            size = (size, size)
        h, w = (int(s) for s in size)
        spec = dataclasses.replace(spec, input_shape=(spec.input_shape[0], h, w))
    if name == "cifar100" and opts.get("coarse"):
        spec = dataclasses.replace(spec, num_classes=20)  # the 20 superclasses
    return spec


def with_progress(name: str, opts: dict[str, Any], progress: bool) -> dict[str, Any]:
    """``opts`` with ``progress`` set for a dataset that takes it (its conversion or download
    bars), unless the options set it already: the command line's ``--no-progress`` reaches
    the dataset.

    >>> with_progress("cifar10-dvs", {"resize": 48}, False)
    {'resize': 48, 'progress': False}
    >>> with_progress("digits", {}, False)
    {}
    """
    spec = DATASETS.get(name)
    if spec is None or "progress" not in spec.options or "progress" in opts:
        return dict(opts)
    return {**opts, "progress": bool(progress)}


def parse_augment(name: str, augment: str | None) -> tuple[str, tuple[str, ...]]:
    """Check an augmentation name for a dataset: ``(base, extras)``.

    ``None`` means the dataset's default; names are ``base`` or ``base+extra+...``, e.g.
    ``"cropflip+autoaugment+cutout"`` for CIFAR.

    Example:
        >>> parse_augment("cifar10", "cropflip+cutout")
        ('cropflip', ('cutout',))
    """
    spec = get_spec(name)
    text = spec.default_augment if augment is None else str(augment).strip().lower()
    base, *extras = text.split("+") if text else [""]
    options = ", ".join(spec.augments) + (
        f" (optionally +{', +'.join(spec.augment_extras)})" if spec.augment_extras else "")
    if base not in spec.augments or any(e not in spec.augment_extras for e in extras) \
            or len(set(extras)) != len(extras):
        raise ConfigError(f"augmentation {augment!r} is not known for dataset {name!r}: use "
                          f"{options}")
    return base, tuple(extras)


def build(name: str, *, data_dir: str | os.PathLike[str] | None = None, train: bool,
          timesteps: int | None = None, augment: str | None = None, download: bool = False,
          **opts: Any) -> Dataset:
    """The train or test split of a dataset.

    Args:
        name: dataset key (``digits``, ``cifar10``, ``cifar100``, ``cifar10-dvs``, ``imagenet``).
        data_dir: its folder (see ``docs/data.md``); None: ``$MULTISPIKE_DATA`` or
            ``~/.cache/multispike/data`` (plus ``cifar10-dvs/`` or ``imagenet/``).
        train: training split, else test (ImageNet: val).
        timesteps: number of event frames T; required for event datasets, ignored by static
            ones (the model repeats a static image over its time steps).
        augment: augmentation name (see :func:`parse_augment`); only datasets whose
            augmentation runs per image in loader workers (ImageNet) use it here, the others
            just check it and get theirs from :func:`batch_transform`.
        download: fetch the data (with checksum) when absent, where an official download
            exists (CIFAR).
        **opts: dataset options, see ``DatasetSpec.options`` (e.g. ``resize=48`` for
            cifar10-dvs, ``coarse=True`` for cifar100).

    Returns:
        A Dataset of ``(float tensor, int label)``.

    Example:
        >>> ds = build("digits", train=True); len(ds), ds[0][0].shape
        (1437, torch.Size([1, 8, 8]))
    """
    spec = get_spec(name)
    base, _ = parse_augment(name, augment)
    return spec.builder(data_dir, bool(train), timesteps, base, bool(download), dict(opts))


def batch_transform(name: str, *, train: bool, augment: str | None = None,
                    cutout_size: int | None = None, max_shift: int = 5) -> nn.Module | None:
    """The module to apply to each batch on the training device, or None if there is none.

    Training: the dataset's on-device augmentation (if any), then normalisation, then Cutout
    (if asked). Evaluation: normalisation only. Works on ``[B, C, H, W]`` image batches and
    ``[B, T, C, H, W]`` event batches; its random numbers come from torch's global generator.

    Args:
        name: dataset key.
        train: include the augmentation.
        augment: augmentation name (None: the dataset's default), see :func:`parse_augment`.
        cutout_size: Cutout square side (default 16 for cifar10, 8 for cifar100).
        max_shift: DVS roll range in pixels.

    Example:
        >>> tf = batch_transform("cifar10", train=True, augment="mtsnn")
        >>> tf(torch.rand(8, 3, 32, 32)).shape
        torch.Size([8, 3, 32, 32])
    """
    spec = get_spec(name)
    base, extras = parse_augment(name, augment)
    steps: list[nn.Module] = []
    if train and spec.augment_on_device:
        if base == "mtsnn":
            steps.append(MTSNNAugment())
        elif base == "cropflip":
            steps.append(CifarCropFlip(size=spec.input_shape[1:], padding=4))
        elif base == "fliproll":
            steps.append(DVSFlipRoll(max_shift=max_shift))
        if "autoaugment" in extras:
            steps.append(AutoAugment("cifar10"))
    if spec.mean is not None and spec.std is not None:
        steps.append(Normalize(spec.mean, spec.std))
    if train and "cutout" in extras:
        steps.append(Cutout(cutout_size or (8 if name == "cifar100" else 16)))
    return nn.Sequential(*steps) if steps else None


def _worker_message(exc: BaseException) -> str:
    """The original one-line message of an error re-raised from a loader worker."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return one_line(str(exc))
    last = lines[-1].strip()
    prefix = f"{type(exc).__name__}: "
    if prefix in last:
        last = last.split(prefix, 1)[1]
    return one_line(last)


class Loader(DataLoader):
    """A DataLoader whose multispike errors from worker processes arrive as one line.

    PyTorch re-raises a worker's exception with the worker's traceback in its message; this
    loader strips that back to the original one-line message.
    """

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        it = super().__iter__()
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except MultispikeError as exc:
                self._discard(it)
                raise type(exc)(_worker_message(exc)) from None
            except BaseException:
                self._discard(it)
                raise
            yield batch

    def _discard(self, it: Any) -> None:
        """Stop the workers of a failed iterator now (left to the garbage collector, their
        shutdown waits out a 5 s timeout) and do not reuse it as a persistent iterator."""
        shutdown = getattr(it, "_shutdown_workers", None)
        if callable(shutdown):
            shutdown()
        if getattr(self, "_iterator", None) is it:
            self._iterator = None


def _loader_workers(dataset: Dataset) -> int:
    inner = dataset
    while not hasattr(inner, "loader_workers") and hasattr(inner, "dataset"):
        inner = inner.dataset  # e.g. torch.utils.data.Subset
    return int(getattr(inner, "loader_workers", 0))


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool,
                num_workers: int | None = None, pin_memory: bool | None = None,
                sampler: Sampler | None = None, drop_last: bool = False) -> Loader:
    """A DataLoader with sensible defaults for the dataset and the machine.

    Args:
        dataset: from :func:`build` (or any map-style dataset).
        batch_size: samples per batch.
        shuffle: reshuffle every epoch (must be False when a sampler is given).
        num_workers: loader processes; None: the dataset's ``loader_workers`` hint (ImageNet:
            most CPU cores, in-memory datasets: 0-2), capped at the CPU count.
        pin_memory: page-locked batches for fast, asynchronous copies to the GPU; None: on
            when CUDA is available.
        sampler: e.g. a ``DistributedSampler``.
        drop_last: drop the last incomplete batch.

    Example:
        >>> loader = make_loader(build("digits", train=False), 64, shuffle=False)
        >>> next(iter(loader))[0].shape
        torch.Size([64, 1, 8, 8])
    """
    if sampler is not None and shuffle:
        raise ConfigError("shuffle=True cannot be combined with a sampler: shuffle through the "
                          "sampler (e.g. DistributedSampler(shuffle=True)) and pass shuffle=False")
    batch_size = positive_int("batch_size", batch_size)
    if num_workers is None:
        num_workers = min(_loader_workers(dataset), os.cpu_count() or 1)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return Loader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                  num_workers=num_workers, pin_memory=pin_memory, drop_last=drop_last,
                  persistent_workers=num_workers > 0)


def build_loaders(name: str, *, batch_size: int, data_dir: str | os.PathLike[str] | None = None,
                  timesteps: int | None = None, augment: str | None = None,
                  download: bool = False, num_workers: int | None = None,
                  pin_memory: bool | None = None, test_batch_size: int | None = None,
                  **opts: Any) -> tuple[Loader, Loader]:
    """Training (shuffled) and test loaders of a dataset in one call.

    Example:
        >>> train, test = build_loaders("digits", batch_size=32)
        >>> len(train.dataset), len(test.dataset)
        (1437, 360)
    """
    common = dict(data_dir=data_dir, timesteps=timesteps, augment=augment, download=download,
                  **opts)
    train_set = build(name, train=True, **common)
    test_set = build(name, train=False, **common)
    return (make_loader(train_set, batch_size, shuffle=True, num_workers=num_workers,
                        pin_memory=pin_memory),
            make_loader(test_set, test_batch_size or batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=pin_memory))
