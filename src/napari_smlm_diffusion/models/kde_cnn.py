"""Deep-STORM-like KDE CNN that works at camera resolution and emits a 4x-upsampled KDE.

Layout (section 2.2 of the reference, arranged for CPU speed):

- context module: 3x3 convolutions with dilations 1, 2, 4, 8, 4, 2 (residual, batch norm, ReLU) at
  camera resolution, giving a receptive field of about 45 camera pixels;
- upsampling module: two 2x stages, each a 3x3 convolution followed by a pixel shuffle. A
  nearest-neighbour resize followed by a 3x3 convolution is a special case of this sub-pixel
  convolution (the same weights shared between the four phases), at a quarter of the cost;
- prediction module: three refinement convolutions on the 4x grid, kept thin (few channels), then
  HardTanh.

:class:`InferenceKdeCnn` rearranges a trained network for fast inference with the same outputs.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

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


def phase_conv(conv: nn.Conv2d, factor: int = 2) -> nn.Conv2d:
    """The 3x3 convolution ``conv`` (padding 1) rewritten to act on pixel-unshuffled input.

    ``pixel_shuffle(phase_conv(conv)(x), factor) == conv(pixel_shuffle(x, factor))``: the same
    sums at a 1/factor grid with factor^2 times the channels, which the CPU convolution kernels
    run much faster than a few channels on the fine grid.
    """
    if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.dilation != (1, 1) or (
            conv.stride != (1, 1) or conv.groups != 1):
        raise ValueError("phase_conv expects a plain 3x3 convolution with padding 1")
    f2 = factor * factor
    weight = conv.weight.detach()
    c_out, c_in = weight.shape[:2]
    phased = torch.zeros(c_out * f2, c_in * f2, 3, 3, dtype=weight.dtype, device=weight.device)
    for sy in range(factor):
        for sx in range(factor):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    (by, ry), (bx, rx) = divmod(sy + dy, factor), divmod(sx + dx, factor)
                    phased[sy * factor + sx::f2, ry * factor + rx::f2, by + 1, bx + 1] += (
                        weight[:, :, dy + 1, dx + 1])
    result = nn.Conv2d(c_in * f2, c_out * f2, 3, padding=1, bias=conv.bias is not None)
    result = result.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        result.weight.copy_(phased)
        if conv.bias is not None:
            result.bias.copy_(conv.bias.detach().repeat_interleave(f2))
    return result


class InferenceKdeCnn(nn.Module):
    """A trained :class:`KdeCnn` rearranged for inference, with the same outputs (to float
    rounding): batch norms folded into their convolutions, activations applied in place (large
    fresh tensors cost page faults on the CPU), and the second upsampling stage's pixel shuffle
    moved after the refinement convolutions, which then run as :func:`phase_conv` at half the
    KDE resolution. Not for training."""

    upsampling = KdeCnn.upsampling

    def __init__(self, model: KdeCnn):
        super().__init__()
        model = copy.deepcopy(model).eval()
        self.config = dict(model.config)
        self.stem = model.stem[0]
        self.context = nn.ModuleList(fuse_conv_bn_eval(b.conv, b.norm) for b in model.context)
        first, second = model.upsample
        self.upsample = nn.ModuleList([first.conv, second.conv])
        self.shuffle = first.shuffle
        self.refine = nn.ModuleList(phase_conv(m) for m in model.refine
                                    if isinstance(m, nn.Conv2d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).relu_()
        for conv in self.context:
            x = conv(x).add_(x).relu_()
        x = self.shuffle(self.upsample[0](x)).relu_()
        x = self.upsample[1](x).relu_()
        for conv in self.refine[:-1]:
            x = conv(x).relu_()
        return self.shuffle(self.refine[-1](x)).clamp_(0.0, KDE_MAX)
