"""Lazy, read-only frame access to a TIFF file: memory-mapped when the file allows it, else page
by page; every frame read is checked."""

from __future__ import annotations

import math
import mmap
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..errors import StackError, one_line
from .files import PathLike


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
                f"the file is truncated or corrupted ({one_line(exc)})"
            ) from exc
        for frame, index in zip(data, frames, strict=True):
            check_frame(frame, self.path, int(index))
        return data

    def close(self) -> None:
        """Release the file; later reads raise :class:`StackError`."""
        if self._read_frames is not None and self._close is not None:
            self._close()
        self._read_frames = None


def memmap_reader(
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
