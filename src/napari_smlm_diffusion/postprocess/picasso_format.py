"""Picasso HDF5 localization files (``.hdf5`` + ``.yaml``), read and written as Picasso does.

Format (checked against picassosr 0.11.3, ``picasso/io.py`` ``save_locs``/``load_locs`` and
``picasso/lib.py`` ``ensure_sanity``/``get_from_metadata``):

- ``locs``: one HDF5 compound dataset (a numpy record array) with the fields ``frame``
  (uint32, 0-based), ``x``, ``y`` (float32, camera pixels), ``photons``, ``sx``, ``sy`` (PSF
  sigma, pixels), ``bg`` (photons per pixel), ``lpx``, ``lpy`` (localization precision,
  pixels) and optional others; linked (merged) files add ``len`` (frames from first to last)
  and ``n`` (detections merged).
- Metadata: a list of dicts, written as YAML documents (``yaml.dump_all``) in the sidecar
  ``<name>.yaml`` and, since Picasso 0.11, also as JSON in the ``metadata`` dataset. Picasso
  needs ``Width``, ``Height`` (camera pixels) and ``Frames``; Render needs ``Pixelsize`` (nm
  per camera pixel). Keys are looked up from the last document to the first.

Pixel convention: Picasso fits a spot on a grid whose integer coordinates are pixel *centres*
(``gausslq``: grid ``arange(-h, h+1)`` around the centre pixel index; Localize draws a fit at
``x + 0.5`` on the image whose pixel ``j`` spans ``[j, j+1)``). This project puts the origin at
the top-left *corner* of the top-left pixel, so

    x_picasso = x_nm / pixel_size - 0.5,   x_nm = (x_picasso + 0.5) * pixel_size

(same for y), and Picasso positions of our localizations are those Picasso would have fitted
on the same movie. (Picasso Render bins ``x`` into ``[j, j+1)``, i.e. its images lie half a
camera pixel up-left of the raw movie; that is Picasso's own behaviour for its own fits too.)
Sigmas and precisions are divided by the pixel size, nothing else is converted. Picasso's
loader drops rows with NaN values or with ``x``/``y`` below 0 or at/above ``Width``/``Height``;
the writer refuses NaN values instead of letting Picasso drop rows silently, and a localization
within half a pixel of the top or left edge is dropped by Picasso (not by us).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import yaml

from .. import __version__
from ..io import PathLike, TableError, atomic_group, atomic_write
from .common import PostprocessError, coordinates

#: (Picasso field, in-memory column, numpy dtype) written when the column is present; the
#: position, sigma and precision fields are converted to pixels.
_PLAIN_FIELDS = (
    ("photons", "photons", np.float32),
    ("bg", "background", np.float32),
    ("bkgstd", "bkgstd", np.float32),
    ("detection_probability", "detection_probability", np.float32),
    ("score", "score", np.float32),
    ("n", "frames_on", np.uint32),
)


def sidecar(path: PathLike) -> Path:
    """The ``.yaml`` metadata file next to a Picasso ``.hdf5`` file."""
    return Path(path).with_suffix(".yaml")


def _field(values: np.ndarray, name: str, dtype: type, path: PathLike) -> np.ndarray:
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise TableError(f"{path}: {bad} localization(s) have NaN or infinite {name!r}; "
                         "Picasso drops such rows: fill or remove them first")
    return values.astype(dtype)


def to_records(table: pd.DataFrame, pixel_size_nm: float, path: PathLike = "<table>"
               ) -> np.ndarray:
    """The Picasso ``locs`` record array of a localization table (see the module docstring)."""
    x, y, frames = coordinates(table, "writing Picasso HDF5")
    columns: dict[str, np.ndarray] = {
        "frame": frames.astype(np.uint32),
        "x": _field(x / pixel_size_nm - 0.5, "x", np.float32, path),
        "y": _field(y / pixel_size_nm - 0.5, "y", np.float32, path),
    }
    for field, column, dtype in _PLAIN_FIELDS[:1]:
        if column in table.columns:
            columns[field] = _field(table[column].to_numpy(float), column, dtype, path)
    if "sigma_nm" in table.columns:
        sigma = _field(table["sigma_nm"].to_numpy(float) / pixel_size_nm, "sigma_nm",
                       np.float32, path)
        columns["sx"], columns["sy"] = sigma, sigma.copy()
    for field, column, dtype in _PLAIN_FIELDS[1:]:
        if column in table.columns:
            columns[field] = _field(table[column].to_numpy(float), column, dtype, path)
    for axis in ("x", "y"):
        column = f"uncertainty_{axis}_nm"
        column = column if column in table.columns else "uncertainty_nm"
        if column in table.columns:
            columns[f"lp{axis}"] = _field(table[column].to_numpy(float) / pixel_size_nm, column,
                                          np.float32, path)
    if "last_frame" in table.columns:
        length = table["last_frame"].to_numpy(float) - frames + 1
        columns["len"] = _field(length, "last_frame", np.uint32, path)
    return pd.DataFrame(columns).to_records(index=False)


def from_records(locs: Any, pixel_size_nm: float) -> pd.DataFrame:
    """The in-memory localization table of Picasso ``locs`` (record array or DataFrame)."""
    df = pd.DataFrame(locs) if not isinstance(locs, pd.DataFrame) else locs
    missing = [f for f in ("frame", "x", "y") if f not in df.columns]
    if missing:
        raise TableError(f"Picasso localizations need the field(s) {', '.join(missing)}")
    out = pd.DataFrame({
        "frame": df["frame"].to_numpy().astype(np.int64),
        "x_nm": (df["x"].to_numpy(np.float64) + 0.5) * pixel_size_nm,
        "y_nm": (df["y"].to_numpy(np.float64) + 0.5) * pixel_size_nm,
    })
    if "sx" in df.columns and "sy" in df.columns:
        out["sigma_nm"] = np.sqrt(df["sx"].to_numpy(np.float64)
                                  * df["sy"].to_numpy(np.float64)) * pixel_size_nm
    for field, column, _ in _PLAIN_FIELDS:
        if field in df.columns:
            values = df[field].to_numpy()
            out[column] = values.astype(np.int64) if column == "frames_on" else values.astype(
                np.float64)
    if "lpx" in df.columns and "lpy" in df.columns:
        lpx = df["lpx"].to_numpy(np.float64) * pixel_size_nm
        lpy = df["lpy"].to_numpy(np.float64) * pixel_size_nm
        if np.array_equal(lpx, lpy, equal_nan=True):
            out["uncertainty_nm"] = lpx
        else:
            out["uncertainty_nm"] = np.sqrt((lpx**2 + lpy**2) / 2)
            out["uncertainty_x_nm"], out["uncertainty_y_nm"] = lpx, lpy
    if "len" in df.columns:
        out["last_frame"] = out["frame"] + df["len"].to_numpy().astype(np.int64) - 1
    return out


def metadata_value(info: list[dict], key: str) -> Any:
    """Value of ``key`` in Picasso metadata, searched from the last document (as Picasso does)."""
    for document in reversed(info):
        if isinstance(document, dict) and key in document:
            return document[key]
    return None


def write_picasso(
    path: PathLike,
    table: pd.DataFrame,
    pixel_size_nm: float,
    width: int | None = None,
    height: int | None = None,
    frames: int | None = None,
    info: list[dict] | None = None,
) -> Path:
    """Write a Picasso ``.hdf5`` file and its ``.yaml`` sidecar atomically (both or neither).

    Parameters
    ----------
    path : str or os.PathLike
        Output ``.hdf5`` file.
    table : DataFrame
        Localizations (``frame``, ``x_nm``, ``y_nm`` and optional columns).
    pixel_size_nm : float
        Camera pixel size, nm (Picasso stores pixels).
    width, height : int, optional
        Camera image size in pixels; default: just enough for all localizations.
    frames : int, optional
        Number of frames; default: last frame + 1.
    info : list of dict, optional
        Metadata documents of the source (e.g. a Picasso file's), kept before ours.

    Returns
    -------
    pathlib.Path
    """
    if not (pixel_size_nm is not None and math.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise PostprocessError(f"{path}: Picasso HDF5 needs the camera pixel size in nm "
                               "(--camera-pixel-size)")
    records = to_records(table, pixel_size_nm, path)
    x, y = records["x"].astype(np.float64), records["y"].astype(np.float64)
    ours = {
        "Generated by": f"napari-smlm-diffusion {__version__}",
        "Width": int(width or math.floor(float(x.max()) + 0.5) + 1),
        "Height": int(height or math.floor(float(y.max()) + 0.5) + 1),
        "Frames": int(frames or int(records["frame"].max()) + 1),
        "Pixelsize": float(pixel_size_nm),
    }
    documents = [d for d in (info or []) if isinstance(d, dict)] + [ours]
    with atomic_group():
        with atomic_write(path) as temporary, h5py.File(temporary, "w") as handle:
            handle.create_dataset("locs", data=records)
            handle.create_dataset("metadata", data=json.dumps(documents))
        with atomic_write(sidecar(path)) as temporary, open(temporary, "w") as handle:
            yaml.safe_dump_all(documents, handle, default_flow_style=False)
    return Path(path)


def read_info(path: PathLike) -> list[dict]:
    """Picasso metadata of ``path``: the ``.yaml`` sidecar, else the embedded JSON."""
    yaml_path = sidecar(path)
    if yaml_path.is_file():
        try:
            with open(yaml_path) as handle:
                return [d for d in yaml.safe_load_all(handle) if isinstance(d, dict)]
        except yaml.YAMLError as exc:
            problem = " ".join(str(exc).split())[:150]
            raise TableError(f"{yaml_path}: not a readable Picasso metadata file ({problem})"
                             ) from exc
    with h5py.File(path, "r") as handle:
        if "metadata" in handle:
            raw = handle["metadata"][()]
            try:
                info = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            except ValueError as exc:
                raise TableError(f"{path}: its embedded metadata is not valid JSON") from exc
            return [d for d in info if isinstance(d, dict)]
    return []


def read_picasso(path: PathLike) -> tuple[pd.DataFrame, list[dict]]:
    """Read a Picasso ``.hdf5`` localization file.

    Returns
    -------
    table : DataFrame
        In-memory localization table (nm, 0-based frames; see the module docstring).
    info : list of dict
        Picasso metadata documents.

    Raises
    ------
    TableError
        Missing or unreadable file, no ``locs`` dataset, missing ``Pixelsize``.
    """
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: file does not exist")
    try:
        with h5py.File(path, "r") as handle:
            if "locs" not in handle or not isinstance(handle["locs"], h5py.Dataset):
                raise TableError(f"{path}: not a Picasso localization file (no 'locs' dataset)")
            locs = handle["locs"][()]
    except OSError as exc:
        raise TableError(f"{path}: not a readable HDF5 file ({' '.join(str(exc).split())})"
                         ) from exc
    if locs.dtype.names is None:
        raise TableError(f"{path}: the 'locs' dataset is not a table of named fields")
    info = read_info(path)
    pixel_size = metadata_value(info, "Pixelsize")
    try:
        pixel_size = float(pixel_size)
    except (TypeError, ValueError):
        pixel_size = math.nan
    if not (math.isfinite(pixel_size) and pixel_size > 0):
        raise TableError(f"{path}: its metadata ({sidecar(path).name} or embedded) give no "
                         "positive 'Pixelsize'; Picasso coordinates are in camera pixels")
    return from_records(locs, pixel_size), info
