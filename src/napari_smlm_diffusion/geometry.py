"""The one home of the package's geometry and frame numbering (no napari, no Qt).

Pixels: coordinates are in nm with the origin at the top-left corner of the top-left pixel, x
along columns, y along rows; pixel (r, c) covers [c, c+1) x [r, r+1) in pixel units, so its
centre is at (c + 0.5, r + 0.5). Array indices ("data coordinates" in napari) put the centre of
pixel i at i; :func:`pixel_centre` and :func:`data_coordinate` convert between the two.

Grids: the networks work on a grid ``UPSAMPLING`` times finer than the camera's ("fine" pixels of
``pixel_size / UPSAMPLING`` nm), with the same origin.

napari: a raw layer with scale ``s`` and translate ``t`` puts data coordinate i at world
``t + s i``; a layer upsampled ``u`` times lies exactly over it with scale ``s / u`` and translate
``t + s (1 / (2 u) - 1 / 2)``.

Frames: 0-based inside (arrays, ranges, tables in memory), 1-based for users (exported tables,
``--frames A-B``, the GUI's frame box, "A-B" in metadata).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from numpy.typing import ArrayLike

from .errors import InputError

#: KDE grid factor: one camera pixel is UPSAMPLING x UPSAMPLING fine pixels.
UPSAMPLING = 4
#: PSF standard deviation in camera pixels when neither the user nor the file gives it.
DEFAULT_PSF_SIGMA_PX = 1.2
#: Offset of a pixel's centre from its top-left corner, in pixels.
PIXEL_CENTRE = 0.5


# -- pixels -----------------------------------------------------------------------------------
def pixel_centre(index: ArrayLike) -> np.ndarray:
    """Pixel coordinate (package convention, pixel units) of the centre of pixel ``index``;
    also maps any data coordinate (napari, array index) to the package coordinate."""
    return np.asarray(index, dtype=float) + PIXEL_CENTRE


def data_coordinate(pixels: ArrayLike) -> np.ndarray:
    """Inverse of :func:`pixel_centre`: package pixel coordinate -> data coordinate (array
    index space, where the centre of pixel i is at i)."""
    return np.asarray(pixels, dtype=float) - PIXEL_CENTRE


def nm_to_px(nm: ArrayLike, pixel_size_nm: float) -> np.ndarray:
    """Coordinate in nm -> pixel coordinate (package convention) on a grid of ``pixel_size_nm``."""
    return np.asarray(nm, dtype=float) / pixel_size_nm


def px_to_nm(px: ArrayLike, pixel_size_nm: float) -> np.ndarray:
    """Inverse of :func:`nm_to_px`."""
    return np.asarray(px, dtype=float) * pixel_size_nm


def fine_pixel_nm(pixel_size_nm: float, upsampling: int = UPSAMPLING) -> float:
    """Pixel size of the fine (KDE) grid of a camera with ``pixel_size_nm`` pixels."""
    return float(pixel_size_nm) / upsampling


def camera_to_fine_px(px: ArrayLike, upsampling: int = UPSAMPLING
                      ) -> np.ndarray:
    """Camera pixel coordinate -> fine pixel coordinate (same origin)."""
    return np.asarray(px, dtype=float) * upsampling


def fine_to_camera_px(px: ArrayLike, upsampling: int = UPSAMPLING
                      ) -> np.ndarray:
    """Inverse of :func:`camera_to_fine_px`."""
    return np.asarray(px, dtype=float) / upsampling


def fine_shape(shape: tuple[int, ...], upsampling: int = UPSAMPLING) -> tuple[int, ...]:
    """Shape of a camera array (``..., rows, cols``) on the fine grid."""
    return (*shape[:-2], shape[-2] * upsampling, shape[-1] * upsampling)


def default_psf_sigma_nm(pixel_size_nm: float) -> float:
    """PSF sigma in nm used when neither the user nor the file gives one."""
    return DEFAULT_PSF_SIGMA_PX * float(pixel_size_nm)


def psf_sigma_or_default(sigma_nm: float | None, pixel_size_nm: float) -> float:
    """``sigma_nm`` when given (non-zero), else :func:`default_psf_sigma_nm`."""
    return float(sigma_nm) if sigma_nm else default_psf_sigma_nm(pixel_size_nm)


# -- napari world coordinates -----------------------------------------------------------------
def upsampled_geometry(
    scale: tuple[float, ...], translate: tuple[float, ...], factor: int = UPSAMPLING
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale and translate of a layer upsampled ``factor`` times along the last two axes."""
    scale = tuple(float(v) for v in scale)
    translate = tuple(float(v) for v in translate)
    fine_s = tuple(s / factor for s in scale[-2:])
    fine_t = tuple(t + s * (1.0 / (2 * factor) - PIXEL_CENTRE)
                   for s, t in zip(scale[-2:], translate[-2:], strict=True))
    return scale[:-2] + fine_s, translate[:-2] + fine_t


