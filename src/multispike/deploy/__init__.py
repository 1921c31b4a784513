"""Deployment: folded amplitudes, MT spike planes, an addition-only executor, NIR export."""

from multispike.deploy.fold import fold_amplitudes, fold_batchnorm
from multispike.deploy.graph import DeployGraph, trace
from multispike.deploy.planes import split_planes

__all__ = ["DeployGraph", "fold_amplitudes", "fold_batchnorm", "split_planes", "trace"]
