"""Checks shared by the post-processing steps: required columns, finite coordinates."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io import TableError


class PostprocessError(InputError):
    """A post-processing step cannot run on the given input (one line, saying what was expected)."""


def require_columns(table: pd.DataFrame, columns: tuple[str, ...], step: str) -> None:
    """Raise :class:`TableError` if ``table`` is empty or lacks one of ``columns``."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise TableError(f"{step} needs the column(s) {', '.join(missing)}; the table has "
                         f"{', '.join(map(str, table.columns[:8])) or 'no columns'}")
    if len(table) == 0:
        raise TableError(f"{step} needs localizations; the table is empty")


def finite_column(table: pd.DataFrame, column: str, step: str) -> np.ndarray:
    """``table[column]`` as float64; :class:`TableError` if any value is NaN or infinite."""
    values = table[column].to_numpy(dtype=np.float64)
    bad = values.size - int(np.count_nonzero(np.isfinite(values)))
    if bad:
        raise TableError(f"{step}: column {column!r} holds {bad} NaN or infinite value(s) "
                         f"of {values.size}; remove or fill them first")
    return values


def coordinates(table: pd.DataFrame, step: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked ``x_nm``, ``y_nm`` (float64) and ``frame`` (int64) of a non-empty table."""
    require_columns(table, ("frame", "x_nm", "y_nm"), step)
    x = finite_column(table, "x_nm", step)
    y = finite_column(table, "y_nm", step)
    frames = finite_column(table, "frame", step)
    if np.any(frames < 0) or np.any(frames != np.round(frames)):
        raise TableError(f"{step}: column 'frame' must hold 0-based whole frame numbers")
    return x, y, frames.astype(np.int64)
