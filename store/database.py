"""Opening the SQLite library: connection settings, transactions and explicit schema migrations.

WAL lets readers (the GUI, a second CLI) run while the writer writes;
``synchronous=NORMAL`` in WAL mode survives a killed process without losing a
committed transaction. Foreign keys are off by default in SQLite and must be
switched on per connection, or the cascades in the schema would not fire.

Transactions are Glimpse's, not the driver's: Python's sqlite3 module opens a
transaction only at the first INSERT/UPDATE/DELETE, so a SELECT followed by an
UPDATE inside ``engine.begin()`` was not one transaction, and DDL ran in autocommit.
The driver's own handling is switched off and every transaction is begun
explicitly: ``BEGIN`` for readers (one consistent snapshot across their
statements) and ``BEGIN IMMEDIATE`` for the writer (the write lock is taken before
the first read, so nothing can change between what a command reads and what it
writes). Migrations run on the writer, in the same transaction as their stamp.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, select, text
from sqlalchemy.exc import DatabaseError, OperationalError

from store.backup import backup_note, backup_path, take_backup
from store.diskerrors import disk_error, is_disk_error, read_only_folder
from store.errors import SchemaTooNewError, StoreError
from store.lock import LibraryLock
from store.records import SCHEMA_VERSION
from store.schema import (
    Description,
    ImageTag,
    Meta,
    Region,
    ScanProblem,
    Tag,
    TagOverride,
    TagVector,
    metadata,
)
from store.writer import Writer

log = logging.getLogger(__name__)


# SQLite's default limit on bound parameters is 32766; stay well below it.
def utc_now() -> datetime:
    """Naive UTC, as every timestamp in the library is stored."""
    return datetime.now(UTC).replace(tzinfo=None)


def _v1_to_v2(conn: Connection) -> None:
    """v2: folders remember whether their root is reachable (offline drives keep their photos)."""
    conn.execute(text("ALTER TABLE folders ADD COLUMN online BOOLEAN NOT NULL DEFAULT 1"))


def _v2_to_v3(conn: Connection) -> None:
    """v3: tags, the tags on each photo, the user's overrides, and per-model tag vectors."""
    metadata.create_all(conn, tables=[Tag, ImageTag, TagOverride, TagVector])


def _v3_to_v4(conn: Connection) -> None:
    """v4: regions, embedded object proposals for finding small objects (optional)."""
    metadata.create_all(conn, tables=[Region])


def _v4_to_v5(conn: Connection) -> None:
    """v5: a digest of each vector-index file, and what scans could not read."""
    conn.execute(text("ALTER TABLE index_state ADD COLUMN digest VARCHAR"))
    metadata.create_all(conn, tables=[ScanProblem])


def _v5_to_v6(conn: Connection) -> None:
    """v6: the descriptions a query is calibrated against (relevance cutoff), and each photo's
    perceptual hash (near-duplicates; photos indexed before it have none until re-read)."""
    metadata.create_all(conn, tables=[Description])
    conn.execute(text("ALTER TABLE images ADD COLUMN fingerprint BIGINT"))


# MIGRATIONS[v] upgrades a database at version v to v + 1. A new database is
# created directly at SCHEMA_VERSION from the current models.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
}


