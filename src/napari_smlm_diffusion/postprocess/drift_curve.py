"""The per-frame drift curve on disk: CSV ``"frame","drift_x [nm]","drift_y [nm]"`` (frames
from 1, as in the localization tables), written by ``smlm-diffusion drift --curve`` and read by
``smlm-diffusion kde --sum --drift`` and ``smlm-diffusion posterior --drift`` to sum
drift-corrected frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write
from .common import PostprocessError

COLUMNS = ("frame", "drift_x [nm]", "drift_y [nm]")


def write_drift_curve(path: str | Path, drift_nm: np.ndarray) -> Path:
    """Write the drift curve (rows: frames from 0, columns x, y in nm) atomically."""
    drift_nm = np.asarray(drift_nm, dtype=float)
    table = pd.DataFrame({COLUMNS[0]: np.arange(1, len(drift_nm) + 1),
                          COLUMNS[1]: drift_nm[:, 0], COLUMNS[2]: drift_nm[:, 1]})
    with atomic_write(path) as temporary:
        table.to_csv(temporary, index=False)
    return Path(path)


def read_drift_curve(path: str | Path) -> np.ndarray:
    """The drift curve of a file written by :func:`write_drift_curve`, shape (frames, 2), nm."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise PostprocessError(f"{path}: cannot read the drift curve ({error})") from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise PostprocessError(f"{path}: a drift curve needs the columns {list(COLUMNS)}; "
                               f"missing {missing} (write it with smlm-diffusion drift --curve)")
    frames = table[COLUMNS[0]].to_numpy()
    if len(frames) == 0 or not np.array_equal(frames, np.arange(1, len(frames) + 1)):
        raise PostprocessError(f"{path}: the drift curve must list every frame from 1 in order")
    drift = table[list(COLUMNS[1:])].to_numpy(dtype=float)
    if not np.all(np.isfinite(drift)):
        raise PostprocessError(f"{path}: the drift curve has NaN or infinite values")
    return drift


def check_curve_covers(drift_nm: np.ndarray, frames: range, stack_frames: int | None,
                       path: str | Path) -> None:
    """Raise :class:`PostprocessError` unless the curve ``drift_nm`` (from ``path``) can belong
    to a stack of ``stack_frames`` frames (None: unknown) and covers the (0-based) ``frames`` to
    be summed."""
    if stack_frames is not None and len(drift_nm) > stack_frames:
        raise PostprocessError(f"{path}: the drift curve has {len(drift_nm)} frames but the stack "
                               f"has {stack_frames}: it belongs to another acquisition")
    if len(frames) and frames[-1] >= len(drift_nm):
        raise PostprocessError(f"{path}: the drift curve covers frames 1-{len(drift_nm)} but the "
                               f"frames to sum reach frame {frames[-1] + 1}: sum frames within "
                               f"1-{len(drift_nm)} or estimate the drift on all frames")
