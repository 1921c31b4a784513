"""The output voting layer of the PLIF paper: each class's score is the mean of a group of
output neurons (a model's output mode ``"vote"``)."""

from __future__ import annotations

from torch import Tensor, nn

from multispike.checks import positive_int

__all__ = ["VotingLayer"]


class VotingLayer(nn.Module):
    """PLIF paper voting layer: ``[..., num_classes·group] → [..., num_classes]``.

    Output neuron ``k·group + j`` (``j < group``) votes for class ``k``; a class's score is the
    mean of its group's spikes (SpikingJelly ``AvgPool1d(group, group)``).
    """

    def __init__(self, num_classes: int, group: int = 10) -> None:
        super().__init__()
        positive_int("num_classes", num_classes, where="voting")
        positive_int("group", group, where="voting")
        self.num_classes = int(num_classes)
        self.group = int(group)

    def forward(self, x: Tensor) -> Tensor:
        y = x.unflatten(-1, (self.num_classes, self.group))  # [..., K*G] -> [..., K, G]
        return y.mean(-1)  # [..., K, G] -> [..., K]

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, group={self.group}"
