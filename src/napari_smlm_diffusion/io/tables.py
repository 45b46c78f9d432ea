"""Localization tables: ThunderSTORM CSV on disk (1-based frames), DataFrames in memory
(0-based frames)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import TableError, one_line
from ..geometry import from_user_frame, to_user_frame
from .files import PathLike, atomic_write, check_input_file

_LOCALIZATION_COLUMNS = (
    ("x [nm]", "x_nm", math.nan),
    ("y [nm]", "y_nm", math.nan),
    ("sigma [nm]", "sigma_nm", 0.0),
    ("intensity [photon]", "photons", math.nan),
    ("offset [photon]", "background", 0.0),
    ("bkgstd [photon]", "bkgstd", 0.0),
    ("uncertainty [nm]", "uncertainty_nm", math.nan),
)
# optional columns, written after the ThunderSTORM ones only when present in memory
_EXTRA_COLUMNS = (
    ("uncertainty_x [nm]", "uncertainty_x_nm"),
    ("uncertainty_y [nm]", "uncertainty_y_nm"),
    ("detection probability", "detection_probability"),
    ("score", "score"),
    ("crlb_x [nm]", "crlb_x_nm"),
    ("crlb_y [nm]", "crlb_y_nm"),
    ("local density [um^-2]", "local_density_um2"),
    ("frames on", "frames_on"),
    ("resolved", "resolved"),
)
_TRUTH_COLUMNS = (
    ("x [nm]", "x_nm", math.nan),
    ("y [nm]", "y_nm", math.nan),
    ("intensity [photon]", "photons", math.nan),
)
# simulated truth: which fluorophore (blinking) and the stage drift included in x, y
_TRUTH_EXTRA_COLUMNS = (
    ("emitter", "emitter"),
    ("drift_x [nm]", "drift_x_nm"),
    ("drift_y [nm]", "drift_y_nm"),
)
_FILE_TO_MEMORY = {
    "frame": "frame",
    **{name: column for name, column, _ in _LOCALIZATION_COLUMNS},
    **dict(_EXTRA_COLUMNS),
    **dict(_TRUTH_EXTRA_COLUMNS),
}



#: ``DataFrame.to_csv`` options of the rows of a table file (the header is written apart).
CSV_ROWS = {"header": False, "index": False, "na_rep": "NaN", "lineterminator": "\n"}


def _write_table(
    path: PathLike,
    table: pd.DataFrame,
    columns: tuple[tuple[str, str, float], ...],
    extras: tuple[tuple[str, str], ...],
) -> Path:
    """Write ``table`` as a ThunderSTORM-style CSV (ids, 1-based frames) atomically."""
    out = _file_rows(path, table, columns, extras)
    with atomic_write(path) as temporary, open(temporary, "w", newline="") as handle:
        handle.write(csv_header(out.columns) + "\n")
        out.to_csv(handle, **CSV_ROWS)
    return Path(path)


def _file_rows(path: PathLike, table: pd.DataFrame, columns: tuple[tuple[str, str, float], ...],
               extras: tuple[tuple[str, str], ...], first_id: int = 1) -> pd.DataFrame:
    """The rows of ``table`` as written to a CSV (ids from ``first_id``, 1-based frames)."""
    missing = [c for c in ("frame", "x_nm", "y_nm") if c not in table.columns]
    if missing:
        raise TableError(f"{path}: cannot write localizations without column(s) {missing}")
    frames = table["frame"].to_numpy(dtype=float)
    if frames.size and not (
        np.isfinite(frames).all() and (frames >= 0).all() and (frames == np.round(frames)).all()
    ):
        raise TableError(f"{path}: column 'frame' must hold 0-based whole frame numbers")
    out = pd.DataFrame({"id": np.arange(first_id, first_id + len(table)),
                        "frame": to_user_frame(frames.astype(np.int64))})
    for name, column, fill in columns:
        out[name] = table[column].to_numpy(dtype=float) if column in table.columns else fill
    for name, column in extras:
        if column in table.columns:
            out[name] = table[column].to_numpy(dtype=float)
    return out


def csv_header(names) -> str:
    """The quoted header line (without newline) of a table file."""
    return ",".join(f'"{name}"' for name in names)


def localization_rows(path: PathLike, table: pd.DataFrame, first_id: int = 1) -> pd.DataFrame:
    """The rows :func:`write_localizations` writes for ``table``, with ids from ``first_id``:
    the pieces of a table streamed to ``path`` chunk by chunk (header: :func:`csv_header`)."""
    return _file_rows(path, table, _LOCALIZATION_COLUMNS, _EXTRA_COLUMNS, first_id)


def write_localizations(path: PathLike, table: pd.DataFrame) -> Path:
    """Write localizations as a ThunderSTORM-compatible CSV, atomically.

    The header is ``"id","frame","x [nm]","y [nm]","sigma [nm]","intensity [photon]",
    "offset [photon]","bkgstd [photon]","uncertainty [nm]"``, followed by
    ``"uncertainty_x [nm]","uncertainty_y [nm]","detection probability","score"`` for those of
    these optional columns present in ``table``. Frames are written 1-based, ids are 1..n.
    Missing ``sigma_nm``, ``background`` and ``bkgstd`` are written as 0, missing ``photons``
    and ``uncertainty_nm`` (and any NaN value) as ``NaN``. Other columns are not written.

    Parameters
    ----------
    path : str or os.PathLike
        Output CSV.
    table : pandas.DataFrame
        Needs ``frame`` (0-based), ``x_nm`` and ``y_nm``.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    return _write_table(path, table, _LOCALIZATION_COLUMNS, _EXTRA_COLUMNS)


