"""Checks of the frames given to the engines: size against the PSF, dark and saturated frames.

Frame ranges and numbering live in :mod:`napari_smlm_diffusion.geometry`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .camera import Camera
from .errors import InputError
from .geometry import to_user_frame


def psf_support_px(psf_sigma_nm: float, pixel_size_nm: float) -> int:
    """Side in camera pixels of the PSF support (+-3 sigma), the smallest usable frame."""
    sigma = float(psf_sigma_nm)
    if not (math.isfinite(sigma) and sigma > 0):
        raise InputError(f"PSF sigma {psf_sigma_nm!r} nm is invalid; expected a positive number "
                         "of nm")
    return 2 * math.ceil(3.0 * sigma / pixel_size_nm) + 1


def check_frame_size(shape: tuple[int, ...], psf_sigma_nm: float, pixel_size_nm: float) -> None:
    """Raise :class:`InputError` if frames are smaller than the PSF support (nothing can be
    localized)."""
    rows, cols = shape[-2:]
    need = psf_support_px(psf_sigma_nm, pixel_size_nm)
    if min(rows, cols) < need:
        raise InputError(
            f"frames of {rows}x{cols} pixels are smaller than the PSF support ({need}x{need} "
            f"pixels for a PSF sigma of {psf_sigma_nm:g} nm at {pixel_size_nm:g} nm pixels); "
            f"expected frames of at least {need}x{need} pixels (check the PSF sigma and the "
            "pixel size)"
        )


def read_frames(stack: Sequence | np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Frames ``indices`` (0-based) of a (lazy) stack as one array, in that order: one slice
    when they are consecutive, else frame by frame."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size and np.all(np.diff(indices) == 1):
        return np.asarray(stack[int(indices[0]):int(indices[-1]) + 1])
    return np.stack([np.asarray(stack[int(i)]) for i in indices])


def frame_chunks(stack: Sequence | np.ndarray, frames: range, size: int,
                 checks: FrameChecks) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(indices, data)`` of consecutive chunks of ``size`` frames of ``frames`` (counted from
    its start), read from a (lazy) stack one chunk at a time and checked by ``checks``."""
    for start in range(0, len(frames), size):
        indices = np.asarray(frames[start:start + size])
        data = read_frames(stack, indices)
        checks(data, indices)
        yield indices, data


class FrameChecks:
    """Warns (once per kind) about frames that cannot give molecules: entirely at or below the
    camera baseline (dark or dropped frames, or a wrong baseline) or with saturated pixels."""

    def __init__(self, camera: Camera, notify: Callable[[str], None]) -> None:
        self.camera = camera
        self.notify = notify
        self.reported: set[str] = set()

    def __call__(self, block: np.ndarray, indices: np.ndarray) -> None:
        flat = block.reshape(len(block), -1)
        if "dark" not in self.reported:
            dark = np.flatnonzero(flat.max(axis=1) <= self.camera.baseline)
            if dark.size:
                self.reported.add("dark")
                self.notify(
                    f"frame {to_user_frame(int(indices[dark[0]]))}: every pixel is at or below "
                    f"the camera baseline ({self.camera.baseline:g} ADU), so no molecule can be "
                    "found there; check the baseline if this is not a dark or dropped frame "
                    "(further such frames are not reported)")
        if "saturated" not in self.reported and block.dtype.kind in "iu":
            top = np.iinfo(block.dtype).max
            counts = (flat == top).sum(axis=1)
            hit = np.flatnonzero(counts)
            if hit.size:
                self.reported.add("saturated")
                self.notify(
                    f"frame {to_user_frame(int(indices[hit[0]]))}: {int(counts[hit[0]])} of "
                    f"{flat.shape[1]} pixels are saturated ({top} ADU, the largest {block.dtype} "
                    "value); photons and positions there are unreliable (further saturated "
                    "frames are not reported)")
