"""Datasets in their real formats, loaders, and batched on-device augmentation.

One module per dataset (:mod:`~multispike.data.digits`, :mod:`~multispike.data.cifar`,
:mod:`~multispike.data.dvs`, :mod:`~multispike.data.imagenet`), the batched augmentations in
:mod:`~multispike.data.transforms`, and the registry keyed by the command-line names
``digits``, ``cifar10``, ``cifar100``, ``cifar10-dvs`` and ``imagenet``
(:mod:`~multispike.data.registry`). See ``docs/data.md``.

Example:
    >>> import multispike.data as msd
    >>> train = msd.build("digits", train=True)
    >>> loader = msd.make_loader(train, 64, shuffle=True)
    >>> tf = msd.batch_transform("digits", train=True)
    >>> x, y = next(iter(loader)); tf(x).shape
    torch.Size([64, 1, 8, 8])
"""

from multispike.data.dvs import (
    EVENT_DTYPE,
    events_to_frames,
    read_aedat,
    write_aedat,
)
from multispike.data.registry import (
    DATASETS,
    DatasetSpec,
    Loader,
    batch_transform,
    build,
    build_loaders,
    get_spec,
    make_loader,
    names,
    parse_augment,
    with_progress,
)

__all__ = [
    "DATASETS",
    "EVENT_DTYPE",
    "DatasetSpec",
    "Loader",
    "batch_transform",
    "build",
    "build_loaders",
    "events_to_frames",
    "get_spec",
    "make_loader",
    "with_progress",
    "names",
    "parse_augment",
    "read_aedat",
    "write_aedat",
]
