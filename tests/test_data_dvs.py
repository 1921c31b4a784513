"""CIFAR10-DVS: .aedat files in the DVS128 AER-DAT format, frames, cache and split."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import multispike.data as msd
from multispike.data import dvs
from multispike.data.testing import random_events, write_cifar10_dvs
from multispike.errors import ConfigError, DataError


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "\r" not in msg, msg
    return msg


def make_events(rows: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Events from (t, x, y, p) rows."""
    ev = np.zeros(len(rows), dtype=dvs.EVENT_DTYPE)
    for i, (t, x, y, p) in enumerate(rows):
        ev[i] = (t, x, y, p)
    return ev


@pytest.fixture
def dvs_root(tmp_path):
    root = tmp_path / "cifar10-dvs"
    written = write_cifar10_dvs(root, per_class=12, events=(5, 80), seed=7)
    return root, written


def count_conversions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = dvs._events_job

    def counting(job):
        seen.append(job[0])
        return real(job)

    monkeypatch.setattr(dvs, "_events_job", counting)
    return seen


# ------------------------------------------------------------------------------------------
# the file format


def test_hand_made_file_decodes_with_the_documented_convention(tmp_path) -> None:
    path = tmp_path / "hand.aedat"
    header = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
    # addresses: y in bits 8-14, mirrored x in bits 1-7, polarity in bit 0
    records = [((3 << 8) | (5 << 1) | 1, 100),  # x = 127 - 5 = 122, y = 3, p = 1
               ((127 << 8) | (127 << 1) | 0, 250),  # x = 0, y = 127, p = 0
               ((1 << 15) | 7, 260),  # external event (bit 15): dropped
               ((0 << 8) | (0 << 1) | 0, 300)]  # x = 127, y = 0
    path.write_bytes(header + b"".join(struct.pack(">II", a, t) for a, t in records))
    ev = msd.read_aedat(path)
    assert ev.dtype.names == ("t", "x", "y", "p")
    assert ev["t"].tolist() == [100, 250, 300]
    assert ev["x"].tolist() == [122, 0, 127]
    assert ev["y"].tolist() == [3, 127, 0]
    assert ev["p"].tolist() == [1, 0, 0]


def test_writer_bytes_are_the_official_format(tmp_path) -> None:
    path = msd.write_aedat(tmp_path / "one.aedat", make_events([(5, 0, 0, 1)]))
    blob = path.read_bytes()
    assert blob.startswith(b"#!AER-DAT2.0\r\n")
    body = blob[blob.rindex(b"\r\n") + 2:]
    assert body == struct.pack(">II", (127 << 1) | 1, 5)


def test_write_read_round_trip(tmp_path) -> None:
    ev = random_events(1000, seed=3)
    back = msd.read_aedat(msd.write_aedat(tmp_path / "r.aedat", ev))
    assert back.dtype == dvs.EVENT_DTYPE and np.array_equal(back, ev)
    empty = msd.read_aedat(msd.write_aedat(tmp_path / "e.aedat", ev[:0]))
    assert empty.size == 0


def test_aer_dat_1_and_timestamp_wrap(tmp_path) -> None:
    path = tmp_path / "v1.aedat"
    path.write_bytes(b"#!AER-DAT1.0\n" + struct.pack(">HI", (2 << 8) | (10 << 1) | 1, 7))
    ev = msd.read_aedat(path)
    assert ev[["x", "y", "p"]].tolist() == [(117, 2, 1)] and ev["t"].tolist() == [7]
    path = tmp_path / "wrap.aedat"
    path.write_bytes(b"#!AER-DAT2.0\n" + struct.pack(">IIII", 0, 2**32 - 10, 0, 5))
    assert msd.read_aedat(path)["t"].tolist() == [2**32 - 10, 2**32 + 5]


