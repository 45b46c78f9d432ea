"""Result layers of the KDE CNN, lying exactly over the raw layer, replaced in place on re-runs.

The 4x images use :func:`~napari_smlm_diffusion._napari.alignment.upsampled_geometry` of the raw
layer. The localizations use :func:`~napari_smlm_diffusion._napari.layers.points_from_table`: with
the raw layer's own scale and translate when its scale is the camera pixel size in nm (the usual
case), otherwise in nm with a layer scale that maps nm onto the raw layer's units.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from napari.layers import Image, Points

from ...pipeline import KdeResult
from ..alignment import upsampled_geometry
from ..layers import points_from_table
from .layer_choice import OUTPUT_KEY

KDE_NAME = "KDE"
SUM_NAME = "Super-resolution (CNN)"
POINTS_NAME = "Localizations (CNN)"
POINT_SIZE_PX = 0.6
COLOR_FEATURES = ("photons", "score")

LAYER_TYPES = {"image": Image, "points": Points}

LayerTuple = tuple[Any, dict[str, Any], str]


def _contrast(data: np.ndarray) -> list[float]:
    """Contrast limits: minimum to 99.9th percentile (sampled, so large stacks stay quick)."""
    flat = np.asarray(data).reshape(-1)
    flat = flat[:: max(1, flat.size // 4_000_000)]
    low, high = float(flat.min()), float(np.percentile(flat, 99.9))
    return [low, high if high > low else low + 1e-6]


def _common(raw: Any, role: str, metadata: dict[str, Any], ndim: int) -> dict[str, Any]:
    """Metadata (tagged as our output) and the raw layer's units of the last ``ndim`` axes."""
    attributes: dict[str, Any] = {"metadata": {OUTPUT_KEY: role, "source_layer": raw.name,
                                               **metadata}}
    units = getattr(raw, "units", None)
    if units is not None:
        attributes["units"] = tuple(str(unit) for unit in units)[-ndim:]
    return attributes


def sum_layer(raw: Any, result: KdeResult, upsampling: int, metadata: dict[str, Any]
              ) -> LayerTuple:
    """The summed KDE (super-resolution image) on the 4x grid of the raw layer's last two axes."""
    scale, translate = upsampled_geometry(raw.scale[-2:], raw.translate[-2:], upsampling)
    attributes = _common(raw, "sum", {**metadata,
                                      "pixel_size_nm": result.pixel_size_nm / upsampling}, 2)
    attributes.update(name=SUM_NAME, scale=scale, translate=translate, colormap="inferno",
                      blending="additive", contrast_limits=_contrast(result.sum_image))
    return result.sum_image, attributes, "image"


def kde_layer(raw: Any, result: KdeResult, upsampling: int, metadata: dict[str, Any]
              ) -> LayerTuple:
    """Per-frame KDEs (frames, 4 rows, 4 cols) over the chosen frames of a 3D raw layer."""
    scale, translate = upsampled_geometry(raw.scale, raw.translate, upsampling)
    translate = (translate[0] + result.frames.start * scale[0], *translate[1:])
    attributes = _common(raw, "kde", {**metadata,
                                      "pixel_size_nm": result.pixel_size_nm / upsampling}, 3)
    attributes.update(name=KDE_NAME, scale=scale, translate=translate, colormap="magma",
                      blending="additive", contrast_limits=_contrast(result.kdes), visible=False)
    return result.kdes, attributes, "image"


def points_layer(raw: Any, table: pd.DataFrame, pixel_size_nm: float, metadata: dict[str, Any]
                 ) -> LayerTuple:
    """Localizations as points (frame, y, x) with the table as features, over the raw layer."""
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
    attributes = _common(raw, "localizations", {**metadata, "raw_scale": nm_scale,
                                                "raw_translate": nm_translate,
                                                "pixel_size_nm": pixel_size_nm}, raw.ndim)
    color = next((c for c in COLOR_FEATURES if c in features.columns), None)
    attributes.update(name=POINTS_NAME, features=features, scale=layer_scale,
                      size=POINT_SIZE_PX * pixel_size_nm, border_width=0.0,
                      out_of_slice_display=False, face_color="cyan")
    if color is not None and len(features):
        attributes.update(face_color=color, face_colormap="viridis")
    return coords, attributes, "points"


def result_layers(raw: Any, result: KdeResult, upsampling: int, metadata: dict[str, Any]
                  ) -> list[LayerTuple]:
    """All result layers of a run (per-frame KDEs only if they were kept and the raw is 3D)."""
    layers = []
    if result.kdes is not None and raw.ndim == 3:
        layers.append(kde_layer(raw, result, upsampling, metadata))
    layers.append(sum_layer(raw, result, upsampling, metadata))
    layers.append(points_layer(raw, result.localizations, result.pixel_size_nm, metadata))
    return layers


def _find(viewer: Any, name: str) -> Any | None:
    """Our result layer called ``name``, or None."""
    for layer in viewer.layers:
        if layer.name == name and OUTPUT_KEY in layer.metadata:
            return layer
    return None


_IN_PLACE = ("scale", "translate", "metadata", "units", "contrast_limits", "size")


def show_layer(viewer: Any, layer_tuple: LayerTuple) -> Any:
    """Add a result layer, or replace the data of the existing one in place."""
    data, attributes, kind = layer_tuple
    existing = _find(viewer, attributes["name"])
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
        existing.face_colormap = attributes.get("face_colormap", existing.face_colormap)
        existing.face_color = attributes["face_color"]
        existing.refresh_colors(update_color_mapping=True)
    return existing


def remove_layer(viewer: Any, name: str) -> bool:
    """Remove our result layer called ``name`` (a stale output); True if there was one."""
    layer = _find(viewer, name)
    if layer is not None:
        viewer.layers.remove(layer)
    return layer is not None
