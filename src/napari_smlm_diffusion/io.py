"""Reading SMLM stacks lazily, writing TIFFs atomically, ThunderSTORM localization tables.

Stacks
    :func:`open_stack` returns a :class:`Stack` whose ``data`` is a lazy ``(frames, rows, cols)``
    array: uncompressed contiguous TIFFs are memory-mapped, anything else is read page by page,
    so only the frames that are indexed are ever read. Every problem with a file is reported as
    a one-line :class:`StackError` naming the file.

Images
    :func:`write_tiff` writes an ImageJ-compatible TIFF with the pixel size as resolution
    (pixels per micron) and our metadata as JSON in the ImageJ ``Info`` property. All writers go
    through :func:`atomic_write`: a previous file is replaced only once the new one is complete.

Localizations
    In memory a localization table is a pandas DataFrame with the columns ``frame`` (0-based
    int), ``x_nm``, ``y_nm``, ``sigma_nm``, ``photons``, ``background`` (offset, photons per
    pixel), ``bkgstd`` (photons), ``uncertainty_nm`` (per-axis 1-sigma) and optionally
    ``uncertainty_x_nm``, ``uncertainty_y_nm``, ``detection_probability``, ``score``. On disk it
    is a ThunderSTORM CSV with 1-based frames.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import mmap
import operator
import os
import secrets
import threading
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile

PathLike = str | os.PathLike[str]

#: Key under which our metadata dict is stored in the ImageJ ``Info`` JSON.
METADATA_KEY = "napari-smlm-diffusion"
#: Camera parameters (see :class:`~napari_smlm_diffusion.camera.Camera`) in stored metadata.
CAMERA_KEYS = (
    "baseline",
    "sensitivity",
    "em_gain",
    "quantum_efficiency",
    "read_noise",
    "pixel_size",
)
#: Images with more bytes than this are written as BigTIFF.
BIGTIFF_THRESHOLD = 2 * 1024**3

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

# (file column, in-memory column, value written when the in-memory column is missing)
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
    ("resolved", "resolved"),
)
_TRUTH_COLUMNS = (
    ("x [nm]", "x_nm", math.nan),
    ("y [nm]", "y_nm", math.nan),
    ("intensity [photon]", "photons", math.nan),
)
_FILE_TO_MEMORY = {
    "frame": "frame",
    **{name: column for name, column, _ in _LOCALIZATION_COLUMNS},
    **dict(_EXTRA_COLUMNS),
}


class StackError(ValueError):
    """An image stack cannot be opened or read (one line, naming the file)."""


class TableError(ValueError):
    """A localization table cannot be read or written (one line, naming the file)."""


class OutputError(OSError):
    """An output file cannot be written (one line, naming the file and the reason)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.errno = code

    def __str__(self) -> str:
        return str(self.args[0])


_OS_REASONS = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOENT: "its folder does not exist",
    errno.ENOTDIR: "a component of the path is not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENAMETOOLONG: "the file name is too long",
}


def output_error(path: PathLike, exc: OSError) -> OutputError:
    """An :class:`OutputError` for ``path`` saying in words why ``exc`` happened."""
    reason = _OS_REASONS.get(exc.errno) or (exc.strerror or _one_line(exc)).lower()
    error = OutputError(exc.errno, f"{path}: cannot write the output: {reason}")
    error.filename = str(path)
    return error


def check_output_file(path: PathLike) -> Path:
    """Raise :class:`OutputError` now (before any work) if ``path`` cannot be written.

    The folder must exist and be writable, and ``path`` must not be a folder.
    """
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise OutputError(errno.EISDIR, f"{path}: cannot write the output: it is a folder; "
                          "expected a file name")
    if not folder.is_dir():
        raise OutputError(errno.ENOENT, f"{path}: cannot write the output: the folder "
                          f"{folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(errno.EACCES, f"{path}: cannot write the output: permission denied "
                          f"(folder {folder} is not writable)")
    return path


