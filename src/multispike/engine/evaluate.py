"""Evaluation: one pass over a test loader (:func:`evaluate`, also the training loop's test
pass), and one trained model at several numbers of time steps, with firing rates
(:func:`evaluate_model`).

One trained model runs at T = 1, 2, 4, … by setting ``model.timesteps`` (static images are
repeated over T; event datasets are re-integrated into T frames). With ``compile`` the
accuracy comes from ``torch.compile(model)``; firing rates always from the eager model, whose
layers the activity monitor records.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from multispike.checks import positive_int
from multispike.engine import distributed as dist_utils
from multispike.engine import threads
from multispike.engine.allocator import tune_cpu_allocator
from multispike.engine.checkpoint import check_input_fits
from multispike.engine.config import check_compile_mode
from multispike.engine.device import compile_model, pick_device
from multispike.errors import ConfigError
from multispike.neurons import raise_on_nonfinite


# -- one pass over a loader ---------------------------------------------------------------------
def to_model_input(x: Tensor, spec: Any) -> Tensor:
    """Event batches come as ``[B, T, C, H, W]``; models take time first ``[T, B, C, H, W]``."""
    return x.transpose(0, 1) if spec.is_event else x


def plain_module(model: nn.Module) -> nn.Module:
    """The module inside the ``torch.compile`` and DDP wrappers (whose layer names it has)."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def flagged_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` that keep a NaN/inf flag (``nonfinite``): its neuron layers."""
    return [m for m in plain_module(model).modules() if hasattr(m, "nonfinite")]


def flags_set(neurons: list[nn.Module], device: torch.device) -> Tensor:
    """``[]`` float32 on ``device``: how many of ``neurons`` have their NaN/inf flag set.

    A flag is a 0-dim int tensor that a CUDA kernel sets to 1 on NaN/inf input (a layer that has
    none yet, ``None``, has not run on CUDA); counting them reads nothing on the host.
    """
    flags = [f for f in (getattr(m, "nonfinite", None) for m in neurons) if isinstance(f, Tensor)]
    if not flags:
        return torch.zeros((), device=device)
    return (torch.stack(flags) != 0).sum().float()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    *,
    spec: Any,
    transform: nn.Module | None,
    device: torch.device,
    autocast: Any = contextlib.nullcontext,
    all_reduce: bool = False,
) -> dict[str, float]:
    """Mean loss and top-1 accuracy of the mean output over T.

    The sums stay on the device and are read once, at the end, with the neuron layers' NaN/inf
    flags (a set flag raises :func:`multispike.neurons.raise_on_nonfinite`'s ``InputError``).
    ``all_reduce``: under torchrun, each rank's ``loader`` holds its shard of the test set
    (:class:`~multispike.engine.distributed.ShardSampler`); the sums of correct predictions,
    images and loss are added over the ranks, so every rank returns the whole set's figures.
    """
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    neurons = flagged_layers(model)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    right = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if transform is not None:
            x = transform(x)
        with autocast():
            logits = model(to_model_input(x, spec)).float().mean(0)  # [B, classes]
        loss_sum += criterion(logits, y).double()
        right += (logits.argmax(1) == y).sum()
        seen += y.shape[0]
    flags = flags_set(neurons, loss_sum.device).double()
    loss_total, correct, bad = torch.stack([loss_sum, right.double(), flags]).tolist()
    if bad:
        raise_on_nonfinite(plain_module(model))
    if all_reduce:
        correct, seen, loss_total = dist_utils.all_reduce_sums([correct, seen, loss_total],
                                                               device)
    return {"loss": loss_total / max(seen, 1), "accuracy": correct / max(seen, 1)}


# -- one model at several T ---------------------------------------------------------------------
def parse_timesteps(text: str | Sequence[int]) -> list[int]:
    """``"1,2,4"`` → ``[1, 2, 4]``; every T must be an integer >= 1."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = [int(str(t).strip()) for t in items if str(t).strip()]
    except ValueError:
        raise ConfigError(f"timesteps must be integers like 1,2,4; got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"timesteps must be integers >= 1, got {text!r}")
    return values


#: the T that ``multispike eval`` evaluates besides the model's own
EVAL_SWEEP = (1, 2, 4)
#: the evaluation batch when a checkpoint records no training batch size
DEFAULT_EVAL_BATCH = 64


def default_timesteps(trained: int | None) -> list[int]:
    """``eval``'s T without ``--timesteps``: the T the model was trained at first, then
    :data:`EVAL_SWEEP`.

    >>> default_timesteps(10), default_timesteps(2), default_timesteps(None)
    ([10, 1, 2, 4], [2, 1, 4], [1, 2, 4])
    """
    first = [int(trained)] if trained else []
    return first + [t for t in EVAL_SWEEP if t not in first]


def default_batch_size(ckpt: dict[str, Any], trained: int | None,
                       timesteps: Sequence[int]) -> int:
    """``eval``'s batch without ``--batch-size``: the run's training batch size (64 where the
    checkpoint does not record it), smaller in proportion where a T above the trained one is
    evaluated, so that one evaluation batch holds no more samples x steps than a training
    batch did (whose activations, kept for the backward, were larger still).

    >>> default_batch_size({"config": {"batch_size": 128}}, 2, [2, 1, 4])
    64
    >>> default_batch_size({}, None, [1, 2, 4])
    64
    """
    batch = (ckpt.get("config") or {}).get("batch_size")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        batch = DEFAULT_EVAL_BATCH
    most = max(timesteps)
    if trained and most > trained:
        batch = max(1, batch * int(trained) // most)
    return batch


def split_loader(dataset: str, *, data_dir: str | None, batch_size: int, timesteps: int,
                data_options: dict[str, Any] | None = None, progress: bool = True
                ) -> tuple[Any, Any]:
    """The test split of ``dataset`` with ``data_options`` (event data framed into
    ``timesteps`` frames) in ``batch_size`` batches, in order, and its evaluation transform
    (``None`` where there is none); ``progress``: the dataset's own bars (event decoding)."""
    from multispike import data

    opts = data.with_progress(dataset, dict(data_options or {}), progress)
    spec = data.get_spec(dataset, **opts)
    ds = data.build(dataset, data_dir=data_dir, train=False,
                    **({"timesteps": timesteps} if spec.is_event else {}), **opts)
    return (data.make_loader(ds, batch_size, shuffle=False),
            data.batch_transform(dataset, train=False))


