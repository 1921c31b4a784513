"""``multispike deploy``: fold amplitudes and BN, split MT planes, verify, write safetensors and
NIR (:func:`multispike.workflows.deploy_checkpoint.deploy_checkpoint` does the work).

``python -m multispike.cli.deploy --checkpoint ... --out ...`` runs the command alone, with the
command line's error handling (one line on stderr, exit code 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from multispike.cli._common import run_command


def _nir_choice(flag: bool | None) -> bool | str:
    """``--nir`` asks for the file (no file: exit 2), no flag writes it where NIR can express
    the model, ``--no-nir`` writes none."""
    return True if flag is None else ("required" if flag else False)


def cmd_deploy(args: argparse.Namespace) -> int:
    """:func:`~multispike.workflows.deploy_checkpoint.deploy_checkpoint` with the flags, then a
    short report; exit code 1 when the deployed model's outputs differ from the checkpoint's (a
    check that proves nothing, all outputs zero or layers silent, is reported INCONCLUSIVE with
    exit code 0). Each stage prints one line with its duration (on stderr with ``--json``,
    none with ``--no-progress``)."""
    from multispike.workflows.deploy_checkpoint import deploy_checkpoint, report

    summary = deploy_checkpoint(
        args.checkpoint, args.out, nir=_nir_choice(args.nir), dt=args.dt, split=args.split_planes,
        verify_batches=args.verify_batches, batch_size=args.batch_size,
        executor=args.executor, seed=args.seed, force=args.force, device=args.device,
        progress=not args.no_progress, log=sys.stderr if args.json else None,
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(report(summary))
    return 0 if summary["verification"]["passed"] else 1


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``deploy`` subcommand to ``subparsers`` (from ``parser.add_subparsers()``)."""
    p = subparsers.add_parser(
        "deploy",
        help="fold amplitudes and BN, split spike planes, verify, write safetensors and NIR",
        description="Turn a training checkpoint into a deployable model: amplitudes and BN "
        "folded into weights, multi-level spikes (MT, integer) split into binary planes, "
        "outputs verified against the checkpoint, written as safetensors + JSON and, where NIR "
        "can express it, as a .nir graph.",
    )
    p.add_argument("--checkpoint", required=True, help="a last.pt or best.pt file")
    p.add_argument("--out", required=True, help="folder for model.safetensors, config.json, "
                   "model.nir")
    p.add_argument("--nir", action=argparse.BooleanOptionalAction, default=None,
                   help="write model.nir; with --nir a model NIR cannot express is refused "
                   "(exit 2), with neither flag it is written where NIR can express the model")
    p.add_argument("--dt", type=float, default=1.0,
                   help="NIR time per model step (1; snnTorch/SpikingJelly assume 1e-4)")
    p.add_argument("--split-planes", action=argparse.BooleanOptionalAction, default=True,
                   help="MT neurons emit binary planes, consumers sum one conv per plane")
    p.add_argument("--verify-batches", type=int, default=2,
                   help="batches of random images to compare outputs on (default 2)")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--executor", action="store_true",
                   help="also run the addition-only executor on one image and count its SOPs")
    p.add_argument("--seed", type=int, default=0, help="seed of the random images")
    p.add_argument("--device", default="cpu",
                   help="where to fold and verify: cpu (default), auto, cuda or cuda:N")
    p.add_argument("--force", action="store_true", help="overwrite a deployed model in --out "
                   "(a folder holding a training run is never overwritten)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (the "
                   "stage lines then go to stderr)")
    p.add_argument("--no-progress", action="store_true",
                   help="no stage lines and no progress of the output check")
    p.set_defaults(func=cmd_deploy)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``multispike deploy`` alone: ``argv`` are its flags."""
    parser = argparse.ArgumentParser(prog="multispike")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["deploy", *(sys.argv[1:] if argv is None else argv)])
    return run_command(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
