"""Running engine work off the GUI thread.

Widgets are touched only on the GUI thread. Work runs as ``QRunnable``s on thread
pools and reports back through signals, which Qt delivers on the GUI thread (the
receiver lives there, so the connection is queued). Interactive model work
(searches, object search, tag edits) gets a pool of one thread, the GUI's model
runner; indexing calls the model on the library service's own model thread
(docs/architecture.md lists every thread). Interactive requests are "latest wins":
a request that is no longer the newest when its turn comes is skipped, so typing
fast never builds a queue of stale searches.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

log = logging.getLogger(__name__)


class _Signals(QObject):
    result = Signal(object)
    error = Signal(object)


class _Task(QRunnable):
    def __init__(self, fn: Callable[[], Any], signals: _Signals, still_wanted: Callable[[], bool]) -> None:
        super().__init__()
        self._fn = fn
        self._signals = signals
        self._still_wanted = still_wanted

    def run(self) -> None:
        if not self._still_wanted():
            return
        try:
            value = self._fn()
        except Exception as exc:  # delivered to the GUI as an error, never lost on a worker thread
            log.debug("background task failed", exc_info=True)
            self._signals.error.emit(exc)
        else:
            self._signals.result.emit(value)


class TaskRunner(QObject):
    """A thread pool whose results come back as signals on the GUI thread."""

    def __init__(self, threads: int, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(threads)
        self._latest: dict[str, int] = {}
        self._lock = threading.Lock()
        self._keep: set[_Signals] = set()
        self._closed = False  # after close(), late results are dropped: their widgets may be gone

    def submit(
        self,
        fn: Callable[[], Any],
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        latest_key: str | None = None,
    ) -> None:
        """Run ``fn`` on the pool. With ``latest_key``, only the newest request for that key runs
        (older ones still waiting are skipped) and only its result is delivered."""
        signals = _Signals()
        self._keep.add(signals)
        ticket = 0
        if latest_key is not None:
            with self._lock:
                ticket = self._latest.get(latest_key, 0) + 1
                self._latest[latest_key] = ticket

        def wanted() -> bool:
            return latest_key is None or self._latest.get(latest_key) == ticket

        def deliver(value: Any) -> None:
            self._keep.discard(signals)
            if on_result is not None and wanted() and not self._closed:
                on_result(value)

        def fail(exc: Any) -> None:
            self._keep.discard(signals)
            if on_error is not None and wanted() and not self._closed:
                on_error(exc)

        signals.result.connect(deliver)
        signals.error.connect(fail)
        self.pool.start(_Task(fn, signals, wanted))

    def wait(self, msecs: int = 30000) -> bool:
        return self.pool.waitForDone(msecs)

    def close(self, msecs: int = 30000) -> bool:
        """Wait for the running tasks, then drop every result still on its way to the GUI thread."""
        done = self.wait(msecs)
        self._closed = True
        return done
