"""Layer geometry: package coordinates (nm) <-> napari world coordinates, aligned layers.

napari puts the centre of data pixel i at world ``translate + scale * i``. In the package
convention pixel c covers [c, c+1) pixels, so its centre is at (c + 0.5) * pixel size nm. A raw
layer with scale ``s`` and translate ``t`` therefore maps a package coordinate ``p`` nm to world
``t + p - s / 2``, and a layer upsampled by ``u`` lies exactly over it with scale ``s / u`` and
translate ``t + s * (1 / (2 u) - 1 / 2)``.
"""

from __future__ import annotations

import numpy as np


def upsampled_geometry(
    scale: tuple[float, ...], translate: tuple[float, ...], factor: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale and translate of a layer upsampled ``factor`` times along the last two axes."""
    scale = tuple(float(v) for v in scale)
    translate = tuple(float(v) for v in translate)
    lead_s, lead_t = scale[:-2], translate[:-2]
    fine_s = tuple(s / factor for s in scale[-2:])
    fine_t = tuple(t + s * (1.0 / (2 * factor) - 0.5) for s, t in zip(scale[-2:], translate[-2:],
                                                                         strict=True))
    return lead_s + fine_s, lead_t + fine_t


def nm_to_world(
    y_nm: np.ndarray, x_nm: np.ndarray, scale: tuple[float, ...], translate: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Package (y, x) in nm -> world (y, x) of a raw layer whose pixel size is ``scale[-2:]`` nm.

    The layer's scale is taken to be in nm per pixel along y and x.
    """
    sy, sx = scale[-2:]
    ty, tx = translate[-2:]
    return ty + np.asarray(y_nm) - sy / 2.0, tx + np.asarray(x_nm) - sx / 2.0


def world_to_nm(
    y_world: np.ndarray, x_world: np.ndarray, scale: tuple[float, ...],
    translate: tuple[float, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`nm_to_world`."""
    sy, sx = scale[-2:]
    ty, tx = translate[-2:]
    return np.asarray(y_world) - ty + sy / 2.0, np.asarray(x_world) - tx + sx / 2.0
