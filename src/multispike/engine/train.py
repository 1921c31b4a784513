"""Training as a few plain functions: load data, build the model, train one epoch, evaluate, main.

:func:`train_model` runs a :class:`~multispike.engine.config.TrainConfig`: SGD with momentum,
no weight decay on 1-D parameters (BN, PLIF ``w``, amplitudes, biases), cross-entropy on the
mean output over T, mixed precision where the device supports it, a progress bar, metrics in
``metrics.csv``, ``last.pt`` every epoch and ``best.pt`` on improvement (atomic writes).

Exact resume: every epoch starts by seeding all generators from ``(seed, epoch)`` and the
shuffling order comes from the same pair, so an epoch depends only on the weights and
optimizer state at its start. A run killed at any moment and resumed from ``last.pt`` (written
at the end of each epoch) ends with the same weights, bit for bit on CPU, as one never stopped.

``cfg.compile`` runs the forward and backward through ``torch.compile``; the plain module
stays the one whose ``state_dict`` goes into the checkpoints, so they do not change.

The host waits for the device only at a read (:class:`StepTally`): the loss, the correct count
and the neuron layers' NaN/inf flags of every step stay on the device and are read in one
transfer every :data:`READ_EVERY` steps and at the end of the epoch, never between a forward and
its backward. ``cfg.cuda_graphs`` captures the whole step (forward, backward, optimizer) in one
CUDA graph and replays it (:class:`CUDAGraphStep`).

A CPU run chooses its thread count at the start for the cores other processes leave free
(:mod:`multispike.engine.threads`; ``MULTISPIKE_THREADS`` or ``OMP_NUM_THREADS`` fix it), records
it in the checkpoints, and a resumed run takes the recorded count, so that it stays bit for bit
the run never stopped. Under torchrun the test set is sharded across the ranks without padding
and the sums are all-reduced: every rank gets the accuracy of the whole test set.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from multispike.checks import plain
from multispike.engine import distributed as dist_utils
from multispike.engine import threads
from multispike.engine.allocator import tune_cpu_allocator
from multispike.engine.checkpoint import (
    build_for_dataset,
    build_model,
    check_input_fits,
    create_args,
    load_checkpoint,
    load_model,
    load_state,
    save_checkpoint,
)
from multispike.engine.config import TrainConfig, differing_settings
from multispike.engine.device import (
    amp_mode,
    autocast_for,
    check_memory,
    compile_model,
    device_label,
    pick_device,
)
from multispike.engine.evaluate import (
    evaluate,
    flagged_layers,
    flags_set,
    plain_module,
    to_model_input,
)
from multispike.engine.runlock import run_lock
from multispike.errors import CheckpointError, ConfigError, DataError, MultispikeError
from multispike.neurons import compact_spikes, raise_on_nonfinite


class TrainingDiverged(MultispikeError):
    """The loss became NaN or infinite."""


@dataclass
class DataBundle:
    """The datasets of one run and the per-batch transforms applied on the device."""

    spec: Any
    train: torch.utils.data.Dataset
    test: torch.utils.data.Dataset
    train_transform: nn.Module | None
    test_transform: nn.Module | None
    #: held-out part of the training set (``--val-split``), without augmentation; else None
    val: torch.utils.data.Dataset | None = None


# -- set-up ----------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: a function of the run's seed and the epoch alone."""
    return (seed * 1_000_003 + epoch * 7919 + 1) % 2**63


def check_cuda_graphs(cfg: TrainConfig, device: torch.device, distributed: bool) -> None:
    """Refuse (one :class:`ConfigError` line) ``cfg.cuda_graphs`` where the whole training step
    cannot be captured: off CUDA, under torchrun, with fp16 loss scaling (its skipped steps
    are decided on the host) or with ``--compile reduce-overhead`` (CUDA graphs of its own)."""
    if not cfg.cuda_graphs:
        return
    if device.type != "cuda":
        raise ConfigError(
            f"--cuda-graphs needs a CUDA device, but this run trains on {device}; drop "
            "--cuda-graphs, or give --device cuda on a machine with a CUDA GPU")
    if distributed:
        raise ConfigError("--cuda-graphs captures the step of one process; drop it under "
                          "torchrun")
    if cfg.compile == "reduce-overhead":
        raise ConfigError("--compile reduce-overhead captures CUDA graphs of its own (forward "
                          "and backward); --cuda-graphs captures the whole step: give one")
    if amp_mode(cfg, device) == "fp16":
        raise ConfigError("--cuda-graphs cannot capture fp16 loss scaling (it decides on the "
                          "host whether to skip a step); give --amp bf16 or --amp off")


