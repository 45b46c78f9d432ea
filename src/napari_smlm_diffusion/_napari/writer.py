"""npe2 writers: localization Points layers as ThunderSTORM CSV, images as TIFF with pixel size."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from ..geometry import world_to_nm
from ..io import write_localizations, write_tiff


def table_from_points(data: np.ndarray, attributes: dict[str, Any]) -> pd.DataFrame:
    """Localization table (package convention, nm) from a Points layer's data and attributes.

    Only the shown points are kept (``attributes["shown"]``, set by the localization filters),
    so what is exported is what the filters let through.
    """
    data = np.asarray(data, dtype=np.float64)
    features = attributes.get("features")
    features = pd.DataFrame(features if features is not None else {})
    shown = attributes.get("shown")
    if shown is not None and np.shape(shown) == (len(data),) and not np.all(shown):
        keep = np.asarray(shown, dtype=bool)
        data = data[keep]
        features = features[keep] if len(features) == len(keep) else features
    metadata = attributes.get("metadata") or {}
    scale = tuple(metadata.get("raw_scale") or attributes.get("scale") or (1.0,) * data.shape[1])
    translate = tuple(metadata.get("raw_translate") or (0.0,) * len(scale))
    if data.ndim != 2 or data.shape[1] not in (2, 3):
        raise ValueError(f"expected points with 2 (y, x) or 3 (frame, y, x) coordinates, "
                         f"got shape {data.shape}")
    y_nm, x_nm = world_to_nm(data[:, -2], data[:, -1], scale, translate)
    table = features.drop(columns=["frame", "x_nm", "y_nm"], errors="ignore")
    table = table.reset_index(drop=True)
    if data.shape[1] == 3:
        frame_scale = scale[0] if len(scale) == 3 else 1.0
        frame_translate = translate[0] if len(translate) == 3 else 0.0
        table["frame"] = np.rint((data[:, 0] - frame_translate) / frame_scale).astype(np.int64)
    else:
        table["frame"] = 0
    table["x_nm"], table["y_nm"] = x_nm, y_nm
    return table


def write_points_csv(path: str, data: Any, attributes: dict) -> list[str]:
    """Write a Points layer as a ThunderSTORM-compatible CSV (frames from 1)."""
    write_localizations(path, table_from_points(data, attributes))
    return [path]


def _jsonable(metadata: dict[str, Any]) -> dict[str, Any]:
    """The entries of a layer's metadata that JSON can store (others are left out)."""
    kept = {}
    for key, value in metadata.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        kept[str(key)] = value
    return kept


def write_image_tiff(path: str, data: Any, attributes: dict) -> list[str]:
    """Write an image (or labels) layer as TIFF with its pixel size in nm.

    The pixel size is the layer's ``pixel_size_nm`` metadata (set on all result layers of this
    plugin, e.g. the posterior mean and std on the 4x grid), else its scale when that is not 1.
    Axes before the last three (e.g. the samples of "Posterior samples") are folded into the
    frame axis; their shape is kept in the metadata (``leading_shape``).
    """
    metadata = _jsonable(dict(attributes.get("metadata") or {}))
    scale = attributes.get("scale") or (1.0,)
    pixel = metadata.get("pixel_size_nm")
    if not (isinstance(pixel, int | float) and pixel > 0):
        pixel = float(scale[-1]) if scale[-1] != 1.0 else None
    array = np.asarray(data)
    if array.ndim > 3:
        metadata["leading_shape"] = list(array.shape[:-2])
        array = array.reshape(-1, *array.shape[-2:])
    axes = "TYX" if array.ndim == 3 else "YX"
    write_tiff(path, array, pixel_size_nm=pixel, metadata=metadata, axes=axes)
    return [path]
