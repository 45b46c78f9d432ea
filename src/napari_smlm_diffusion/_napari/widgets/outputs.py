"""Result layers of the widgets: built to lie exactly over the raw layer, replaced in place.

Images on the 4x grid use :func:`~napari_smlm_diffusion.geometry.upsampled_geometry` of
the raw layer; per-frame images start at the first processed frame. Localizations use
:func:`~napari_smlm_diffusion._napari.layers.points_from_table`: with the raw layer's own scale
and translate when its scale is the camera pixel size in nm (the usual case), otherwise in nm with
a layer scale that maps nm onto the raw layer's units. Every result layer carries
:data:`~.layer_choice.OUTPUT_KEY` in its metadata; :func:`show_layer` finds a previous result by
name and gives it the new data, so running again never duplicates layers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from napari.layers import Image, Labels, Points, Shapes

from ...geometry import FIRST_FRAME_KEY, fine_pixel_nm, upsampled_geometry
from ..layers import points_from_table
from .layer_choice import OUTPUT_KEY

LAYER_TYPES = {"image": Image, "points": Points, "labels": Labels, "shapes": Shapes}
#: Points are drawn this many camera pixels wide.
POINT_SIZE_PX = 0.6

LayerTuple = tuple[Any, dict[str, Any], str]


def contrast(data: np.ndarray, low: float = 0.5, high: float = 99.8) -> list[float]:
    """Contrast limits: the ``low`` and ``high`` percentiles of the pixels above the background.

    The background is the median pixel (SMLM maps are mostly background); percentiles of the
    pixels above it put the background at or below the lower limit (drawn black), so an image
    whose background is slightly above zero shows no coloured square. Sampled (at most 4 M
    values) so large stacks stay quick; non-finite values are ignored.
    """
    flat = np.asarray(data).reshape(-1)
    flat = flat[:: max(1, flat.size // 4_000_000)]
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return [0.0, 1.0]
    above = flat[flat > np.median(flat)]
    values = above if above.size >= 2 else flat
    bottom, top = (float(v) for v in np.percentile(values, [low, high]))
    return [bottom, top if top > bottom else bottom + 1e-6]


def common_attributes(raw: Any, role: str, metadata: dict[str, Any], ndim: int
                      ) -> dict[str, Any]:
    """Metadata (tagged as our output) and the raw layer's units of the last ``ndim`` axes."""
    attributes: dict[str, Any] = {"metadata": {OUTPUT_KEY: role, "source_layer": raw.name,
                                               **metadata}}
    units = getattr(raw, "units", None)
    if units is not None:
        units = tuple(str(unit) for unit in units)
        attributes["units"] = (("pixel",) * ndim + units)[-ndim:]
    return attributes


def fine_image(raw: Any, data: np.ndarray, upsampling: int, pixel_size_nm: float,
               metadata: dict[str, Any], *, name: str, role: str,
               first_frame: int | None = None, lead: str | None = None) -> LayerTuple:
    """An image on the ``upsampling`` x grid lying over the raw layer.

    ``data`` is (rows, cols), or (frames, rows, cols) when ``first_frame`` is given (the frames
    sit at the raw layer's frames ``first_frame``, ``first_frame + 1``, ..., which the metadata
    record as :data:`~napari_smlm_diffusion.geometry.FIRST_FRAME_KEY`), optionally with one more
    leading axis called ``lead`` (e.g. the samples of a posterior) that gets its own slider.
    """
    per_frame = first_frame is not None
    if per_frame:
        scale, translate = upsampled_geometry(raw.scale[-3:], raw.translate[-3:], upsampling)
        translate = (translate[0] + first_frame * scale[0], *translate[1:])
        labels: tuple[str, ...] = ("frame", "y", "x")
        metadata = {**metadata, FIRST_FRAME_KEY: int(first_frame)}
    else:
        scale, translate = upsampled_geometry(raw.scale[-2:], raw.translate[-2:], upsampling)
        labels = ("y", "x")
    if lead is not None:
        scale, translate, labels = (1.0, *scale), (0.0, *translate), (lead, *labels)
    attributes = common_attributes(raw, role, {**metadata, "pixel_size_nm":
                                               fine_pixel_nm(pixel_size_nm, upsampling)},
                                   len(labels))
    attributes.update(name=name, scale=scale, translate=translate, axis_labels=labels)
    return data, attributes, "image"