def check_output_dir(path: PathLike) -> Path:
    """Raise :class:`OutputError` now if folder ``path`` cannot be created or written to."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(errno.ENOTDIR, f"{path}: cannot write the output: it is a file; "
                          "expected a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(errno.EACCES, f"{path}: cannot write the output: permission denied "
                          f"({existing} is not a writable folder)")
    return path


def _one_line(exc: BaseException) -> str:
    """Return an exception message on one line (at most 200 characters)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _check_input_file(path: Path, error: type[ValueError]) -> None:
    """Raise ``error`` unless ``path`` is an existing, non-empty regular file."""
    if not path.exists():
        raise error(f"{path}: file does not exist")
    if path.is_dir():
        raise error(f"{path}: is a directory, not a file")
    if path.stat().st_size == 0:
        raise error(f"{path}: file is empty (0 bytes)")


def check_frame(frame: np.ndarray, path: PathLike, index: int) -> None:
    """Raise :class:`StackError` if a float frame contains NaN or infinite values.

    Parameters
    ----------
    frame : numpy.ndarray
        One frame (or part of one) as read from the file.
    path : str or os.PathLike
        File the frame comes from (for the message).
    index : int
        0-based frame index (for the message).
    """
    if frame.dtype.kind == "f":
        bad = frame.size - int(np.count_nonzero(np.isfinite(frame)))
        if bad:
            raise StackError(f"{path}: frame {index} contains {bad} NaN or infinite pixel values")