def load_data(cfg: TrainConfig, spec: Any) -> DataBundle:
    """The train and test datasets of ``cfg.dataset`` and their device-side transforms."""
    from multispike import data

    common = dict(data_dir=cfg.data_dir, download=cfg.download,
                  **data.with_progress(cfg.dataset, cfg.data_options, cfg.progress))
    if spec.is_event:
        common["timesteps"] = cfg.timesteps
    train = data.build(cfg.dataset, train=True, augment=cfg.augment, **common)
    test = data.build(cfg.dataset, train=False, **common)
    for split, ds in (("training", train), ("test", test)):
        if len(ds) == 0:
            where = cfg.data_dir or "its default folder"
            raise DataError(f"the {split} split of {cfg.dataset} in {where} holds no sample: "
                            "check --data-dir")
    val = None
    if cfg.val_split > 0:
        # a fixed draw per seed; the held-out images are read without augmentation
        n = len(train)
        k = max(1, round(n * cfg.val_split))
        if k >= n:
            raise ConfigError(f"--val-split {cfg.val_split} leaves no training image of {n}")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 7)).tolist()
        plain = data.build(cfg.dataset, train=True, augment="none", **common)
        val = torch.utils.data.Subset(plain, sorted(order[:k]))
        train = torch.utils.data.Subset(train, sorted(order[k:]))
    return DataBundle(
        spec,
        train,
        test,
        data.batch_transform(cfg.dataset, train=True, augment=cfg.augment),
        data.batch_transform(cfg.dataset, train=False),
        val,
    )


