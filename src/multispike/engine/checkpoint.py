"""Checkpoints: written atomically, read without executing pickled code, rebuilding the model.

A checkpoint is one ``torch.save`` file of plain containers and tensors, read back with
``torch.load(weights_only=True)`` (no arbitrary code runs). It holds

- ``model_args``: the arguments of :func:`multispike.models.create` that rebuild the model;
- ``model``: the state dict;
- ``optimizer``, ``scheduler``, ``epoch``, ``best_accuracy``, ``config``: what ``--resume``
  needs to continue exactly;
- ``digest``: ``"sha256:<hex>"`` of the weights and ``model_args`` together
  (:func:`~multispike.integrity.model_digest`), written at save time;
- ``format``: the checkpoint format version (:data:`FORMAT`).

Format versions: 1 had a digest of the weights alone; 2 (now) covers everything that decides
what the model computes, the weights and the ``model_args`` that rebuild it, and every format-2
checkpoint must carry it. Format-1 files still load, with the weights checked against their
digest but ``model_args`` unchecked (it had no digest then); a format newer than this code
knows is refused, since its entries may mean something this code cannot tell.

Writes go to a temporary file in the same folder, then ``os.replace`` renames it over the
target, so a run killed mid-write leaves the previous checkpoint intact. The file gets the
permissions the umask gives any new file (``0o666 & ~umask``: with umask 002 colleagues
sharing a group folder can read it), not the private 0600 of a temporary file.

Integrity: :func:`load_checkpoint` refuses (one-line :class:`CheckpointError`) a file that is
not a checkpoint, a checkpoint whose entries have the wrong types, weights or ``model_args``
that no longer match the digest stored at save time (``torch.load`` does not check the zip
CRCs, so overwritten bytes would otherwise load silently), a format newer than :data:`FORMAT`
and non-finite weights; :func:`load_state` refuses integer tensors where the model holds
floating-point ones (they would be cast silently). Checkpoints written before the digest
existed load without the digest check; the finiteness check applies to them too.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multispike.errors import CheckpointError, ConfigError
from multispike.integrity import (  # noqa: F401 - re-exported: part of the checkpoint API
    DIGEST_PREFIX,
    check_weights,
    first_nonfinite,
    model_digest,
    weights_digest,
)

#: the checkpoint format this code writes (see the module's docs for what each version holds)
FORMAT = 2
#: entries a training checkpoint (as ``multispike train`` writes it) holds besides the model
#: and their types; a checkpoint with any of them must hold all of them.
TRAINING_ENTRIES: dict[str, tuple[type, ...]] = {
    "optimizer": (dict,), "scheduler": (dict,), "epoch": (int,),
    "best_accuracy": (int, float), "history": (list,), "config": (dict,),
}


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (write a temporary file, then rename).

    A ``model`` state dict gets the :func:`~multispike.integrity.model_digest` of itself and
    ``model_args`` stored beside it as ``digest``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"format": FORMAT, **payload}
    record.pop("digest", None)
    state = payload.get("model")
    if isinstance(state, Mapping) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        record["digest"] = model_digest(state, payload.get("model_args"))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(record, f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~current_umask())  # mkstemp made it 0600
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error_behind(e)
        if cause is not None:  # torch.save reports a full disk as a RuntimeError
            raise OSError(cause.errno, cause.strerror, str(path)) from None
        raise
    return path


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it
    (``/proc/self/status``), else set and restored at once.

    >>> 0 <= current_umask() <= 0o777
    True
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _os_error_behind(e: BaseException) -> OSError | None:
    """The :class:`OSError` (no space, a read-only disk, ...) behind a failed write, found in
    the chain of exceptions ``torch.save`` raises on top of it; ``None`` if there is none."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class _Unreadable(CheckpointError):
    """A file ``torch.load`` cannot read (empty, not a torch.save file, corrupt)."""


def _refused(path: Path, why: str, fix: str = "", kind: type = CheckpointError
             ) -> CheckpointError:
    """The one line for a file that is no checkpoint: what it is (``why``) and what to give
    instead (``fix``; default: the files ``multispike train`` writes). A file ``torch.load``
    cannot read (``kind=_Unreadable``) may also be a checkpoint that was damaged."""
    damaged = "corrupt or " if kind is _Unreadable else ""
    return kind(
        f"{path} is {damaged}not a multispike checkpoint ({why}); "
        + (fix or "give the last.pt or best.pt that `multispike train --out DIR` wrote")
    )


