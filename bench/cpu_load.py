"""Digits training under CPU load: images/s on an idle machine and with one core kept busy.

Each measurement is a fresh interpreter that runs ``train_model`` on digits on the CPU (as
``multispike train --dataset digits --device cpu --workers 0`` does) for a few epochs and
reports the images/s of the epochs after the first (the first pays for the kernel build and
the allocator's warm-up). "busy" runs the same while another process spins on one core
(``python -c "while True: pass"``). The two conditions alternate, round by round, and the
ratio is the median of the per-round ``idle / busy`` ratios (see bench/common.py): 1.0 means
the load costs nothing, 2.0 that training ran at half speed.

The thread count is whatever ``multispike train`` chooses (multispike.engine.threads);
``--threads N`` fixes it instead (``MULTISPIKE_THREADS=N``): ``--threads 2`` on a 2-core
machine is how training ran before the thread policy (torch's default, one thread per core).

Run: ``python bench/cpu_load.py [--quick] [--json] [--threads N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

BUSY = "while True: pass"


def child(epochs: int, batch_size: int) -> None:
    """Train digits in this process; print one JSON line: images/s and the threads used."""
    try:
        import multispike  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(common.ROOT / "src"))
    import torch

    from multispike.engine import TrainConfig, train_model

    cfg = TrainConfig(dataset="digits", epochs=epochs, batch_size=batch_size, progress=False,
                      num_workers=0, device="cpu", seed=0)
    res = train_model(cfg)
    rates = [row["images_per_s"] for row in res["history"]][1:] or [
        res["history"][-1]["images_per_s"]]
    # the count the run trained with (train_model restores the caller's afterwards)
    print(json.dumps({"images_per_s": statistics.median(rates),
                      "threads": res.get("threads") or torch.get_num_threads()}))


def measure(epochs: int, batch_size: int, busy: bool, threads: int | None) -> dict:
    env = dict(os.environ)
    if threads is not None:
        env["MULTISPIKE_THREADS"] = str(threads)
    hog = None
    if busy:
        hog = subprocess.Popen([sys.executable, "-c", BUSY])
        time.sleep(0.3)  # running before the child samples the load
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", "--epochs", str(epochs),
             "--batch-size", str(batch_size)],
            capture_output=True, text=True, env=env, timeout=1800)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    if proc.returncode != 0:
        raise SystemExit(f"the training child failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False, device: str = "cpu", threads: int | None = None,
        rounds: int | None = None, compare: bool = True) -> dict:
    """The suite of ``bench/run.py``: with ``compare`` (and no fixed ``threads``), the policy's
    thread count and PyTorch's default (one per core), side by side in one run."""
    res = measure_rounds(quick, threads, rounds)
    if compare and threads is None:
        res["torch_default"] = measure_rounds(quick, res["cores"], rounds)
    return res


def report(res: dict) -> str:
    lines = [table(res)]
    if "torch_default" in res:
        lines += ["", "the same with PyTorch's default (one thread per core):",
                  table(res["torch_default"])]
    lines += [f"goal: one busy core costs at most 2x (here {res['slowdown']:.2f}x with "
              "multispike's thread choice)"]
    return "\n".join(lines)


def measure_rounds(quick: bool, threads: int | None, rounds: int | None) -> dict:
    rounds = rounds or (1 if quick else 3)
    epochs = 2 if quick else 4
    batch_size = 64
    idle, busy = [], []
    for _ in range(rounds):
        idle.append(measure(epochs, batch_size, False, threads))
        busy.append(measure(epochs, batch_size, True, threads))
    ratios = [a["images_per_s"] / b["images_per_s"] for a, b in zip(idle, busy, strict=True)]
    return {
        "name": "cpu_load",
        "what": "digits training images/s, idle vs one core busy (another process spinning)",
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "threads_fixed": threads,
        "epochs": epochs,
        "batch_size": batch_size,
        "rounds": rounds,
        "idle_images_per_s": statistics.median(r["images_per_s"] for r in idle),
        "busy_images_per_s": statistics.median(r["images_per_s"] for r in busy),
        "idle_threads": [r["threads"] for r in idle],
        "busy_threads": [r["threads"] for r in busy],
        "slowdown": statistics.median(ratios),
        "all_idle": [r["images_per_s"] for r in idle],
        "all_busy": [r["images_per_s"] for r in busy],
        "loadavg_1min": os.getloadavg()[0],
    }


def table(res: dict) -> str:
    fixed = f"{res['threads_fixed']} (fixed)" if res["threads_fixed"] else "chosen by multispike"
    return "\n".join([
        f"digits training on {res['cores']} cores, threads {fixed}, batch {res['batch_size']}, "
        f"{res['rounds']} round(s), 1-min load {res['loadavg_1min']:.2f}",
        f"{'':<22}{'images/s':>10}{'threads':>10}",
        f"{'idle':<22}{res['idle_images_per_s']:>10.0f}{str(res['idle_threads']):>10}",
        f"{'one core busy':<22}{res['busy_images_per_s']:>10.0f}{str(res['busy_threads']):>10}",
        f"slowdown idle/busy: {res['slowdown']:.2f}x (median of per-round ratios)",
    ])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one round of 2 epochs")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--threads", type=int, default=None,
                    help="fix the thread count (MULTISPIKE_THREADS) instead of the policy's")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--epochs", type=int, default=4, help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, default=64, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.epochs, args.batch_size)
        return
    res = run(args.quick, threads=args.threads, rounds=args.rounds)
    print(json.dumps(res) if args.json else report(res))


if __name__ == "__main__":
    main()
