"""What the "Uncertainty annotation" widget reads from napari layers, as plain data: the default
threshold of a std map, coordinates moved between layers, drawn shapes as masks, localizations
on the std grid, the std map's first frame and pixel size."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...annotate import ellipse_polygon, polygon_mask
from ...errors import InputError
from ...geometry import FIRST_FRAME_KEY, pixel_centre
from .posterior_layers import UNCERTAINTY

DEFAULT_PERCENTILE = 99.0  # of the pixels clearly above the map's minimum
AREA_SHAPES = ("rectangle", "ellipse", "polygon")


def default_threshold(values: np.ndarray) -> float:
    """The DEFAULT_PERCENTILE of the values clearly above the map's minimum (by 1 % of its range):
    a calibrated std map has a floor everywhere (molecules every sample could have missed), which
    must not count as the bulk of the frame when the uncertain regions are chosen."""
    low, high = float(values.min()), float(values.max())
    above = values[values > low + 0.01 * (high - low)]
    return float(np.percentile(above if above.size else values, DEFAULT_PERCENTILE))


def _geometry(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(layer.scale, dtype=float), np.asarray(layer.translate, dtype=float)


def to_grid(source: Any, target: Any, coords: np.ndarray) -> np.ndarray:
    """Data coordinates of ``source`` -> data coordinates of ``target`` (scale and translate
    only, which is all this plugin's layers use), over their common trailing axes."""
    coords = np.asarray(coords, dtype=float)
    n = min(coords.shape[1], target.ndim)
    s_scale, s_translate = _geometry(source)
    t_scale, t_translate = _geometry(target)
    world = coords[:, -n:] * s_scale[-n:] + s_translate[-n:]
    return (world - t_translate[-n:]) / t_scale[-n:]


def drawn_masks(shapes: Any, std: Any) -> tuple[list[tuple[int | None, np.ndarray]], int]:
    """Area shapes of a Shapes layer as (frame index in the std map or None, mask on the std
    grid), and how many shapes were skipped (lines and paths, which have no area)."""
    shape = tuple(std.data.shape[-2:])
    regions, skipped = [], 0
    for vertices, kind in zip(shapes.data, shapes.shape_type, strict=True):
        if kind not in AREA_SHAPES:
            skipped += 1
            continue
        grid = to_grid(shapes, std, vertices)
        frame = None
        if grid.shape[1] == 3 and std.ndim == 3:
            frame = int(np.floor(grid[:, 0].mean() + 0.5))  # nearest frame
        polygon = ellipse_polygon(grid[:, -2:]) if kind == "ellipse" else grid[:, -2:]
        regions.append((frame, polygon_mask(polygon, shape)))
    return regions, skipped


def localizations_on_grid(points: Any, std: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Positions of a Points layer's localizations on the std grid (package convention) and
    their uncertainty (None when unknown); (None, None) without points."""
    if points is None or len(points.data) == 0:
        return None, None
    if points.ndim < std.ndim:
        raise InputError(f"'{points.name}' has no frame axis; choose localizations with "
                         "frames to measure a per-frame std map")
    # package convention on every axis (frame i covers [i, i+1) too)
    positions = pixel_centre(to_grid(points, std, np.asarray(points.data)))
    features = points.features
    uncertainty = (features[UNCERTAINTY].to_numpy(dtype=float)
                   if UNCERTAINTY in features.columns else None)
    return positions, uncertainty


def first_frame(std: Any) -> int:
    """Stack frame (0-based) of the std map's first frame: from the metadata of our layers, else
    from the frame axis' translate (0 for a 2D map)."""
    if std.ndim != 3:
        return 0
    first = std.metadata.get(FIRST_FRAME_KEY)
    if first is not None:
        return int(first)
    return int(round(float(std.translate[0]) / float(std.scale[0])))


def pixel_size_nm(std: Any) -> float:
    """Pixel size of the std map's grid in nm (metadata, else the layer's scale)."""
    return float(std.metadata.get("pixel_size_nm") or std.scale[-1])
