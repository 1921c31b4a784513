"""ImageNet: class folders of small JPEGs written with Pillow, read through the real code."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import multispike.data as msd
from multispike.data import imagenet
from multispike.data.testing import add_macos_litter, damage_image, write_imagenet
from multispike.errors import ConfigError, DataError

CLASSES = ("n01440764", "n01443537", "n01484850")


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "\r" not in msg, msg
    return msg


@pytest.fixture
def root(tmp_path):
    return write_imagenet(tmp_path / "imagenet", classes=CLASSES, train_per_class=3,
                          val_per_class=2)


def test_train_and_val_layout(root) -> None:
    train = msd.build("imagenet", data_dir=root, train=True)
    val = msd.build("imagenet", data_dir=root, train=False)
    assert len(train) == 9 and len(val) == 6
    assert train.classes == val.classes == list(CLASSES)
    assert sorted(set(val.targets)) == [0, 1, 2]
    for ds in (train, val):
        x, y = ds[4]
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert y == ds.targets[4]
    for path, label in val.samples:
        assert path.split("/")[-2] == CLASSES[label]
    assert isinstance(train.transform, imagenet.RandomResizedCropFlip)
    assert isinstance(val.transform, imagenet.ResizeCenterCrop)
    plain = msd.build("imagenet", data_dir=root, train=True, augment="none")
    assert isinstance(plain.transform, imagenet.ResizeCenterCrop)


def test_loader_batches_and_normalisation(root) -> None:
    ds = msd.build("imagenet", data_dir=root, train=True)
    loader = msd.make_loader(ds, 4, shuffle=True, num_workers=0)
    assert loader.pin_memory == torch.cuda.is_available()
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 224, 224) and y.shape == (4,)
    tf = msd.batch_transform("imagenet", train=True)
    z = tf(x)
    mean = torch.tensor(imagenet.IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(imagenet.IMAGENET_STD)[:, None, None]
    assert torch.allclose(z, (x - mean) / std)
    assert imagenet.ImageFolder.loader_workers >= 1


def test_random_resized_crop_is_valid_and_seeded() -> None:
    rrc = imagenet.RandomResizedCropFlip(224)
    for size in ((500, 375), (60, 300), (1000, 50), (224, 224)):
        for _ in range(50):
            left, top, right, bottom = rrc.box(*size)
            assert 0 <= left < right <= size[0] and 0 <= top < bottom <= size[1]
            w, h = right - left, bottom - top  # aspect within [3/4, 4/3] up to rounding
            assert 3 / 4 * (h - 1) - 1 <= w <= 4 / 3 * (h + 1) + 1
    img = Image.effect_noise((320, 240), 60).convert("RGB")
    torch.manual_seed(3)
    a = rrc(img)
    torch.manual_seed(3)
    b = rrc(img)
    assert a.shape == (3, 224, 224) and torch.equal(a, b)


def test_resize_center_crop_takes_the_centre() -> None:
    img = Image.new("RGB", (512, 256), (255, 0, 0))
    img.paste((0, 0, 255), (128, 0, 384, 256))  # a blue centre square of the shorter side
    out = imagenet.ResizeCenterCrop(256, 224)(img)
    assert out.shape == (3, 224, 224)
    assert torch.allclose(out[2], torch.ones(224, 224)) and float(out[0].max()) == 0.0
    grey = imagenet.ResizeCenterCrop(256, 224)(Image.new("L", (300, 400), 128))
    assert grey.shape == (3, 224, 224)


def test_empty_class_folder(root) -> None:
    empty = root / "train" / "n09999999"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DataError) as exc:
        msd.build("imagenet", data_dir=root, train=True)
    msg = one_line(exc)
    assert str(empty) in msg and "no images" in msg


def test_layout_errors(root, tmp_path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as exc:
        msd.build("imagenet", data_dir=missing, train=True)
    assert str(missing) in one_line(exc)
    extra = root / "val" / "n00000001"
    extra.mkdir()
    Image.new("RGB", (32, 32)).save(extra / "a.JPEG")
    with pytest.raises(DataError) as exc:
        msd.build("imagenet", data_dir=root, train=False)
    assert str(extra) in one_line(exc)
    flat = tmp_path / "flat"
    (flat / "train" / "n01").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(flat / "train" / "n01" / "a.JPEG")
    (flat / "val").mkdir()
    Image.new("RGB", (32, 32)).save(flat / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DataError) as exc:
        msd.build("imagenet", data_dir=flat, train=False)
    assert str(flat / "val") in one_line(exc) and "class" in one_line(exc)


def test_undecodable_image_in_a_worker_is_one_line(root) -> None:
    ds = msd.build("imagenet", data_dir=root, train=False)
    bad = ds.samples[2][0]
    with open(bad, "wb") as fh:
        fh.write(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(DataError) as exc:
        ds[2]
    assert bad in one_line(exc)
    with pytest.raises(DataError) as exc:
        for _ in msd.make_loader(ds, 3, shuffle=False, num_workers=1):
            pass
    msg = one_line(exc)
    assert bad in msg and "replace or delete" in msg


# -- hidden files and undecodable images ------------------------------------------------------


def test_hidden_files_and_folders_are_not_listed(root) -> None:
    """macOS's ``._*`` twins (undecodable, with an image ending), ``.DS_Store`` and hidden
    folders are skipped when listing, so a whole epoch runs."""
    litter = add_macos_litter(root)
    assert any(p.name.startswith("._") and p.suffix == ".JPEG" for p in litter)
    for train in (True, False):
        ds = msd.build("imagenet", data_dir=root, train=train)
        assert len(ds) == (9 if train else 6) and ds.classes == list(CLASSES)
        assert not any("/." in path for path, _ in ds.samples)
        for x, _ in msd.make_loader(ds, 4, shuffle=False, num_workers=0):
            assert x.shape[1:] == (3, 224, 224)


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty"])
def test_bad_image_by_default_names_the_file_and_the_flag(root, how) -> None:
    ds = msd.build("imagenet", data_dir=root, train=True)
    bad = damage_image(ds.samples[4][0], how)
    with pytest.raises(DataError) as exc:
        ds[4]
    msg = one_line(exc)
    assert str(bad) in msg and "skip_bad=True" in msg


def test_skip_bad_replaces_and_counts_across_workers(root, capfd) -> None:
    """With skip_bad=True a bad image gives the next image in its place (batches keep their
    size), one stderr line names it, and the count is read in the main process although a
    loader worker found it."""
    ds = msd.build("imagenet", data_dir=root, train=False, skip_bad=True)
    assert ds.skipped == [] and ds.skip_report() == ""
    first, second = damage_image(ds.samples[1][0]), damage_image(ds.samples[2][0], "truncated")
    batches = list(msd.make_loader(ds, 3, shuffle=False, num_workers=1))
    assert [len(y) for _, y in batches] == [3, 3]
    assert ds.skipped == [str(first), str(second)]
    report = ds.skip_report()
    assert "\n" not in report and "2 undecodable images skipped" in report
    assert str(first) in report
    err = capfd.readouterr().err
    assert err.count("skipped undecodable image") == 2 and str(second) in err
    x, y = batches[0]
    want, label = ds[3]  # items 1 and 2 were both replaced by item 3, with its label
    assert torch.equal(x[1], want) and torch.equal(x[2], want) and y.tolist()[1:] == [label] * 2
    ds[1]  # known bad files are not reported twice
    assert capfd.readouterr().err == ""


def test_skip_bad_with_nothing_decodable_and_a_bad_flag(root) -> None:
    ds = msd.build("imagenet", data_dir=root, train=False, skip_bad=True)
    for path, _ in ds.samples:
        damage_image(path)
    with pytest.raises(DataError) as exc:
        ds[0]
    assert str(root / "val") in one_line(exc)
    with pytest.raises(ConfigError) as exc:
        msd.build("imagenet", data_dir=root, train=False, skip_bad="yes")
    assert "skip_bad" in one_line(exc)