def _load_reason(path: Path, e: Exception) -> str:
    """A short reason for a file ``torch.load`` could not read."""
    text = str(e)
    if "WeightsUnpickler error:" in text:  # weights_only refused what the pickle holds
        rest = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()
        detail = rest[0].strip() if rest else ""
        if not zipfile.is_zipfile(path):
            return "not a torch.save file"
        return f"it holds objects other than tensors and plain containers: {detail[:100]}"
    first = text.strip().splitlines()[0] if text.strip() else ""
    if not first or len(first) > 120:  # torch's own text, cut mid-word, would mislead
        return f"torch.load failed with {type(e).__name__}"
    return first


def _checked(path: Path, ckpt: Any) -> dict[str, Any]:
    """``ckpt`` if it has the entries and types of a multispike checkpoint, else raise."""
    where = f"checkpoint {path}"
    fix = "it was not written by multispike train; use best.pt or last.pt of a training run"
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{where} holds a {type(ckpt).__name__}, not a multispike checkpoint (a dict); {fix}")
    missing = [k for k in ("model_args", "model") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{where} lacks {' and '.join(missing)}; {fix}")
    args = ckpt["model_args"]
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise CheckpointError(
            f"{where} has model_args of type {type(args).__name__}, not a dict of "
            f"multispike.models.create arguments; {fix}")
    if not isinstance(args.get("name"), str):
        got = "no name" if "name" not in args else f"name {args['name']!r}"
        raise CheckpointError(f"{where} has model_args with {got}, not a model name; {fix}")
    state = ckpt["model"]
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{where} has model (the weights) of type {type(state).__name__}, not a state dict; "
            f"{fix}")
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(
                f"{where} has a state-dict entry {k!r} of type {type(v).__name__}, not a tensor; "
                f"{fix}")
    present = [k for k in TRAINING_ENTRIES if k in ckpt]
    if present:
        absent = [k for k in TRAINING_ENTRIES if k not in ckpt]
        if absent:
            raise CheckpointError(
                f"{where} has {present[0]} but lacks {', '.join(absent)}; {fix}")
        for k, types in TRAINING_ENTRIES.items():
            v = ckpt[k]
            if isinstance(v, bool) or not isinstance(v, types):
                names = " or ".join(t.__name__ for t in types)
                raise CheckpointError(
                    f"{where} has {k} of type {type(v).__name__}, not {names}; {fix}")
        opt = ckpt["optimizer"]
        groups = opt.get("param_groups")
        if not isinstance(opt.get("state"), dict) or not isinstance(groups, list) or not groups \
                or not all(isinstance(g, dict) and isinstance(g.get("lr"), (int, float))
                           for g in groups):
            raise CheckpointError(
                f"{where} has an optimizer entry that is not an optimizer state dict (state and "
                f"param_groups with lr); {fix}")
        if not math.isfinite(ckpt["best_accuracy"]):
            raise CheckpointError(
                f"{where} has best_accuracy {ckpt['best_accuracy']!r}, not a number; {fix}")
    digest = ckpt.get("digest")
    if digest is not None and not (isinstance(digest, str) and digest.startswith(DIGEST_PREFIX)):
        raise CheckpointError(
            f"{where} has a digest {str(digest)[:40]!r} that is not '{DIGEST_PREFIX}<hex>'; {fix}")
    return ckpt


#: the advice for a file torch.load cannot read
_ANOTHER = "use another file, e.g. best.pt beside it"


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint safely and check it; :class:`CheckpointError` (one line) if missing,
    not a checkpoint, corrupt (weights that do not match their digest) or non-finite."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a directory, not a checkpoint file; give a file such as {path}/best.pt")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    if path.suffix.lower() == ".safetensors":
        raise CheckpointError(
            f"{path} is not a multispike checkpoint (a .safetensors file; checkpoints are the "
            ".pt files of multispike train, and a deployed folder loads with "
            "multispike.deploy.load_deployed)")
    try:
        if path.stat().st_size == 0:
            raise _refused(path, "an empty file", _ANOTHER, _Unreadable)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:  # any failure to read the file is the same problem to the user
        raise _refused(path, _load_reason(path, e), _ANOTHER, _Unreadable) from None
    ckpt = _checked(path, ckpt)
    fix = "use best.pt beside it or re-train"
    if _format(path, ckpt) >= 2:
        if model_digest(ckpt["model"], ckpt["model_args"]) != ckpt["digest"]:
            raise CheckpointError(
                f"checkpoint {path} is corrupt or edited: its weights or model_args do not match "
                f"the digest stored at save time; {fix}")
        check_weights(ckpt["model"], None, f"checkpoint {path}", fix)
    else:  # format 1: the digest covered the weights alone
        check_weights(ckpt["model"], ckpt.get("digest"), f"checkpoint {path}", fix)
    return ckpt


