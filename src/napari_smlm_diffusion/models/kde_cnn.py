"""Deep-STORM-like KDE CNN that works at camera resolution and emits a 4x-upsampled KDE.

Layout (section 2.2 of the reference, arranged for CPU speed):

- context module: 3x3 convolutions with dilations 1, 2, 4, 8, 4, 2 (residual, batch norm, ReLU) at
  camera resolution, giving a receptive field of about 45 camera pixels;
- upsampling module: two 2x stages, each a 3x3 convolution followed by a pixel shuffle. A
  nearest-neighbour resize followed by a 3x3 convolution is a special case of this sub-pixel
  convolution (the same weights shared between the four phases), at a quarter of the cost;
- prediction module: three refinement convolutions on the 4x grid, kept thin (few channels), then
  HardTanh.
"""

from __future__ import annotations

import torch
from torch import nn

KDE_MAX = 4.0


class ContextBlock(nn.Module):
    """Residual dilated 3x3 convolution with batch norm and ReLU."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation,
                              bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.norm(self.conv(x)))


class UpsampleStage(nn.Module):
    """2x sub-pixel convolution: 3x3 convolution to 4x channels, pixel shuffle, ReLU."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.conv = nn.Conv2d(channels_in, 4 * channels_out, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.shuffle(self.conv(x)))


class KdeCnn(nn.Module):
    """Camera frame (1 channel, normalised) -> KDE on a 4x grid (1 channel, in [0, KDE_MAX]).

    Parameters
    ----------
    width : int
        Channels of the context module (camera resolution).
    dilations : tuple of int
        Dilation of each context block.
    up_channels : (int, int)
        Channels after the first (2x) and second (4x) upsampling stage.
    """

    upsampling = 4

    def __init__(
        self,
        width: int = 32,
        dilations: tuple[int, ...] = (1, 2, 4, 8, 4, 2),
        up_channels: tuple[int, int] = (8, 4),
    ):
        super().__init__()
        self.config = {"width": width, "dilations": list(dilations),
                       "up_channels": list(up_channels)}
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
        self.context = nn.Sequential(*(ContextBlock(width, d) for d in dilations))
        self.upsample = nn.Sequential(
            UpsampleStage(width, up_channels[0]), UpsampleStage(up_channels[0], up_channels[1])
        )
        c = up_channels[1]
        self.refine = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, 1, 3, padding=1),
        )
        self.out = nn.Hardtanh(0.0, KDE_MAX)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.context(self.stem(x))
        return self.out(self.refine(self.upsample(features)))
