"""Baseline (offset) of a camera estimated from the dark pixels of a stack, honestly.

A pixel that receives no light reads ``baseline + read noise``; a lit pixel reads more and is
noisier (shot noise). So the baseline can be measured only where some pixels are dark (dark
frames, a covered or unilluminated part of the sensor). We take the pixels with the lowest
temporal median in half of up to 16 frames, and measure their median level and temporal noise in
the other half (so that picking the darkest pixels does not bias the level low). If their noise is
what the read noise alone explains, they are dark and their level is the baseline; otherwise the
level is only an upper bound and no baseline is returned. The read noise itself is not estimated:
without dark frames it cannot be told apart from the baseline and the background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...camera import Camera

MAX_FRAMES = 16
MIN_FRAMES = 4
MAX_SIDE = 512  # central crop, to bound the memory and time on large sensors
DARK_FRACTION = 0.05
NOISE_TOLERANCE = 1.25  # dark if noise <= 1.25 x expected read noise + 0.3 ADU (quantisation)
TRIM = 0.05  # the noisiest 5 % of dark pixels (hot pixels) are left out of the noise


@dataclass(frozen=True)
class BaselineEstimate:
    """Outcome of :func:`estimate_baseline`.

    Attributes
    ----------
    baseline : float or None
        Baseline in ADU, or None when no dark pixels were found.
    level : float
        Median level of the darkest pixels (ADU): the baseline, or an upper bound of it.
    noise : float
        Their temporal noise (ADU rms).
    expected_noise : float
        Read noise of the camera settings in ADU rms.
    frames : int
        Number of frames used.
    message : str
        One or two sentences for the user.
    """

    baseline: float | None
    level: float
    noise: float
    expected_noise: float
    frames: int
    message: str


def _sample(data: Any, n_frames: int) -> np.ndarray:
    """Up to ``n_frames`` evenly spaced frames (central crop), as float64 (n, pixels)."""
    total = int(data.shape[0])
    indices = np.unique(np.linspace(0, total - 1, min(n_frames, total)).round().astype(int))
    rows, cols = data.shape[-2:]
    r0, c0 = max(0, (rows - MAX_SIDE) // 2), max(0, (cols - MAX_SIDE) // 2)
    crop = (slice(r0, r0 + MAX_SIDE), slice(c0, c0 + MAX_SIDE))
    frames = [np.asarray(data[int(i)][crop], dtype=np.float64) for i in indices]
    return np.stack(frames).reshape(len(frames), -1)


def estimate_baseline(data: Any, camera: Camera, n_frames: int = MAX_FRAMES) -> BaselineEstimate:
    """Estimate the baseline from the darkest pixels of a ``(frames, rows, cols)`` stack.

    Parameters
    ----------
    data : array_like
        Raw frames in ADU (lazy arrays are fine: only the sampled frames are read).
    camera : Camera
        Current camera settings (their sensitivity, EM gain and read noise give the noise a
        dark pixel should have).
    n_frames : int
        Frames to sample (>= 4).

    Returns
    -------
    BaselineEstimate

    Raises
    ------
    ValueError
        If ``data`` is not a stack of at least 4 frames.
    """
    shape = tuple(getattr(data, "shape", ()))
    if len(shape) != 3 or shape[0] < MIN_FRAMES:
        raise ValueError(f"estimating the baseline needs a stack of at least {MIN_FRAMES} "
                         f"frames (frames, rows, cols), got shape {shape}")
    pixels = _sample(data, max(n_frames, MIN_FRAMES))
    select, measure = pixels[0::2], pixels[1::2]
    dark = np.median(select, axis=0) <= np.quantile(np.median(select, axis=0), DARK_FRACTION)
    values = measure[:, dark]
    level = float(np.mean(np.median(values, axis=0)))
    variances = np.sort(np.var(values, axis=0, ddof=1))
    noise = float(np.sqrt(np.mean(variances[: max(1, int(len(variances) * (1 - TRIM)))])))
    expected = camera.read_noise / camera.sensitivity
    used = len(pixels)
    if noise <= NOISE_TOLERANCE * expected + 0.3:
        message = (f"Baseline {level:.1f} ADU: level of the darkest {DARK_FRACTION:.0%} of pixels "
                   f"in {used} frames, whose noise ({noise:.1f} ADU rms) is the read noise alone "
                   f"({expected:.1f} ADU), so they receive no light.")
        return BaselineEstimate(level, level, noise, expected, used, message)
    message = (f"Baseline not changed: no dark pixels in {used} frames (the darkest read "
               f"{level:.0f} ADU with {noise:.1f} ADU rms noise; read noise alone gives "
               f"{expected:.1f}), so the baseline is at most {level:.0f} ADU. Measure it on dark "
               f"frames (shutter closed) or take it from the camera's test sheet.")
    return BaselineEstimate(None, level, noise, expected, used, message)
