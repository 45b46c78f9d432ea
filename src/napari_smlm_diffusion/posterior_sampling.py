"""Device side of the posterior: seeded noise, blocks of frames x samples, and the summary of a
block's samples (moments, kept samples, peak windows) packed for one host transfer.

Sample k of frame f draws its noise from its own CPU generator seeded by (seed, f, k), so it does
not depend on which frames and samples share its network call. A block's samples stay on the
device: their mean and variance, the kept samples and, for every peak of every sample, its pixel
and the 3x3 window around it are packed into one tensor and moved to the host at once
(:func:`to_host`, the only device-to-host copy of the sampler). The peak tables are then built on
the host from the windows by :func:`kde.peak_table`, so they equal :func:`kde.find_peaks` of the
samples. On CUDA the peak count is read once per block (``nonzero``); nothing in the sampler loop
waits for the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from .kde import peak_table

#: Samples x camera pixels of one block (its samples are drawn together when they fit): on the
#: CPU, 32 samples of 64 x 64 frames per call were ~2x faster per sample than 8 (measured on
#: the busy 2-core machine);
#: a GPU takes 16x more (the denoiser is tiled, so activations stay bounded).
BLOCK_SAMPLE_PIXELS = {"cpu": 32 * 64 * 64, "gpu": 16 * 32 * 64 * 64}


def sample_generators(seed: int, frame: int, samples: int | range) -> list[torch.Generator]:
    """Fresh CPU generators for samples ``samples`` (a count: 0..samples-1) of a frame, sample k
    seeded from ``SeedSequence([seed, frame, k])``: sample k of frame f is the same whatever the
    frame range, the batching of samples (on a GPU short of memory) or the device. A generator
    that has drawn is spent: a retried sample needs a new one."""
    ks = range(samples) if isinstance(samples, int) else samples
    states = [np.random.SeedSequence([int(seed), int(frame), k]).generate_state(1, np.uint64)[0]
              for k in ks]
    return [torch.Generator().manual_seed(int(state) >> 1) for state in states]


def block_generators(seed: int, frames: Sequence[int], samples: int, start: int,
                     stop: int) -> list[torch.Generator]:
    """Fresh generators of items ``start:stop`` of a block whose items are its frames' samples,
    frame-major (item i is sample i % samples of frame frames[i // samples])."""
    generators = []
    for i in range(start, stop):
        generators += sample_generators(seed, frames[i // samples], range(i % samples,
                                                                          i % samples + 1))
    return generators


def frames_per_block(samples: int, frame_shape: tuple[int, int], device: torch.device) -> int:
    """Frames whose samples are drawn in one block (at least one)."""
    budget = BLOCK_SAMPLE_PIXELS["cpu" if device.type == "cpu" else "gpu"]
    return max(1, budget // (samples * frame_shape[0] * frame_shape[1]))


def to_host(tensor: torch.Tensor) -> np.ndarray:
    """The sampler's one device-to-host copy per block."""
    return tensor.cpu().numpy()


def _peak_mask(samples: torch.Tensor, threshold: float, distance: int = 1) -> torch.Tensor:
    """:func:`kde._peak_pixels` for a batch (n, rows, cols) on its device: above ``threshold``,
    strictly above the neighbours before it in row-major order, at least the others."""
    rows, cols = samples.shape[-2:]
    padded = F.pad(samples, (distance,) * 4, value=-float("inf"))
    mask = samples > threshold
    for dr in range(-distance, distance + 1):
        for dc in range(-distance, distance + 1):
            if dr == 0 and dc == 0:
                continue
            neighbour = padded[:, distance + dr:distance + dr + rows,
                               distance + dc:distance + dc + cols]
            earlier = dr < 0 or (dr == 0 and dc < 0)
            mask &= samples > neighbour if earlier else samples >= neighbour
    return mask


@dataclass
class BlockSummary:
    """A block's summary on the host: per frame the mean and variance over samples and the kept
    samples; for every peak of every sample, its (sample item, row, col) and 3x3 window."""

    mean: np.ndarray
    variance: np.ndarray
    kept: np.ndarray
    peak_index: np.ndarray
    peak_windows: np.ndarray

    def sample_peaks(self, frame_offset: int, frame: int, samples: int,
                     fine_pixel_nm: float) -> list[pd.DataFrame]:
        """Peak tables (as :func:`kde.find_peaks`) of the samples of the block's
        ``frame_offset``-th frame, whose index in the stack is ``frame``."""
        tables = []
        for k in range(samples):
            hit = self.peak_index[:, 0] == frame_offset * samples + k
            tables.append(peak_table(self.peak_windows[hit], self.peak_index[hit, 1],
                                     self.peak_index[hit, 2], fine_pixel_nm, frame))
        return tables


def summarise_block(samples: torch.Tensor, keep: int, threshold: float) -> BlockSummary:
    """Summary of a block's samples (frames, samples, rows, cols) (float32, on any device),
    computed there and moved to the host in one copy."""
    n_frames, n_samples, rows, cols = samples.shape
    wide = samples.double()
    mean = wide.mean(dim=1)
    variance = ((wide - mean[:, None]) ** 2).sum(dim=1) / max(n_samples - 1, 1)
    flat = samples.reshape(n_frames * n_samples, rows, cols)
    item, row, col = torch.nonzero(_peak_mask(flat, threshold), as_tuple=True)
    padded = F.pad(flat, (1, 1, 1, 1))
    windows = torch.stack([padded[item, row + 1 + i, col + 1 + j]
                           for i in (-1, 0, 1) for j in (-1, 0, 1)], dim=-1)
    index = torch.stack([item, row, col], dim=-1).to(torch.int32).view(torch.float32)
    parts = [mean.float(), variance.float(), samples[:, :keep], index, windows]
    host = to_host(torch.cat([part.reshape(-1) for part in parts]))
    sizes = np.cumsum([part.numel() for part in parts])[:-1]
    mean_h, variance_h, kept_h, index_h, windows_h = np.split(host, sizes)
    return BlockSummary(mean_h.reshape(n_frames, rows, cols),
                        variance_h.reshape(n_frames, rows, cols),
                        kept_h.reshape(n_frames, keep, rows, cols),
                        index_h.view(np.int32).reshape(-1, 3).astype(np.int64),
                        windows_h.reshape(-1, 3, 3))