@pytest.mark.parametrize("blob, why", [
    (b"#!AER-DAT2.0\r\n" + b"\0" * 13, "not a multiple of 8"),
    (b"#!AER-DAT2.0\r\n# a header line cut off", "header never ends"),
    (b"#!AER-DAT3.1\r\n" + b"\0" * 8, "AER-DAT 3.1"),
])
def test_corrupt_file_is_named(tmp_path, blob, why) -> None:
    path = tmp_path / "bad.aedat"
    path.write_bytes(blob)
    with pytest.raises(DataError) as exc:
        msd.read_aedat(path)
    msg = one_line(exc)
    assert str(path) in msg and why in msg


# ------------------------------------------------------------------------------------------
# integration into frames


def test_events_to_frames_golden_values() -> None:
    # 7 events, T = 3: chunks of 7 // 3 = 2 events, the remainder (1) joins the last frame
    ev = make_events([(0, 0, 0, 0), (1, 1, 0, 1), (2, 2, 1, 0), (3, 2, 1, 0),
                      (4, 0, 2, 1), (5, 3, 2, 1), (6, 3, 2, 1)])
    f = msd.events_to_frames(ev, 3, size=(3, 4))
    assert f.shape == (3, 2, 3, 4) and f.dtype == torch.float32
    want = torch.zeros(3, 2, 3, 4)
    want[0, 0, 0, 0] = 1
    want[0, 1, 0, 1] = 1
    want[1, 0, 1, 2] = 2  # two events on one pixel add up
    want[2, 1, 2, 0] = 1
    want[2, 1, 2, 3] = 2
    assert torch.equal(f, want)
    assert f.sum() == len(ev)
    assert f.sum(dim=(1, 2, 3)).tolist() == [2, 2, 3]


