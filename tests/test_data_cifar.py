"""CIFAR-10/100: tiny tarballs and folders in the official layout, read through the real code."""

from __future__ import annotations

import pickle
import urllib.error

import numpy as np
import pytest
import torch

import multispike.data as msd
from multispike.data import _io, cifar
from multispike.data.testing import write_cifar
from multispike.errors import DataError


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "\r" not in msg, msg
    return msg


@pytest.fixture(autouse=True)
def _fresh_checksum_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar, "_VERIFIED", set())


def trust(monkeypatch: pytest.MonkeyPatch, key: str, tarball) -> None:
    """Make the tiny tarball's checksum the expected one."""
    monkeypatch.setitem(cifar.MD5, key, _io.md5sum(tarball))


@pytest.mark.parametrize("key, n_train", [("cifar10", 5 * 4), ("cifar100", 4)])
def test_tarball_read_through_real_code(tmp_path, monkeypatch, key, n_train) -> None:
    tarball, arrays = write_cifar(tmp_path, key, per_batch=4, seed=1)
    trust(monkeypatch, key, tarball)
    for train, split in ((True, "train"), (False, "test")):
        ds = cifar.CIFAR(key, tmp_path, train=train)
        images, labels = arrays[split]
        assert len(ds) == (n_train if train else 4)
        assert torch.equal(ds.images, torch.from_numpy(images))
        assert ds.targets == labels.tolist()
        x, y = ds[1]
        assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
        assert torch.allclose(x, torch.from_numpy(images[1]).float() / 255)
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert y == int(labels[1])
    assert len(ds.classes) == (10 if key == "cifar10" else 100)


def test_cifar10_pixel_layout_is_rgb_planes(tmp_path) -> None:
    # data row = 1024 red, then 1024 green, then 1024 blue values, each plane row by row
    folder, _ = write_cifar(tmp_path, "cifar10", per_batch=1, tarball=False)
    path = folder / "test_batch"
    batch = pickle.loads(path.read_bytes(), encoding="bytes")
    row = np.zeros(3072, dtype=np.uint8)
    row[0] = 10          # red (0, 0)
    row[1024 + 33] = 20  # green (1, 1)
    row[2048 + 1023] = 30  # blue (31, 31)
    batch[b"data"] = row[None]
    path.write_bytes(pickle.dumps(batch, protocol=2))
    img = cifar.CIFAR("cifar10", folder.parent, train=False).images[0]
    assert img[0, 0, 0] == 10 and img[1, 1, 1] == 20 and img[2, 31, 31] == 30
    assert int(img.sum()) == 60


@pytest.mark.parametrize("key", ["cifar10", "cifar100"])
def test_extracted_folder_and_direct_paths(tmp_path, monkeypatch, key) -> None:
    folder, arrays = write_cifar(tmp_path, key, per_batch=3, tarball=False)
    for data_dir in (tmp_path, folder):  # the data folder or the extracted folder itself
        x, y, names = cifar.load_arrays(key, data_dir, train=False)
        assert np.array_equal(x, arrays["test"][0]) and np.array_equal(y, arrays["test"][1])
    tar_dir = tmp_path / "tar"
    tarball, _ = write_cifar(tar_dir, key, per_batch=3)
    trust(monkeypatch, key, tarball)
    x, _, _ = cifar.load_arrays(key, tarball, train=False)  # the tarball path itself
    assert x.shape == (3, 3, 32, 32)


