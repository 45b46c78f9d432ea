"""Camera noise of simulated frames: shot noise, EM gain, read noise, per-pixel sCMOS maps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import Camera


@dataclass(frozen=True)
class PixelMaps:
    """Per-pixel camera offset (ADU) and read noise (electrons rms) of an sCMOS sensor."""

    offset_adu: np.ndarray
    read_noise_e: np.ndarray


def draw_pixel_maps(camera: Camera, size: tuple[int, int], offset_spread_adu: float,
                    read_noise_spread: float, rng: np.random.Generator) -> PixelMaps | None:
    """Per-pixel offset (normal around the baseline, std ``offset_spread_adu``) and read noise
    (log-normal around the camera's, spread ``read_noise_spread``); None if both spreads are 0."""
    if offset_spread_adu == 0 and read_noise_spread == 0:
        return None
    offset = camera.baseline + rng.normal(0.0, offset_spread_adu, size)
    read_noise = camera.read_noise * np.exp(rng.normal(0.0, read_noise_spread, size))
    return PixelMaps(offset, read_noise)


def apply_camera_noise(
    expected_photons: np.ndarray, camera: Camera, rng: np.random.Generator,
    maps: PixelMaps | None = None,
) -> np.ndarray:
    """Shot noise, EM amplification (gamma, excess factor sqrt 2), read noise; ADU as uint16.

    ``maps`` replaces the camera's uniform offset and read noise by per-pixel values.
    """
    electrons = rng.poisson(expected_photons * camera.quantum_efficiency).astype(np.float64)
    if camera.is_emccd:
        positive = electrons > 0
        electrons[positive] = rng.gamma(electrons[positive], camera.em_gain)
    if maps is None:
        electrons += rng.normal(0.0, camera.read_noise, electrons.shape)
        offset = camera.baseline
    else:
        electrons += rng.normal(0.0, 1.0, electrons.shape) * maps.read_noise_e
        offset = maps.offset_adu
    adu = np.rint(electrons / camera.sensitivity + offset)
    return np.clip(adu, 0, np.iinfo(np.uint16).max).astype(np.uint16)
