"""The conditional denoiser on large frames, tile by tile, stitched exactly.

The denoiser's U-Net pools twice (a 4-pixel grid at camera resolution) and each output pixel
depends on inputs at most ``RECEPTIVE_RADIUS_PX`` camera pixels away (measured by perturbing one
input pixel, for every position on the pooling grid, ``tests/test_denoiser_tiling.py``). Tiles
start on the pooling grid and overlap by ``MARGIN_PX`` > that radius, so the kept core of every
tile equals the whole-frame result (to float rounding). Tiles of ``TILE_PX`` camera pixels need
about 2 KB of activations per camera pixel and sample in float32 (sum of the layer outputs of the
default architecture: ~0.3 GB per sample for a 384 x 384 tile, against ~9 GB for a whole
2048 x 2048 frame), so a large frame never needs the whole frame's activations at once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .models.denoiser import UPSAMPLING
from .tiling import tiles

RECEPTIVE_RADIUS_PX = 25
POOLING_GRID_PX = 4  # two 2x poolings
MARGIN_PX = 28  # > RECEPTIVE_RADIUS_PX, a multiple of POOLING_GRID_PX
TILE_PX = 384

Network = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def denoise_tiled(network: Network, y_t: torch.Tensor, cond: torch.Tensor, frame: torch.Tensor,
                  log_snr: torch.Tensor, tile: int = TILE_PX,
                  margin: int = MARGIN_PX) -> torch.Tensor:
    """``network(y_t, cond, frame, log_snr)`` computed tile by tile when the frame is larger
    than ``tile`` camera pixels (fine-grid tensors (n, 1, 4H, 4W), frame (n, 1, H, W)).

    ``tile`` and ``margin`` must be multiples of the pooling grid (4) with ``tile > 2 margin``.
    """
    if tile % POOLING_GRID_PX or margin % POOLING_GRID_PX or tile <= 2 * margin:
        raise ValueError(f"tile {tile} and margin {margin} must be multiples of "
                         f"{POOLING_GRID_PX} with tile > 2 * margin")
    rows, cols = frame.shape[-2:]
    if rows <= tile and cols <= tile:
        return network(y_t, cond, frame, log_snr)
    u = UPSAMPLING
    out = None
    for r0, r1, kr0, kr1 in tiles(rows, tile, margin):
        for c0, c1, kc0, kc1 in tiles(cols, tile, margin):
            fine = (..., slice(r0 * u, r1 * u), slice(c0 * u, c1 * u))
            part = network(y_t[fine], cond[fine], frame[..., r0:r1, c0:c1], log_snr)
            if out is None:
                out = part.new_empty((*part.shape[:-2], rows * u, cols * u))
            out[..., kr0 * u:kr1 * u, kc0 * u:kc1 * u] = part[
                ..., (kr0 - r0) * u:(kr1 - r0) * u, (kc0 - c0) * u:(kc1 - c0) * u]
    return out