def _format(path: Path, ckpt: dict[str, Any]) -> int:
    """The checkpoint's format version; refuses one this code does not know (one line)."""
    fmt = ckpt.get("format", 1)
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 1:
        raise CheckpointError(f"checkpoint {path} has format {fmt!r}, not a version number; it "
                              "was not written by multispike train: use best.pt or last.pt of "
                              "a training run")
    if fmt > FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {fmt}, newer than the {FORMAT} this "
                              "multispike reads; upgrade multispike to read it")
    if fmt >= 2 and not isinstance(ckpt.get("digest"), str):
        raise CheckpointError(f"checkpoint {path} (format {fmt}) lacks its digest; it was "
                              "edited or not written by multispike: use best.pt beside it or "
                              "re-train")
    return fmt


def build_model(model_args: dict[str, Any]) -> nn.Module:
    """``multispike.models.create(**model_args)``."""
    from multispike.models import create

    args = dict(model_args)
    return create(args.pop("name"), **args)


def _refuse_conflict(key: str, value: Any, spec: Any) -> None:
    """An explicit model option that contradicts the dataset: one :class:`ConfigError` line."""
    c, h, w = spec.input_shape
    raise ConfigError(
        f"--option {key}={value!r} contradicts dataset {spec.name}, whose input is {c} "
        f"channel{'s' if c != 1 else ''} of {h}x{w}; drop the option: the model takes its input "
        "channels and size from the dataset (its size from dataset options such as resize)")


def create_args(spec: Any, *, model: str | None = None, timesteps: int | None = None,
                firing: str | None = None, neuron: str | None = None,
                options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The :func:`multispike.models.create` arguments of ``model`` (default: the dataset's
    model) for the dataset ``spec``: its classes, T (left out when ``None``), firing rule and
    neuron where given, and the model ``options``; :func:`build_for_dataset` adds the input
    channels and size (checkpoints store the result).

    >>> from multispike.data import get_spec
    >>> create_args(get_spec("digits"), timesteps=2, firing="mt", options={"deltas": (0.5,)})
    {'name': 'digits_net', 'num_classes': 10, 'timesteps': 2, 'firing': 'mt', 'deltas': [0.5]}
    """
    args: dict[str, Any] = {"name": model or spec.default_model, "num_classes": spec.num_classes}
    if timesteps is not None:
        args["timesteps"] = timesteps
    if firing is not None:
        args["firing"] = firing
    if neuron is not None:
        args["neuron"] = neuron
    for key, value in (options or {}).items():
        args[key] = list(value) if isinstance(value, tuple) else value
    return args


def build_for_dataset(model_args: Mapping[str, Any], spec: Any,
                      explicit: Mapping[str, Any] | None = None) -> tuple[nn.Module, dict]:
    """The model of ``model_args`` built for the dataset ``spec`` (a
    :class:`~multispike.data.registry.DatasetSpec`, with its options applied): its input
    channels, and for models that take one (the VGGs) its ``input_size``, come from
    ``spec.input_shape``. ``explicit``: the options the user set; one that contradicts the
    dataset is refused in one line. Returns ``(model, model_args)``, the arguments that rebuild
    it (checkpoints store them). The random draws are those of one build with these arguments.

    >>> from multispike.data import get_spec
    >>> model, args = build_for_dataset({"name": "vgg12", "timesteps": 2},
    ...                                 get_spec("cifar10-dvs", resize=64))
    >>> args["in_channels"], args["input_size"], model.input_size
    (2, 64, (64, 64))
    """
    explicit = explicit or {}
    c, h, w = (int(s) for s in spec.input_shape)
    args = dict(model_args)
    if "in_channels" in explicit and explicit["in_channels"] != c:
        _refuse_conflict("in_channels", explicit["in_channels"], spec)
    args["in_channels"] = c
    if "input_size" in explicit and explicit["input_size"] not in (h, [h, w], (h, w)):
        _refuse_conflict("input_size", explicit["input_size"], spec)
    state = torch.get_rng_state()
    model = build_model(args)
    takes_size = "input_size" in getattr(model, "model_args", {})
    if takes_size and "input_size" not in explicit and model.model_args["input_size"] != h:
        if h != w:
            raise ConfigError(f"{args['name']} takes square inputs, and dataset {spec.name} "
                              f"gives {h}x{w}; resize it to a square (a dataset option)")
        torch.set_rng_state(state)  # the same draws as one build at this size
        args["input_size"] = h
        try:
            model = build_model(args)
        except ConfigError as e:
            raise ConfigError(f"{spec.name} input of {h}x{w} does not fit: {e}; choose a size "
                              "it takes (the resize dataset option)") from None
    return model, args


def load_state(model: nn.Module, state: dict[str, Any], source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line :class:`CheckpointError` on mismatch,
    including a tensor whose kind (floating point or integer) is not the model's: torch would
    cast integers into float weights silently."""
    own = model.state_dict()
    for k, v in state.items():
        if k in own and own[k].is_floating_point() != v.is_floating_point():
            raise CheckpointError(
                f"checkpoint {source} holds {k!r} as {str(v.dtype).removeprefix('torch.')}, where "
                f"the model has {str(own[k].dtype).removeprefix('torch.')}; it was edited or "
                "written by another program: use best.pt beside it or re-train")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise CheckpointError(
            f"checkpoint {source} does not fit this model ({first[:160]}); it was trained with "
            "another architecture or options"
        ) from None


_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x93NUMPY", "a NumPy array file"),
)