def model_args_for(cfg: TrainConfig, spec: Any) -> dict[str, Any]:
    """The :func:`multispike.models.create` arguments of a run
    (:func:`~multispike.engine.checkpoint.create_args` of its settings)."""
    return create_args(spec, model=cfg.model, timesteps=cfg.timesteps, firing=cfg.firing,
                       neuron=cfg.neuron, options=cfg.model_options)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only; none on BN, PLIF ``w``, amplitudes, biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    """Per-epoch learning-rate schedule: cosine to 0, step (×gamma at milestones) or constant."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.milestones, gamma=cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


# -- one epoch -----------------------------------------------------------------------------------
#: steps between two reads of the running loss and accuracy and of the NaN/inf checks: the
#: training loop's only host reads, with one more at the end of each epoch
READ_EVERY = 20


class TrainStep:
    """One training step: forward (under ``autocast`` and :func:`compact_spikes`), cross-entropy
    of the mean output over T, backward, optimizer step.

    ``step(x, y)`` takes a batch ``x`` ``[B, ...]`` (after the device transform) and its labels
    ``y`` ``[B]`` and returns ``[3]`` float32 on the device: the loss, the number of correct
    predictions and the number of neuron layers whose NaN/inf flag is set. It reads nothing on
    the host (so it can be captured in a CUDA graph, :class:`CUDAGraphStep`), except fp16 loss
    scaling's own check (``scaler``).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, spec: Any,
                 autocast: Any = contextlib.nullcontext,
                 scaler: torch.amp.GradScaler | None = None,
                 label_smoothing: float = 0.0) -> None:
        self.model, self.optimizer, self.spec = model, optimizer, spec
        self.autocast, self.scaler = autocast, scaler
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.neurons = flagged_layers(model)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        # compact_spikes: layers after fused neurons save their spike input as int8 for the
        # backward (bit-identical gradients, a quarter of that memory)
        with self.autocast(), compact_spikes():
            out = self.model(to_model_input(x, self.spec))  # [T, B, classes]
            logits = out.float().mean(0)  # [B, classes]: the prediction is the mean over T
            loss = self.criterion(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        correct = (logits.detach().argmax(1) == y).sum()
        return torch.stack([loss.detach(), correct.float(), flags_set(self.neurons, y.device)])


class CUDAGraphStep:
    """A :class:`TrainStep` captured whole (forward, backward and optimizer step) in one CUDA
    graph and replayed: one launch per step instead of one per kernel.

    A graph holds its batch shape and the learning rates as constants and reads the batch from
    tensors of its own. A batch of another shape or rates (the last, smaller batch of an epoch;
    the schedule's new rate) runs eagerly on a side stream; after ``warmup`` such steps in a row
    (PyTorch's warm-up before a capture) the next one is captured, replacing the graph. Every
    call, eager or replayed, is one real step of training; dropout draws new masks at each
    replay. The returned ``[3]`` tensor (see :class:`TrainStep`) is the graph's own output:
    the next replay overwrites it, so copy it first. ``captures`` and ``replays`` count.
    """

    def __init__(self, step: TrainStep, warmup: int = 3) -> None:
        self.step, self.warmup = step, warmup
        self.graph: Any = None
        self.key: tuple | None = None  # what the graph was captured for
        self.inputs: tuple[Tensor, Tensor] | None = None  # the batch the graph reads
        self.out: Tensor | None = None
        self.pending: tuple | None = None  # the key of the eager steps in a row, and their count
        self.warm = 0
        self.side: Any = None
        self.captures = self.replays = 0

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        key = (tuple(x.shape), x.dtype, tuple(y.shape), y.dtype,
               tuple(g["lr"] for g in self.step.optimizer.param_groups))
        if key == self.key:
            self.inputs[0].copy_(x)
            self.inputs[1].copy_(y)
        elif key == self.pending and self.warm >= self.warmup:
            self._capture(x, y, key)
        else:
            self.warm = self.warm + 1 if key == self.pending else 1
            self.pending = key
            return self._eager(x, y)
        self.graph.replay()
        self.replays += 1
        return self.out

    def _eager(self, x: Tensor, y: Tensor) -> Tensor:
        """One eager step on a side stream (PyTorch's advice for the steps before a capture)."""
        if self.side is None:
            self.side = torch.cuda.Stream(device=x.device)
        self.side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(self.side):
            out = self.step(x, y)
        torch.cuda.current_stream(x.device).wait_stream(self.side)
        return out

    def _capture(self, x: Tensor, y: Tensor, key: tuple) -> None:
        """Capture the step, reading a copy of ``(x, y)``; the caller replays it for this batch."""
        self.graph = self.inputs = self.out = None  # the old graph's memory goes first
        self.step.optimizer.zero_grad(set_to_none=True)  # the graph allocates the gradients
        inputs = (x.clone(), y.clone())
        graph = torch.cuda.CUDAGraph()
        # thread_local: the data loader's pin-memory thread may call CUDA during the capture
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = self.step(*inputs)
        self.graph, self.inputs, self.out, self.key = graph, inputs, out, key
        self.pending, self.warm = None, 0
        self.captures += 1


class StepTally:
    """The ``[loss, correct, flags]`` rows of the last steps (see :class:`TrainStep`), kept on
    the device, read on the host in one transfer by :meth:`read`.

    A read checks the steps in order, as the training loop once did after each forward: a
    non-finite loss raises :class:`TrainingDiverged` naming the epoch and step (``kept`` says
    what that leaves on disk), a set flag the :class:`~multispike.errors.InputError` of
    :func:`multispike.neurons.raise_on_nonfinite` naming the layers; then the step's loss and
    correct count join the running sums ``loss_sum``, ``correct`` over ``seen`` images.
    """

    def __init__(self, model: nn.Module, device: torch.device, *, epoch: int,
                 every: int = READ_EVERY, kept: str | None = None) -> None:
        self.plain, self.epoch, self.kept = plain_module(model), epoch, kept
        self.rows = torch.zeros(every, 3, device=device)  # [every, (loss, correct, flags)]
        self.sizes: list[int] = []  # images of each pending row
        self.steps = self.seen = self.correct = 0
        self.loss_sum = 0.0

    def add(self, row: Tensor, n: int) -> bool:
        """Keep step ``row`` ``[3]`` of ``n`` images; True when the tally is full: read it."""
        self.rows[len(self.sizes)].copy_(row)
        self.sizes.append(n)
        return len(self.sizes) == self.rows.shape[0]

    def read(self) -> None:
        """Read the pending rows (one host transfer), check them and add them to the sums."""
        if not self.sizes:
            return
        rows = self.rows[: len(self.sizes)].tolist()
        for (loss, correct, flags), n in zip(rows, self.sizes, strict=True):
            self.steps += 1
            if not math.isfinite(loss):
                where = f"loss became {loss} at epoch {self.epoch + 1}, step {self.steps}"
                raise TrainingDiverged(
                    f"{where}; {self.kept}: lower --lr or check the data" if self.kept
                    else f"{where}: lower --lr or check the data")
            if flags:
                raise_on_nonfinite(self.plain)
            self.loss_sum += loss * n
            self.correct += int(correct)
            self.seen += n
        self.sizes.clear()


def train_one_epoch(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    spec: Any,
    transform: nn.Module | None,
    device: torch.device,
    epoch: int,
    autocast: Any = contextlib.nullcontext,
    scaler: torch.amp.GradScaler | None = None,
    label_smoothing: float = 0.0,
    progress: bool = True,
    step: Any = None,
    kept: str | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss, accuracy and images per second.

    ``step``: what runs each batch, a :class:`TrainStep` or :class:`CUDAGraphStep` of ``model``
    and ``optimizer``; by default an eager :class:`TrainStep` with ``autocast``, ``scaler`` and
    ``label_smoothing``. The host reads the device every :data:`READ_EVERY` steps and at the
    end (:class:`StepTally`, which raises on a non-finite loss or a NaN/inf flag; ``kept``: what
    a divergence leaves on disk, for its message); the progress bar's numbers change there.
    """
    from tqdm.auto import tqdm

    model.train()
    if step is None:
        step = TrainStep(model, optimizer, spec=spec, autocast=autocast, scaler=scaler,
                         label_smoothing=label_smoothing)
    tally = StepTally(model, device, epoch=epoch, kept=kept)
    start = time.perf_counter()
    # off a terminal tqdm turns itself off (no \r updates in logs); the epoch lines remain
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=None if progress else True,
               dynamic_ncols=True)
    for x, y in bar:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if transform is not None:
            x = transform(x)
        if tally.add(step(x, y), y.shape[0]):
            tally.read()
            _show(bar, tally, start)
    tally.read()
    elapsed = time.perf_counter() - start
    return {"loss": tally.loss_sum / max(tally.seen, 1),
            "accuracy": tally.correct / max(tally.seen, 1),
            "images_per_s": tally.seen / max(elapsed, 1e-9)}


def _show(bar: Any, tally: StepTally, start: float) -> None:
    """The progress bar's running loss, accuracy and images per second."""
    seen = max(tally.seen, 1)
    rate = tally.seen / max(time.perf_counter() - start, 1e-9)
    bar.set_postfix(loss=f"{tally.loss_sum / seen:.3f}", acc=f"{tally.correct / seen:.3f}",
                    img_s=f"{rate:.0f}")


# -- main ----------------------------------------------------------------------------------------
def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)


def _tensorboard(out: Path | None):
    if out is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: CSV only
        return None
    return SummaryWriter(str(out / "tb"))


def train_model(cfg: TrainConfig, *, on_epoch: Any = None,
                on_start: Any = None) -> dict[str, Any]:
    """Run one training: returns ``model``, ``best_accuracy``, ``final_accuracy``, ``history``,
    ``rank``, ``threads`` and ``device`` (where it trained: ``"cpu"``, ``"cuda:0"``, …).

    With ``cfg.out`` set, writes ``last.pt``, ``best.pt``, ``metrics.csv`` and ``config.json``
    there. Under ``torchrun`` (``WORLD_SIZE`` > 1) trains with DistributedDataParallel; rank 0
    alone logs and writes, and the test accuracies (all-reduced) are the same on every rank:
    ``rank`` says which process returns (print only where it is 0). ``threads``: PyTorch's
    thread count during a CPU run (``None`` on a GPU); the count before the run is restored.
    ``on_epoch``: called on rank 0 with each epoch's metrics row (progress for callers).
    ``on_start``: called on rank 0 before the first epoch with ``threads`` and ``device``.
    """
    cfg.validate()
    ctx = dist_utils.setup(cfg.device)
    device = ctx.device if ctx.enabled else pick_device(cfg.device)
    check_cuda_graphs(cfg, device, ctx.enabled)
    if device.type == "cpu":
        tune_cpu_allocator()  # freed activations are reused, not page-faulted in every step
    out = Path(cfg.out) if cfg.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; choose a folder for the run")
    # one training per folder: a second one fails at once, naming the process that holds it
    lock = run_lock(out) if out is not None and ctx.rank == 0 else contextlib.nullcontext()
    with lock, threads.restored():
        return _train(cfg, ctx, device, out, on_epoch, on_start)


def resolved(cfg: TrainConfig, model: nn.Module, spec: Any) -> TrainConfig:
    """``cfg`` with the defaults it left to the dataset and model filled in (what the run
    really used: this is what ``config.json`` and the checkpoints record)."""
    args = getattr(model, "model_args", {})
    return dataclasses.replace(
        cfg,
        # absolute: eval, energy, ... read it from the checkpoint, run from any folder
        data_dir=str(Path(cfg.data_dir).expanduser().resolve()) if cfg.data_dir else None,
        model=cfg.model or args.get("name"),
        neuron=cfg.neuron or args.get("neuron"),
        firing=cfg.firing or args.get("firing"),
        augment=cfg.augment or getattr(spec, "default_augment", None),
    )


def check_class_count(dataset: Any, head: int, name: str, *, warn: bool = True) -> None:
    """Say (one warning line) when the class folders found are fewer than the classes of the
    model's head (an ImageNet recipe on a 3-class folder trains a 1000-class head); refuse
    (:class:`ConfigError`) when there are more: their labels cannot fit."""
    while not hasattr(dataset, "classes") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset  # e.g. a Subset of --val-split
    classes = getattr(dataset, "classes", None)
    if not classes or len(classes) == head:
        return
    found = len(classes)
    if found > head:
        raise ConfigError(f"dataset {name} has {found} classes but the model's head has {head} "
                          f"outputs: labels from {head} on cannot be learned; check the data "
                          "folder (one sub-folder per class)")
    if warn:
        warnings.warn(f"dataset {name} has {found} classes but the model's head has {head} "
                      f"outputs ({head - found} are never a label): the data folder holds a "
                      "subset, or the wrong folder", UserWarning, stacklevel=2)


def check_resumable(cfg: TrainConfig, ckpt: dict[str, Any], where: Path) -> None:
    """Refuse (one line) to resume ``ckpt`` with settings that would change what it computes.

    ``epochs`` may differ: fewer than already trained is refused; more extends a ``step`` or
    ``constant`` schedule (which go on at their last rate) but not a ``cosine`` one, whose rate
    has reached 0 at the planned end.
    """
    saved = ckpt.get("config") or {}
    bad = differing_settings(saved, {k: v for k, v in cfg.to_dict().items()})
    if bad:
        raise ConfigError(
            f"a resumed run keeps its settings, but {bad[0]}; drop the flag, or start a new "
            f"run in another --out than {where}"
        )
    planned, done = saved.get("epochs"), int(ckpt.get("epoch", 0))
    if planned is None or cfg.epochs == planned:
        return
    if cfg.epochs < done:
        raise ConfigError(
            f"the run in {where} has already trained {done} epochs; --epochs {cfg.epochs} is "
            "fewer: give at least that many"
        )
    if cfg.epochs > planned and cfg.schedule == "cosine":
        raise ConfigError(
            f"the run in {where} was planned for {planned} epochs with a cosine schedule, whose "
            f"learning rate reaches 0 at epoch {planned}; it cannot be extended to "
            f"{cfg.epochs}: start a new run (another --out) with --epochs {cfg.epochs}"
        )


def init_checkpoint(path: str | Path) -> Path:
    """The checkpoint file ``--init`` names: the file itself, or in a folder ``model.pt``
    (what ``multispike import`` writes), else ``best.pt``, else ``last.pt``."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in ("model.pt", "best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"--init {p}: the folder holds no model.pt, best.pt or last.pt; "
                              "give a checkpoint file")
    return p


def init_timesteps(path: str | Path) -> int | None:
    """The T the ``--init`` checkpoint's model runs at (None: the run's default)."""
    return load_checkpoint(init_checkpoint(path))["model_args"].get("timesteps")


def check_run(cfg: TrainConfig) -> None:
    """Refuse (one line each), before anything is trained or written: a device multispike
    cannot run on, SyncBatchNorm off CUDA GPUs, and a run whose one batch cannot fit in the
    device's memory (a model is built to measure it only when T × batch >= 4096)."""
    device = pick_device(cfg.device)
    if cfg.sync_bn and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 \
            and device.type != "cuda":
        raise ConfigError("SyncBatchNorm works only on CUDA GPUs, and this torchrun job "
                          "runs on the CPU; drop --sync-bn (--no-sync-bn over a recipe's "
                          "sync_bn = true): each process then normalises its own batch")
    if cfg.timesteps * cfg.batch_size < 4096:  # cheap runs: no model to build twice
        return
    from multispike import data

    spec = data.get_spec(cfg.dataset, **cfg.data_options)
    model, _ = build_for_dataset(model_args_for(cfg, spec), spec, cfg.model_options)
    check_memory(model, spec.input_shape, cfg.timesteps, cfg.batch_size, device,
                 training=True)


