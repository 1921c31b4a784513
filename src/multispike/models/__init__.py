"""The model zoo of both papers: one registry, ANN twins, output modes, per-table parameter counts.

>>> import torch
>>> from multispike.models import create, list_models
>>> list_models()
['digits_net', 'resnet18', 'resnet19', 'resnet20', 'resnet20m', 'resnet34', 'vgg12', 'vgg8', 'vgg9']
>>> model = create("vgg9", num_classes=100, timesteps=2, firing="mt")
>>> images = torch.rand(1, 3, 32, 32)
>>> out = model(images)              # [B, 3, 32, 32] -> [T, B, 100]; prediction out.mean(0)
>>> out.shape, out.mean(0).shape
(torch.Size([2, 1, 100]), torch.Size([1, 100]))
>>> model.timesteps = 1              # evaluate the same weights at another T
>>> model(images).shape
torch.Size([1, 1, 100])
>>> twin = create("vgg9", num_classes=100, firing="ann")   # the ANN baseline (MT-SNN Fig 3)
>>> twin.timesteps, twin(images).shape
(1, torch.Size([1, 1, 100]))

Every model maps static images ``[B, C, H, W]`` (repeated over T, direct encoding) or event
frames ``[T, B, C, H, W]`` to per-time-step outputs ``[T, B, num_classes]``. See
``docs/models.md`` for the table of architectures, defaults, parameter counts and MACs.
"""

from multispike.models import graph_net, resnet, small, vgg  # noqa: F401  (registers the builders)
from multispike.models.base import (
    COMMON_OPTIONS,
    MT_SNN_DEFAULTS,
    OUTPUTS,
    TERNARY_DEFAULTS,
    Head,
    SpikingModel,
)
from multispike.models.profile import count_macs, count_params
from multispike.models.registry import create, get_builder, list_models, register_model
from multispike.models.resnet import ResNet, ResNetLayout
from multispike.models.vgg import VGG, VGGLayout

__all__ = [
    "COMMON_OPTIONS",
    "MT_SNN_DEFAULTS",
    "OUTPUTS",
    "TERNARY_DEFAULTS",
    "VGG",
    "Head",
    "ResNet",
    "ResNetLayout",
    "SpikingModel",
    "VGGLayout",
    "count_macs",
    "count_params",
    "create",
    "get_builder",
    "list_models",
    "register_model",
]
