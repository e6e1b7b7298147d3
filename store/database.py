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

from store.errors import SchemaTooNewError, StoreError
from store.lock import LibraryLock
from store.records import SCHEMA_VERSION
from store.schema import ImageTag, Meta, Region, Tag, TagOverride, TagVector, metadata
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


# MIGRATIONS[v] upgrades a database at version v to v + 1. A new database is
# created directly at SCHEMA_VERSION from the current models.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # no implicit transactions: see the module docstring
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def create_library_engine(path: Path, immediate: bool = False) -> Engine:
    """An engine over the SQLite file at ``path`` whose transactions begin as the module says."""
    engine = create_engine(f"sqlite:///{path}", future=True)
    event.listen(engine, "connect", _on_connect)
    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    event.listen(engine, "begin", _begin)
    return engine


def _unreadable(path: Path, exc: OperationalError | DatabaseError) -> StoreError:
    return StoreError(
        f"Cannot open the library database {path}: {exc.orig}. If the file is damaged, "
        "move it aside; Glimpse will create a new one and re-index your folders.",
        title="Library database unreadable",
    )


class Database:
    """The library's SQLite file: a read engine for any thread, and the one :class:`Writer`.

    Opening never writes unless the schema must be created or migrated; that, like
    every other change, goes through the writer and therefore takes the library lock.
    """

    def __init__(self, path: Path, lock: LibraryLock | None = None) -> None:
        self.path = path
        self.read = create_library_engine(path)
        self._write_engine = create_library_engine(path, immediate=True)
        self.lock = lock if lock is not None else LibraryLock(path.parent / "library.lock")
        self.writer = Writer(self._write_engine, self.lock)

    @classmethod
    def open(cls, path: Path, lock: LibraryLock | None = None) -> Database:
        """Open (creating and migrating as needed) the library database at ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
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