def initial_model(cfg: TrainConfig, spec: Any, resumed: Path | None = None
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a run that starts from ``cfg.init`` (fine-tuning): the checkpoint's model
    and weights at ``cfg.timesteps`` (a resumed run: the model ``resumed``, its last.pt,
    describes; its weights are loaded with the rest of the run). Refuses (one line) a model
    the dataset's input or classes do not fit."""
    if resumed is not None:
        model_args = load_checkpoint(resumed)["model_args"]
        return build_model(model_args), model_args
    model, _ = load_model(init_checkpoint(cfg.init))
    check_input_fits(model, spec, ("--init",))
    shape = getattr(model, "input_shape", None)  # an imported graph's input
    if shape is not None and tuple(map(int, shape)) != tuple(spec.input_shape):
        raise ConfigError(f"--init {cfg.init}: its model takes {'x'.join(map(str, shape))} "
                          f"input and dataset {spec.name} gives "
                          f"{'x'.join(map(str, spec.input_shape))}; give the dataset it was "
                          "made for (--dataset, --data-option)")
    classes = getattr(model, "num_classes", None)
    if classes is not None and int(classes) != spec.num_classes:
        raise ConfigError(f"--init {cfg.init}: its model has {classes} outputs and dataset "
                          f"{spec.name} {spec.num_classes} classes; give the dataset it was "
                          "trained for (--dataset)")
    model.timesteps = cfg.timesteps
    model_args = {**model.model_args, "timesteps": int(cfg.timesteps)}
    model.model_args = model_args
    return model, model_args


def _bar(loader: Any, desc: str, shown: bool) -> Any:
    """``loader`` with a progress bar on a terminal (tqdm; off a terminal, and with ``shown``
    False, none: logs keep one line per epoch)."""
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, leave=False, disable=None if shown else True,
                dynamic_ncols=True, file=sys.stderr)