def _sniff(head: bytes) -> str | None:
    """What ``head`` (a file's first bytes) says the file is; None for a possible checkpoint."""
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save zip / legacy pickle
        return None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return f"it is {kind}"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 27:
        return "it is a safetensors file, such as the model.safetensors that deploy writes"
    text = head.lstrip()
    if text[:1] in (b"{", b"["):
        return "it is JSON text"
    if text[:1] == b"<":
        return "it is XML or HTML text"
    text_ = head.decode("utf-8", "ignore")  # a character cut at the end is dropped
    if len(text_) >= len(head) // 2 and all(c.isprintable() or c in "\r\n\t" for c in text_):
        return "it is a text file"
    return "corrupt, or another format: not a torch.save file"


def load_model(path: str | os.PathLike[str], fix: str = "") -> tuple[nn.Module, dict[str, Any]]:
    """The model stored in the checkpoint file ``path``, its weights loaded, and the
    checkpoint: ``(model, ckpt)``; the one way every command opens a checkpoint.

    Every way a path can fail to be a checkpoint (missing, a directory, empty, another format,
    corrupt, a model that cannot be rebuilt) is one :class:`CheckpointError` line naming the
    file and what to give instead (``fix``, when given, replaces that advice).
    """
    p = Path(path)
    if p.is_dir():
        inside = next((p / n for n in ("best.pt", "last.pt") if (p / n).is_file()), None)
        raise CheckpointError(
            f"{p} is a directory, not a checkpoint file; give a file"
            + (f", e.g. {inside}" if inside else ", e.g. the best.pt of a train --out folder"))
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist; check the path")
    if not p.is_file():
        raise _refused(p, "not a regular file", fix)
    try:
        with p.open("rb") as f:
            head = f.read(64)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {p} ({e.strerror or type(e).__name__}); "
                              "check its permissions") from None
    if not head:
        raise _refused(p, "the file is empty", fix)
    kind = _sniff(head)
    if kind is not None:
        raise _refused(p, kind, fix)
    try:
        ckpt = load_checkpoint(p)
    except _Unreadable:
        raise _refused(p, "corrupt or truncated: torch.load cannot read it", fix) from None
    except CheckpointError as e:
        text = str(e)
        if fix and "; " in text:  # the file's problem, with the advice of this command
            raise CheckpointError(f"{text.rsplit('; ', 1)[0]}; {fix}") from None
        raise
    except MemoryError:
        raise _refused(p, "corrupt: reading it asks for more memory than exists", fix) from None
    except Exception as e:  # whatever torch or safetensors raise on bytes they cannot parse
        raise _refused(p, f"corrupt: torch.load failed with {type(e).__name__}", fix) from None
    args = ckpt.get("model_args")
    if not isinstance(args, dict) or "name" not in args or not isinstance(ckpt["model"], dict):
        raise _refused(p, "its model_args do not name a model", fix)
    try:
        model = build_model(args)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {p} holds a model this multispike cannot build ({first}); use the "
            "multispike version that wrote it") from None
    load_state(model, ckpt["model"], str(p))
    return model, ckpt


