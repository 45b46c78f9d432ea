"""FRC resolution of a localization table with its curve.

:func:`napari_smlm_diffusion.metrics.frc_from_localizations` returns the resolution only; the
CLI and the GUI also plot the curve, so this module splits the table the same way (even and
odd blocks of consecutive frames), renders both halves with
:func:`~napari_smlm_diffusion.postprocess.render.render_histogram` and reuses
:func:`~napari_smlm_diffusion.metrics.frc_curve` and
:func:`~napari_smlm_diffusion.metrics.frc_resolution` (smoothing and 1/7 crossing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..metrics import frc_curve, frc_resolution
from .common import PostprocessError, coordinates
from .render import image_shape, render_histogram

#: Largest rendered image side (pixels) before the FRC pixel size is raised.
MAX_SIDE = 4096


@dataclass
class FrcResult:
    """FRC of a localization table.

    Attributes
    ----------
    frequency : ndarray
        Ring spatial frequencies, 1/nm.
    frc : ndarray
        Correlation per ring (NaN where undefined).
    resolution_nm : float
        Resolution at the threshold (NaN if the FRC never drops below it).
    threshold : float
        The threshold (1/7 by default).
    pixel_size_nm : float
        Pixel size of the rendered halves.
    block_size : int
        Frames per block of the split.
    """

    frequency: np.ndarray
    frc: np.ndarray
    resolution_nm: float
    threshold: float
    pixel_size_nm: float
    block_size: int

    def to_dict(self) -> dict:
        """JSON-ready dict (``resolution_nm`` None when undefined)."""
        def clean(values: np.ndarray) -> list:
            return [None if not math.isfinite(v) else float(v) for v in values]
        return {
            "resolution_nm": None if math.isnan(self.resolution_nm) else self.resolution_nm,
            "threshold": self.threshold,
            "pixel_size_nm": self.pixel_size_nm,
            "block_size": self.block_size,
            "frequency_per_nm": clean(self.frequency),
            "frc": clean(self.frc),
        }


def frc_localizations(
    table: pd.DataFrame,
    pixel_size_nm: float = 5.0,
    block_size: int = 50,
    threshold: float = 1 / 7,
) -> FrcResult:
    """FRC of the table split into even and odd blocks of ``block_size`` frames.

    Parameters
    ----------
    table : DataFrame
        Localizations (``frame``, ``x_nm``, ``y_nm``).
    pixel_size_nm : float
        Pixel size of the rendered halves, nm (raised if the field would exceed
        :data:`MAX_SIDE` pixels).
    block_size : int
        Consecutive frames per block.
    threshold : float
        FRC threshold.

    Returns
    -------
    FrcResult
    """
    if not (math.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise PostprocessError(f"FRC: the pixel size must be positive, got {pixel_size_nm}")
    if block_size < 1:
        raise PostprocessError(f"FRC: the block size must be at least 1 frame, got {block_size}")
    x, y, frames = coordinates(table, "FRC")
    x, y = x - x.min(), y - y.min()
    extent = max(float(x.max()), float(y.max()), pixel_size_nm)
    pixel_size_nm = max(pixel_size_nm, extent / (MAX_SIDE - 1))
    half = (frames // block_size) % 2
    if half.min() == half.max():
        raise PostprocessError(f"FRC needs localizations in at least two blocks of {block_size} "
                               f"frames; all are in one block: choose a smaller block size")
    shape = image_shape(x, y, pixel_size_nm)
    side = max(shape)
    images = [render_histogram(x[half == h], y[half == h], pixel_size_nm, (side, side))
              for h in (0, 1)]
    frequency, curve = frc_curve(images[0], images[1], pixel_size_nm)
    resolution = frc_resolution(images[0], images[1], pixel_size_nm, threshold)
    return FrcResult(frequency, curve, resolution, float(threshold), float(pixel_size_nm),
                     int(block_size))