def _skip_reports(bundle: DataBundle) -> list[str]:
    """The lines of datasets that skipped undecodable files (ImageNet's ``skip_bad``), for
    the end of an epoch."""
    lines = []
    for ds in (bundle.train, bundle.test, bundle.val):
        report = getattr(getattr(ds, "dataset", ds), "skip_report", None)  # a Subset's too
        if report is not None and (line := report()):
            lines.append(line)
    return lines


@dataclass
class _Run:
    """What one training run holds between its plain steps (:func:`_train` calls them in
    order): the model and its description, the resolved settings, data, optimiser, schedule,
    precision, and the progress so far."""

    cfg: TrainConfig
    model: nn.Module
    model_args: dict[str, Any]
    bundle: DataBundle
    optimizer: torch.optim.Optimizer
    scheduler: Any
    autocast: Any
    scaler: Any
    start_epoch: int = 0
    best: float = -1.0
    best_val: float = -1.0  # with --val-split: the best held-out accuracy so far
    history: list[dict[str, Any]] = field(default_factory=list)
    saved_threads: int | None = None  # a resumed run's thread count


def _check_out(cfg: TrainConfig, out: Path | None) -> Path | None:
    """``out/last.pt`` (None without ``out``), after refusing a new run into a folder that
    holds one and a resume of nothing."""
    last_path = out / "last.pt" if out else None
    if out and not cfg.resume and (last_path.exists() or (out / "best.pt").exists()):
        raise ConfigError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    if cfg.resume and (last_path is None or not last_path.exists()):
        raise CheckpointError(f"nothing to resume: {last_path or '--out'} does not exist")
    return last_path