def test_cifar100_coarse_labels(tmp_path) -> None:
    write_cifar(tmp_path, "cifar100", per_batch=6, tarball=False)
    fine = cifar.CIFAR("cifar100", tmp_path, train=True)
    coarse = cifar.CIFAR("cifar100", tmp_path, train=True, coarse=True)
    assert coarse.targets == [f // 5 for f in fine.targets]
    assert len(coarse.classes) == 20


def test_build_through_registry(tmp_path, monkeypatch) -> None:
    tarball, arrays = write_cifar(tmp_path, "cifar10", per_batch=2)
    trust(monkeypatch, "cifar10", tarball)
    ds = msd.build("cifar10", data_dir=tmp_path, train=False, timesteps=4, augment="mtsnn")
    loader = msd.make_loader(ds, 2, shuffle=False, num_workers=0)
    x, y = next(iter(loader))
    assert x.shape == (2, 3, 32, 32) and y.tolist() == arrays["test"][1].tolist()


def test_checksum_mismatch_is_reported(tmp_path) -> None:
    tarball, _ = write_cifar(tmp_path, "cifar10", per_batch=2)  # real md5 kept: cannot match
    with pytest.raises(DataError) as exc:
        cifar.CIFAR("cifar10", tmp_path, train=True)
    msg = one_line(exc)
    assert str(tarball) in msg and "md5" in msg and cifar.MD5["cifar10"] in msg


def test_truncated_tarball(tmp_path, monkeypatch) -> None:
    tarball, _ = write_cifar(tmp_path, "cifar100", per_batch=50)
    blob = tarball.read_bytes()
    tarball.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError) as exc:  # official checksum: caught as a mismatch
        cifar.CIFAR("cifar100", tmp_path, train=True)
    assert str(tarball) in one_line(exc) and "truncated" in one_line(exc)
    trust(monkeypatch, "cifar100", tarball)  # even with a matching checksum: caught reading
    with pytest.raises(DataError) as exc:
        cifar.CIFAR("cifar100", tmp_path, train=True)
    msg = one_line(exc)
    assert str(tarball) in msg and "truncated or damaged" in msg


def test_tarball_missing_a_member(tmp_path, monkeypatch) -> None:
    import tarfile

    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    trust(monkeypatch, "cifar10", path)
    with pytest.raises(DataError) as exc:
        cifar.CIFAR("cifar10", tmp_path, train=False)
    assert "test_batch" in one_line(exc) and str(path) in one_line(exc)


def test_missing_folder_without_download(tmp_path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as exc:
        msd.build("cifar10", data_dir=missing, train=True)
    msg = one_line(exc)
    assert str(missing) in msg and "cifar-10-python.tar.gz" in msg and "download" in msg


def test_download_offline_says_where_to_put_the_tarball(tmp_path, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(_io.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as exc:
        msd.build("cifar100", data_dir=tmp_path / "d", train=True, download=True)
    msg = one_line(exc)
    assert cifar.URLS["cifar100"] in msg and str(tmp_path / "d") in msg
    assert "cifar-100-python.tar.gz" in msg
    assert not list((tmp_path / "d").glob("*"))  # no partial file left behind


def test_download_with_checksum(tmp_path, monkeypatch) -> None:
    server = tmp_path / "server"
    tarball, arrays = write_cifar(server, "cifar10", per_batch=2, seed=3)
    monkeypatch.setitem(cifar.URLS, "cifar10", tarball.as_uri())
    data = tmp_path / "data"
    with pytest.raises(DataError) as exc:  # official md5 cannot match the tiny file
        cifar.CIFAR("cifar10", data, train=False, download=True, progress=False)
    assert "md5" in one_line(exc)
    assert not list(data.glob("*"))
    trust(monkeypatch, "cifar10", tarball)
    ds = cifar.CIFAR("cifar10", data, train=False, download=True, progress=False)
    assert (data / "cifar-10-python.tar.gz").is_file() and not list(data.glob("*.part"))
    assert torch.equal(ds.images, torch.from_numpy(arrays["test"][0]))


def test_damaged_files_in_extracted_folder(tmp_path) -> None:
    folder, _ = write_cifar(tmp_path, "cifar10", per_batch=2, tarball=False)
    (folder / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError) as exc:
        cifar.CIFAR("cifar10", tmp_path, train=False)
    assert str(folder / "test_batch") in one_line(exc)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError) as exc:
        cifar.CIFAR("cifar10", tmp_path, train=True)
    assert str(folder / "data_batch_3") in one_line(exc)
    batch = {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError) as exc:
        cifar.CIFAR("cifar10", tmp_path, train=False)
    assert "[N, 3072]" in one_line(exc)