class LazyStack:
    """Lazy, read-only ``(frames, rows, cols)`` array over the frames of a TIFF file.

    Supports ``shape``, ``dtype``, ``ndim``, ``size``, ``len()``, indexing with integers,
    slices, 1-D integer or boolean arrays (frame axis only), ``...`` and tuples of these, and
    ``numpy.asarray``. Only the indexed frames are read; float frames are checked with
    :func:`check_frame` as they are read.

    Parameters
    ----------
    path : pathlib.Path
        File the frames come from.
    shape : tuple of int
        ``(frames, rows, cols)``.
    dtype : numpy.dtype
        Data type of the frames.
    read : callable
        Maps an int array of frame indices to an array of shape ``(n, rows, cols)``.
    backend : str
        ``"memmap"`` or ``"pages"``.
    close : callable, optional
        Releases the file when the stack is closed.
    """

    ndim = 3

    def __init__(
        self,
        path: Path,
        shape: tuple[int, int, int],
        dtype: np.dtype,
        read: Callable[[np.ndarray], np.ndarray],
        backend: str,
        close: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.backend = backend
        self._read_frames: Callable[[np.ndarray], np.ndarray] | None = read
        self._close = close

    @property
    def size(self) -> int:
        """Number of pixels in the whole stack."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes the whole stack would take in memory."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return (
            f"LazyStack(shape={self.shape}, dtype={self.dtype}, backend={self.backend!r}, "
            f"path={str(self.path)!r})"
        )

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if copy is False:
            raise ValueError("a LazyStack cannot be converted to an array without reading it")
        data = self[:]
        return data if dtype is None else data.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> Any:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (self.ndim - len(key) + 1)
            key = key[:at] + fill + key[at + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-D stack: {len(key)}")
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        n = self.shape[0]
        if isinstance(first, slice):
            return self._read(np.arange(n)[first])[(slice(None), *rest)]
        if isinstance(first, (int, np.integer)):
            index = operator.index(first)
            if not -n <= index < n:
                raise IndexError(f"frame index {index} is out of range for {n} frames")
            return self._read(np.array([index % n]))[(0, *rest)]
        frames = np.asarray(first)
        if frames.dtype == bool and frames.shape == (n,):
            frames = np.flatnonzero(frames)
        elif frames.ndim != 1 or frames.dtype.kind not in "iu":
            raise IndexError(
                "frames can be indexed with integers, slices, ... or 1-D integer/boolean arrays"
            )
        if frames.size and not (-n <= frames.min() and frames.max() < n):
            raise IndexError(f"frame indices out of range for {n} frames")
        return self._read(frames % n)[(slice(None), *rest)]

    def _read(self, frames: np.ndarray) -> np.ndarray:
        """Read frames (an int array of valid indices) as ``(n, rows, cols)``, checked."""
        if self._read_frames is None:
            raise StackError(f"{self.path}: the stack has been closed")
        if frames.size == 0:
            return np.empty((0, *self.shape[1:]), self.dtype)
        try:
            data = self._read_frames(frames)
        except Exception as exc:
            raise StackError(
                f"{self.path}: cannot read frame {int(frames[0])}"
                f"{'' if frames.size == 1 else f' (of {frames.size} requested)'}; "
                f"the file is truncated or corrupted ({_one_line(exc)})"
            ) from exc
        for frame, index in zip(data, frames, strict=True):
            check_frame(frame, self.path, int(index))
        return data

    def close(self) -> None:
        """Release the file; later reads raise :class:`StackError`."""
        if self._read_frames is not None and self._close is not None:
            self._close()
        self._read_frames = None


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
    _check_input_file(path, StackError)
    collector = _ErrorCollector()
    logger = logging.getLogger("tifffile")
    logger.addHandler(collector)
    try:
        try:
            tif = tifffile.TiffFile(path)
        except Exception as exc:
            raise StackError(f"{path}: not a readable TIFF file ({_one_line(exc)})") from exc
        try:
            return _open(tif, path, channel, collector.messages)
        except StackError:
            tif.close()
            raise
        except Exception as exc:
            tif.close()
            raise StackError(f"{path}: cannot read the TIFF structure ({_one_line(exc)})") from exc
    finally:
        logger.removeHandler(collector)


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
        read = _memmap_reader(tif, series, path, page_of, shape[-2:])
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


def _memmap_reader(
    tif: tifffile.TiffFile,
    series: tifffile.TiffPageSeries,
    path: Path,
    page_of: np.ndarray,
    plane: tuple[int, ...],
) -> Callable[[np.ndarray], np.ndarray]:
    """Return a frame reader memory-mapping the contiguous data of ``series``."""
    dtype = np.dtype(tif.byteorder + series.dtype.char)
    pages = math.prod(series.shape) // math.prod(plane)
    needed = series.dataoffset + pages * math.prod(plane) * dtype.itemsize
    size = path.stat().st_size
    if needed > size:
        raise StackError(
            f"{path}: the file is truncated ({size} bytes, the image data need {needed})"
        )
    mapped = np.memmap(path, dtype, "r", series.dataoffset, (pages, *plane))
    frame_bytes = math.prod(plane) * dtype.itemsize
    start_in_map = series.dataoffset % mmap.ALLOCATIONGRANULARITY
    handle = getattr(mapped, "_mmap", None)
    can_release = handle is not None and hasattr(handle, "madvise") and hasattr(
        mmap, "MADV_DONTNEED")

    def read(frames: np.ndarray) -> np.ndarray:
        # a mapped file that shrank (overwritten, still being copied) would kill the process
        # with SIGBUS on access: check its current size first (fstat, also after a rename)
        current = handle.size() if handle is not None else needed
        if current < needed:
            raise OSError(f"the file shrank to {current} bytes after it was opened (the image "
                          f"data need {needed}); was it overwritten?")
        wanted = page_of[frames]
        data = np.array(mapped[wanted], dtype=series.dtype)
        if can_release and wanted.size:
            # the frames are copied: drop the mapped pages from this process's resident memory
            # (they stay in the page cache), so RSS does not grow with the frames read
            first = start_in_map + int(wanted.min()) * frame_bytes
            aligned = first - first % mmap.PAGESIZE
            end = start_in_map + (int(wanted.max()) + 1) * frame_bytes
            try:
                handle.madvise(mmap.MADV_DONTNEED, aligned, end - aligned)
            except (OSError, ValueError):
                pass
        return data

    return read


def _positive(value: Any) -> float | None:
    """Return ``value`` as a positive finite float, or None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


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
            size = _positive(element.get("PhysicalSizeX"))
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
    camera = metadata.get("camera")
    if isinstance(camera, dict):  # camera parameters stored nested: also offer them at top level
        metadata = {**{k: camera[k] for k in CAMERA_KEYS if k in camera}, **metadata}
    pixel_size = _positive(metadata.get("pixel_size"))
    if pixel_size is None and tif.is_ome:
        pixel_size = _ome_pixel_size(tif.ome_metadata)
    if pixel_size is None and "unit" in imagej:
        resolution = _positive(tif.pages[0].resolution[0])
        factor = _unit_nm(imagej["unit"])
        pixel_size = factor / resolution if resolution and factor else None
    return pixel_size, metadata


_GROUP = threading.local()


@contextmanager
def atomic_write(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only on success.

    The temporary file is flushed to disk and then renamed with :func:`os.replace`. On any
    exception it is removed and a previous file at ``path`` is left untouched. Inside
    :func:`atomic_group` the rename waits until the whole group has succeeded. An
    :class:`OSError` (disk full, permission denied, ...) becomes a one-line
    :class:`OutputError` naming ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Final file name.

    Yields
    ------
    pathlib.Path
        Temporary file name (hidden, same directory) for the writer to create.
    """
    final = Path(path)
    temporary = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
    group = getattr(_GROUP, "pending", None)
    try:
        try:
            yield temporary
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
            if group is None:
                os.replace(temporary, final)
            else:
                group.append((temporary, final))
        except OutputError:
            raise
        except OSError as exc:
            raise output_error(final, exc) from exc
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_group() -> Iterator[None]:
    """Group :func:`atomic_write` calls: the files replace their targets only once all of them
    are complete; if any fails, none is replaced (previous outputs stay as they were)."""
    if getattr(_GROUP, "pending", None) is not None:  # nested: the outer group decides
        yield
        return
    _GROUP.pending = pending = []
    try:
        yield
        for temporary, final in pending:
            try:
                os.replace(temporary, final)
            except OSError as exc:
                raise output_error(final, exc) from exc
    finally:
        _GROUP.pending = None
        for temporary, _ in pending:
            temporary.unlink(missing_ok=True)


def _tiff_array(data: Any) -> np.ndarray:
    """Return ``data`` as uint8, uint16 or float32 (other floats cast, integers range-checked)."""
    array = np.asarray(data)
    if array.dtype in (np.uint8, np.uint16, np.float32):
        return array
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    if array.dtype.kind in "iu" and (array.size == 0 or (array.min() >= 0 and array.max() < 2**16)):
        return array.astype(np.uint16)
    raise ValueError(
        f"cannot write {array.dtype} data as an ImageJ TIFF (use float32, uint16 or integers "
        "in 0..65535)"
    )


def write_tiff(
    path: PathLike,
    data: Any,
    pixel_size_nm: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    axes: str | None = None,
) -> Path:
    """Write an ImageJ-compatible TIFF atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Output file.
    data : array_like
        ``(rows, cols)`` or ``(frames, rows, cols)``. uint8/uint16/float32 are written as
        given, other floats as float32, other integers as uint16 (values must fit).
    pixel_size_nm : float, optional
        Pixel size, stored as resolution in pixels per micron (unit ``um``) and as
        ``metadata["pixel_size"]``; defaults to ``metadata["pixel_size"]`` if present.
    metadata : mapping, optional
        JSON-serialisable values (e.g. camera parameters) stored in the ImageJ ``Info``
        property under :data:`METADATA_KEY`; :func:`open_stack` returns them.
    axes : {"YX", "TYX"}, optional
        Axes of ``data``; inferred from its number of dimensions by default.

    Returns
    -------
    pathlib.Path
        The written file. Data over :data:`BIGTIFF_THRESHOLD` bytes are written as BigTIFF
        (with the ImageJ metadata; readable by tifffile and Bio-Formats).
    """
    array = _tiff_array(data)
    axes = axes or {2: "YX", 3: "TYX"}.get(array.ndim, "")
    if axes not in ("YX", "TYX") or len(axes) != array.ndim:
        raise ValueError(f"cannot write {array.ndim}-D data with axes {axes!r}; use YX or TYX")
    _imwrite_imagej(path, array, array.shape, array.dtype, pixel_size_nm, metadata, axes)
    return Path(path)


def write_tiff_frames(
    path: PathLike,
    frames: Iterable[np.ndarray],
    shape: tuple[int, int, int],
    pixel_size_nm: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a (frames, rows, cols) float32 stack frame by frame, atomically.

    ``frames`` yields 2D float arrays; only one frame is held at a time, so memory does not grow
    with the stack length. Same metadata conventions as :func:`write_tiff`.
    """
    stream = (np.asarray(frame, dtype=np.float32) for frame in frames)
    _imwrite_imagej(path, stream, tuple(shape), np.dtype(np.float32), pixel_size_nm, metadata,
                    "TYX")
    return Path(path)


def _imwrite_imagej(path, data, shape, dtype, pixel_size_nm, metadata, axes) -> None:
    """ImageJ TIFF with pixel size and our metadata, written through :func:`atomic_write`."""
    stored = dict(metadata or {})
    if pixel_size_nm is None:
        pixel_size_nm = stored.get("pixel_size")
    imagej: dict[str, Any] = {"axes": axes}
    resolution = None
    if pixel_size_nm is not None:
        if _positive(pixel_size_nm) is None:
            raise ValueError(f"pixel_size_nm={pixel_size_nm!r} must be a positive number")
        stored["pixel_size"] = float(pixel_size_nm)
        resolution = (1000.0 / float(pixel_size_nm),) * 2
        imagej["unit"] = "um"
    imagej["info"] = json.dumps({METADATA_KEY: stored})
    bigtiff = int(np.prod(shape)) * np.dtype(dtype).itemsize > BIGTIFF_THRESHOLD
    with atomic_write(path) as temporary, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nonconformant BigTIFF ImageJ")
        tifffile.imwrite(
            temporary,
            data,
            shape=shape,
            dtype=dtype,
            imagej=True,
            ome=False,
            bigtiff=bigtiff,
            resolution=resolution,
            metadata=imagej,
        )


def _write_table(
    path: PathLike,
    table: pd.DataFrame,
    columns: tuple[tuple[str, str, float], ...],
    extras: tuple[tuple[str, str], ...],
) -> Path:
    """Write ``table`` as a ThunderSTORM-style CSV (ids, 1-based frames) atomically."""
    missing = [c for c in ("frame", "x_nm", "y_nm") if c not in table.columns]
    if missing:
        raise TableError(f"{path}: cannot write localizations without column(s) {missing}")
    frames = table["frame"].to_numpy(dtype=float)
    if frames.size and not (
        np.isfinite(frames).all() and (frames >= 0).all() and (frames == np.round(frames)).all()
    ):
        raise TableError(f"{path}: column 'frame' must hold 0-based whole frame numbers")
    out = pd.DataFrame({"id": np.arange(1, len(table) + 1), "frame": frames.astype(np.int64) + 1})
    for name, column, fill in columns:
        out[name] = table[column].to_numpy(dtype=float) if column in table.columns else fill
    for name, column in extras:
        if column in table.columns:
            out[name] = table[column].to_numpy(dtype=float)
    header = ",".join(f'"{name}"' for name in out.columns)
    with atomic_write(path) as temporary, open(temporary, "w", newline="") as handle:
        handle.write(header + "\n")
        out.to_csv(handle, header=False, index=False, na_rep="NaN", lineterminator="\n")
    return Path(path)


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
    """Write ground-truth emitters as CSV ``"id","frame","x [nm]","y [nm]","intensity [photon]"``.

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
    return _write_table(path, table, _TRUTH_COLUMNS, ())


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
    _check_input_file(path, TableError)
    try:
        raw = pd.read_csv(path, skipinitialspace=True)
    except (OSError, ValueError) as exc:
        raise TableError(f"{path}: not a readable CSV file ({_one_line(exc)})") from exc
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
    table["frame"] = frames.astype(np.int64) - 1
    return table.rename(columns=_FILE_TO_MEMORY).reset_index(drop=True)