def _build_run(cfg: TrainConfig, ctx: Any, device: torch.device, last_path: Path | None
               ) -> _Run:
    """The model (an unknown one fails before data loads; input channels and size are the
    dataset's), the data, the optimiser, the schedule and the precision of a run."""
    from multispike import data

    spec = data.get_spec(cfg.dataset, **cfg.data_options)
    seed_everything(cfg.seed)
    if cfg.init is not None:
        model, model_args = initial_model(cfg, spec, last_path if cfg.resume else None)
    else:
        model, model_args = build_for_dataset(model_args_for(cfg, spec), spec,
                                              cfg.model_options)
    model = model.to(device)
    cfg = resolved(cfg, model, spec)
    bundle = load_data(cfg, spec)
    check_class_count(bundle.train, model_args["num_classes"], cfg.dataset, warn=ctx.rank == 0)
    if ctx.enabled and cfg.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                momentum=cfg.momentum)
    scheduler = build_scheduler(cfg, optimizer)
    autocast, amp_dtype = autocast_for(cfg, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    return _Run(cfg, model, model_args, bundle, optimizer, scheduler, autocast, scaler)


def _resume(run: _Run, last_path: Path, out: Path | None, main: bool) -> None:
    """Load ``last.pt`` into the run: weights, optimiser, schedule, progress (bit-identical
    continuation), after checking that it is this run's."""
    cfg = run.cfg
    try:
        ckpt = load_checkpoint(last_path)
    except CheckpointError as e:
        raise CheckpointError(
            f"{str(e).rsplit('; ', 1)[0]}; --resume continues only from last.pt, so the "
            f"run in {out} cannot be resumed: start a new run in another --out") from None
    saved_args = ckpt["model_args"]
    if saved_args != run.model_args and \
            build_model(saved_args).model_args != run.model.model_args:
        raise CheckpointError(
            f"checkpoint {last_path} is of another model ({saved_args['name']}, "
            f"{saved_args}); resume with the options it was trained with"
        )
    check_resumable(cfg, ckpt, out)
    if cfg.epochs != ckpt["config"].get("epochs", cfg.epochs) and main:
        print(f"extending the run in {out} from {ckpt['config']['epochs']} to {cfg.epochs} "
              f"epochs: the {cfg.schedule} schedule goes on from epoch {ckpt['epoch']} "
              f"at learning rate {ckpt['optimizer']['param_groups'][0]['lr']:g}", flush=True)
    load_state(run.model, ckpt["model"], str(last_path))
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.start_epoch, run.best = ckpt["epoch"], ckpt["best_accuracy"]
    run.history = list(ckpt["history"])
    run.best_val = ckpt.get("best_val_accuracy", -1.0)
    run.saved_threads = ckpt.get("threads")


def _networks(run: _Run, ctx: Any, device: torch.device) -> tuple[Any, Any, Any]:
    """``(net, eval_net, step)``: the module that trains (DDP under torchrun, compiled if
    asked), the one that evaluates, and the training step (captured in a CUDA graph if
    asked). ``run.model`` stays uncompiled for checkpoints."""
    cfg = run.cfg
    net = run.model
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[device.index] if device.type == "cuda" else None)
    # compile the DDP module, as PyTorch advises (its DDPOptimizer splits the graph at the
    # gradient buckets so that communication still overlaps the backward); evaluation runs the
    # plain module, compiled on its own under DDP
    net = compile_model(net, cfg.compile, device)
    eval_net = compile_model(run.model, cfg.compile, device) if ctx.enabled else net
    step: Any = TrainStep(net, run.optimizer, spec=run.bundle.spec, autocast=run.autocast,
                          scaler=run.scaler, label_smoothing=cfg.label_smoothing)
    if cfg.cuda_graphs:
        step = CUDAGraphStep(step)
    return net, eval_net, step


