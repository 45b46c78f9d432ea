"""A drift curve applied to an image layer of per-frame maps (KDEs, posterior means or stds
aligned with the raw data): every frame is shifted back by its drift and the frames are summed,
as ``smlm-diffusion kde --sum --drift`` does (:func:`~napari_smlm_diffusion.postprocess.drift.
sum_shifted_frames`). Per-frame std maps are combined as the posterior's sum std: the sqrt of the
sum of the shifted variances. The sum lies over the source layer (same scale and translate)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.layers import Image

from ...geometry import FIRST_FRAME_KEY
from ...postprocess.drift import sum_shifted_frames
from ...postprocess.drift_curve import check_curve_covers
from .jobs import Finished, Job, Progress, Stopped
from .layer_choice import OUTPUT_KEY
from .outputs import LayerTuple, common_attributes, contrast
from .posterior_layers import STD_ROLE

#: Frames shifted between two progress reports (and checks for Cancel).
CHUNK_FRAMES = 16
SUFFIX = "drift-corrected sum"
#: Metadata key that only the posterior's std maps carry (``posterior`` command, std.tif).
STD_FILE_KEY = "std_calibration"


@dataclass(frozen=True)
class FrameMaps:
    """The per-frame maps of a layer: ``data`` (frames, rows, cols) at the raw frames
    ``first_frame``, ``first_frame + 1``, ...; ``pixel_size_nm`` of the maps; ``is_std`` for
    standard-deviation maps (combined through their variances)."""

    data: Any
    first_frame: int
    pixel_size_nm: float
    is_std: bool


def per_frame_layers(viewer: Any) -> list[tuple[str, Image]]:
    """Image layers of per-frame maps aligned with the raw data (they record the first frame)."""
    return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, Image)
            and layer.ndim == 3 and not layer.multiscale and FIRST_FRAME_KEY in layer.metadata]


def frame_maps(layer: Image | None) -> FrameMaps:
    """The per-frame maps of ``layer``; ValueError (one line) if it does not hold them."""
    if layer is None:
        raise ValueError("choose an image layer of per-frame maps (KDE or posterior mean/std)")
    metadata = layer.metadata
    if layer.ndim != 3 or FIRST_FRAME_KEY not in metadata:
        raise ValueError(f"layer '{layer.name}' holds no per-frame maps: expected a 3D image "
                         f"with '{FIRST_FRAME_KEY}' in its metadata (a KDE or posterior layer)")
    pixel = float(metadata.get("pixel_size_nm", float("nan")))
    if not (np.isfinite(pixel) and pixel > 0):
        raise ValueError(f"layer '{layer.name}' has no positive 'pixel_size_nm' in its metadata: "
                         "the drift (nm) cannot be converted to its pixels")
    # a posterior std layer of the GUI, or std.tif of the posterior command opened from disk
    is_std = metadata.get(OUTPUT_KEY) == STD_ROLE or STD_FILE_KEY in metadata
    return FrameMaps(layer.data, int(metadata[FIRST_FRAME_KEY]), pixel, is_std)


def drift_sum_job(maps: FrameMaps, drift_nm: np.ndarray, curve_name: str,
                  stop: threading.Event) -> Job:
    """Sum ``maps`` shifted back by ``drift_nm`` (nm per frame from 0), reporting progress every
    :data:`CHUNK_FRAMES` frames; Stopped if cancelled. The result is float32 (rows, cols)."""
    n = int(maps.data.shape[0])
    check_curve_covers(drift_nm, range(maps.first_frame, maps.first_frame + n), None,
                       curve_name)
    started = time.perf_counter()
    yield Progress(0, n, f"shifting {n} frames...")
    total = np.zeros(maps.data.shape[-2:], np.float64)
    for start in range(0, n, CHUNK_FRAMES):
        if stop.is_set():
            return Stopped(start, n)
        stop_at = min(n, start + CHUNK_FRAMES)
        chunk = (np.asarray(maps.data[k], dtype=np.float64) for k in range(start, stop_at))
        if maps.is_std:
            chunk = (frame**2 for frame in chunk)
        total += sum_shifted_frames(chunk, drift_nm, maps.pixel_size_nm,
                                    first_frame=maps.first_frame + start)
        yield Progress(stop_at, n, f"{stop_at} / {n} frames shifted",
                       seconds=time.perf_counter() - started)
    if maps.is_std:  # interpolation can undershoot zero next to sharp peaks
        total = np.sqrt(np.maximum(total, 0.0))
    return Finished(total.astype(np.float32), "cpu", time.perf_counter() - started)


def drift_sum_layer(source: Image, image: np.ndarray, drift_source: str) -> LayerTuple:
    """The drift-corrected sum of ``source`` as a 2D image layer lying exactly over it."""
    metadata = {"pixel_size_nm": float(source.metadata["pixel_size_nm"]),
                "drift_corrected_with": drift_source}
    attributes = common_attributes(source, "drift_corrected_sum", metadata, 2)
    attributes.update(name=f"{source.name} {SUFFIX}", scale=tuple(source.scale[-2:]),
                      translate=tuple(source.translate[-2:]),
                      axis_labels=tuple(source.axis_labels[-2:]),
                      contrast_limits=contrast(image), colormap=source.colormap.name,
                      blending="additive")
    return image, attributes, "image"
