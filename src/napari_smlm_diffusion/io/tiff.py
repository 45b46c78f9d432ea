"""Writing ImageJ-compatible TIFFs with the pixel size as resolution (pixels per micron) and our
metadata as JSON in the ImageJ ``Info`` property, atomically."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..errors import InputError
from .files import PathLike, atomic_write

#: Key under which our metadata dict is stored in the ImageJ ``Info`` JSON.
METADATA_KEY = "napari-smlm-diffusion"
#: Images with more bytes than this are written as BigTIFF.
BIGTIFF_THRESHOLD = 2 * 1024**3


def positive_number(value: Any) -> float | None:
    """``value`` as a positive finite float, or None (metadata are data: anything else is
    None)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _tiff_array(data: Any) -> np.ndarray:
    """Return ``data`` as uint8, uint16 or float32 (other floats cast, integers range-checked)."""
    array = np.asarray(data)
    if array.dtype in (np.uint8, np.uint16, np.float32):
        return array
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    if array.dtype.kind in "iu" and (array.size == 0 or (array.min() >= 0 and array.max() < 2**16)):
        return array.astype(np.uint16)
    raise ValueError(
        f"cannot write {array.dtype} data as an ImageJ TIFF (use float32, uint16 or integers "
        "in 0..65535)"
    )


def write_tiff(
    path: PathLike,
    data: Any,
    pixel_size_nm: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    axes: str | None = None,
) -> Path:
    """Write an ImageJ-compatible TIFF atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Output file.
    data : array_like
        ``(rows, cols)`` or ``(frames, rows, cols)``. uint8/uint16/float32 are written as
        given, other floats as float32, other integers as uint16 (values must fit).
    pixel_size_nm : float, optional
        Pixel size, stored as resolution in pixels per micron (unit ``um``) and as
        ``metadata["pixel_size"]``; defaults to ``metadata["pixel_size"]`` if present.
    metadata : mapping, optional
        JSON-serialisable values (e.g. camera parameters) stored in the ImageJ ``Info``
        property under :data:`METADATA_KEY`; :func:`open_stack` returns them.
    axes : {"YX", "TYX"}, optional
        Axes of ``data``; inferred from its number of dimensions by default.

    Returns
    -------
    pathlib.Path
        The written file. Data over :data:`BIGTIFF_THRESHOLD` bytes are written as BigTIFF
        (with the ImageJ metadata; readable by tifffile and Bio-Formats).
    """
    array = _tiff_array(data)
    axes = axes or {2: "YX", 3: "TYX"}.get(array.ndim, "")
    if axes not in ("YX", "TYX") or len(axes) != array.ndim:
        raise ValueError(f"cannot write {array.ndim}-D data with axes {axes!r}; use YX or TYX")
    _imwrite_imagej(path, array, array.shape, array.dtype, pixel_size_nm, metadata, axes)
    return Path(path)


def write_tiff_frames(
    path: PathLike,
    frames: Iterable[np.ndarray],
    shape: tuple[int, int, int],
    pixel_size_nm: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a (frames, rows, cols) float32 stack frame by frame, atomically.

    ``frames`` yields 2D float arrays; only one frame is held at a time, so memory does not grow
    with the stack length. Same metadata conventions as :func:`write_tiff`.
    """
    stream = (np.asarray(frame, dtype=np.float32) for frame in frames)
    _imwrite_imagej(path, stream, tuple(shape), np.dtype(np.float32), pixel_size_nm, metadata,
                    "TYX")
    return Path(path)


def _imwrite_imagej(path, data, shape, dtype, pixel_size_nm, metadata, axes) -> None:
    """ImageJ TIFF with pixel size and our metadata, written through :func:`atomic_write`."""
    stored = dict(metadata or {})
    if pixel_size_nm is None:
        pixel_size_nm = stored.get("pixel_size")
    imagej: dict[str, Any] = {"axes": axes}
    resolution = None
    if pixel_size_nm is not None:
        if positive_number(pixel_size_nm) is None:
            raise InputError(f"pixel_size_nm={pixel_size_nm!r} must be a positive number")
        stored["pixel_size"] = float(pixel_size_nm)
        resolution = (1000.0 / float(pixel_size_nm),) * 2
        imagej["unit"] = "um"
    imagej["info"] = json.dumps({METADATA_KEY: stored})
    bigtiff = int(np.prod(shape)) * np.dtype(dtype).itemsize > BIGTIFF_THRESHOLD
    with atomic_write(path) as temporary, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nonconformant BigTIFF ImageJ")
        tifffile.imwrite(
            temporary,
            data,
            shape=shape,
            dtype=dtype,
            imagej=True,
            ome=False,
            bigtiff=bigtiff,
            resolution=resolution,
            metadata=imagej,
        )