def test_events_to_frames_every_event_once() -> None:
    ev = random_events(10_007, seed=1)
    for T in (1, 2, 3, 8, 10):
        f = msd.events_to_frames(ev, T)
        assert f.shape == (T, 2, 128, 128)
        per_frame = f.sum(dim=(1, 2, 3))
        assert int(f.sum()) == len(ev)
        assert per_frame[:-1].tolist() == [len(ev) // T] * (T - 1)
        assert int(per_frame[-1]) == len(ev) // T + len(ev) % T
    few = msd.events_to_frames(ev[:3], 5)  # fewer events than frames: all in the last
    assert few.sum(dim=(1, 2, 3)).tolist() == [0, 0, 0, 0, 3]
    assert msd.events_to_frames(ev[:0], 4).sum() == 0


def test_events_to_frames_bad_input() -> None:
    ev = make_events([(0, 130, 0, 0)])
    with pytest.raises(DataError) as exc:
        msd.events_to_frames(ev, 2)
    one_line(exc)
    with pytest.raises(ConfigError) as exc:
        msd.events_to_frames(ev, 0, size=(200, 200))
    one_line(exc)


def test_resize_frames_area_keeps_the_total() -> None:
    f = msd.events_to_frames(random_events(5000, seed=2), 2).numpy()
    small = dvs.resize_frames(f, (48, 48))
    assert small.shape == (2, 2, 48, 48)
    assert np.isclose(small.sum() * (128 / 48) ** 2, f.sum(), rtol=1e-4)
    lin = dvs.resize_frames(torch.ones(1, 2, 128, 128), (48, 48), "bilinear")
    assert torch.allclose(lin, torch.ones(1, 2, 48, 48))


# ------------------------------------------------------------------------------------------
# the dataset, split and cache


def test_split_is_deterministic_disjoint_and_natural(dvs_root) -> None:
    root, _ = dvs_root
    train = dvs.list_recordings(root, train=True)
    test = dvs.list_recordings(root, train=False)
    assert len(train) == 10 * 10 and len(test) == 10 * 2  # 9 * 12 // 10 = 10 per class
    assert not {r.path for r in train} & {r.path for r in test}
    assert {r.path for r in train} | {r.path for r in test} == \
        {r.path for r in dvs.list_recordings(root)}
    assert train == dvs.list_recordings(root, train=True)
    cat_test = [r.path.name for r in test if r.label == dvs.CLASSES.index("cat")]
    assert cat_test == ["cifar10_cat_10.aedat", "cifar10_cat_11.aedat"]  # natural order


def test_dataset_items_match_the_recordings(dvs_root) -> None:
    root, written = dvs_root
    ds = msd.build("cifar10-dvs", data_dir=root, train=False, timesteps=4, convert_workers=0,
                   progress=False)
    assert len(ds) == 20
    for i in (0, 7, 19):
        frames, label = ds[i]
        path = ds.recordings[i]
        assert label == dvs.CLASSES.index(path.parent.name)
        assert frames.shape == (4, 2, 128, 128) and frames.dtype == torch.float32
        assert torch.equal(frames, msd.events_to_frames(written[path], 4))
        assert int(frames.sum()) == len(written[path])
    assert ds.cache.parent == root and ds.cache.name.startswith("events_")


def test_resize_48(dvs_root) -> None:
    root, written = dvs_root
    ds = msd.build("cifar10-dvs", data_dir=root, train=True, timesteps=3, resize=48,
                   convert_workers=0, progress=False)
    frames, _ = ds[0]
    assert frames.shape == (3, 2, 48, 48)
    assert msd.get_spec("cifar10-dvs", resize=48).input_shape == (2, 48, 48)
    full = msd.events_to_frames(written[ds.recordings[0]], 3).numpy()
    assert np.allclose(frames.numpy(), dvs.resize_frames(full, (48, 48)))


def test_one_cache_serves_every_timesteps_and_resize(dvs_root, tmp_path, monkeypatch) -> None:
    """eval at T = 1, 2, 4 (and a resize) decodes each recording once, not once per T."""
    root, written = dvs_root
    seen = count_conversions(monkeypatch)
    kw = dict(cache_dir=tmp_path / "cache", convert_workers=0, progress=False)
    sets = [dvs.CIFAR10DVS(root, train=False, timesteps=T, **kw) for T in (1, 2, 4)]
    sets.append(dvs.CIFAR10DVS(root, train=False, timesteps=3, resize=48, **kw))
    sets.append(dvs.CIFAR10DVS(root, train=True, timesteps=4, resize=48,
                               resize_mode="bilinear", **kw))
    assert len(seen) == 120  # once, by the first dataset
    assert len({ds.cache for ds in sets}) == 1
    for ds, T in zip(sets[:3], (1, 2, 4), strict=True):
        path = ds.recordings[5]
        assert torch.equal(ds[5][0], msd.events_to_frames(written[path], T))
    small = sets[3]
    full = msd.events_to_frames(written[small.recordings[0]], 3).numpy()
    assert np.allclose(small[0][0].numpy(), dvs.resize_frames(full, (48, 48)))
    lin = sets[4]
    full = msd.events_to_frames(written[lin.recordings[2]], 4).numpy()
    assert np.allclose(lin[2][0].numpy(), dvs.resize_frames(full, (48, 48), "bilinear"))
    meta = json.loads((sets[0].cache / "meta.json").read_text())
    assert meta["settings"] == dvs.cache_settings() and len(meta["sources"]) == 120
    assert meta["dataset"] == str(root.resolve())
    packed = np.load(sets[0].samples[0][0])  # the cache holds the events, packed, in order
    ev = written[sets[0].recordings[0]]
    assert packed.dtype == np.uint16 and packed.tolist() == dvs.pack_events(ev).tolist()


def test_stale_cache_is_never_reused(dvs_root, tmp_path, monkeypatch) -> None:
    root, written = dvs_root
    kw = dict(cache_dir=tmp_path / "cache", convert_workers=0, progress=False)
    ds = dvs.CIFAR10DVS(root, train=True, timesteps=2, **kw)
    seen = count_conversions(monkeypatch)
    # a recording that changed after conversion is converted again
    path = ds.recordings[3]
    new_events = random_events(len(written[path]) + 11, seed=99)
    msd.write_aedat(path, new_events)
    ds = dvs.CIFAR10DVS(root, train=True, timesteps=2, **kw)
    assert seen == ["/".join(path.parts[-2:])]
    assert torch.equal(ds[3][0], msd.events_to_frames(new_events, 2))
    # a folder whose recorded settings differ (older format, other T...) is not trusted
    meta_path = ds.cache / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["settings"]["format"] = -1
    meta_path.write_text(json.dumps(meta))
    dvs.CIFAR10DVS(root, train=True, timesteps=2, **kw)
    assert len(seen) == 1 + 120
    # a deleted cache file is rebuilt
    (ds.samples[0][0]).unlink()
    dvs.CIFAR10DVS(root, train=False, timesteps=2, **kw)
    assert len(seen) == 1 + 120 + 1


def test_two_workers_equal_zero_workers(dvs_root, tmp_path) -> None:
    root, _ = dvs_root
    serial = dvs.CIFAR10DVS(root, train=True, timesteps=5, cache_dir=tmp_path / "a",
                            convert_workers=0, progress=False)
    parallel = dvs.CIFAR10DVS(root, train=True, timesteps=5, cache_dir=tmp_path / "b",
                              convert_workers=2, progress=False)
    assert serial.cache.name == parallel.cache.name
    assert len(serial) == len(parallel) == 100
    for i in range(len(serial)):
        a, la = serial[i]
        b, lb = parallel[i]
        assert la == lb and torch.equal(a, b)


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_recording_is_named(dvs_root, workers) -> None:
    root, _ = dvs_root
    bad = root / "dog" / "cifar10_dog_4.aedat"
    blob = bad.read_bytes()
    bad.write_bytes(blob[:-3])  # a truncated download
    with pytest.raises(DataError) as exc:
        msd.build("cifar10-dvs", data_dir=root, train=True, timesteps=4,
                  convert_workers=workers, progress=False)
    msg = one_line(exc)
    assert str(bad) in msg and "download this recording again" in msg
    bad.write_bytes(blob)  # once repaired, only the missing recording is converted
    ds = msd.build("cifar10-dvs", data_dir=root, train=True, timesteps=4, convert_workers=0,
                   progress=False)
    assert len(ds) == 100


def test_folder_errors(tmp_path) -> None:
    root = tmp_path / "dvs"
    with pytest.raises(DataError) as exc:
        msd.build("cifar10-dvs", data_dir=root, train=True, timesteps=4)
    assert str(root) in one_line(exc) and "figshare" in one_line(exc)
    with pytest.raises(DataError) as exc:
        msd.build("cifar10-dvs", data_dir=root, train=True, timesteps=4, download=True)
    assert str(root) in one_line(exc)
    write_cifar10_dvs(root, per_class=2, events=(5, 10))
    for f in (root / "frog").iterdir():
        f.unlink()
    with pytest.raises(DataError) as exc:
        msd.build("cifar10-dvs", data_dir=root, train=True, timesteps=4)
    assert str(root / "frog") in one_line(exc) and ".aedat" in one_line(exc)
    (root / "frog").rmdir()
    with pytest.raises(DataError) as exc:
        msd.build("cifar10-dvs", data_dir=root, train=True, timesteps=4)
    assert "frog" in one_line(exc)


def test_options_are_checked(dvs_root) -> None:
    root, _ = dvs_root
    for kwargs in (dict(), dict(timesteps=0), dict(timesteps=4, resize=(1, 2, 3)),
                   dict(timesteps=4, resize_mode="nearest"), dict(timesteps=4, colour=True),
                   dict(timesteps=4, resize=48.0), dict(timesteps=4, convert_workers="4"),
                   dict(timesteps=4, convert_workers=-1)):
        with pytest.raises(ConfigError) as exc:
            msd.build("cifar10-dvs", data_dir=root, train=True, progress=False, **kwargs)
        one_line(exc)


def test_loader_error_from_a_worker_is_one_line(dvs_root) -> None:
    root, _ = dvs_root
    ds = msd.build("cifar10-dvs", data_dir=root, train=False, timesteps=2, convert_workers=0,
                   progress=False)
    ds.samples[1][0].write_bytes(b"garbage")
    loader = msd.make_loader(ds, 4, shuffle=False, num_workers=1)
    with pytest.raises(DataError) as exc:
        for _ in loader:
            pass
    msg = one_line(exc)
    assert str(ds.samples[1][0]) in msg and str(ds.cache) in msg
    x, y = next(iter(msd.make_loader(torch.utils.data.Subset(ds, [0, 2]), 2, shuffle=False,
                                     num_workers=0)))
    assert x.shape == (2, 2, 2, 128, 128) and y.shape == (2,)


# ------------------------------------------------------------------------------------------
# where the cache goes, what it prints, and torchrun


def read_only(monkeypatch: pytest.MonkeyPatch, *folders) -> None:
    """Make ``folders`` read-only: chmod, and (as root, whom chmod does not stop) an os.access
    that says so; the code under test decides by os.access before it writes anything."""
    for folder in folders:
        folder.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access
        refused = {str(f) for f in folders}

        def access(path, mode, *args, **kwargs):
            if str(path) in refused and mode & os.W_OK:
                return False
            return real(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)


def tree(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_read_only_dataset_folder_caches_per_user(tmp_path, monkeypatch, capsys) -> None:
    """A read-only dataset folder is used as it is; its cache goes to the per-user folder,
    keyed by the dataset folder (two datasets never share one), and one line says where."""
    a, b = tmp_path / "a" / "cifar10-dvs", tmp_path / "b" / "cifar10-dvs"
    written = write_cifar10_dvs(a, per_class=2, events=(5, 30), seed=1)
    write_cifar10_dvs(b, per_class=2, events=(5, 30), seed=2)
    before = tree(a)
    monkeypatch.setenv("MULTISPIKE_CACHE", str(tmp_path / "user-cache"))
    read_only(monkeypatch, a, b)
    try:
        ds_a = msd.build("cifar10-dvs", data_dir=a, train=False, timesteps=2,
                         convert_workers=0, progress=False)
        err = capsys.readouterr().err
        ds_b = msd.build("cifar10-dvs", data_dir=b, train=False, timesteps=2,
                         convert_workers=0, progress=False)
        assert tree(a) == before  # nothing written into the dataset folder
    finally:
        a.chmod(0o755)
        b.chmod(0o755)
    assert ds_a.cache.is_relative_to(tmp_path / "user-cache" / "cifar10-dvs")
    assert ds_a.cache.parent != ds_b.cache.parent
    assert err.count("\n") == 1 and str(ds_a.cache) in err and "not writable" in err
    assert "--data-option cache_dir=DIR" in err and "decoding 20 recordings" in err
    path = ds_a.recordings[0]
    assert torch.equal(ds_a[0][0], msd.events_to_frames(written[path], 2))
    # an explicit cache_dir still wins
    ds = msd.build("cifar10-dvs", data_dir=a, train=False, timesteps=2, convert_workers=0,
                   progress=False, cache_dir=tmp_path / "mine")
    assert ds.cache.parent == tmp_path / "mine"


def test_progress_off_prints_nothing(dvs_root, tmp_path, capsys) -> None:
    root, _ = dvs_root
    msd.build("cifar10-dvs", data_dir=root, train=True, timesteps=2, convert_workers=0,
              progress=False)
    assert capsys.readouterr().err == ""
    ds = msd.build("cifar10-dvs", data_dir=root, train=True, timesteps=2, convert_workers=0,
                   cache_dir=tmp_path / "c", progress=True)
    err = capsys.readouterr().err
    assert f"decoding 120 recordings once into {ds.cache}" in err and "file" in err
    msd.build("cifar10-dvs", data_dir=root, train=True, timesteps=3, convert_workers=0,
              cache_dir=tmp_path / "c", progress=True)
    assert capsys.readouterr().err == ""  # nothing left to decode
    with pytest.raises(ConfigError) as exc:
        msd.build("cifar10-dvs", data_dir=root, train=True, timesteps=2, progress="no")
    assert "progress" in one_line(exc)


def rank_main() -> None:
    """One rank of test_rank_0_decodes_and_the_others_wait, in its own process."""
    import torch.distributed as dist

    good, bad = sys.argv[1:3]
    dist.init_process_group("gloo")
    seen: list[str] = []
    real = dvs._events_job
    dvs._events_job = lambda job: (seen.append(job[0]), real(job))[1]
    ds = msd.build("cifar10-dvs", data_dir=good, train=False, timesteps=2, convert_workers=0,
                   progress=True)
    out = {"decoded": len(seen), "len": len(ds), "sum": float(ds[3][0].sum())}
    try:
        msd.build("cifar10-dvs", data_dir=bad, train=False, timesteps=2, convert_workers=0,
                  progress=True)
    except DataError as exc:
        out["error"] = str(exc)
    print(json.dumps(out), flush=True)
    dist.destroy_process_group()


def test_rank_0_decodes_and_the_others_wait(tmp_path) -> None:
    """Two gloo processes: rank 0 decodes every recording and prints the only bar; rank 1
    decodes none and reads the same items; an error on rank 0 reaches rank 1 (no hang)."""
    from tests.torchrun import free_port

    good, bad = tmp_path / "good", tmp_path / "bad"
    written = write_cifar10_dvs(good, per_class=3, events=(5, 40), seed=4)
    write_cifar10_dvs(bad, per_class=1, events=(5, 10), seed=5)
    broken = bad / "ship" / "cifar10_ship_0.aedat"
    broken.write_bytes(broken.read_bytes()[:-3])
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parent.parent
    procs = [subprocess.Popen(
        [sys.executable, "-c", "from tests.test_data_dvs import rank_main; rank_main()",
         str(good), str(bad)], cwd=root, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    r0, r1 = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert r0["decoded"] == 30 and r1["decoded"] == 0
    assert r0["len"] == r1["len"] == 10 and r0["sum"] == r1["sum"]
    test = dvs.list_recordings(good, train=False)
    assert r0["sum"] == len(written[test[3].path])
    assert "decoding 30 recordings once" in outs[0][1] and "decoding" not in outs[1][1]
    assert "\n" not in r0["error"] and r0["error"] == r1["error"] and str(broken) in r0["error"]


def test_read_only_dataset_folder_from_the_command_line(tmp_path, monkeypatch, capsys) -> None:
    """`multispike train` on a read-only CIFAR10-DVS folder: exit 0, nothing written there,
    the cache in the per-user folder and one line saying so (even under --no-progress)."""
    from multispike.cli import main

    data = tmp_path / "data"
    write_cifar10_dvs(data, per_class=2, events=(20, 40), seed=3)
    before = tree(data)
    monkeypatch.setenv("MULTISPIKE_CACHE", str(tmp_path / "user-cache"))
    read_only(monkeypatch, data)
    try:
        rc = main(["train", "--dataset", "cifar10-dvs", "--model", "digits_net", "--data-dir",
                   str(data), "--timesteps", "2", "--epochs", "1", "--batch-size", "8",
                   "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu",
                   "--data-option", "resize=16", "--data-option", "convert_workers=0"])
        assert tree(data) == before
    finally:
        data.chmod(0o755)
    err = capsys.readouterr().err
    assert rc == 0, err
    lines = [line for line in err.splitlines() if "recordings once into" in line]
    assert len(lines) == 1 and "not writable" in lines[0]
    assert str(tmp_path / "user-cache" / "cifar10-dvs") in lines[0]


def test_no_progress_on_the_command_line_shows_no_conversion_bar(tmp_path, capsys) -> None:
    from multispike.cli import main

    data = tmp_path / "data"
    write_cifar10_dvs(data, per_class=2, events=(20, 40), seed=3)
    rc = main(["train", "--dataset", "cifar10-dvs", "--model", "digits_net", "--data-dir",
               str(data), "--timesteps", "2", "--epochs", "1", "--batch-size", "8", "--out",
               str(tmp_path / "run"), "--no-progress", "--device", "cpu", "--data-option",
               "resize=16", "--data-option", "convert_workers=0"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "CIFAR10-DVS" not in err
