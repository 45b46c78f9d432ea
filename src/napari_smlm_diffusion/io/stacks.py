"""Opening SMLM stacks (multi-page TIFF, ImageJ hyperstack, OME-TIFF, BigTIFF) lazily, with the
pixel size and our metadata."""

from __future__ import annotations

import json
import logging
import math
import threading
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..camera import CAMERA_FIELDS, camera_values_from_metadata
from ..errors import StackError, one_line
from .files import PathLike, check_input_file
from .lazy import LazyStack, memmap_reader
from .tiff import METADATA_KEY, positive_number

_UNIT_NM = {
    "pm": 1e-3,
    "å": 0.1,
    "angstrom": 0.1,
    "nm": 1.0,
    "nanometer": 1.0,
    "um": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "mm": 1e6,
    "cm": 1e7,
    "m": 1e9,
}


class Stack:
    """An opened image stack.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    data : LazyStack
        Lazy ``(frames, rows, cols)`` array.
    pixel_size_nm : float or None
        Pixel size in nm, from our metadata, OME ``PhysicalSizeX`` or ImageJ resolution + unit.
    metadata : dict
        Metadata stored by :func:`write_tiff` (camera keys such as ``baseline``,
        ``sensitivity``, ``em_gain``, ``quantum_efficiency``, ``read_noise``, ``pixel_size``;
        camera keys stored nested under ``"camera"`` are copied to the top level too);
        empty for other files.
    source_axes : str
        Axes of the TIFF series (tifffile letters, e.g. ``"TZCYX"``) before they were
        collapsed to frames.
    source_shape : tuple of int
        Shape of the TIFF series.
    """

    def __init__(
        self,
        path: Path,
        data: LazyStack,
        pixel_size_nm: float | None,
        metadata: dict[str, Any],
        source_axes: str,
        source_shape: tuple[int, ...],
    ) -> None:
        self.path = path
        self.data = data
        self.pixel_size_nm = pixel_size_nm
        self.metadata = metadata
        self.source_axes = source_axes
        self.source_shape = source_shape

    def __repr__(self) -> str:
        return (
            f"Stack(path={str(self.path)!r}, shape={self.data.shape}, dtype={self.data.dtype}, "
            f"pixel_size_nm={self.pixel_size_nm})"
        )

    def close(self) -> None:
        """Release the file."""
        self.data.close()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _ErrorCollector(logging.Handler):
    """Collects the ERROR records that tifffile logs (in this thread) for corrupted files."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(" ".join(record.getMessage().split()))


def open_stack(path: PathLike, channel: int | None = None) -> Stack:
    """Open a TIFF stack (multi-page, ImageJ hyperstack, OME-TIFF, BigTIFF) lazily.

    Leading axes other than channels (T, Z, ...) are collapsed, in file order, into one frame
    axis; a single 2-D image becomes a 1-frame stack.

    Parameters
    ----------
    path : str or os.PathLike
        The TIFF file.
    channel : int, optional
        Channel to use when the file has several channels (required then).

    Returns
    -------
    Stack
        Close it (or use it as a context manager) to release the file.

    Raises
    ------
    StackError
        One line naming the file: missing, a directory, empty, not a TIFF, truncated or
        corrupted, RGB, complex/bool data, more than 5 dimensions, several channels without
        ``channel``, or a channel out of range. Reading a frame with NaN/inf, or a frame the
        file cannot deliver, raises it too.
    """
    path = Path(path)
    check_input_file(path, StackError)
    collector = _ErrorCollector()
    logger = logging.getLogger("tifffile")
    logger.addHandler(collector)
    # Other packages may silence tifffile (picasso.io sets it to CRITICAL when imported): its
    # ERROR records are how a truncated file shows, so let them through while the file opens.
    level = logger.level
    if logger.getEffectiveLevel() > logging.ERROR:
        logger.setLevel(logging.ERROR)
    try:
        try:
            tif = tifffile.TiffFile(path)
        except Exception as exc:
            raise StackError(f"{path}: not a readable TIFF file ({one_line(exc)})") from exc
        try:
            return _open(tif, path, channel, collector.messages)
        except StackError:
            tif.close()
            raise
        except Exception as exc:
            tif.close()
            raise StackError(f"{path}: cannot read the TIFF structure ({one_line(exc)})") from exc
    finally:
        logger.removeHandler(collector)
        logger.setLevel(level)


def _open(tif: tifffile.TiffFile, path: Path, channel: int | None, errors: list[str]) -> Stack:
    """Build the :class:`Stack` of an open TiffFile (closes it when memory-mapping)."""
    if not tif.series:
        raise StackError(f"{path}: the TIFF file contains no images")
    series = tif.series[0]
    axes, shape = series.axes, tuple(series.shape)
    # tifffile writes each appended image as its own series: use all pages as frames then
    appended = len(tif.series) > 1 and all(
        s.kind == "shaped" and s.dtype == series.dtype and s.shape[-2:] == shape[-2:]
        for s in tif.series
    )
    if appended:
        axes, shape = "IYX", (len(tif.pages), *shape[-2:])
    if "S" in axes or series.keyframe.samplesperpixel > 1:
        samples = series.keyframe.samplesperpixel
        hint = (f"; if these are {samples} frames, save them as a grayscale stack "
                "(photometric='minisblack')" if series.keyframe.planarconfig == 2 else "")
        raise StackError(
            f"{path}: RGB/multi-sample images are not supported ({samples} samples per pixel); "
            f"expected grayscale frames (convert to grayscale){hint}"
        )
    if len(shape) > 5:
        raise StackError(f"{path}: {len(shape)}-D data (axes {axes}) is not supported (max 5-D)")
    dtype = np.dtype(series.dtype)
    if dtype.kind not in "uif":
        raise StackError(f"{path}: {dtype} data is not supported (need integer or float pixels)")
    if not axes.endswith("YX"):
        raise StackError(f"{path}: image axes {axes} (shape {shape}) do not end with YX; "
                         "expected frames of rows x columns")
    pixel_size, metadata = _file_metadata(tif)
    if errors:
        raise StackError(f"{path}: the file is truncated or corrupted ({errors[0]})")

    leading = shape[:-2]
    page_of = np.arange(math.prod(leading)).reshape(leading)
    channels = shape[axes.index("C")] if "C" in axes[:-2] else 1
    if channels > 1 and channel is None:
        raise StackError(
            f"{path}: the file has {channels} channels (axes {axes}, shape {shape}); "
            f"choose one with channel=0..{channels - 1} (--channel C on the command line)"
        )
    if channel is not None and not 0 <= channel < channels:
        raise StackError(
            f"{path}: channel={channel} is out of range; the file has {channels} channel(s)"
        )
    if channels > 1:
        page_of = np.take(page_of, channel, axis=axes.index("C"))
    page_of = page_of.reshape(-1)
    frame_shape = (page_of.size, *shape[-2:])

    if series.dataoffset is not None and not appended:
        read = memmap_reader(tif, series, path, page_of, shape[-2:])
        tif.close()
        data = LazyStack(path, frame_shape, dtype, read, "memmap")
    else:
        lock = threading.Lock()

        def read(frames: np.ndarray) -> np.ndarray:
            keys = [int(page) for page in page_of[frames]]
            with lock:
                pages = tif.asarray(key=keys, series=None if appended else 0, maxworkers=1)
            return pages.reshape(len(keys), *shape[-2:])

        data = LazyStack(path, frame_shape, dtype, read, "pages", close=tif.close)
    return Stack(path, data, pixel_size, metadata, axes, shape)


def _unit_nm(unit: Any) -> float | None:
    """Nanometres per ``unit`` (OME or ImageJ spelling), or None if unknown."""
    text = str(unit).strip().lower()
    for micro in ("\\u00b5", "µ", "μ"):
        text = text.replace(micro, "u")
    return _UNIT_NM.get(text)


def _ome_pixel_size(xml: str) -> float | None:
    """Pixel size in nm from ``PhysicalSizeX`` of the first OME ``Pixels`` element, or None."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    for element in root.iter():
        if element.tag.endswith("Pixels"):
            size = positive_number(element.get("PhysicalSizeX"))
            factor = _unit_nm(element.get("PhysicalSizeXUnit", "µm"))
            return size * factor if size and factor else None
    return None


def _file_metadata(tif: tifffile.TiffFile) -> tuple[float | None, dict[str, Any]]:
    """Return ``(pixel_size_nm, our_metadata)`` of a TIFF file."""
    imagej = tif.imagej_metadata or {}
    metadata: dict[str, Any] = {}
    try:
        stored = json.loads(imagej.get("Info", ""))
    except (TypeError, ValueError):
        stored = None
    if isinstance(stored, dict) and isinstance(stored.get(METADATA_KEY), dict):
        metadata = stored[METADATA_KEY]
    # camera parameters stored nested: also offer them at the top level
    nested = {k: v for k, v in camera_values_from_metadata(metadata).items()
              if k in CAMERA_FIELDS}
    metadata = {**nested, **metadata}
    pixel_size = positive_number(metadata.get("pixel_size"))
    if pixel_size is None and tif.is_ome:
        pixel_size = _ome_pixel_size(tif.ome_metadata)
    if pixel_size is None and "unit" in imagej:
        resolution = positive_number(tif.pages[0].resolution[0])
        factor = _unit_nm(imagej["unit"])
        pixel_size = factor / resolution if resolution and factor else None
    return pixel_size, metadata
