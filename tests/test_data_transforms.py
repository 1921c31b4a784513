"""Batched on-device transforms and the registry that picks them."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import multispike.data as msd
from multispike.data import transforms as T
from multispike.errors import ConfigError


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "\r" not in msg, msg
    return msg


def seeded(module: nn.Module, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return module(x)


IMAGE_TRANSFORMS = [T.MTSNNAugment(), T.CifarCropFlip(), T.AutoAugment(), T.Cutout(8),
                    T.Normalize((0.5, 0.4, 0.3), (0.2, 0.2, 0.2))]


@pytest.mark.parametrize("module", IMAGE_TRANSFORMS, ids=lambda m: type(m).__name__)
def test_image_transforms_keep_shape_and_are_seeded(module) -> None:
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    a, b = seeded(module, x), seeded(module, x)
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b)
    if not isinstance(module, T.Normalize):
        assert not torch.equal(seeded(module, x, 1), seeded(module, x, 2))


def test_crop_flip_is_a_padded_shift_or_its_mirror() -> None:
    x = torch.rand(8, 3, 32, 32)
    y = seeded(T.CifarCropFlip(), x)
    padded = F.pad(x, (4, 4, 4, 4))
    for b in range(8):
        candidates = [padded[b, :, i:i + 32, j:j + 32] for i in range(9) for j in range(9)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(y[b], c) for c in candidates)


def test_mtsnn_augment_moves_content_but_keeps_range() -> None:
    x = torch.rand(16, 3, 32, 32)
    y = seeded(T.MTSNNAugment(), x)
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    assert not torch.allclose(y, x)


def test_cutout_zeroes_one_clipped_square() -> None:
    x = torch.ones(32, 3, 20, 20)
    y = seeded(T.Cutout(8), x)
    holes = (y == 0).all(dim=1)  # same hole in every channel
    assert torch.equal((y == 0).any(dim=1), holes)
    area = holes.sum(dim=(1, 2))
    assert area.min() >= 16 and area.max() <= 64  # clipped at worst to a 4 x 4 corner
    rows, cols = holes.any(dim=2), holes.any(dim=1)
    assert torch.equal(rows.sum(1) * cols.sum(1), area)  # a rectangle
    assert torch.equal(T.Cutout(8, p=0.0)(x), x)


def test_normalize_values_and_event_shapes() -> None:
    norm = T.Normalize((0.5, 0.25), (0.5, 0.25))
    x = torch.ones(2, 4, 2, 3, 3)  # also [B, T, C, H, W]
    y = norm(x)
    assert torch.allclose(y[:, :, 0], torch.ones(2, 4, 3, 3))
    assert torch.allclose(y[:, :, 1], torch.full((2, 4, 3, 3), 3.0))
    with pytest.raises(ConfigError):
        T.Normalize((0.5,), (0.0,))


def test_dvs_flip_roll_is_the_same_for_all_frames() -> None:
    x = torch.rand(6, 5, 2, 16, 16)
    aug = T.DVSFlipRoll(max_shift=3)
    y = seeded(aug, x, 4)
    assert y.shape == x.shape and torch.equal(y, seeded(aug, x, 4))
    used = set()
    for b in range(6):
        found = [(flip, dy, dx) for flip in (False, True) for dy in range(-3, 4)
                 for dx in range(-3, 4)
                 if torch.equal(y[b, 0], _flip_roll(x[b, 0], flip, dy, dx))]
        assert len(found) == 1
        flip, dy, dx = found[0]
        used.add(found[0])
        for t in range(5):  # every frame (and both polarities) moved the same way
            assert torch.equal(y[b, t], _flip_roll(x[b, t], flip, dy, dx))
    assert len(used) > 1  # samples of a batch draw their own flip/shift
    assert torch.equal(T.DVSFlipRoll(max_shift=0, p_flip=0.0)(x), x)


def _flip_roll(frame: torch.Tensor, flip: bool, dy: int, dx: int) -> torch.Tensor:
    out = torch.roll(frame, shifts=(dy, dx), dims=(-2, -1))
    return out.flip(-1) if flip else out


def test_transforms_reject_wrong_ranks() -> None:
    with pytest.raises(ConfigError) as exc:
        T.DVSFlipRoll()(torch.rand(2, 2, 8, 8))
    one_line(exc)
    with pytest.raises(ConfigError) as exc:
        T.CifarCropFlip()(torch.rand(2, 5, 3, 32, 32))
    one_line(exc)


# ------------------------------------------------------------------------------------------
# registry


def test_registry_keys_and_specs() -> None:
    assert msd.names() == ["digits", "cifar10", "cifar100", "cifar10-dvs", "imagenet"]
    models = {k: msd.get_spec(k).default_model for k in msd.names()}
    assert models == {"digits": "digits_net", "cifar10": "vgg9", "cifar100": "vgg9",
                      "cifar10-dvs": "vgg12", "imagenet": "resnet18"}
    dvs = msd.get_spec("cifar10-dvs")
    assert dvs.is_event and dvs.input_shape == (2, 128, 128) and dvs.mean is None
    assert msd.get_spec("cifar100").num_classes == 100
    assert msd.get_spec("imagenet").input_shape == (3, 224, 224)
    assert not msd.get_spec("imagenet").augment_on_device
    with pytest.raises(ConfigError) as exc:
        msd.get_spec("mnist")
    assert "cifar10-dvs" in one_line(exc)


def test_batch_transform_per_dataset() -> None:
    x = torch.rand(4, 3, 32, 32)
    ev = torch.rand(4, 3, 2, 48, 48)
    assert msd.batch_transform("cifar10-dvs", train=False) is None
    assert msd.batch_transform("cifar10-dvs", train=True, augment="none") is None
    tf = msd.batch_transform("cifar10-dvs", train=True)
    assert isinstance(tf[0], T.DVSFlipRoll) and seeded(tf, ev).shape == ev.shape
    ev_tf = msd.batch_transform("cifar10", train=False)
    assert [type(m) for m in ev_tf] == [T.Normalize]
    full = msd.batch_transform("cifar100", train=True, augment="cropflip+autoaugment+cutout")
    assert [type(m) for m in full] == [T.CifarCropFlip, T.AutoAugment, T.Normalize, T.Cutout]
    assert full[-1].size == 8
    assert seeded(full, x).shape == x.shape
    default = msd.batch_transform("cifar10", train=True)
    assert [type(m) for m in default] == [T.CifarCropFlip, T.Normalize]
    mt = msd.batch_transform("cifar10", train=True, augment="MTSNN")
    assert [type(m) for m in mt] == [T.MTSNNAugment, T.Normalize]
    assert [type(m) for m in msd.batch_transform("imagenet", train=True)] == [T.Normalize]
    for bad in ("flip", "cutout", "cropflip+cutout+cutout", "mtsnn+rotate", ""):
        with pytest.raises(ConfigError) as exc:
            msd.batch_transform("cifar10", train=True, augment=bad)
        one_line(exc)


def test_make_loader_checks() -> None:
    ds = msd.build("digits", train=False)
    sampler = torch.utils.data.SequentialSampler(ds)
    with pytest.raises(ConfigError) as exc:
        msd.make_loader(ds, 8, shuffle=True, sampler=sampler)
    one_line(exc)
    loader = msd.make_loader(ds, 8, shuffle=False, sampler=sampler, drop_last=True)
    assert len(loader) == 360 // 8 and loader.num_workers == 0


def test_core_does_not_import_torchvision() -> None:
    code = ("import sys, multispike.data, multispike.data.testing; "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