def check_input_fits(model: nn.Module, spec: Any, given: Sequence[str] = ()) -> None:
    """Refuse (one :class:`ConfigError` line) data that ``model`` cannot take: other input
    channels, or, for a model built for one input size (the VGGs: ``input_size`` in its
    ``model_args``), another size. ``given``: the flags that chose the data, named in the fix."""
    channels = getattr(model, "in_channels", None)
    if channels is None:
        return
    want = [int(channels)]
    have = [int(spec.input_shape[0])]
    if "input_size" in getattr(model, "model_args", {}):
        want += [int(s) for s in model.input_size]
        have += [int(s) for s in spec.input_shape[1:]]
    if want == have:
        return
    given = [flag for flag in given if flag in ("--dataset", "--data-option")]
    fix = (f"drop {' and '.join(given)} to use the data it was trained on" if given else
           "give the dataset and dataset options (--dataset, --data-option) it was trained on")
    raise ConfigError(
        f"the checkpoint's model takes {'x'.join(map(str, want))} input (channels"
        f"{', height, width' if len(want) > 1 else ''}) but {spec.name} gives "
        f"{'x'.join(map(str, have[:len(want)]))}; {fix}")


# -- reading a checkpoint for a command ------------------------------------------------------------

def checkpoint_settings(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint says about its run: dataset, data_dir, data_options (``{}`` where a
    checkpoint records none), timesteps, firing, model."""
    cfg = ckpt.get("config") or {}
    args = ckpt.get("model_args") or {}
    options = cfg.get("data_options")
    return {
        "dataset": cfg.get("dataset"),
        "data_dir": cfg.get("data_dir"),
        "data_options": dict(options) if isinstance(options, dict) else {},
        "timesteps": args.get("timesteps") or cfg.get("timesteps"),
        "firing": args.get("firing") or cfg.get("firing"),
        "model": args.get("name") or cfg.get("model"),
    }


@dataclass(frozen=True)
class RunData:
    """The data a command feeds a checkpoint's model: ``dataset``, ``data_dir`` and
    ``options`` (dataset options); ``given``: the flags that chose them instead of the run
    (``--dataset``, ``--data-dir``, ``--data-option``), for messages."""

    dataset: str
    data_dir: str | None
    options: dict[str, Any]
    given: tuple[str, ...] = ()


def run_data(saved: dict[str, Any], *, dataset: str | None = None,
             data_dir: str | None = None, options: dict[str, Any] | None = None,
             default: str | None = None) -> RunData:
    """The dataset, folder and dataset options of a run (``saved``: a checkpoint's
    :func:`checkpoint_settings`), with those the user gave on top (``options`` key by key).
    Another dataset than the run's takes none of the run's options or folder. A checkpoint that
    records no options (older ones) gets none: the dataset's defaults. ``default``: the dataset
    where the checkpoint names none (else a one-line :class:`ConfigError`). The options are
    checked against the dataset here.

    >>> saved = checkpoint_settings({"config": {"dataset": "cifar10-dvs",
    ...                                         "data_options": {"resize": 48}}})
    >>> run_data(saved, options={"cache_dir": "/tmp/c"}).options
    {'resize': 48, 'cache_dir': '/tmp/c'}
    >>> run_data(saved, dataset="cifar10").options
    {}
    """
    from multispike import data

    saved_name = saved.get("dataset")
    name = dataset or saved_name or default
    if name is None:
        raise ConfigError("the checkpoint does not record its dataset; give --dataset")
    same = name == saved_name
    opts = {**((saved.get("data_options") or {}) if same else {}), **(options or {})}
    data.get_spec(name, **opts)  # an option the dataset does not know: one line
    given = tuple(flag for flag, value in (("--dataset", dataset if not same else None),
                                           ("--data-dir", data_dir), ("--data-option", options))
                  if value)
    return RunData(name, data_dir or (saved.get("data_dir") if same else None), opts, given)


def checkpoint_input_shape(ckpt: dict[str, Any], model: nn.Module) -> tuple[int, ...]:
    """``(C, H, W)`` of the data the run that wrote ``ckpt`` trained on: its dataset with its
    dataset options; where the checkpoint names no dataset, the model's own
    ``(in_channels, *input_size)`` (a ResNet's ``input_size`` is only the paper's size: it
    pools globally and trains on any).

    >>> from multispike.models import create
    >>> ckpt = {"config": {"dataset": "cifar10-dvs", "data_options": {"resize": 48}}}
    >>> checkpoint_input_shape(ckpt, create("resnet20m", in_channels=2))
    (2, 48, 48)
    """
    from multispike import data

    saved = checkpoint_settings(ckpt)
    if saved["dataset"] in data.DATASETS:
        try:
            return tuple(data.get_spec(saved["dataset"], **saved["data_options"]).input_shape)
        except ConfigError:  # options of another multispike version: the model's own
            pass
    return (int(model.in_channels), *(int(s) for s in model.input_size))
