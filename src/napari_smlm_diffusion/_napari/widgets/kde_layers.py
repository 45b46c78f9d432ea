"""Result layers of the KDE CNN (see :mod:`.outputs` for alignment and in-place replacement)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...pipeline import KdeResult
from . import outputs
from .outputs import LayerTuple, contrast, fine_image, remove_layer, show_layer

__all__ = ["KDE_NAME", "POINTS_NAME", "SUM_NAME", "kde_layer", "points_layer", "remove_layer",
           "result_layers", "show_layer", "sum_layer"]

KDE_NAME = "KDE"
SUM_NAME = "Super-resolution (CNN)"
POINTS_NAME = "Localizations (CNN)"
COLOR_FEATURES = ("photons", "score")


def sum_layer(raw: Any, result: KdeResult, upsampling: int, metadata: dict[str, Any]
              ) -> LayerTuple:
    """The summed KDE (super-resolution image) on the 4x grid of the raw layer's last two axes."""
    data, attributes, kind = fine_image(raw, result.sum_image, upsampling, result.pixel_size_nm,
                                        metadata, name=SUM_NAME, role="sum")
    attributes.update(colormap="inferno", blending="additive",
                      contrast_limits=contrast(result.sum_image))
    return data, attributes, kind


def kde_layer(raw: Any, result: KdeResult, upsampling: int, metadata: dict[str, Any]
              ) -> LayerTuple:
    """Per-frame KDEs (frames, 4 rows, 4 cols) over the chosen frames of a 3D raw layer."""
    data, attributes, kind = fine_image(raw, result.kdes, upsampling, result.pixel_size_nm,
                                        metadata, name=KDE_NAME, role="kde",
                                        first_frame=result.frames.start)
    attributes.update(colormap="magma", blending="additive", contrast_limits=contrast(data),
                      visible=False)
    return data, attributes, kind


def points_layer(raw: Any, table: pd.DataFrame, pixel_size_nm: float, metadata: dict[str, Any]
                 ) -> LayerTuple:
    """The CNN's localizations as points (frame, y, x), coloured by photons."""
    return outputs.points_layer(raw, table, pixel_size_nm, metadata, name=POINTS_NAME,
                                color_by=COLOR_FEATURES)


def result_layers(raw: Any, result: KdeResult, upsampling: int, metadata: dict[str, Any]
                  ) -> list[LayerTuple]:
    """All result layers of a run (per-frame KDEs only if they were kept and the raw is 3D)."""
    layers = []
    if result.kdes is not None and raw.ndim == 3:
        layers.append(kde_layer(raw, result, upsampling, metadata))
    layers.append(sum_layer(raw, result, upsampling, metadata))
    layers.append(points_layer(raw, result.localizations, result.pixel_size_nm, metadata))
    return layers