def _on_connect_frozen(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # as below; no journal settings: nothing can be written


def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # no implicit transactions: see the module docstring
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def create_library_engine(path: Path, immediate: bool = False, frozen: bool = False) -> Engine:
    """An engine over the SQLite file at ``path`` whose transactions begin as the module says.

    ``frozen``: the library is on a read-only file system, where SQLite cannot create the
    WAL's shared-memory file and would refuse to open it; it is opened immutable instead
    (readable, and every write fails with a read-only error the CLI explains).
    """
    if frozen:
        engine = create_engine(f"sqlite:///{path.as_uri()}?mode=ro&immutable=1&uri=true", future=True)
        event.listen(engine, "connect", _on_connect_frozen)
    else:
        engine = create_engine(f"sqlite:///{path}", future=True)
        event.listen(engine, "connect", _on_connect)
    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    event.listen(engine, "begin", _begin)
    return engine


# SQLite's answers that mean the file itself is not a sound database (as opposed to a disk
# that is full, read-only or refusing access, where the file is fine and nothing is lost).
_DAMAGED = {"SQLITE_NOTADB", "SQLITE_CORRUPT"}


def _unreadable(path: Path, exc: OperationalError | DatabaseError) -> StoreError:
    """A typed error for a database that cannot be opened, with advice that loses nothing."""
    orig = exc.orig
    name = getattr(orig, "sqlite_errorname", "")
    if name in _DAMAGED or name.startswith("SQLITE_CORRUPT"):
        return damaged_database(path, str(orig))
    if is_disk_error(exc):
        return disk_error(path, exc)
    return StoreError(
        f"Cannot open the library database {path}: {orig}. Nothing was changed. {backup_note(path)}",
        title="Library database unreadable",
    )


def damaged_database(path: Path, why: str) -> StoreError:
    return StoreError(
        f"The library database {path} is damaged ({why}). Nothing was changed: Glimpse will not "
        f"write over it. {backup_note(path)}",
        title="Library database damaged",
    )


def _empty_but_used(path: Path) -> bool:
    """A 0-byte database file where a library was (a backup or vector files beside it): a
    truncated library, not a new one. SQLite would silently start an empty library in it."""
    if not path.is_file() or path.stat().st_size != 0:
        return False
    wal = Path(f"{path}-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        return False  # a new library whose pages are still in the WAL
    vectors = path.parent / "vectors"
    return backup_path(path).is_file() or (vectors.is_dir() and any(vectors.iterdir()))


class Database:
    """The library's SQLite file: a read engine for any thread, and the one :class:`Writer`.

    Opening never writes unless the schema must be created or migrated; that, like
    every other change, goes through the writer and therefore takes the library lock.
    """

    def __init__(self, path: Path, lock: LibraryLock | None = None) -> None:
        self.path = path
        frozen = path.is_file() and read_only_folder(path.parent)
        self.read = create_library_engine(path, frozen=frozen)
        self._write_engine = create_library_engine(path, immediate=True, frozen=frozen)
        self.lock = lock if lock is not None else LibraryLock(path.parent / "library.lock")
        self.writer = Writer(self._write_engine, self.lock)

    @classmethod
    def open(cls, path: Path, lock: LibraryLock | None = None) -> Database:
        """Open (creating and migrating as needed) the library database at ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if _empty_but_used(path):
            raise damaged_database(path, "the file is empty: 0 bytes")
        db = cls(path, lock)
        try:
            with db.read.connect() as conn:
                version = schema_version(conn)
            if version > SCHEMA_VERSION:
                raise SchemaTooNewError(
                    f"This library was written by a newer Glimpse (schema {version}, this one knows "
                    f"{SCHEMA_VERSION}). Update Glimpse, or point GLIMPSE_HOME at another folder."
                )
            if version < SCHEMA_VERSION:
                migrate(db.writer)
        except (OperationalError, DatabaseError) as exc:
            db.close()
            raise _unreadable(path, exc) from exc
        except BaseException:
            db.close()
            raise
        return db

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The driver's connection inside one read transaction, for the plain-SQL queries of
        ``store.reads`` (which a read-only snapshot runs without SQLAlchemy)."""
        with self.read.connect() as conn, conn.begin():
            raw = conn.connection.driver_connection
            assert isinstance(raw, sqlite3.Connection)
            yield raw

    def backup(self, min_interval_s: float = 0.0) -> Path | None:
        """Refresh the one rotating backup (``store.backup``) if the library changed since."""
        return take_backup(self.path, min_interval_s)

    def close(self) -> None:
        self.writer.close()
        self.read.dispose()
        self._write_engine.dispose()


def schema_version(conn: Connection) -> int:
    """The version stamped in ``meta``, or 0 for an empty database."""
    has_meta = conn.execute(text("SELECT name FROM sqlite_master WHERE type='table' AND name='meta'")).first()
    if not has_meta:
        return 0
    row = conn.execute(select(Meta.c.value).where(Meta.c.key == "schema_version")).first()
    return int(row[0]) if row else 0


def migrate(writer: Writer) -> None:
    """Bring the database to ``SCHEMA_VERSION``: each step and its stamp in one writer transaction.

    The version is read again inside the transaction, so two processes racing to
    migrate a library (the lock makes the second wait) never run a step twice.
    """

    def step(conn: Connection) -> bool:
        version = schema_version(conn)
        if version > SCHEMA_VERSION:
            raise SchemaTooNewError(f"This library was written by a newer Glimpse (schema {version}).")
        if version == SCHEMA_VERSION:
            return False
        if version == 0:
            metadata.create_all(conn)
            _stamp(conn, SCHEMA_VERSION)
            log.info("created library schema v%d", SCHEMA_VERSION)
            return False
        MIGRATIONS[version](conn)
        _stamp(conn, version + 1)
        log.info("migrated library schema to v%d", version + 1)
        return True

    while writer.call(step):
        pass


def _stamp(conn: Connection, version: int) -> None:
    conn.execute(text("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', :v)"), {"v": str(version)})
