"""Paths: checks of input and output files before any work, and atomic writes (a temporary file
renamed over the target once complete, alone or as a group)."""

from __future__ import annotations

import errno
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputError, one_line

PathLike = str | os.PathLike[str]

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
    reason = _OS_REASONS.get(exc.errno) or (exc.strerror or one_line(exc)).lower()
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


def check_input_file(path: Path, error: type[ValueError]) -> None:
    """Raise ``error`` unless ``path`` is an existing, non-empty regular file."""
    if not path.exists():
        raise error(f"{path}: file does not exist")
    if path.is_dir():
        raise error(f"{path}: is a directory, not a file")
    if path.stat().st_size == 0:
        raise error(f"{path}: file is empty (0 bytes)")


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
