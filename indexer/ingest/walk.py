"""Which files on disk are photos, and the walk that finds them.

Standard library only: the scanner uses it to reconcile the library, and the quick
"anything changed?" check of ``glimpse index`` (``indexer.cli.quick``) uses the very
same walk before anything heavy is imported, so both agree on what a photo is.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Camera RAW files: indexed from the preview JPEG the camera embeds (``indexer.ingest.raw``).
RAW_EXTENSIONS = frozenset(
    {".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2", ".pef", ".srw"}
)
PHOTO_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".webp",
        ".gif",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".hif",
        ".avif",
    }
    | RAW_EXTENSIONS
)
# Folders that hold system or application files, never the user's photos.
SKIP_DIRS = frozenset(
    {
        "@eaDir",
        "#recycle",
        "#snapshot",
        "$RECYCLE.BIN",
        "System Volume Information",
        "lost+found",
        "__MACOSX",
        "node_modules",
        "Thumbs",
        ".Trash",
        ".Trashes",
    }
)


@dataclass(frozen=True)
class FoundFile:
    path: str
    size: int
    mtime_ns: int


def is_photo(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in PHOTO_EXTENSIONS


def _skip_dir(name: str) -> bool:
    return name.startswith(".") or name in SKIP_DIRS or name.startswith(".Trash-")


def walk_photos(
    root: Path,
    problems: list[str] | None = None,
    unreadable: list[str] | None = None,
    reasons: dict[str, str] | None = None,
) -> Iterator[FoundFile]:
    """Every photo file under ``root``, depth first.

    Hidden and system folders are skipped. Symlinked folders are followed, but each
    real folder is visited once (by device and inode), so a link loop ends. What cannot
    be read goes to ``problems`` ("path: reason", for people) and ``reasons`` (path to
    reason): a folder without permission, a photo-named broken link, pipe or device.
    """

    def problem(path: str, reason: str) -> None:
        if problems is not None:
            problems.append(f"{path}: {reason}")
        if reasons is not None:
            reasons[path] = reason

    try:
        st = root.stat()
    except OSError as exc:
        problem(str(root), exc.strerror or str(exc))
        if unreadable is not None:
            unreadable.append(str(root))
        return
    seen: set[tuple[int, int]] = {(st.st_dev, st.st_ino)}
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            log.warning("cannot read folder %s: %s", folder, exc.strerror)
            problem(folder, f"cannot read this folder ({exc.strerror})")
            if unreadable is not None:
                unreadable.append(folder)
            continue
        subdirs: list[str] = []
        for entry in entries:
            name = entry.name
            try:
                if entry.is_dir(follow_symlinks=True):
                    if _skip_dir(name):
                        continue
                    est = entry.stat(follow_symlinks=True)
                    key = (est.st_dev, est.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                    subdirs.append(entry.path)
                elif is_photo(name) and not name.startswith("."):
                    est = entry.stat(follow_symlinks=True)
                    if stat.S_ISREG(est.st_mode):
                        yield FoundFile(entry.path, est.st_size, est.st_mtime_ns)
                    else:
                        problem(entry.path, "not a regular file (a pipe, socket or device); skipped")
            except OSError as exc:  # broken symlink, vanished file, permission
                log.debug("skipping %s: %s", entry.path, exc)
                if is_photo(name) and not name.startswith(".") and exc.errno != errno.ENOENT:
                    problem(entry.path, f"cannot be read ({exc.strerror})")
                elif is_photo(name) and entry.is_symlink():
                    problem(entry.path, "a link to a file that does not exist")
        stack.extend(sorted(subdirs, reverse=True))
