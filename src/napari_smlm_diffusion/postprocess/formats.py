"""Localization files by extension: ThunderSTORM CSV (``.csv``) or Picasso HDF5 (``.hdf5``,
``.h5``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..io import PathLike, read_localizations, write_localizations
from .common import PostprocessError
from .picasso_format import metadata_value, read_picasso, write_picasso

CSV_SUFFIXES = (".csv",)
HDF5_SUFFIXES = (".hdf5", ".h5")


@dataclass
class LocalizationFile:
    """A localization table with what its file says about the camera.

    Attributes
    ----------
    table : DataFrame
        In-memory localization table (nm, 0-based frames).
    pixel_size_nm : float or None
        Camera pixel size (Picasso files), else None.
    width, height : int or None
        Camera image size in pixels (Picasso files), else None.
    info : list of dict
        Picasso metadata documents (empty for CSV).
    """

    table: pd.DataFrame
    pixel_size_nm: float | None = None
    width: int | None = None
    height: int | None = None
    info: list[dict] = field(default_factory=list)


def _kind(path: PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    raise PostprocessError(f"{path}: unknown localization file type {suffix or '(none)'!r}; "
                           "expected .csv (ThunderSTORM) or .hdf5 (Picasso)")


def check_extension(path: PathLike) -> None:
    """Raise :class:`PostprocessError` now if ``path`` has no known localization extension."""
    _kind(path)


def read_table(path: PathLike) -> LocalizationFile:
    """Read a ThunderSTORM CSV or a Picasso HDF5 file (by extension)."""
    if _kind(path) == "csv":
        return LocalizationFile(read_localizations(path))
    table, info = read_picasso(path)
    size = [metadata_value(info, key) for key in ("Pixelsize", "Width", "Height")]
    return LocalizationFile(table, float(size[0]),
                            *(int(v) if isinstance(v, int | float) else None for v in size[1:]),
                            info=info)


def write_table(
    path: PathLike, table: pd.DataFrame, source: LocalizationFile,
    pixel_size_nm: float | None = None,
) -> Path:
    """Write ``table`` as ThunderSTORM CSV or Picasso HDF5 (by extension), atomically.

    For HDF5 the camera pixel size is ``pixel_size_nm`` or that of ``source`` (a Picasso
    file), and the camera size and metadata of ``source`` are kept.
    """
    if _kind(path) == "csv":
        return write_localizations(path, table)
    pixel_size = pixel_size_nm or source.pixel_size_nm
    if pixel_size is None:
        raise PostprocessError(f"{path}: writing Picasso HDF5 needs the camera pixel size: "
                               "give --camera-pixel-size NM")
    return write_picasso(path, table, pixel_size, source.width, source.height, info=source.info)