def _eval_loaders(run: _Run, ctx: Any, device: torch.device) -> tuple[Any, Any]:
    """The test and (with --val-split) validation loaders; under torchrun each rank reads
    its shard (no image twice, none left out)."""
    from multispike import data

    def loader(ds: Any) -> Any:
        shard = dist_utils.ShardSampler(len(ds), ctx.world_size, ctx.rank) \
            if ctx.enabled else None
        return data.make_loader(ds, run.cfg.batch_size, shuffle=False, sampler=shard,
                                num_workers=run.cfg.num_workers,
                                pin_memory=device.type == "cuda")

    val = run.bundle.val
    return loader(run.bundle.test), None if val is None else loader(val)


def _train_loader(run: _Run, ctx: Any, device: torch.device, epoch: int) -> Any:
    """This epoch's training batches, in the epoch's seeded order (a shard per rank)."""
    from multispike import data

    cfg, train = run.cfg, run.bundle.train
    if ctx.enabled:
        sampler = torch.utils.data.DistributedSampler(
            train, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed)
        sampler.set_epoch(epoch)
    else:
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        sampler = torch.utils.data.RandomSampler(train, generator=gen)
    return data.make_loader(train, cfg.batch_size, shuffle=False, sampler=sampler,
                            num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                            drop_last=False)


def _epoch(run: _Run, nets: tuple[Any, Any, Any], loaders: tuple[Any, Any], ctx: Any,
           device: torch.device, epoch: int, last_path: Path | None) -> tuple[dict, bool]:
    """Train one epoch and evaluate: the epoch's metrics row, and whether it is the best."""
    cfg, bundle = run.cfg, run.bundle
    net, eval_net, step = nets
    test_loader, val_loader = loaders
    main = ctx.rank == 0
    seed_everything(epoch_seed(cfg.seed, epoch))
    stats = train_one_epoch(
        net, _train_loader(run, ctx, device, epoch), run.optimizer, spec=bundle.spec,
        transform=bundle.train_transform, device=device, epoch=epoch,
        progress=cfg.progress and main, step=step, kept=_kept(last_path, epoch))
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    dist_utils.broadcast_buffers(run.model, ctx)  # every rank evaluates rank 0's checkpoint
    shown = cfg.progress and main

    def score(loader: Any, desc: str) -> dict:
        return evaluate(eval_net, _bar(loader, desc, shown), spec=bundle.spec,
                        transform=bundle.test_transform, device=device,
                        autocast=run.autocast, all_reduce=ctx.enabled)

    test = score(test_loader, "test")
    row = {"epoch": epoch + 1, "lr": lr, "train_loss": stats["loss"],
           "train_accuracy": stats["accuracy"], "test_loss": test["loss"],
           "test_accuracy": test["accuracy"], "images_per_s": stats["images_per_s"]}
    if val_loader is not None:
        # the best epoch is chosen on held-out training images; `best` is then the test
        # accuracy of that epoch, not the best test accuracy
        val = score(val_loader, "validation")
        row["val_loss"], row["val_accuracy"] = val["loss"], val["accuracy"]
        improved = val["accuracy"] > run.best_val
        if improved:
            run.best_val, run.best = val["accuracy"], test["accuracy"]
    else:
        improved = test["accuracy"] > run.best
        run.best = max(run.best, test["accuracy"])
    run.history.append(row)
    return row, improved


