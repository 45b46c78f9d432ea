"""Conditional denoiser for the KDE diffusion model, computed at camera resolution.

The 4x KDE grid is pixel-unshuffled to camera resolution (16 channels per fine-grid channel), so
the network sees y_t and the CNN estimate y_hat as 16 + 16 channels next to the raw frame x (1
channel at its own resolution: the same information as x upsampled to the fine grid and
unshuffled). A small U-Net (three levels, no attention) predicts the noise, which is
pixel-shuffled back to the 4x grid. The noise level enters as a log-SNR embedding that scales and
shifts every block (FiLM).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

UPSAMPLING = 4


def noise_embedding(log_snr: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the log signal-to-noise ratio (shape (n,) -> (n, dim))."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), half, device=log_snr.device))
    angles = (log_snr[:, None] / 20.0) * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class FilmBlock(nn.Module):
    """Two 3x3 convolutions with a residual path, modulated by the noise embedding."""

    def __init__(self, channels_in: int, channels_out: int, embed_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.film = nn.Linear(embed_dim, 2 * channels_out)
        self.skip = (nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out
                     else nn.Identity())

    def forward(self, x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv1(x))
        scale, shift = self.film(embed)[:, :, None, None].chunk(2, dim=1)
        h = h * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class ConditionalDenoiser(nn.Module):
    """eps_theta(y_t, y_hat, x, log_snr): fine-grid tensors (n, 1, 4H, 4W), frame (n, 1, H, W).

    Parameters
    ----------
    channels : (int, int, int)
        Channels at camera resolution, 1/2 and 1/4 of it.
    embed_dim : int
        Size of the noise-level embedding.
    """

    def __init__(self, channels: tuple[int, int, int] = (48, 64, 96), embed_dim: int = 64):
        super().__init__()
        self.config = {"channels": list(channels), "embed_dim": embed_dim}
        c1, c2, c3 = channels
        cells = UPSAMPLING * UPSAMPLING
        self.embed_dim = embed_dim
        self.embed = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.SiLU(),
                                   nn.Linear(embed_dim, embed_dim))
        self.stem = nn.Conv2d(2 * cells + 1, c1, 3, padding=1)
        self.down1 = FilmBlock(c1, c1, embed_dim)
        self.down2 = FilmBlock(c1, c2, embed_dim)
        self.middle = FilmBlock(c2, c3, embed_dim)
        self.up2 = FilmBlock(c3 + c2, c2, embed_dim)
        self.up1 = FilmBlock(c2 + c1, c1, embed_dim)
        self.head = nn.Conv2d(c1, cells, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, y_t: torch.Tensor, y_hat: torch.Tensor, frame: torch.Tensor,
                log_snr: torch.Tensor) -> torch.Tensor:
        rows, cols = frame.shape[-2:]
        pad_r, pad_c = (-rows) % 4, (-cols) % 4
        inputs = torch.cat([F.pixel_unshuffle(y_t, UPSAMPLING),
                            F.pixel_unshuffle(y_hat, UPSAMPLING), frame], dim=1)
        if pad_r or pad_c:
            inputs = F.pad(inputs, (0, pad_c, 0, pad_r), mode="replicate")
        embed = self.embed(noise_embedding(log_snr, self.embed_dim))
        h1 = self.down1(self.stem(inputs), embed)
        h2 = self.down2(F.avg_pool2d(h1, 2), embed)
        h3 = self.middle(F.avg_pool2d(h2, 2), embed)
        u2 = self.up2(torch.cat([F.interpolate(h3, scale_factor=2.0), h2], dim=1), embed)
        u1 = self.up1(torch.cat([F.interpolate(u2, scale_factor=2.0), h1], dim=1), embed)
        out = self.head(F.silu(u1))[:, :, :rows, :cols]
        return F.pixel_shuffle(out, UPSAMPLING)