def write_truth(path: PathLike, table: pd.DataFrame) -> Path:
    """Write ground-truth emitters as CSV ``"id","frame","x [nm]","y [nm]","intensity [photon]"``
    (plus ``"emitter"``, ``"drift_x [nm]"``, ``"drift_y [nm]"`` when the table has them).

    Same conventions as :func:`write_localizations` (1-based frames, missing ``photons`` as NaN).

    Parameters
    ----------
    path : str or os.PathLike
        Output CSV.
    table : pandas.DataFrame
        Needs ``frame`` (0-based), ``x_nm``, ``y_nm``; ``photons`` optional.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    return _write_table(path, table, _TRUTH_COLUMNS, _TRUTH_EXTRA_COLUMNS)


def read_localizations(path: PathLike) -> pd.DataFrame:
    """Read a ThunderSTORM CSV (quoted or unquoted header, any subset of its columns).

    Known columns are renamed to the in-memory names (see the module docstring) and made
    float; ``frame`` becomes 0-based int64; ``id`` is dropped; other columns are kept as they
    are.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file; needs the columns ``frame``, ``x [nm]`` and ``y [nm]``.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    TableError
        One line naming the file if it is missing, empty, not a CSV, lacks a required column
        or holds invalid values.
    """
    path = Path(path)
    check_input_file(path, TableError)
    try:
        raw = pd.read_csv(path, skipinitialspace=True)
    except (OSError, ValueError) as exc:
        raise TableError(f"{path}: not a readable CSV file ({one_line(exc)})") from exc
    raw.columns = [str(name).strip() for name in raw.columns]
    missing = [name for name in ("frame", "x [nm]", "y [nm]") if name not in raw.columns]
    if missing:
        found = ", ".join(repr(name[:30]) for name in raw.columns[:6])
        raise TableError(
            f"{path}: not a ThunderSTORM localization CSV: missing column(s) "
            f"{', '.join(repr(m) for m in missing)} (found {found or 'none'})"
        )
    table = raw.drop(columns=[c for c in ("id",) if c in raw.columns])
    for name in table.columns.intersection(list(_FILE_TO_MEMORY)):
        try:
            table[name] = pd.to_numeric(table[name]).astype(float)
        except (TypeError, ValueError) as exc:
            raise TableError(f"{path}: column {name!r} holds non-numeric values") from exc
    frames = table["frame"].to_numpy()
    if frames.size and not (
        np.isfinite(frames).all() and (frames >= 1).all() and (frames == np.round(frames)).all()
    ):
        raise TableError(f"{path}: column 'frame' must hold whole numbers >= 1 (1-based frames)")
    table["frame"] = from_user_frame(frames.astype(np.int64))
    return table.rename(columns=_FILE_TO_MEMORY).reset_index(drop=True)
