"""The bundled scikit-learn digits: shapes, fixed split, value range, registry entry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import multispike.data as msd
from multispike.data import digits
from multispike.errors import ConfigError


def test_shapes_sizes_and_range() -> None:
    train = msd.build("digits", train=True)
    test = msd.build("digits", train=False)
    assert len(train) == 1437 and len(test) == 360
    x, y = train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and isinstance(y, int)
    for ds in (train, test):
        assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
        assert sorted(set(ds.targets)) == list(range(10))


def test_split_is_fixed_stratified_and_complete() -> None:
    from sklearn.datasets import load_digits

    xa, ya = digits.load_digits_split(train=False)
    xb, yb = digits.load_digits_split(train=False)
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    counts = np.bincount(ya, minlength=10)
    assert counts.sum() == 360 and counts.min() >= 35 and counts.max() <= 37
    xt, yt = digits.load_digits_split(train=True)
    everything = np.concatenate([xt, xa]).reshape(-1, 64) * 16
    ref = load_digits().data
    # together the two splits are exactly the 1,797 images (as a multiset of rows)
    assert sorted(map(bytes, everything.astype(np.uint8))) == \
        sorted(map(bytes, ref.astype(np.uint8)))


def test_spec_and_normalisation() -> None:
    spec = msd.get_spec("digits")
    assert (spec.num_classes, spec.input_shape, spec.is_event, spec.default_model) == \
        (10, (1, 8, 8), False, "digits_net")
    x = msd.build("digits", train=True).images
    z = msd.batch_transform("digits", train=True)(x)
    assert abs(float(z.mean())) < 1e-3 and abs(float(z.std()) - 1) < 1e-3
    with pytest.raises(ConfigError) as exc:
        msd.build("digits", train=True, augment="mtsnn")
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        msd.build("digits", train=True, colour=True)
    assert "\n" not in str(exc.value) and "colour" in str(exc.value)


def test_loaders() -> None:
    train, test = msd.build_loaders("digits", batch_size=100, num_workers=0)
    x, y = next(iter(train))
    assert x.shape == (100, 1, 8, 8) and y.dtype == torch.int64
    assert sum(len(b[1]) for b in test) == 360


def test_counts_are_checked_by_name() -> None:
    """``batch_size`` and the frame count go through :func:`multispike.checks.positive_int`:
    one line naming the option; NumPy integers count as whole numbers."""
    ds = msd.build("digits", train=False)
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ConfigError, match=r"^batch_size must be an integer >= 1, got "):
            msd.make_loader(ds, bad, shuffle=False)
    assert len(next(iter(msd.make_loader(ds, np.int64(7), shuffle=False)))[1]) == 7
    ev = np.zeros(3, dtype=msd.EVENT_DTYPE)
    assert msd.events_to_frames(ev, np.int64(2), size=(2, 2)).shape == (2, 2, 2, 2)
    with pytest.raises(ConfigError, match=r"^timesteps must be an integer >= 1, got 0$"):
        msd.events_to_frames(ev, 0, size=(2, 2))
