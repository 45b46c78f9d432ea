"""Camera frames (ADU) -> network input, through the camera model.

ADU are converted by the Poisson-normal transform of the camera (approximately Poisson counts),
then variance-stabilised with the Anscombe transform 2 sqrt(x + 3/8) and centred on the per-frame
median (the background level). The result has unit noise everywhere, whatever the camera's baseline,
gain or type, and a compressed range for bright emitters, so one network serves sCMOS and EMCCD.
"""

from __future__ import annotations

import numpy as np
import torch

from .camera import Camera

INPUT_SCALE = 0.1


def normalize_frames(adu: np.ndarray, camera: Camera) -> torch.Tensor:
    """Normalise a batch of frames for the networks.

    Parameters
    ----------
    adu : array, shape (n, rows, cols) or (rows, cols)
        Raw camera counts.
    camera : Camera
        The camera that recorded them.

    Returns
    -------
    tensor, shape (n, 1, rows, cols), float32, on the CPU
    """
    frames = np.asarray(adu, dtype=np.float32)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3:
        raise ValueError(f"expected frames of shape (n, rows, cols), got {frames.shape}")
    stabilised = 2.0 * np.sqrt(np.maximum(camera.poisson_normal(frames), 0.0) + 0.375)
    level = np.median(stabilised.reshape(len(stabilised), -1), axis=1)[:, None, None]
    return torch.from_numpy(((stabilised - level) * INPUT_SCALE).astype(np.float32)[:, None])
