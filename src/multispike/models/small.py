"""A small net for the embedded demo dataset (scikit-learn digits: 1×8×8 greyscale, 10 classes).

A two-conv VGG (:class:`~multispike.models.vgg.VGG`) that trains in seconds per epoch on two
CPU cores at T = 2::

    [B, 1, 8, 8] ─ conv 1→16 ─ BN ─ neuron ─ conv 16→32 ─ BN ─ neuron ─ maxpool
      ─► [T, B, 32, 4, 4] ─ flatten ─ FC 512→64 ─ BN ─ neuron ─ FC 64→10 ─► [T, B, 10]

38.5K parameters, 0.34M MACs per image and time step. Defaults: MT firing with PLIF neurons
(the MT-SNN recipe), T = 2, no dropout. Unlike the papers' VGGs it normalises the hidden FC
(``fc_norm=True``): with only 512 sparse inputs, an unnormalised FC stays far below threshold
and, outside the surrogate window, passes no gradient (binary neurons then never learn).

Example::

    >>> import torch
    >>> from multispike.models import create
    >>> model = create("digits_net")
    >>> model(torch.rand(4, 1, 8, 8)).shape
    torch.Size([2, 4, 10])
"""

from __future__ import annotations

from typing import Any

from multispike.models.registry import register_model
from multispike.models.vgg import VGG, VGGLayout, vgg_defaults

DIGITS_NET = VGGLayout(
    "digits_net",
    ((16, 32),),
    64,
    vgg_defaults(in_channels=1, input_size=8, dropout=0.0, timesteps=2, fc_norm=True),
)


@register_model
def digits_net(**options: Any) -> VGG:
    """The demo model of the digits dataset: conv 16, conv 32, maxpool, FC 64, FC 10."""
    return VGG(DIGITS_NET, **options)
