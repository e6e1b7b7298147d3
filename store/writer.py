"""The library's one writer: a thread that applies every change, in order.

Three threads used to write the library (the pipeline's committer, the library
service, the GUI), and read-then-write blocks interleaved: a re-tag could snapshot
the vectors, a batch commit its tags in between, and the re-tag then wipe them. Now
every change to SQLite *and* to the in-memory vector indexes is a command run on
this thread, one after another, each in its own ``BEGIN IMMEDIATE`` transaction (so
a read inside a command sees exactly what it is about to change). Readers keep their
own connections and never wait for it, thanks to WAL.

A command that calls another write method runs it inline, inside its own transaction
(the writer is re-entrant on its own thread), so composite changes such as "commit a
batch, add its vectors, tag it" are atomic with respect to every other command.

The first command takes the process lock (:mod:`store.lock`): a process that never
writes never takes it, and a process that writes keeps it until the library closes.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from store.errors import StoreError
from store.lock import LibraryLock

log = logging.getLogger(__name__)

T = TypeVar("T")

_STOP = object()


class Writer:
    """Runs write commands ``fn(conn)`` on one thread, in submission order, one transaction each."""

    def __init__(self, engine: Engine, lock: LibraryLock | None = None, name: str = "glimpse-writer") -> None:
        self._engine = engine
        self._lock = lock
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._conn: Connection | None = None  # the open transaction, on the writer thread only
        self._closed = False
        self.commands = 0  # commands run; tests use it to see that work went through here

    def on_writer_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def call(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` as a command and return its result (inline when already inside a command)."""
        if self.on_writer_thread() and self._conn is not None:
            return fn(self._conn)
        return self.submit(fn).result()

    def submit(self, fn: Callable[[Connection], T]) -> Future[T]:
        """Queue ``fn``; the future resolves once its transaction has committed (or failed)."""
        if self._closed:
            raise StoreError("The library is closed; nothing more can be written to it.")
        future: Future[T] = Future()
        self._ensure_thread()
        self._queue.put((fn, future))
        return future

    def try_call(self, fn: Callable[[Connection], T]) -> tuple[bool, T | None]:
        """Run ``fn`` only if this process owns the library or can take it without waiting.

        For optional writes by readers (saving a vector index they rebuilt in memory): a
        search must never wait for another process's indexing to finish.
        """
        if self._lock is not None and not self._lock.try_acquire():
            return False, None
        return True, self.call(fn)

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                if self._lock is not None:
                    self._lock.acquire()
                with self._engine.begin() as conn:
                    self._conn = conn
                    try:
                        result = fn(conn)
                        _bump_revision(conn)
                    finally:
                        self._conn = None
                self.commands += 1
            except BaseException as exc:  # handed to the caller, who knows what was being done
                future.set_exception(exc)
            else:
                future.set_result(result)

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queued commands, stop the thread and give up the library lock."""
        self._closed = True
        if self._lock is not None:
            self._lock.stop_waiting()  # a command waiting for another process's lock gives up
        thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            if thread is not threading.current_thread():
                thread.join(timeout)
                if thread.is_alive():
                    log.warning("the library writer did not finish within %.0f s", timeout)
        if self._lock is not None:
            self._lock.release()


REVISION_KEY = "revision"


def _bump_revision(conn: Connection) -> None:
    """Count committed commands in the library itself (``meta.revision``), in the same transaction.

    A process that finds the revision it recorded knows nothing was written since, without
    reading what was: ``glimpse index`` with nothing to do checks this (``indexer.cli.quick``).
    Before the first migration has made the ``meta`` table there is nothing to count.
    """
    try:
        conn.exec_driver_sql(
            "INSERT INTO meta (key, value) VALUES (?, '1') "
            "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            (REVISION_KEY,),
        )
    except OperationalError as exc:
        if "no such table" not in str(exc):
            raise
