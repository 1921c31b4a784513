"""Silent corruption and crafted inputs: checkpoints, deployed folders, model and neuron input,
DVS recordings. Every refusal is one line naming what is wrong and the fix."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from multispike.cli import main as cli_main
from multispike.data import dvs
from multispike.engine import TrainConfig, load_checkpoint, load_model, save_checkpoint, train_model
from multispike.errors import CheckpointError, DataError, InputError
from multispike.models import create


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg and "\r" not in msg, msg
    return msg


def fails(argv: list[str], capsys: pytest.CaptureFixture[str], *texts: str) -> str:
    """The command line exits 2 with one stderr line holding every text."""
    capsys.readouterr()
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for text in texts:
        assert text in err, err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """``best.pt`` of a one-epoch digits run."""
    out = tmp_path_factory.mktemp("run")
    train_model(TrainConfig(dataset="digits", epochs=1, batch_size=128, progress=False,
                            num_workers=0, out=str(out)))
    return out / "best.pt"


def overwrite_with_nan(src: Path, dst: Path) -> str:
    """Copy ``src`` with the bytes of its largest tensor overwritten by float32 NaNs in place
    (the zip CRC no longer fits, which ``torch.load`` does not check); returns the record."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        big = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", data[big.header_offset + 26:big.header_offset + 30])
    start = big.header_offset + 30 + name_len + extra_len
    data[start:start + big.file_size] = np.full(big.file_size // 4, np.nan, np.float32).tobytes()
    dst.write_bytes(bytes(data))
    return big.filename


# -- 1. checkpoint integrity -------------------------------------------------------------------
def test_checkpoints_store_a_digest_of_their_weights(trained, tmp_path):
    ckpt = load_checkpoint(trained)
    assert isinstance(ckpt.get("digest"), str) and ckpt["digest"].startswith("sha256:")
    path = save_checkpoint(tmp_path / "c.pt", {"model_args": ckpt["model_args"],
                                               "model": ckpt["model"]})
    assert load_checkpoint(path)["digest"] == ckpt["digest"]  # same weights, same digest
    state = dict(ckpt["model"])
    state["fc1.bias"] = state["fc1.bias"] + 1
    other = save_checkpoint(tmp_path / "d.pt", {"model_args": ckpt["model_args"],
                                                "model": state})
    assert load_checkpoint(other)["digest"] != ckpt["digest"]


def test_nan_overwritten_checkpoint_is_refused_by_eval_deploy_and_energy(
        trained, tmp_path, capsys):
    bad = tmp_path / "best.pt"
    overwrite_with_nan(trained, bad)
    with pytest.raises(CheckpointError) as exc:
        load_model(bad)
    msg = one_line(exc)
    assert str(bad) in msg and "corrupt" in msg and "digest" in msg and "re-train" in msg
    fails(["eval", "--checkpoint", str(bad)], capsys, str(bad), "corrupt")
    out = tmp_path / "deployed"
    fails(["deploy", "--checkpoint", str(bad), "--out", str(out)], capsys, "digest")
    assert not (out / "model.safetensors").exists()
    fails(["energy", "--checkpoint", str(bad), "--dataset", "digits"], capsys, "digest")


def test_old_checkpoints_without_digest_load_but_not_with_nonfinite_weights(trained, tmp_path):
    ckpt = torch.load(trained, weights_only=True)
    ckpt.pop("digest", None)
    old = tmp_path / "old.pt"
    torch.save(ckpt, old)  # format 2 without its digest: edited
    with pytest.raises(CheckpointError, match="lacks its digest"):
        load_model(old)
    ckpt["format"] = 1  # format 1, written before the digest existed
    torch.save(ckpt, old)
    model, loaded = load_model(old)  # no digest to check
    assert "digest" not in loaded
    ckpt["model"]["fc1.weight"][3, 5] = float("inf")
    torch.save(ckpt, old)
    with pytest.raises(CheckpointError) as exc:
        load_model(old)
    msg = one_line(exc)
    assert str(old) in msg and "'fc1.weight'" in msg and "non-finite" in msg


def test_nonfinite_weights_are_refused_even_with_a_matching_digest(trained, tmp_path):
    ckpt = load_checkpoint(trained)
    state = dict(ckpt["model"])
    state["head.fc.bias"] = state["head.fc.bias"].clone()
    state["head.fc.bias"][0] = float("nan")
    path = save_checkpoint(tmp_path / "nan.pt", {"model_args": ckpt["model_args"],
                                                 "model": state})
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert "'head.fc.bias'" in one_line(exc)


def test_deployed_folder_stores_and_checks_a_digest(trained, tmp_path):
    from multispike.deploy import fold_amplitudes, load_deployed, save_deployed

    model, _ = load_model(trained)
    deployed = fold_amplitudes(model.eval())
    folder = tmp_path / "deployed"
    paths = save_deployed(deployed, folder)
    config = json.loads(paths["config"].read_text())
    assert config["weights_digest"].startswith("sha256:")
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(load_deployed(folder)(x), deployed(x))

    # bytes of the weights overwritten in place with NaN: the digest no longer fits
    raw = bytearray(paths["weights"].read_bytes())
    header = 8 + struct.unpack("<Q", raw[:8])[0]
    meta = json.loads(raw[8:header])
    begin, end = meta["fc1.weight"]["data_offsets"]
    raw[header + begin:header + end] = np.full((end - begin) // 4, np.nan, np.float32).tobytes()
    paths["weights"].write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as exc:
        load_deployed(folder)
    msg = one_line(exc)
    assert str(paths["weights"]) in msg and "digest" in msg

    # a folder without a digest (written before it existed) still has its weights checked
    del config["weights_digest"]
    paths["config"].write_text(json.dumps(config))
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in deployed.state_dict().items()}
    save_file(state, str(paths["weights"]))
    assert torch.equal(load_deployed(folder)(x), deployed(x))
    state["fc1.bias"] = torch.full_like(state["fc1.bias"], float("-inf"))
    save_file(state, str(paths["weights"]))
    with pytest.raises(CheckpointError) as exc:
        load_deployed(folder)
    assert "'fc1.bias'" in one_line(exc) and "non-finite" in str(exc.value)


# -- 2. crafted checkpoints --------------------------------------------------------------------
def _edit(c: dict, key: str, value: object) -> None:
    c[key] = value


CRAFTED = {
    "no name": (lambda c: c["model_args"].pop("name"), "name"),
    "model_args a string": (lambda c: _edit(c, "model_args", "digits_net"), "model_args"),
    "model a list": (lambda c: _edit(c, "model", [1, 2]), "model"),
    "config None": (lambda c: _edit(c, "config", None), "config"),
    "no optimizer": (lambda c: c.pop("optimizer"), "optimizer"),
    "epoch a string": (lambda c: _edit(c, "epoch", "1"), "epoch"),
    "optimizer without param_groups": (lambda c: c["optimizer"].pop("param_groups"),
                                       "optimizer"),
    "name a number": (lambda c: c["model_args"].__setitem__("name", 3), "name"),
    "unknown model": (lambda c: c["model_args"].__setitem__("name", "nope"), "nope"),
    "timesteps a string": (lambda c: c["model_args"].__setitem__("timesteps", "x"),
                           "timesteps"),
    "not a dict": (None, "list"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_checkpoint_is_one_line(trained, tmp_path, capsys, case):
    edit, text = CRAFTED[case]
    ckpt = torch.load(trained, weights_only=True)
    ckpt.pop("digest", None)
    ckpt["format"] = 1  # a format-1 file (no digest over model_args) reaches the checks below
    if edit is None:
        ckpt = [ckpt]
    else:
        edit(ckpt)
    path = tmp_path / "crafted.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as exc:
        load_model(path)
    msg = one_line(exc)
    assert str(path) in msg and text in msg
    fails(["eval", "--checkpoint", str(path)], capsys, str(path))


@pytest.mark.parametrize("case", ["random bytes", "random safetensors", "directory", "empty",
                                  "safetensors"])
def test_files_that_are_no_checkpoint_are_one_line(tmp_path, capsys, case):
    rng = np.random.default_rng(0)
    path = tmp_path / ("ckpt.safetensors" if "safetensors" in case else "ckpt.pt")
    if case == "directory":
        path.mkdir()
        text = "is a directory, not a checkpoint file"
    elif case == "empty":
        path.write_bytes(b"")
        text = "not a multispike checkpoint (an empty file)"
    elif case == "safetensors":
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(path))
        text = "not a multispike checkpoint (a .safetensors file"
    else:
        path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        text = ("not a multispike checkpoint (a .safetensors file" if "safetensors" in case
                else "not a multispike checkpoint (not a torch.save file)")
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    msg = one_line(exc)
    assert str(path) in msg and text in msg
    fails(["eval", "--checkpoint", str(path)], capsys, str(path))


# -- 3. model input ----------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_images_are_refused_by_a_trained_model(trained, bad):
    model, _ = load_model(trained)
    model.eval()
    x = torch.rand(4, 1, 8, 8)
    model(x)  # finite: fine
    x[2, 0, 3, 3] = bad
    with pytest.raises(InputError) as exc:
        model(x)
    msg = one_line(exc)
    assert "NaN or inf" in msg and "digits_net" in msg
    events = torch.rand(model.timesteps, 4, 1, 8, 8)
    events[0, 1, 0, 0, 0] = bad
    with pytest.raises(InputError):
        model(events)


def test_model_input_dtype_messages():
    model = create("digits_net").eval()
    with pytest.raises(InputError) as exc:
        model(torch.zeros(2, 1, 8, 8, dtype=torch.complex64))
    msg = one_line(exc)
    assert "complex tensor" in msg and "integer" not in msg
    with pytest.raises(InputError) as exc:
        model(torch.zeros(2, 1, 8, 8, dtype=torch.int64))
    assert "integer tensor" in one_line(exc)
    for dtype, fix in ((torch.float16, "model.half()"), (torch.float64, "model.double()")):
        with pytest.raises(InputError) as exc:
            model(torch.rand(2, 1, 8, 8, dtype=dtype))
        msg = one_line(exc)
        assert str(dtype) in msg and "torch.float32" in msg and "x.float()" in msg and fix in msg
    # under autocast mixed dtypes are expected
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(2, 1, 8, 8, dtype=torch.bfloat16))
    assert out.shape == (model.timesteps, 2, 10)
    assert model.double()(torch.rand(2, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64


# -- 4. neuron step state and dtype ------------------------------------------------------------
def test_neuron_step_state_shape_and_complex_input():
    from multispike.functional.dynamics import NeuronState
    from multispike.neurons import LIFNode, PLIFNode

    for node in (PLIFNode(), LIFNode(check_input=False)):
        x = torch.randn(4, 8)
        _, state = node.step(x)
        node.step(x, state)
        for wrong in (torch.zeros(4, 9), torch.zeros(8), torch.zeros(1, 8)):
            with pytest.raises(InputError) as exc:
                node.step(x, NeuronState(wrong))
            msg = one_line(exc)
            assert "(4, 8)" in msg and str(tuple(wrong.shape)) in msg
        with pytest.raises(InputError) as exc:
            node.step(x, torch.zeros(4, 8))
        assert "NeuronState" in one_line(exc)
    with pytest.raises(InputError) as exc:
        PLIFNode()(torch.zeros(2, 3, dtype=torch.complex64))
    msg = one_line(exc)
    assert "complex tensor" in msg and "integer" not in msg


# -- 5. DVS recordings -------------------------------------------------------------------------
@pytest.mark.parametrize("blob, why", [
    (b"", "empty (0 bytes)"),
    (bytes(range(16)), "no AER-DAT header"),
    (b"\x01\x02\x03\x04" * 64, "no AER-DAT header"),
])
def test_empty_or_headerless_recording_is_refused(tmp_path, blob, why):
    path = tmp_path / "airplane" / "cifar10_airplane_0.aedat"
    path.parent.mkdir()
    path.write_bytes(blob)
    with pytest.raises(DataError) as exc:
        dvs.read_aedat(path)
    msg = one_line(exc)
    assert str(path) in msg and why in msg and "download" in msg
    # a header and no events is a (short) recording, not a broken file
    ev = np.zeros(0, dtype=dvs.EVENT_DTYPE)
    assert dvs.read_aedat(dvs.write_aedat(tmp_path / "e.aedat", ev)).size == 0


def test_frames_cached_from_an_empty_recording_are_not_reused(tmp_path, monkeypatch):
    from multispike.data.testing import write_cifar10_dvs

    root = tmp_path / "cifar10-dvs"
    write_cifar10_dvs(root, per_class=2, events=(5, 20), seed=1)
    empty = root / "cat" / "cifar10_cat_1.aedat"
    empty.write_bytes(b"")
    real = dvs.read_aedat
    # the frames an earlier version cached for it (it read a 0-byte file as no events)
    monkeypatch.setattr(dvs, "read_aedat", lambda path: real(path) if Path(path) != empty
                        else np.zeros(0, dtype=dvs.EVENT_DTYPE))
    dvs.convert_recordings(root, 2, num_workers=0, progress=False)
    monkeypatch.setattr(dvs, "read_aedat", real)
    with pytest.raises(DataError) as exc:
        dvs.convert_recordings(root, 2, num_workers=0, progress=False)
    msg = one_line(exc)
    assert str(empty) in msg and "empty (0 bytes)" in msg


# -- 3. the digest covers what the model computes; formats and dtypes ----------------------------
def test_edited_model_args_are_refused(trained, tmp_path, capsys):
    ckpt = torch.load(trained, weights_only=True)
    ckpt["model_args"]["firing"] = "ternary" if ckpt["model_args"].get("firing") != "ternary" \
        else "mt"
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as exc:
        load_model(path)
    assert "weights or model_args do not match the digest" in one_line(exc)
    fails(["eval", "--checkpoint", str(path)], capsys, "model_args do not match")


def test_a_format_newer_than_the_code_is_refused(trained, tmp_path):
    ckpt = torch.load(trained, weights_only=True)
    ckpt["format"] = 99
    path = tmp_path / "future.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert "format 99, newer than" in one_line(exc)


def test_integer_tensors_where_the_model_has_floats_are_refused(trained, tmp_path):
    ckpt = load_checkpoint(trained)
    state = dict(ckpt["model"])
    name = next(k for k, v in state.items() if v.is_floating_point() and v.ndim > 1)
    state[name] = state[name].round().to(torch.int64)
    path = save_checkpoint(tmp_path / "ints.pt", {"model_args": ckpt["model_args"],
                                                  "model": state})
    with pytest.raises(CheckpointError) as exc:
        load_model(path)
    msg = one_line(exc)
    assert repr(name) in msg and "int64" in msg and "float32" in msg
