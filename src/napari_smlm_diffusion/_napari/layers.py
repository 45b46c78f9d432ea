"""Layer data tuples built from package objects (stacks, localization tables)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..geometry import nm_to_world


def image_contrast(frame: np.ndarray) -> list[float]:
    """Contrast limits from one frame (0.1 and 99.9 percentiles), so lazy stacks stay lazy."""
    low, high = np.percentile(np.asarray(frame, dtype=np.float32), [0.1, 99.9])
    return [float(low), float(max(high, low + 1.0))]


def points_from_table(
    table: pd.DataFrame, scale: tuple[float, ...], translate: tuple[float, ...],
    with_frames: bool = True,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Points coordinates (frame, y, x in world units) and features from a localization table."""
    y_world, x_world = nm_to_world(table["y_nm"].to_numpy(), table["x_nm"].to_numpy(), scale,
                                   translate)
    columns = [y_world, x_world]
    if with_frames:
        frame_scale = scale[0] if len(scale) == 3 else 1.0
        frame_translate = translate[0] if len(translate) == 3 else 0.0
        columns.insert(0, table["frame"].to_numpy() * frame_scale + frame_translate)
    coords = np.stack(columns, axis=1) if len(table) else np.zeros((0, len(columns)))
    return coords, table.reset_index(drop=True).copy()