def evaluate_model(
    model: nn.Module,
    dataset: str,
    timesteps_list: Sequence[int],
    *,
    data_dir: str | None = None,
    batch_size: int = DEFAULT_EVAL_BATCH,
    device: str = "auto",
    rates: bool = True,
    max_batches_for_rates: int = 4,
    compile: str = "off",
    progress: bool = False,
    data_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Accuracy (and per-layer firing rates) of ``model`` on the test split at each T.

    Returns one row per T: ``timesteps``, ``accuracy``, ``loss``, ``firing_rates`` (layer →
    spikes per neuron per step, −1 and every MT plane counted) and ``mean_firing_rate``, from
    the first ``max_batches_for_rates`` test batches (an ANN twin: none, and 0.0).
    ``compile``: ``off`` or a ``torch.compile`` mode for the accuracy pass (compiled on first
    use at each T); the firing-rate pass runs eagerly. ``progress``: show the batches of each
    pass on stderr (see :class:`Progress`). ``data_options``: the dataset options (those the
    run trained with: :func:`~multispike.engine.checkpoint.run_data`), e.g.
    ``{"resize": 48}`` for cifar10-dvs.
    """
    from multispike import data

    mode = check_compile_mode(compile)
    if rates:
        positive_int("max_batches_for_rates", max_batches_for_rates)
    spec = data.get_spec(dataset, **(data_options or {}))
    check_input_fits(model, spec)
    dev = pick_device(device)
    before = torch.get_num_threads()
    if dev.type == "cpu":
        tune_cpu_allocator()  # freed activations are reused, not page-faulted per batch
        threads.configure()  # the cores other processes leave free (engine/threads.py)
    model = model.to(dev)
    net = compile_model(model, mode, dev)  # shares its weights with `model`
    original_t = model.timesteps
    firing = getattr(model, "model_args", {}).get("firing")
    rows = []
    try:
        for t in timesteps_list:
            model.timesteps = t
            loader, tf = split_loader(dataset, data_dir=data_dir, batch_size=batch_size,
                                     timesteps=t, data_options=data_options,
                                     progress=progress)
            result = evaluate(net, Progress(loader, f"eval T={t}", enabled=progress),
                              spec=spec, transform=tf, device=dev)
            row: dict[str, Any] = {"model": getattr(model, "name", type(model).__name__),
                                   "firing": firing, "timesteps": t, **result}
            if rates:  # eager: statistics recording needs every layer's hooks and steps
                shown = Progress(loader, f"rates T={t}", enabled=progress,
                                 total=min(len(loader), max_batches_for_rates))
                row.update(_rates(model, shown, spec, tf, dev, max_batches_for_rates))
            rows.append(row)
    finally:
        model.timesteps = original_t
        if torch.get_num_threads() != before:  # a library caller keeps its own count
            torch.set_num_threads(before)
    return rows


def _rates(model, loader, spec, transform, device, max_batches) -> dict[str, Any]:
    """The firing-rate columns of an evaluation row, from up to ``max_batches`` batches
    (:func:`multispike.analysis.stats.firing_rates`, the one rate measurement)."""
    from multispike.analysis.stats import firing_rates  # on use: it brings matplotlib

    measured = firing_rates(model, loader, max_batches, transform=transform, device=device,
                            prepare=lambda x: to_model_input(x, spec))
    return {"firing_rates": measured.rates, "mean_firing_rate": measured.mean_rate}


# -- progress --------------------------------------------------------------------------------------
class Progress:
    """``iterable`` with progress on stderr: a tqdm bar on a terminal, a plain line about every
    tenth of the way (and at the end) elsewhere (no carriage returns in logs), nothing when
    ``enabled`` is False. ``total``: items expected (default ``len(iterable)``)."""

    def __init__(self, iterable: Any, desc: str, total: int | None = None,
                 enabled: bool = True) -> None:
        self.iterable, self.desc, self.enabled = iterable, desc, enabled
        if total is None:
            try:
                total = len(iterable)
            except TypeError:
                total = None
        self.total = total

    def __len__(self) -> int:
        return len(self.iterable)

    def __iter__(self):
        import sys
        import time

        if not self.enabled:
            yield from self.iterable
            return
        stream = sys.stderr
        if stream.isatty():
            from tqdm.auto import tqdm

            yield from tqdm(self.iterable, desc=self.desc, total=self.total, leave=False,
                            dynamic_ncols=True, file=stream)
            return
        start, n = time.monotonic(), 0
        every = max(1, (self.total or 100) // 10)
        for item in self.iterable:
            yield item
            n += 1
            if n % every == 0 or n == self.total:
                print(f"{self.desc}: {n}/{self.total or '?'} batches, "
                      f"{time.monotonic() - start:.1f} s", file=stream, flush=True)
