"""The training loop reads the device on the host rarely, and never between a forward and its
backward.

A host read (``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``, ``.tolist()``) makes the host
wait for the device: on a GPU the loop stops queueing work until the step has run. The loop
keeps each step's loss, correct count and NaN/inf flags on the device and reads them in one
transfer every :data:`~multispike.engine.train.READ_EVERY` steps and at the end of the epoch.

What is counted, on the CPU (where CI runs): the scalar reads the dispatcher sees
(``aten._local_scalar_dense``, ``aten.item``, ``aten.is_nonzero``: ``.item()``, ``float``,
``int``, ``bool``) and calls of ``Tensor.tolist`` (patched: on a CPU tensor it reads memory
without a dispatched op). What is left out: reads inside a neuron layer's forward. The CPU
kernel reads its 0-dim CPU parameters once, on its first call, to build its arguments (free on
the CPU; on CUDA the kernels read nothing on the host, which ``tests/test_host_sync.py``
checks); they are recorded apart and not counted. Everything else is counted: the data
loader, the loss, the backward, the optimizer and the loop's own bookkeeping.
"""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from multispike import data
from multispike.engine import TrainingDiverged
from multispike.engine.train import READ_EVERY, train_one_epoch
from multispike.kernels import compact_spikes
from multispike.models import create

SCALAR_READS = {"aten._local_scalar_dense.default", "aten.item.default",
                "aten.is_nonzero.default"}
BATCH = 64  # 1437 digits: 22 full steps and one of 29 images


class Recorder(TorchDispatchMode):
    """Appends ``("read", op)`` to ``events`` for each scalar read, ``("neuron read", op)``
    for one made inside a neuron layer's forward (while ``depth[0] > 0``)."""

    def __init__(self, events: list, depth: list[int]) -> None:
        super().__init__()
        self.events, self.depth = events, depth

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func) in SCALAR_READS:
            self.events.append(("neuron read" if self.depth[0] else "read", str(func)))
        return func(*args, **(kwargs or {}))


def _setup():
    torch.manual_seed(0)
    spec = data.get_spec("digits")
    loader = data.make_loader(data.build("digits", train=True), BATCH, shuffle=False,
                              num_workers=0)
    model = create("digits_net", num_classes=10, timesteps=2, neuron="lif")
    return spec, loader, model


def _epoch(model, loader, spec, **kwargs):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return train_one_epoch(model, loader, opt, spec=spec, transform=None,
                           device=torch.device("cpu"), epoch=0, autocast=contextlib.nullcontext,
                           scaler=None, progress=False, **kwargs)


def test_no_read_between_forward_and_backward_and_at_most_one_per_step(monkeypatch):
    spec, loader, model = _setup()
    events: list[tuple[str, ...]] = []
    depth = [0]
    model.register_forward_hook(lambda *_: events.append(("forward",)))
    for m in model.modules():
        if hasattr(m, "nonfinite"):  # the neuron layers
            m.register_forward_pre_hook(lambda *_: depth.__setitem__(0, depth[0] + 1))
            m.register_forward_hook(lambda *_: depth.__setitem__(0, depth[0] - 1))
    real_backward, real_tolist = torch.Tensor.backward, torch.Tensor.tolist

    def backward(self, *args, **kwargs):
        events.append(("backward",))
        return real_backward(self, *args, **kwargs)

    def tolist(self):
        events.append(("neuron read" if depth[0] else "read", "Tensor.tolist"))
        return real_tolist(self)

    monkeypatch.setattr(torch.Tensor, "backward", backward)
    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    with Recorder(events, depth):
        stats = _epoch(model, loader, spec)

    steps = math.ceil(1437 / BATCH)
    kinds = [e[0] for e in events]
    assert kinds.count("forward") == kinds.count("backward") == steps
    # (a) from the end of each forward to its backward (the loss), nothing is read
    for i, kind in enumerate(kinds):
        if kind == "forward":
            assert kinds[i + 1] == "backward", events[i:i + 3]
    # (b) at most one read per step over the epoch; the loop's own: one transfer per
    # READ_EVERY steps and one at the end
    reads = [e for e in events if e[0] == "read"]
    assert len(reads) / steps <= 1, reads
    tallies = [e for e in reads if e[1] == "Tensor.tolist"]
    assert len(tallies) == steps // READ_EVERY + 1
    assert len(reads) <= len(tallies) + 1, reads  # + the data loader's, once per epoch
    assert set(stats) == {"loss", "accuracy", "images_per_s"}


def test_epoch_figures_are_those_of_a_loop_that_reads_every_step():
    """The same loss and accuracy, to the last bit, as reading ``loss.item()`` and the
    correct count after every step (the loop before the device-side tally)."""
    spec, loader, model = _setup()
    ref = copy.deepcopy(model)
    stats = _epoch(model, loader, spec)

    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    ref.train()
    seen, correct, loss_sum = 0, 0, 0.0
    for x, y in loader:
        with compact_spikes():
            logits = ref(x).float().mean(0)
            loss = criterion(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += y.shape[0]
        loss_sum += loss.item() * y.shape[0]
        correct += int((logits.argmax(1) == y).sum())
    assert stats["loss"] == loss_sum / seen and stats["accuracy"] == correct / seen
    for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_nan_loss_raises_training_diverged_in_one_line(monkeypatch):
    """A NaN loss at step 3 is found at the next read (step ``READ_EVERY``), named by its
    epoch and step; the loop's caller saves nothing, so the message claims no checkpoint."""
    calls = {"n": 0}

    class NaNAtStep3(nn.CrossEntropyLoss):
        def forward(self, logits, target):
            calls["n"] += 1
            loss = super().forward(logits, target)
            return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(nn, "CrossEntropyLoss", NaNAtStep3)
    spec, loader, model = _setup()
    with pytest.raises(TrainingDiverged) as e:
        _epoch(model, loader, spec)
    assert str(e.value) == "loss became nan at epoch 1, step 3: lower --lr or check the data"
    assert calls["n"] == READ_EVERY  # the steps up to the read ran
    with pytest.raises(TrainingDiverged, match=r"^loss became nan at epoch 1, step \d+; "
                       r"nothing kept: lower --lr") as e:
        calls["n"] = 0
        _epoch(create("digits_net", num_classes=10, timesteps=2, neuron="lif"), loader, spec,
               kept="nothing kept")
    assert "\n" not in str(e.value)
