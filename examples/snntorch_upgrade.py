"""A binary network trained in snnTorch, brought into multispike and upgraded to multi-bit spikes.

1. train a two-layer ``snntorch.Leaky`` MLP on scikit-learn's digits with snnTorch itself
   (binary spikes, T steps of the image, cross-entropy on the time-averaged output spikes);
2. export it with snnTorch's own NIR exporter (``snntorch.export_nir.export_to_nir``);
3. ``multispike import`` it as it is, and upgraded (``--firing mt``; ``--firing integer
   --option levels=3``); ``multispike train --init`` fine-tunes each (the binary one too:
   the control for the extra epochs);
4. ``multispike eval`` and ``energy`` measure every checkpoint on the 360 test images.

Prints a Markdown table (the README's). Needs snnTorch 1.0 and the NIR extra (``make test``
installs both). Run: ``python examples/snntorch_upgrade.py [--epochs 30] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from multispike import data
from multispike.cli import main as multispike

T = 2


def leaky(shape: tuple[int, ...], beta: float, thr: float, **kw) -> nn.Module:
    """snnTorch's LIF with per-neuron tensors (its exporter writes a scalar as a 0-d array,
    which nir 1.0 refuses) and the hard reset to zero NIR's LIF describes."""
    import snntorch as snn

    return snn.Leaky(beta=torch.full(shape, beta), threshold=torch.full(shape, thr),
                     init_hidden=True, reset_mechanism="zero", **kw)


def batches(train: bool, batch_size: int, seed: int):
    """Normalised digits as multispike feeds them (``data.batch_transform``), flattened."""
    ds = data.build("digits", train=train)
    order = torch.utils.data.RandomSampler(ds, generator=torch.Generator().manual_seed(seed)) \
        if train else None
    loader = data.make_loader(ds, batch_size, shuffle=False, sampler=order, num_workers=0)
    norm = data.batch_transform("digits", train=False)
    for x, y in loader:
        yield norm(x).flatten(1), y


def rate_out(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The time-averaged output spikes of T steps of ``x`` (snnTorch's own simulation)."""
    from snntorch import utils

    utils.reset(net)
    steps = [net(x) for _ in range(T)]  # the output Leaky gives (spikes, membrane)
    return torch.stack([s[0] if isinstance(s, tuple) else s for s in steps]).mean(0)


def train_snntorch(epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 128), leaky((128,), 0.75, 0.5),
                        nn.Linear(128, 10), leaky((10,), 0.75, 0.5, output=True))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for epoch in range(epochs):
        for x, y in batches(True, 64, seed + epoch):
            out = rate_out(net, x)
            loss = nn.functional.cross_entropy(out * 10, y)  # spike rates in [0, 1]: scaled
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


def snntorch_accuracy(net: nn.Module) -> float:
    right = total = 0
    with torch.no_grad():
        for x, y in batches(False, 360, 0):
            right += int((rate_out(net, x).argmax(1) == y).sum())
            total += len(y)
    return right / total


def run(argv: list[str]) -> dict:
    """``multispike`` with ``argv``, its stdout parsed as JSON where it is; exit 0 required."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = multispike(argv)
    if rc != 0:
        sys.exit(f"multispike {' '.join(argv)} exited {rc}")
    text = out.getvalue()
    if "--json" not in argv:
        return {"text": text}
    return json.loads(text[min(i for i in (text.find("{"), text.find("[")) if i >= 0):])


def measure(ckpt: Path) -> dict:
    row = run(["eval", "--checkpoint", str(ckpt), "--dataset", "digits", "--timesteps",
               str(T), "--no-progress", "--json"])[0]
    energy = run(["energy", "--checkpoint", str(ckpt), "--dataset", "digits", "--json",
                  "--no-progress"])
    return {"accuracy": row["accuracy"], "rate": row["mean_firing_rate"],
            "energy_uj": energy["energy_uj"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30, help="snnTorch training epochs")
    p.add_argument("--tune-epochs", type=int, default=5, help="multispike fine-tuning epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="a new folder for the files (default: a temporary one)")
    args = p.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="snntorch-upgrade-"))
    if out.exists() and any(out.iterdir()):
        sys.exit(f"error: {out} is not empty (it would hold the runs); choose a new --out")
    out.mkdir(parents=True, exist_ok=True)

    import nir
    from snntorch.export_nir import export_to_nir

    net = train_snntorch(args.epochs, args.seed)
    peer = snntorch_accuracy(net)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints
        graph = export_to_nir(net, torch.rand(1, 64), ignore_dims=[0])
    nir.write(out / "snntorch.nir", graph)

    rows = [("snnTorch, binary (its own simulation)", {"accuracy": peer})]
    common = ["--input-shape", "1,8,8", "--timesteps", str(T), "--force"]
    # the binary import is fine-tuned too: the control for the extra epochs
    for label, firing in (("binary", ["--firing", "binary"]), ("MT", ["--firing", "mt"]),
                          ("integer D = 3", ["--firing", "integer", "--option", "levels=3"])):
        key = firing[1]
        run(["import", str(out / "snntorch.nir"), "--out", str(out / key), *common, *firing])
        rows.append((f"imported into multispike as it is, {label}" if key == "binary" else
                     f"upgraded to {label}, not fine-tuned", measure(out / key / "model.pt")))
        run(["train", "--dataset", "digits", "--init", str(out / key), "--epochs",
             str(args.tune_epochs), "--lr", "0.02", "--seed", str(args.seed), "--out",
             str(out / f"{key}-tuned"), "--no-progress"])
        n = args.tune_epochs
        rows.append((f"{label}, fine-tuned {n} epoch{'s' * (n > 1)} (`train --init`)",
                     measure(out / f"{key}-tuned" / "best.pt")))

    print(f"| checkpoint (T = {T}, seed {args.seed}) | accuracy | spikes per neuron and step "
          "| energy |\n|---|---|---|---|")
    for label, m in rows:
        rate = f"{m['rate']:.3f}" if "rate" in m else "–"
        energy = f"{m['energy_uj']:.3f} µJ" if "energy_uj" in m else "–"
        print(f"| {label} | {100 * m['accuracy']:.2f} % | {rate} | {energy} |")
    print(f"files in {out}")


if __name__ == "__main__":
    main()
