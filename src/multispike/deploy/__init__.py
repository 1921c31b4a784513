"""Deployment of trained spiking models: inference without multiplications, and NIR.

>>> import tempfile, torch
>>> from multispike.deploy import (AdditionOnlyExecutor, export_nir, fold_amplitudes,
...    load_deployed, save_deployed, split_planes)
>>> from multispike.deploy.testing import exercise
>>> from multispike.models import create
>>> images = torch.rand(2, 1, 8, 8, dtype=torch.float64)
>>> model = exercise(create("digits_net", firing="mt").double(), images)   # a model that fires
>>> deployed = fold_amplitudes(model)          # Ternary Spike Eq 15-17 (+ BN folded)
>>> planes = split_planes(deployed)            # MT-SNN Eq 12: one convolution per spike plane
>>> report = AdditionOnlyExecutor(planes).run(images)   # exact SOP counts, no multiplications
>>> torch.allclose(report.output, model(images)), report.total_sops > 0
(True, True)
>>> binary = fold_amplitudes(exercise(create("digits_net", firing="binary").double(), images))
>>> graph = export_nir(binary)                 # binary PLIF/LIF/IF models; nir.write(path, graph)
>>> type(graph.nodes["features.0.conv"]).__name__, type(graph.nodes["features.0.act"]).__name__
('Conv2d', 'LIF')
>>> with tempfile.TemporaryDirectory() as out:
...     paths = save_deployed(deployed, out)   # model.safetensors + config.json
...     torch.equal(load_deployed(out)(images), deployed(images))
True

The public functions, one line each, and how every transform works: ``docs/deploy.md``. ``nir``
and ``nirtorch`` are needed by the NIR functions only (``pip install 'multispike[nir]'``).
"""

from multispike.deploy.executor import AdditionOnlyExecutor, ExecutionReport, run_addition_only
from multispike.deploy.fold import event_model, fold_amplitudes, fold_batchnorm, is_deployed
from multispike.deploy.graph import DeployGraph, Node, trace
from multispike.deploy.io import load_deployed, save_deployed
from multispike.deploy.nir_export import export_nir, nir_to_torch, run_nir
from multispike.deploy.planes import split_planes
from multispike.deploy.wrappers import (
    PlaneConv,
    PlaneLinear,
    PlaneMaxPool,
    PlaneMerge,
    PlaneNeuron,
    PlaneVote,
    ScaledVotingLayer,
    unwrap,
)

__all__ = [
    "AdditionOnlyExecutor",
    "DeployGraph",
    "ExecutionReport",
    "Node",
    "PlaneConv",
    "PlaneLinear",
    "PlaneMaxPool",
    "PlaneMerge",
    "PlaneNeuron",
    "PlaneVote",
    "ScaledVotingLayer",
    "export_nir",
    "event_model",
    "fold_amplitudes",
    "fold_batchnorm",
    "is_deployed",
    "load_deployed",
    "nir_to_torch",
    "run_addition_only",
    "run_nir",
    "save_deployed",
    "split_planes",
    "trace",
    "unwrap",
]
