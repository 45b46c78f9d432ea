"""Reading SMLM stacks lazily, writing TIFFs atomically, ThunderSTORM localization tables.

Submodules: :mod:`.stacks` (opening stacks), :mod:`.lazy` (lazy frame access), :mod:`.tiff`
(writing TIFFs), :mod:`.tables` (localization CSVs), :mod:`.files` (path checks, atomic
writes). The public names are re-exported here.

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

from ..errors import OutputError, StackError, TableError
from .files import (
    PathLike,
    atomic_group,
    atomic_write,
    check_input_file,
    check_output_dir,
    check_output_file,
    output_error,
)
from .lazy import LazyStack, check_frame
from .stacks import Stack, open_stack
from .tables import read_localizations, write_localizations, write_truth
from .tiff import BIGTIFF_THRESHOLD, METADATA_KEY, write_tiff, write_tiff_frames

__all__ = [
    "BIGTIFF_THRESHOLD",
    "METADATA_KEY",
    "LazyStack",
    "OutputError",
    "PathLike",
    "Stack",
    "StackError",
    "TableError",
    "atomic_group",
    "atomic_write",
    "check_frame",
    "check_input_file",
    "check_output_dir",
    "check_output_file",
    "open_stack",
    "output_error",
    "read_localizations",
    "write_localizations",
    "write_truth",
    "write_tiff",
    "write_tiff_frames",
]