def points_layer(raw: Any, table: pd.DataFrame, pixel_size_nm: float, metadata: dict[str, Any],
                 *, name: str, color_by: tuple[str, ...] = (), colormap: str = "viridis",
                 color_limits: tuple[float, float] | None = None,
                 default_color: str = "cyan") -> LayerTuple:
    """Localizations as points (frame, y, x) with the table as features, over the raw layer.

    The face colour follows the first column of ``color_by`` that the table has (``colormap``,
    over ``color_limits`` when given); points whose value is NaN are drawn hollow (border only).
    """
    raw_scale = tuple(float(v) for v in raw.scale)
    raw_translate = tuple(float(v) for v in raw.translate)
    factor = raw_scale[-1] / pixel_size_nm  # raw layer units per nm (1 when the scale is nm)
    if math.isclose(factor, 1.0, rel_tol=1e-9):
        nm_scale, nm_translate, layer_scale = raw_scale, raw_translate, (1.0,) * raw.ndim
    else:
        nm_scale = (*raw_scale[:-2], pixel_size_nm, pixel_size_nm)
        nm_translate = (*raw_translate[:-2], *(t / factor for t in raw_translate[-2:]))
        layer_scale = (*(1.0,) * (raw.ndim - 2), factor, factor)
    coords, features = points_from_table(table, nm_scale, nm_translate,
                                         with_frames=raw.ndim == 3)
    attributes = common_attributes(raw, "localizations", {**metadata, "raw_scale": nm_scale,
                                                          "raw_translate": nm_translate,
                                                          "pixel_size_nm": pixel_size_nm},
                                   raw.ndim)
    color = next((c for c in color_by if c in features.columns), None)
    attributes.update(name=name, features=features, scale=layer_scale,
                      size=POINT_SIZE_PX * pixel_size_nm, border_width=0.0,
                      out_of_slice_display=False, face_color=default_color)
    if color is not None and len(features):
        values = features[color].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        limits = color_limits or ((float(finite.min()), float(finite.max())) if finite.size
                                  else (0.0, 1.0))
        if limits[1] <= limits[0]:
            limits = (limits[0], limits[0] + 1e-6)
        attributes.update(face_color=color, face_colormap=colormap,
                          face_contrast_limits=tuple(float(v) for v in limits))
        if not np.isfinite(values).all():
            attributes.update(border_color=default_color, border_width=0.12,
                              border_width_is_relative=True)
    return coords, attributes, "points"


def find_output(viewer: Any, name: str) -> Any | None:
    """Our result layer called ``name``, or None."""
    for layer in viewer.layers:
        if layer.name == name and OUTPUT_KEY in layer.metadata:
            return layer
    return None


_IN_PLACE = ("scale", "translate", "metadata", "units", "axis_labels", "contrast_limits",
             "size", "colormap")
_POINT_STYLE = ("border_width", "border_width_is_relative", "border_color")


def show_layer(viewer: Any, layer_tuple: LayerTuple) -> Any:
    """Add a result layer, or replace the data of the existing one in place.

    The user's display choices of an existing layer (visibility, opacity, blending) are kept; a
    layer of another type or dimensionality is replaced.
    """
    data, attributes, kind = layer_tuple
    existing = find_output(viewer, attributes["name"])
    ndim = np.shape(data)[1] if kind == "points" else np.ndim(data)
    if existing is not None and (not isinstance(existing, LAYER_TYPES[kind])
                                 or existing.ndim != ndim):
        viewer.layers.remove(existing)
        existing = None
    if existing is None:
        return getattr(viewer, f"add_{kind}")(data, **attributes)
    existing.data = data
    for key in _IN_PLACE:
        if key in attributes:
            setattr(existing, key, attributes[key])
    if kind == "points":
        existing.features = attributes["features"]
        for key in _POINT_STYLE:
            if key in attributes:
                setattr(existing, key, attributes[key])
        existing.face_colormap = attributes.get("face_colormap", existing.face_colormap)
        existing.face_color = attributes["face_color"]
        existing.refresh_colors(update_color_mapping=True)
        if "face_contrast_limits" in attributes:  # after the refresh, which recomputes them
            existing.face_contrast_limits = attributes["face_contrast_limits"]
    return existing


def remove_layer(viewer: Any, name: str) -> bool:
    """Remove our result layer called ``name`` (a stale output); True if there was one."""
    layer = find_output(viewer, name)
    if layer is not None:
        viewer.layers.remove(layer)
    return layer is not None
