"""Error classes shared by the package and the one-line form of any error (no napari, no Qt).

Errors caused by the user's input derive from :class:`InputError` (a ``ValueError``): the
command line reports them as bad input (exit 2), the GUI as a notification; any other exception
is a bug.
"""

from __future__ import annotations

#: Longest message :func:`one_line` returns.
ONE_LINE_LIMIT = 300


class InputError(ValueError):
    """Bad input (a parameter, a frame range, a file's content): the message says what was
    wrong and what was expected."""


class StackError(InputError):
    """An image stack cannot be opened or read (one line, naming the file)."""


class TableError(InputError):
    """A localization table cannot be read or written (one line, naming the file)."""


class OutputError(OSError):
    """An output file cannot be written (one line, naming the file and the reason)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.errno = code

    def __str__(self) -> str:
        return str(self.args[0])


def one_line(error: BaseException | str, limit: int = ONE_LINE_LIMIT) -> str:
    """An exception's message (or a text) on one line, at most ``limit`` characters; the
    exception's type name when it has no message."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