def nm_to_world(
    y_nm: np.ndarray, x_nm: np.ndarray, scale: tuple[float, ...], translate: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Package (y, x) in nm -> world (y, x) of a raw layer whose scale ``scale[-2:]`` is its
    pixel size in nm: world = translate + scale * data coordinate, where the data coordinate
    is :func:`data_coordinate` of nm / scale."""
    (sy, sx), (ty, tx) = scale[-2:], translate[-2:]
    return (ty + np.asarray(y_nm) - sy * PIXEL_CENTRE, tx + np.asarray(x_nm) - sx * PIXEL_CENTRE)


def world_to_nm(
    y_world: np.ndarray, x_world: np.ndarray, scale: tuple[float, ...],
    translate: tuple[float, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`nm_to_world`."""
    (sy, sx), (ty, tx) = scale[-2:], translate[-2:]
    return (np.asarray(y_world) - ty + sy * PIXEL_CENTRE,
            np.asarray(x_world) - tx + sx * PIXEL_CENTRE)


# -- frames -----------------------------------------------------------------------------------
#: Number of the first frame as users see it.
FIRST_USER_FRAME = 1
Frames = TypeVar("Frames")  # an int, or a numpy / pandas array of them


def to_user_frame(index: Frames) -> Frames:
    """0-based frame index (or array of them) -> the 1-based frame number shown to users."""
    return index + FIRST_USER_FRAME


def from_user_frame(number: Frames) -> Frames:
    """1-based frame number shown to users (or array of them) -> 0-based frame index."""
    return number - FIRST_USER_FRAME


def format_frame_range(frames: range) -> str:
    """A contiguous 0-based range -> "A-B" (1-based, inclusive), as shown to users."""
    if frames.step != 1 or len(frames) == 0:
        raise ValueError(f"{frames} is not a non-empty range of consecutive frames")
    return f"{to_user_frame(frames.start)}-{to_user_frame(frames.stop - 1)}"


def parse_frame_range(text: str | None, n_frames: int) -> range:
    """Parse "A-B" (1-based, inclusive, as shown to users) into a 0-based range of frames.

    "", "all" or None give all frames; "A" gives one frame; "A-" runs to the last frame.
    """
    if text is None or str(text).strip() in ("", "all"):
        return range(n_frames)
    parts = str(text).replace(":", "-").split("-")
    try:
        first = int(parts[0])
        last = int(parts[1]) if len(parts) == 2 and parts[1] else (n_frames if len(parts) == 2
                                                                    else first)
    except (ValueError, IndexError):
        raise InputError(f"frames {text!r}: expected A-B with 1 <= A <= B, e.g. 1-100") from None
    if len(parts) <= 2 and 1 <= last < first <= n_frames:
        raise InputError(f"frames {text!r}: the first frame comes after the last; expected A-B "
                         f"with 1 <= A <= B <= {n_frames}")
    if len(parts) > 2 or first < 1 or last < first or last > n_frames:
        raise InputError(
            f"frames {text!r} lie outside the stack: it has frames 1-{n_frames} (expected A-B "
            f"with 1 <= A <= B <= {n_frames})"
        )
    return range(from_user_frame(first), last)


def check_frame_range(frames: range, n_frames: int) -> None:
    """Raise :class:`~napari_smlm_diffusion.errors.InputError` if ``frames`` (0-based) reach
    outside a stack of ``n_frames``."""
    if len(frames) and not (0 <= min(frames) and max(frames) < n_frames):
        raise InputError(f"frames {to_user_frame(min(frames))}-{to_user_frame(max(frames))} lie "
                         f"outside the stack: it has frames 1-{n_frames}")


#: Layer and file metadata: "frames" is the user's "A-B"; FIRST_FRAME_KEY the 0-based index of
#: the first frame (read back by code, never the "A-B" text).
FIRST_FRAME_KEY = "first_frame_index"


def frame_metadata(frames: range) -> dict[str, object]:
    """Metadata describing a contiguous frame range: "A-B" for users, 0-based start for code."""
    return {"frames": format_frame_range(frames), FIRST_FRAME_KEY: int(frames.start)}
