"""The one writer, its transactions, migrations and the process lock, on real SQLite files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from store import database
from store.database import Database, schema_version
from store.errors import LibraryBusyError, StoreError
from store.library import LibraryStore
from store.lock import LibraryLock
from store.records import SCHEMA_VERSION


def test_every_write_runs_on_the_writer_thread_in_order(tmp_path: Path) -> None:
    store = LibraryStore.open(tmp_path / "lib.sqlite3")
    seen: list[str] = []

    def record(conn: object) -> str:
        seen.append(threading.current_thread().name)
        return "done"

    assert store.write(record) == "done"
    store.add_folder(str(tmp_path / "a"))
    assert seen == ["glimpse-writer"]
    assert store.db.writer.commands >= 2
    store.close()


def test_read_then_write_commands_never_interleave(tmp_path: Path) -> None:
    """Eight threads each add 1 to a counter 25 times by reading then writing it: no update is lost."""
    store = LibraryStore.open(tmp_path / "lib.sqlite3")
    store.set_meta("counter", "0")

    def bump(conn: object) -> None:
        value = int(store.get_meta("counter") or 0)  # a read on another connection...
        row = conn.execute(text("SELECT value FROM meta WHERE key = 'counter'")).scalar_one()  # type: ignore[attr-defined]
        assert int(row) == value
        conn.execute(text("UPDATE meta SET value = :v WHERE key = 'counter'"), {"v": str(value + 1)})  # type: ignore[attr-defined]

    threads = [threading.Thread(target=lambda: [store.write(bump) for _ in range(25)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get_meta("counter") == "200"
    store.close()


def test_a_failed_command_rolls_back_everything_it_did(tmp_path: Path) -> None:
    store = LibraryStore.open(tmp_path / "lib.sqlite3")

    def half(conn: object) -> None:
        store.add_folder("/photos/a")  # nested: runs inline, in this command's transaction
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.write(half)
    assert store.folders() == []
    store.close()


def test_a_migration_is_one_transaction_with_its_stamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DDL used to autocommit: a migration that failed half-way left a table and no stamp."""
    path = tmp_path / "lib.sqlite3"
    db = Database.open(path)
    db.writer.call(lambda conn: conn.execute(text("DROP TABLE regions")))
    db.writer.call(lambda conn: conn.execute(text("DROP TABLE scan_problems")))  # v5
    db.writer.call(lambda conn: conn.execute(text("ALTER TABLE index_state DROP COLUMN digest")))  # v5
    db.writer.call(lambda conn: conn.execute(text("DROP TABLE descriptions")))  # v6
    db.writer.call(lambda conn: conn.execute(text("ALTER TABLE images DROP COLUMN fingerprint")))  # v6
    db.writer.call(lambda conn: conn.execute(text("UPDATE meta SET value = '3' WHERE key = 'schema_version'")))
    db.close()

    def broken(conn: object) -> None:
        database._v3_to_v4(conn)  # type: ignore[arg-type]
        raise RuntimeError("disk pulled out mid-migration")

    monkeypatch.setitem(database.MIGRATIONS, 3, broken)
    with pytest.raises(RuntimeError):
        Database.open(path)
    monkeypatch.setitem(database.MIGRATIONS, 3, database._v3_to_v4)
    raw = sqlite3.connect(path)
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    version = raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    raw.close()
    assert "regions" not in tables and version == "3", "the failed step must leave nothing behind"
    db = Database.open(path)  # the real migration then completes
    with db.read.connect() as conn:
        assert schema_version(conn) == SCHEMA_VERSION
    db.close()


_HOLD = """
import sys, time
from pathlib import Path
from store.lock import LibraryLock
lock = LibraryLock(Path(sys.argv[1]))
print("took" if lock.try_acquire() else "busy", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_the_library_lock_belongs_to_one_process(tmp_path: Path) -> None:
    path = tmp_path / "library.lock"
    other = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path), "30"], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "took"
        lock = LibraryLock(path, timeout=0.5)
        assert not lock.try_acquire()
        assert "process" in (lock.owner() or "")
        with pytest.raises(LibraryBusyError, match="in use by"):
            lock.acquire()
    finally:
        other.kill()
        other.wait()
    lock = LibraryLock(path)
    assert lock.try_acquire(), "a killed owner leaves no stale lock"
    lock.release()


def test_a_reader_never_takes_the_lock_and_a_writer_keeps_it(tmp_path: Path) -> None:
    store = LibraryStore.open(tmp_path / "lib.sqlite3")
    store.close()
    reader = LibraryStore.open(tmp_path / "lib.sqlite3")
    reader.folders()
    reader.status_counts()
    assert not reader.db.lock.held
    reader.add_folder("/photos")
    assert reader.db.lock.held
    reader.close()
    assert not reader.db.lock.held


def test_closed_library_refuses_writes(tmp_path: Path) -> None:
    store = LibraryStore.open(tmp_path / "lib.sqlite3")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.add_folder("/x")