def _record(run: _Run, row: dict, improved: bool, out: Path | None, last_path: Path | None,
            writer: Any, n_threads: int | None) -> None:
    """Rank 0's report of an epoch: skipped files, the epoch line, TensorBoard, and the
    checkpoints (``best.pt`` when improved, ``last.pt``) and metrics.csv."""
    cfg = run.cfg
    for line in _skip_reports(run.bundle):
        print(line, file=sys.stderr, flush=True)
    if cfg.progress:
        held = f"val {row['val_accuracy']:.4f}  " if "val_accuracy" in row else ""
        print(f"epoch {row['epoch']}/{cfg.epochs}  loss {row['train_loss']:.4f}  "
              f"train {row['train_accuracy']:.4f}  {held}test {row['test_accuracy']:.4f}  "
              f"best {run.best:.4f}  {row['images_per_s']:.0f} img/s", flush=True)
    if writer is not None:
        for key, value in row.items():
            if key != "epoch":
                writer.add_scalar(key, value, row["epoch"])
    if out:
        payload = {
            "model_args": run.model_args, "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "epoch": row["epoch"], "best_accuracy": run.best, "history": run.history,
            "config": plain(cfg.to_dict(), keep_inf=True), "threads": n_threads,
            "best_val_accuracy": run.best_val,
        }
        if improved:
            save_checkpoint(out / "best.pt", payload)
        save_checkpoint(last_path, payload)
        _write_metrics(out / "metrics.csv", run.history)


def _train(cfg: TrainConfig, ctx: Any, device: torch.device, out: Path | None,
           on_epoch: Any = None, on_start: Any = None) -> dict:
    """One run, as a few plain steps: check the folder, build, resume, set up the networks
    and loaders, then train, evaluate and record each epoch."""
    main = ctx.rank == 0
    last_path = _check_out(cfg, out)
    run = _build_run(cfg, ctx, device, last_path)
    if cfg.resume:
        _resume(run, last_path, out, main)
    cfg = run.cfg
    n_threads = _configure_threads(cfg, ctx, device, run.saved_threads)
    nets = _networks(run, ctx, device)
    loaders = _eval_loaders(run, ctx, device)
    if out and main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(
            {**cfg.to_dict(), "model_args": run.model_args, "world_size": ctx.world_size,
             "threads": n_threads}, indent=2))
    writer = _tensorboard(out) if main else None
    if on_start is not None and main:
        on_start({"threads": n_threads, "device": device_label(device)})
    for epoch in range(run.start_epoch, cfg.epochs):
        row, improved = _epoch(run, nets, loaders, ctx, device, epoch, last_path)
        if on_epoch is not None and main:
            on_epoch(row)
        if main:
            _record(run, row, improved, out, last_path, writer, n_threads)
    if writer is not None:
        writer.close()
    if out and main and run.history:
        _write_curves(out / "curves.png", run.history)
    dist_utils.cleanup(ctx)
    final = run.history[-1]["test_accuracy"] if run.history else float("nan")
    return {"model": run.model, "best_accuracy": run.best, "final_accuracy": final,
            "history": run.history, "model_args": run.model_args,
            "out": str(out) if out else None, "rank": ctx.rank, "threads": n_threads,
            "device": device_label(device)}


def _write_curves(path: Path, history: list[dict[str, Any]]) -> Path | None:
    """``curves.png``: the metrics.csv columns against the epoch (skipped without
    matplotlib)."""
    try:
        from multispike.analysis.figures import plot_training_curves
    except ImportError:
        return None
    keys = ("train_loss", "test_loss", "val_loss", "train_accuracy", "test_accuracy",
            "val_accuracy", "lr")
    curves = {k: [row[k] for row in history] for k in keys if all(k in r for r in history)}
    return plot_training_curves([row["epoch"] for row in history], curves, path,
                                title=f"Training curves of {path.parent.name}")


def _kept(last_path: Path | None, epoch: int) -> str:
    """What a run that diverges in ``epoch`` (0-based) leaves on disk, for its message."""
    if last_path is None:
        return "no checkpoint is written without --out"
    if last_path.is_file():  # written at the end of each epoch: it holds `epoch` epochs
        return f"the last good checkpoint {last_path} (epoch {epoch}) is kept"
    return f"no checkpoint exists yet (the first is written at the end of epoch {epoch + 1})"


def _configure_threads(cfg: TrainConfig, ctx: Any, device: torch.device,
                       recorded: int | None) -> int | None:
    """Set PyTorch's thread count for a CPU run (see :mod:`multispike.engine.threads`): an
    override, else ``recorded`` (a resumed run's), else the free cores now, shared by this
    machine's ranks; every rank takes the smallest count. ``None`` on a GPU (left alone)."""
    if device.type != "cpu":
        return None
    choice = threads.choose_for_run(threads.local_processes() if ctx.enabled else 1,
                                    recorded=recorded)
    n = dist_utils.all_reduce_min(choice.threads, device) if ctx.enabled else choice.threads
    threads.apply(dataclasses.replace(choice, threads=n))
    if ctx.rank == 0 and cfg.progress and choice.source == "policy" and n < choice.cores:
        print(f"multispike: other processes keep {choice.busy:.1f} of {choice.cores} cores busy; "
              f"training with {n} thread{'s' if n > 1 else ''} (MULTISPIKE_THREADS=N sets the "
              "count)", file=sys.stderr, flush=True)
    return n
