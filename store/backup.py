"""One rotating backup of the library database, and putting it back.

The database holds what cannot be recomputed: the user's tags, overrides, taught
examples, folder list and model choice (vectors can be, at the cost of an index run).
A disk that truncates or scribbles over ``library.sqlite3`` must not cost those, so a
copy is taken after each index run that changed something (SQLite's online backup:
a consistent copy while readers and the writer go on), written beside the database
under a temporary name and moved into place, so a crash mid-copy leaves the previous
backup intact.

``glimpse doctor --restore-backup`` puts it back: the damaged file (and its WAL) is
moved aside, never deleted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from store.errors import StoreError

log = logging.getLogger(__name__)

_SUFFIXES = ("", "-wal", "-shm")


def backup_path(database: Path) -> Path:
    return database.with_name(database.name + ".backup")


def backup_note(database: Path) -> str:
    """What a message about a damaged database says about the backup (where, when, how to restore)."""
    backup = backup_path(database)
    if not backup.is_file():
        return "There is no backup of it yet (one is kept after each successful index run)."
    when = datetime.fromtimestamp(backup.stat().st_mtime, UTC).astimezone().strftime("%Y-%m-%d %H:%M")
    return (
        f"A backup from {when} is at {backup}. To go back to it, run: glimpse doctor --restore-backup "
        "(the damaged file is moved aside, not deleted)."
    )


def _revision(path: Path) -> str | None:
    """The ``meta.revision`` of a database file (None if it cannot be read)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        return None if row is None else str(row[0])
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def take_backup(database: Path, min_interval_s: float = 0.0) -> Path | None:
    """Copy ``database`` to its backup if it changed since the last one (and that one is at least
    ``min_interval_s`` old). Never raises: a backup that cannot be written (a full disk) is logged
    and the previous backup stays. Returns the backup's path when one was written."""
    dest = backup_path(database)
    if dest.is_file():
        if time.time() - dest.stat().st_mtime < min_interval_s:
            return None
        backed_up = _revision(dest)
        if backed_up is not None and backed_up == _revision(database):
            return None
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        _copy(database, tmp, single_file=True)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except (OSError, sqlite3.Error) as exc:
        log.warning("could not back up the library database to %s: %s", dest, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return None
    log.info("backed up the library database to %s", dest)
    return dest


def restore_backup(database: Path) -> Path:
    """Put the backup in place of ``database``; returns where the replaced file was moved.

    Runs only when no process has the library open (the caller holds the library lock).
    """
    backup = backup_path(database)
    if not backup.is_file():
        raise StoreError(f"There is no backup of {database} to restore.", title="No backup")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = database.with_name(f"{database.name}.damaged-{stamp}")
    for suffix in _SUFFIXES:
        current = Path(f"{database}{suffix}")
        if current.exists():
            os.replace(current, Path(f"{aside}{suffix}"))
    tmp = database.with_name(database.name + ".restoring")
    _copy(backup, tmp)
    os.replace(tmp, database)
    return aside


def _copy(source: Path, target: Path, single_file: bool = False) -> None:
    """A consistent copy of the database ``source`` into ``target`` (SQLite's online backup).

    ``single_file``: readable without -wal/-shm files beside it (a copy inherits WAL mode).
    """
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        out = sqlite3.connect(target)
        try:
            src.backup(out)
            if single_file:
                out.execute("PRAGMA journal_mode=DELETE")
        finally:
            out.close()
    finally:
        src.close()
