"""scikit-learn's bundled digits: 1,797 greyscale 8 x 8 images of 0-9, no download needed.

The embedded default dataset (demos, tests, quick checks). Pixel values 0..16 are scaled to
[0, 1] and shaped ``[N, 1, 8, 8]``. The split is fixed: ``sklearn.model_selection.
train_test_split`` with ``test_size=360``, stratified by label, ``random_state=0`` gives 1,437
training and 360 test images, the same on every machine.

Transforms: none by default (flips and large shifts would change a digit's meaning); the
normalisation with the training split's mean/std runs batched on the device
(:func:`multispike.data.batch_transform`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

#: Mean and std of the training split's pixels after scaling to [0, 1].
DIGITS_MEAN = (0.3054,)
DIGITS_STD = (0.3761,)
#: Size of the fixed test split.
TEST_SIZE = 360
SPLIT_SEED = 0


def load_digits_split(*, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """The fixed digits split as arrays.

    Returns:
        ``(images, labels)``: float32 [N, 1, 8, 8] in [0, 1] and int64 [N]; N is 1,437 for
        training and 360 for test.

    Example:
        >>> x, y = load_digits_split(train=False); x.shape, int(y.max())
        ((360, 1, 8, 8), 9)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=TEST_SIZE,
                                           stratify=labels, random_state=SPLIT_SEED)
    idx = np.sort(train_idx if train else test_idx)
    return images[idx], labels[idx]


class Digits(Dataset):
    """The digits split in memory, items ``(float [1, 8, 8] in [0, 1], label)``.

    Example:
        >>> ds = Digits(train=True); len(ds), ds[0][0].shape
        (1437, torch.Size([1, 8, 8]))
    """

    #: Suggested loader workers: everything is in memory already.
    loader_workers = 0

    def __init__(self, *, train: bool) -> None:
        images, labels = load_digits_split(train=train)
        self.train = train
        self.images = torch.from_numpy(images)
        self.targets = labels.tolist()
        self.classes = [str(d) for d in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.targets[index]
