"""Result layers of the diffusion posterior (see :mod:`.outputs` for alignment and in-place
replacement).

"Posterior mean" and "Posterior std" are per frame on the 4x grid, at the frames they were
computed for; "Posterior samples" has one more leading axis (its own slider) holding the kept
samples; "Localizations" are coloured by their posterior uncertainty (hollow where it is
undetermined: a molecule found in fewer than two samples).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import outputs
from .outputs import LayerTuple, contrast, fine_image
from .posterior_job import PosteriorMaps

MEAN_NAME = "Posterior mean"
STD_NAME = "Posterior std"
SAMPLES_NAME = "Posterior samples"
POINTS_NAME = "Localizations"
ALL_NAMES = (MEAN_NAME, STD_NAME, SAMPLES_NAME, POINTS_NAME)
#: Roles in the layers' metadata (:data:`~.layer_choice.OUTPUT_KEY`).
STD_ROLE = "posterior_std"
UNCERTAINTY = "uncertainty_nm"


def uncertainty_limits(table: pd.DataFrame) -> tuple[float, float] | None:
    """Colour range of the uncertainty: 5th to 95th percentile of the finite values."""
    if UNCERTAINTY not in table.columns:
        return None
    values = table[UNCERTAINTY].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    low, high = np.percentile(values, [5.0, 95.0])
    return float(low), float(max(high, low + 1e-3))


def result_layers(raw: Any, result: PosteriorMaps, pixel_size_nm: float,
                  metadata: dict[str, Any]) -> list[LayerTuple]:
    """Mean, std, kept samples (if any) and localizations, aligned over ``raw``."""
    per_frame = raw.ndim == 3
    upsampling = result.upsampling
    first = result.frames.start if per_frame else None

    def frames(data: np.ndarray) -> np.ndarray:
        return data if per_frame else data[0]

    mean = fine_image(raw, frames(result.means), upsampling, pixel_size_nm, metadata,
                      name=MEAN_NAME, role="posterior_mean", first_frame=first)
    mean[1].update(colormap="inferno", blending="additive",
                   contrast_limits=contrast(mean[0], high=99.5))
    std = fine_image(raw, frames(result.stds), upsampling, pixel_size_nm, metadata,
                     name=STD_NAME, role=STD_ROLE, first_frame=first)
    std[1].update(colormap="viridis", blending="translucent", opacity=0.8,
                  contrast_limits=contrast(std[0], low=1.0, high=99.5))
    layers = [mean, std]
    if result.samples is not None:
        kept = np.moveaxis(result.samples, 1, 0) if per_frame else result.samples[0]
        samples = fine_image(raw, kept, upsampling,
                             pixel_size_nm, metadata, name=SAMPLES_NAME, role="posterior_samples",
                             first_frame=first, lead="sample")
        samples[1].update(colormap="inferno", blending="additive", visible=False,
                          contrast_limits=mean[1]["contrast_limits"])
        layers.append(samples)
    layers.append(outputs.points_layer(raw, result.localizations, pixel_size_nm, metadata,
                                       name=POINTS_NAME, color_by=(UNCERTAINTY,),
                                       colormap="plasma",
                                       color_limits=uncertainty_limits(result.localizations)))
    return layers
