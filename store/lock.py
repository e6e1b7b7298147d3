"""One process owns a library: an advisory lock on a file in the library folder.

Two processes writing one library corrupt it in ways SQLite cannot see (the vector
index file of one and the rows of the other drift apart). The process that writes
first takes an exclusive lock on ``library.lock`` and keeps it until it closes the
library; the lock dies with the process, so a kill never leaves a stale lock
behind. A second process waits for it, saying who holds it, or gives up after a
timeout with :class:`LibraryBusyError`. Readers never take the lock.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from store.errors import LibraryBusyError

log = logging.getLogger(__name__)


def _try_lock(fh: IO[bytes]) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fh: IO[bytes]) -> None:
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt

        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
        return
    import fcntl

    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def describe_process() -> str:
    """What this process is, for the message another process shows while it waits."""
    argv = [Path(sys.argv[0]).name, *sys.argv[1:3]] if sys.argv and sys.argv[0] else ["python"]
    return " ".join(argv)


class LibraryLock:
    """The exclusive right to write one library, held by at most one process at a time.

    ``waiting`` is called once, with a message naming the owner, when the lock is held
    elsewhere; ``timeout`` (seconds, None for ever) bounds the wait.
    """

    def __init__(
        self,
        path: Path,
        timeout: float | None = None,
        waiting: Callable[[str], None] | None = None,
        poll: float = 0.2,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.waiting = waiting
        self.poll = poll
        self._fh: IO[bytes] | None = None
        self._guard = threading.Lock()
        self._give_up = threading.Event()

    @property
    def held(self) -> bool:
        return self._fh is not None

    def owner(self) -> str | None:
        """Who holds the lock, as written by that process (None if unknown or free)."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return None
        if not isinstance(info, dict) or "pid" not in info:
            return None
        return f"{info.get('what', 'Glimpse')} (process {info['pid']})"

    def try_acquire(self) -> bool:
        """Take the lock if it is free now; never waits."""
        with self._guard:
            if self._fh is not None:
                return True
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+b")  # noqa: SIM115 - kept open while the lock is held
            if not _try_lock(fh):
                fh.close()
                return False
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps({"pid": os.getpid(), "what": describe_process()}).encode())
            fh.flush()
            self._fh = fh
            return True

    def acquire(self) -> None:
        """Take the lock, waiting for the owner to finish (or ``timeout`` to pass)."""
        if self.try_acquire():
            return
        owner = self.owner() or "another Glimpse process"
        message = (
            f"The library {self.path.parent} is in use by {owner}. Waiting for it to finish "
            "(press Ctrl-C to stop; close the other Glimpse to go on at once)."
        )
        log.info("%s", message)
        if self.waiting is not None:
            self.waiting(message)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while not self.try_acquire():
            if deadline is not None and time.monotonic() >= deadline:
                raise LibraryBusyError(
                    f"The library {self.path.parent} is in use by {owner}, which did not finish within "
                    f"{self.timeout:.0f} s. Close it, or run this command when it is done."
                )
            if self._give_up.wait(self.poll):
                raise LibraryBusyError(
                    f"Stopped waiting for the library {self.path.parent}, which is in use by {owner}."
                )

    def stop_waiting(self) -> None:
        """Make a wait in :meth:`acquire` (on another thread) give up now: the process is stopping."""
        self._give_up.set()

    def release(self) -> None:
        with self._guard:
            if self._fh is None:
                return
            try:
                self._fh.seek(0)
                self._fh.truncate()
                _unlock(self._fh)
            finally:
                self._fh.close()
                self._fh = None
