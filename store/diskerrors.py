"""A full, read-only or forbidding disk under the library, told once and plainly.

``ENOSPC`` from a vector-index save, ``SQLITE_FULL`` from a commit, ``EROFS`` from a
remounted drive and ``EACCES`` from a changed owner all mean the same to a person: the
library could not be written, and nothing in it was lost (a commit either happened or
did not; a vector index is saved to a temporary file and moved into place). This module
turns each into one :class:`~store.errors.DiskError` that says which disk, how much room
there is, how much is wanted, and that nothing was lost.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from store.errors import DiskError

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_READ_ONLY = {errno.EROFS}
_FORBIDDEN = {errno.EACCES, errno.EPERM}
# Room asked for beyond what is there: a vector index is rewritten whole beside the old one.
_HEADROOM = 50 * 1024 * 1024


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB" if n < 1e9 else f"{n / 1e9:,.1f} GB"


def _library_size(folder: Path) -> int:
    vectors = folder / "vectors"
    return sum(p.stat().st_size for p in vectors.glob("*.faiss")) if vectors.is_dir() else 0


def _kind(exc: BaseException) -> str | None:
    """ "full", "read-only" or "forbidden" for the errors this module explains, else None."""
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    if isinstance(orig, BaseException):
        exc = orig
    code = getattr(exc, "errno", None)
    if code in _FULL:
        return "full"
    if code in _READ_ONLY:
        return "read-only"
    if code in _FORBIDDEN:
        return "forbidden"
    name = str(getattr(exc, "sqlite_errorname", ""))
    text = str(exc).lower()
    if name == "SQLITE_FULL" or "database or disk is full" in text:
        return "full"
    if name.startswith("SQLITE_READONLY") or "readonly database" in text or "read-only file system" in text:
        return "read-only"
    if name in ("SQLITE_PERM", "SQLITE_CANTOPEN") or "unable to open database file" in text:
        return "forbidden"
    return None


def read_only_folder(folder: Path) -> bool:
    """Whether ``folder`` is on a file system mounted read-only (a write-protected card, a
    remounted drive): SQLite cannot even open a WAL library there the usual way."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows) or no folder
        return False


def is_disk_error(exc: BaseException) -> bool:
    return _kind(exc) is not None


def disk_error(path: Path, exc: BaseException) -> DiskError:
    """The one message for ``exc`` raised while writing (or opening) the library at ``path``."""
    folder = path if path.is_dir() else path.parent
    kind = "read-only" if read_only_folder(folder) else (_kind(exc) or "forbidden")
    safe = "Nothing in the library was lost: what was committed is intact, and indexing goes on where it stopped."
    if kind == "full":
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = 0
        want = 2 * _library_size(folder) + _HEADROOM
        return DiskError(
            f"The disk holding the library ({folder}) is full: {_mb(free)} free, and Glimpse needs about "
            f"{_mb(want)} to go on (room to rewrite the vector index). Free some space and run the command "
            f"again. {safe} Searching still works.",
            title="Library disk full",
        )
    if kind == "read-only":
        return DiskError(
            f"The library folder {folder} is on a read-only disk, so nothing can be indexed or changed. "
            f"Remount it writable, or point GLIMPSE_HOME at a writable copy. {safe}",
            title="Library disk read-only",
        )
    return DiskError(
        f"Glimpse may not write to the library folder {folder} ({exc}). Give your user write permission "
        f"on it (for example: chown -R \"$USER\" '{folder}'). {safe}",
        title="Library folder not writable",
    )
