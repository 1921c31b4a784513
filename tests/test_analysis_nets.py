"""Small hand-built networks for the analysis tests (no model zoo needed)."""

from __future__ import annotations

import torch
from torch import nn

from multispike.neurons import IFNode, LIFNode


class Fold(nn.Module):
    """Run a stateless module over ``[T, B, ...]`` with T folded into the batch."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.m = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x.flatten(0, 1)).unflatten(0, x.shape[:2])


class TinySNN(nn.Module):
    """A static-input model like the zoo's: the stem conv runs once, its output repeats over T.

    stem 1→4 (3x3, pad 1) on 8x8 → neuron A → conv 4→6 (3x3, stride 2, pad 1) → neuron B
    → flatten → linear 96→10.
    """

    def __init__(self, firing: str = "binary", timesteps: int = 2, **neuron) -> None:
        super().__init__()
        self.name = "tiny"
        self.firing = firing
        self.timesteps = timesteps
        self.stem_conv = nn.Conv2d(1, 4, 3, padding=1)
        self.a = IFNode(firing=firing, v_threshold=0.5, **neuron)
        self.conv = Fold(nn.Conv2d(4, 6, 3, stride=2, padding=1))
        self.b = IFNode(firing=firing, v_threshold=0.5, **neuron)
        self.flat = Fold(nn.Flatten())
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem_conv(x)  # [B, 4, 8, 8], once for all steps
        y = y.unsqueeze(0).expand(self.timesteps, *y.shape)
        return self.fc(self.flat(self.b(self.conv(self.a(y)))))


class ShortcutNet(nn.Module):
    """A residual block whose shortcut (run last) reads neuron ``a``, not the latest ``b``."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = Fold(nn.Conv2d(2, 4, 1))
        self.a = LIFNode(firing="ternary")
        self.main = Fold(nn.Conv2d(4, 4, 3, padding=1))
        self.b = LIFNode()
        self.main2 = Fold(nn.Conv2d(4, 8, 3, padding=1))
        self.short = Fold(nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(4, 8, 1)))
        self.pool = Fold(nn.AvgPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.a(self.enc(x))
        y = self.pool(self.main2(self.b(self.main(s))))
        return y + self.short(s)


def test_nets_run():
    assert TinySNN()(torch.rand(3, 1, 8, 8)).shape == (2, 3, 10)
    assert ShortcutNet()(torch.rand(2, 3, 2, 6, 6)).shape == (2, 3, 8, 3, 3)
