"""Error hierarchy shared by every layer.

Each error carries a short ``title`` and a ``message`` a person can act on. The
CLI prints both and exits non-zero; the GUI shows them in a dialog. Lower-level
exceptions (``OSError``, ``sqlite3.Error``) are translated at the boundary where
we know what the user was trying to do.
"""

from __future__ import annotations


class GlimpseError(Exception):
    """Base of every error Glimpse reports to a person."""

    title: str = "Glimpse error"
    exit_code: int = 1

    def __init__(self, message: str, title: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if title is not None:
            self.title = title

    def __str__(self) -> str:
        return f"{self.title}: {self.message}"


class StoreError(GlimpseError):
    """The library database or vector index cannot be used."""

    title = "Library error"


class SchemaTooNewError(StoreError):
    """The database was written by a newer Glimpse; opening it could damage it."""

    title = "Library is from a newer Glimpse"


class NotFoundError(GlimpseError):
    """A path, image or folder the user named does not exist."""

    title = "Not found"
    exit_code = 5


class LibraryBusyError(StoreError):
    """Another process owns the library and did not let go in time."""

    title = "Library in use"
    exit_code = 75  # EX_TEMPFAIL: try again later


class NoLibraryError(NotFoundError):
    """A read-only command was run where no library exists yet; it must not create one."""

    title = "No library yet"


class DiskError(StoreError):
    """The disk under the library is full, read-only or refuses access; the library itself is intact."""

    title = "Library disk problem"
    exit_code = 74  # EX_IOERR


class InvalidNameError(StoreError):
    """A tag name that cannot be stored, shown or written to XMP as it is."""

    title = "Invalid tag name"
    exit_code = 2
