"""Batched augmentation and normalisation that run on the training device (GPU or CPU).

Every module here takes a whole batch already on the device, ``[B, C, H, W]`` for images or
``[B, T, C, H, W]`` for event frames, draws its random numbers from torch's global generator on
that device (so ``torch.manual_seed`` makes it repeatable) and returns a batch of the same
shape. Static datasets hand out clean float images in [0, 1]; the training loop does::

    tf = multispike.data.batch_transform("cifar10", train=True, augment="cropflip+cutout")
    for x, y in loader:
        x = tf(x.to(device, non_blocking=True))

Image augmentation uses kornia (which batches the random affine warps, crops and colour
operations on the device); DVS flip/roll and Cutout are plain tensor indexing.
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
import torch
from kornia.augmentation.auto import AutoAugment as _KorniaAutoAugment
from torch import nn

from multispike.errors import ConfigError


def _check_images(x: torch.Tensor, who: str) -> None:
    if x.dim() != 4:
        raise ConfigError(f"{who} takes an image batch [B, C, H, W], got shape {list(x.shape)}: "
                          "batch the images first")


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel for ``[..., C, H, W]``; buffers follow ``x``'s device.

    Example:
        >>> Normalize((0.5,), (0.5,))(torch.ones(2, 1, 8, 8)).unique().tolist()
        [1.0]
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ConfigError("Normalize needs one mean and one positive std per channel")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32)[:, None, None])
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32)[:, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        std = self.std.to(device=x.device, dtype=x.dtype)
        return (x - mean) / std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class MTSNNAugment(nn.Module):
    """MT-SNN's CIFAR augmentation: random horizontal flip, rotation in [-15°, 15°] and shift
    of up to 10 % of the height and width, on a batch ``[B, C, H, W]`` in [0, 1].

    The paper used Keras' image generator, which fills uncovered pixels with the nearest edge
    pixel; ``padding_mode="border"`` does the same.

    Example:
        >>> MTSNNAugment()(torch.rand(4, 3, 32, 32)).shape
        torch.Size([4, 3, 32, 32])
    """

    def __init__(self, degrees: float = 15.0, shift: float = 0.1,
                 padding_mode: str = "border") -> None:
        super().__init__()
        self.flip = K.RandomHorizontalFlip(p=0.5)
        self.affine = K.RandomAffine(degrees=degrees, translate=(shift, shift),
                                     padding_mode=padding_mode, p=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "MTSNNAugment")
        return self.affine(self.flip(x))


class CifarCropFlip(nn.Module):
    """The usual CIFAR augmentation: zero-pad by ``padding`` pixels, take a
    random crop of the original size, flip horizontally with probability 1/2.

    Example:
        >>> CifarCropFlip()(torch.rand(4, 3, 32, 32)).shape
        torch.Size([4, 3, 32, 32])
    """

    def __init__(self, size: tuple[int, int] = (32, 32), padding: int = 4) -> None:
        super().__init__()
        self.crop = K.RandomCrop(tuple(size), padding=padding, fill=0)
        self.flip = K.RandomHorizontalFlip(p=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "CifarCropFlip")
        return self.flip(self.crop(x))


class AutoAugment(nn.Module):
    """AutoAugment with a learned policy (kornia), on a batch in [0, 1]; default: CIFAR-10's.

    Example:
        >>> AutoAugment()(torch.rand(4, 3, 32, 32)).shape
        torch.Size([4, 3, 32, 32])
    """

    def __init__(self, policy: str = "cifar10") -> None:
        super().__init__()
        self.policy = policy
        self.augment = _KorniaAutoAugment(policy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "AutoAugment")
        return self.augment(x).clamp_(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"policy={self.policy!r}"


class Cutout(nn.Module):
    """Cutout: zero one ``size`` x ``size`` square per image, centred at a uniformly random
    pixel and clipped at the border. Apply after normalisation (zero is then the mean colour).

    Example:
        >>> y = Cutout(4)(torch.ones(2, 3, 16, 16)); bool((y == 0).any())
        True
    """

    def __init__(self, size: int = 16, p: float = 1.0) -> None:
        super().__init__()
        if size < 1 or not 0.0 <= p <= 1.0:
            raise ConfigError(f"Cutout needs size >= 1 and 0 <= p <= 1, got {size}, {p}")
        self.size, self.p = int(size), float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "Cutout")
        B, _, H, W = x.shape
        dev = x.device
        cy = torch.randint(0, H, (B,), device=dev)
        cx = torch.randint(0, W, (B,), device=dev)
        apply = torch.rand(B, device=dev) < self.p
        half = self.size // 2
        ys = torch.arange(H, device=dev)[None, :]
        xs = torch.arange(W, device=dev)[None, :]
        in_y = (ys >= (cy - half)[:, None]) & (ys < (cy - half + self.size)[:, None])
        in_x = (xs >= (cx - half)[:, None]) & (xs < (cx - half + self.size)[:, None])
        hole = in_y[:, :, None] & in_x[:, None, :] & apply[:, None, None]
        return x.masked_fill(hole[:, None], 0.0)

    def extra_repr(self) -> str:
        return f"size={self.size}, p={self.p}"


class DVSFlipRoll(nn.Module):
    """The common DVS augmentation (chosen for the Ternary Spike DVS recipes; the authors'
    public code has only an ImageNet script) on event frames ``[B, T, C, H, W]``: per sample, a
    horizontal flip with probability ``p_flip`` and a circular roll by a random integer shift in
    ``[-max_shift, max_shift]`` along y and along x, the same for all T frames of that sample.

    Example:
        >>> DVSFlipRoll()(torch.rand(2, 4, 2, 48, 48)).shape
        torch.Size([2, 4, 2, 48, 48])
    """

    def __init__(self, max_shift: int = 5, p_flip: float = 0.5) -> None:
        super().__init__()
        if max_shift < 0 or not 0.0 <= p_flip <= 1.0:
            raise ConfigError(f"DVSFlipRoll needs max_shift >= 0 and 0 <= p_flip <= 1, got "
                              f"{max_shift}, {p_flip}")
        self.max_shift, self.p_flip = int(max_shift), float(p_flip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ConfigError(f"DVSFlipRoll takes event frames [B, T, C, H, W], got shape "
                              f"{list(x.shape)}: batch the frames first")
        B, T, C, H, W = x.shape
        dev = x.device
        flip = torch.rand(B, device=dev) < self.p_flip
        dy = torch.randint(-self.max_shift, self.max_shift + 1, (B,), device=dev)
        dx = torch.randint(-self.max_shift, self.max_shift + 1, (B,), device=dev)
        # roll by (dy, dx), then mirror the flipped samples: one gather per axis. (The shifts are
        # symmetric, so this has the same distribution as mirroring first.)
        rows = (torch.arange(H, device=dev)[None, :] - dy[:, None]) % H
        cols = (torch.arange(W, device=dev)[None, :] - dx[:, None]) % W
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        x = x.gather(3, rows[:, None, None, :, None].expand(B, T, C, H, W))
        return x.gather(4, cols[:, None, None, None, :].expand(B, T, C, H, W))

    def extra_repr(self) -> str:
        return f"max_shift={self.max_shift}, p_flip={self.p_flip}"
