"""npe2 reader: TIFF stacks open lazily, with the pixel size as layer scale (nm)."""

from __future__ import annotations

from pathlib import Path

from ..io import open_stack
from .layers import image_contrast

TIFF_SUFFIXES = (".tif", ".tiff")


def get_reader(path: str | list[str]):
    """Return a reader for a single TIFF path, or None when the file is not ours to open."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not str(path).lower().endswith(TIFF_SUFFIXES):
        return None
    return read_stack


def read_stack(path: str | list[str]) -> list[tuple]:
    """Read a TIFF stack as one lazy image layer (frames, rows, cols) with scale in nm."""
    path = path[0] if isinstance(path, list) else path
    stack = open_stack(path)
    pixel = stack.pixel_size_nm or 1.0
    scale = (1.0, pixel, pixel)[-stack.data.ndim:]
    metadata = {"source_path": str(Path(path)), "pixel_size_nm": stack.pixel_size_nm,
                **stack.metadata}
    first = stack.data[0] if stack.data.ndim == 3 else stack.data[:]
    attributes = {
        "name": Path(path).stem,
        "scale": scale,
        "metadata": metadata,
        "contrast_limits": image_contrast(first),
        "colormap": "gray",
        "axis_labels": ("frame", "y", "x")[-stack.data.ndim:],
    }
    if stack.pixel_size_nm:
        attributes["units"] = ("pixel", "nm", "nm")[-stack.data.ndim:]
    return [(stack.data, attributes, "image")]
