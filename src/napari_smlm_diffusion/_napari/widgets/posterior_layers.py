"""Result layers of the diffusion posterior (see :mod:`.outputs` for alignment and in-place
replacement).

"Posterior mean" and "Posterior std" are per frame on the 4x grid, at the frames they were
computed for; "Posterior samples" has one more leading axis (its own slider) holding the kept
samples; "Posterior sum" and "Posterior sum std" are the mean summed over the frames (the
super-resolution image) and its calibrated std; "Localizations" are coloured by their posterior
uncertainty (hollow where it is undetermined: a molecule found in fewer than two samples).
The localizations and the mean are shown on top; the std, samples and sums start hidden.
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
SUM_MEAN_NAME = "Posterior sum"
SUM_STD_NAME = "Posterior sum std"
ALL_NAMES = (MEAN_NAME, STD_NAME, SAMPLES_NAME, POINTS_NAME, SUM_MEAN_NAME, SUM_STD_NAME)
#: Top to bottom: the main results first (shown), then the secondary ones.
STACKING = (POINTS_NAME, MEAN_NAME, STD_NAME, SAMPLES_NAME, SUM_MEAN_NAME, SUM_STD_NAME)
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
    """Mean, std, kept samples (if any), the sums over frames and the localizations, aligned
    over ``raw``."""
    per_frame = raw.ndim == 3
    upsampling = result.upsampling
    first = result.frames.start if per_frame else None

    def frames(data: np.ndarray) -> np.ndarray:
        return data if per_frame else data[0]

    mean = fine_image(raw, frames(result.means), upsampling, pixel_size_nm, metadata,
                      name=MEAN_NAME, role="posterior_mean", first_frame=first)
    mean[1].update(colormap="inferno", blending="additive",
                   contrast_limits=contrast(mean[0]))
    std = fine_image(raw, frames(result.stds), upsampling, pixel_size_nm, metadata,
                     name=STD_NAME, role=STD_ROLE, first_frame=first)
    std[1].update(colormap="viridis", blending="translucent", opacity=0.8, visible=False,
                  contrast_limits=contrast(std[0]))
    sum_mean = fine_image(raw, result.sum_mean, upsampling, pixel_size_nm, metadata,
                          name=SUM_MEAN_NAME, role="posterior_sum")
    sum_mean[1].update(colormap="inferno", blending="additive", visible=False,
                       contrast_limits=contrast(result.sum_mean))
    sum_std = fine_image(raw, result.sum_std, upsampling, pixel_size_nm, metadata,
                         name=SUM_STD_NAME, role="posterior_sum_std")
    sum_std[1].update(colormap="viridis", blending="translucent", visible=False,
                      contrast_limits=contrast(result.sum_std))
    layers = [mean, std, sum_mean, sum_std]
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
