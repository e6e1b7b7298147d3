"""Watching photo folders: file-system events in, coalesced changes out.

The watchdog handler only queues events (it runs on watchdog's thread and must
return at once). The service thread takes them after a quiet period, merged per
path, as Maestral's sync engine does:

* create + modify + close of a file        -> one reconcile of that path
* create + delete                          -> a reconcile that finds nothing to do
* file moved                               -> a reconcile of both paths, which recognises the
                                              move by content (the row keeps its id and vector)
* folder moved or renamed                  -> one tree move (every row under it, one transaction)
* folder deleted                           -> every row under it removed
* folder created (e.g. moved in from outside the watched tree, which inotify reports
  as a single event)                       -> a scan of that folder

Temporary and partial files (``.part``, ``.crdownload``, ``~`` backups, dot files) are
ignored; a download that is renamed to its final name arrives as a change of that name.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from indexer.ingest.scanner import is_photo

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".part", ".crdownload", ".download", ".partial", ".tmp", ".temp", ".swp", "~")
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "fuse.sshfs",
        "sshfs",
        "afpfs",
        "davfs",
        "fuse.rclone",
        "fuse.gvfsd-fuse",
        "ncpfs",
        "glusterfs",
        "ceph",
        "fuse.s3fs",
    }
)
INOTIFY_HELP = (
    "The system limit on watched folders (inotify) is reached, so Glimpse checks this folder by polling "
    "every few seconds instead. To watch it instantly, raise the limit: "
    "sudo sysctl fs.inotify.max_user_watches=524288 (and add that line to /etc/sysctl.d/90-glimpse.conf "
    "to keep it after a restart)."
)


def is_temporary(path: str) -> bool:
    name = os.path.basename(path)
    return name.startswith((".", "~$")) or name.lower().endswith(TEMP_SUFFIXES)


def _relevant_file(path: str) -> bool:
    return is_photo(os.path.basename(path)) and not is_temporary(path)


@dataclass(frozen=True)
class TreeChange:
    """A structural change, applied in the order it happened."""

    kind: str  # "dir_move" | "dir_delete" | "dir_scan"
    path: str
    dest: str | None = None


@dataclass
class ChangeBatch:
    """What the service applies in one go: ordered tree changes, then per-file reconciles."""

    tree: list[TreeChange] = field(default_factory=list)
    files: set[str] = field(default_factory=set)
    events: int = 0

    def __bool__(self) -> bool:
        return bool(self.tree or self.files)


class EventCoalescer:
    """Thread-safe buffer between watchdog's threads and the service thread."""

    def __init__(self, quiet: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet = quiet
        self._clock = clock
        self._cond = threading.Condition()
        self._batch = ChangeBatch()
        self._last = 0.0
        self._in_hand = 0  # events taken but not yet reported done: still pending to waiters

    def push(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else None
        kind = event.event_type
        with self._cond:
            b = self._batch
            b.events += 1
            if event.is_directory:
                if kind == "moved" and dest:
                    b.tree.append(TreeChange("dir_move", src, dest))
                elif kind == "deleted":
                    b.tree.append(TreeChange("dir_delete", src))
                elif kind == "created":
                    b.tree.append(TreeChange("dir_scan", src))
            elif kind == "moved" and dest:
                # Both ends are reconciled: a download renamed from ".part" to its real name
                # is a new photo; a photo renamed within the library is a move by content.
                b.files.update(p for p in (src, dest) if _relevant_file(p))
            elif kind in ("created", "modified", "closed", "deleted") and _relevant_file(src):
                b.files.add(src)
            self._last = self._clock()
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Events not yet applied: queued, or taken by the consumer and not yet marked done."""
        with self._cond:
            return self._batch.events + self._in_hand

    def done(self) -> None:
        """The consumer finished applying the batch it took."""
        with self._cond:
            self._in_hand = 0

    def take(self, timeout: float) -> ChangeBatch | None:
        """The merged changes once nothing has arrived for ``quiet`` seconds, else None."""
        deadline = self._clock() + timeout
        with self._cond:
            while True:
                now = self._clock()
                if self._batch.events and now - self._last >= self.quiet:
                    batch, self._batch = self._batch, ChangeBatch()
                    self._in_hand = batch.events
                    return batch
                if now >= deadline:
                    return None
                wait = deadline - now
                if self._batch.events:
                    wait = min(wait, self.quiet - (now - self._last))
                self._cond.wait(max(wait, 0.01))

    def push_scan(self, folder: str) -> None:
        """Ask for a scan of ``folder`` (a newly added root) through the same queue."""
        with self._cond:
            self._batch.tree.append(TreeChange("dir_scan", folder))
            self._batch.events += 1
            self._last = self._clock() - self.quiet  # no reason to wait for quiet
            self._cond.notify_all()

    def requeue(self, files: set[str]) -> None:
        """Put back files that were still being written; they are looked at after the next quiet period."""
        with self._cond:
            self._batch.files |= files
            self._batch.events += len(files)
            self._last = self._clock()
            self._cond.notify_all()


class _Handler(FileSystemEventHandler):
    def __init__(self, sink: Callable[[FileSystemEvent], None]) -> None:
        self._sink = sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("opened", "closed_no_write"):
            self._sink(event)


@dataclass(frozen=True)
class WatchMode:
    path: str
    mode: str  # "native" | "polling"
    reason: str | None = None


def filesystem_type(path: str, mounts_file: str = "/proc/mounts") -> str | None:
    """The type of the file system that holds ``path`` (Linux), or None where unknown."""
    try:
        lines = Path(mounts_file).read_text().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best, fstype = "", None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ")
        if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
            best, fstype = mount, parts[2]
    return fstype


class FolderWatcher:
    """Watches roots with the platform's native notifications, falling back to polling per root.

    Polling is used for network file systems (notifications do not cross the network)
    and where the native observer cannot start (e.g. the inotify watch limit); the
    reason is kept for the user.
    """

    def __init__(
        self,
        sink: Callable[[FileSystemEvent], None],
        polling_interval: float = 5.0,
        native_factory: Callable[[], BaseObserver] = Observer,
        filesystem_of: Callable[[str], str | None] = filesystem_type,
    ) -> None:
        self._filesystem_of = filesystem_of
        self._handler = _Handler(sink)
        self._native_factory = native_factory
        self._polling_interval = polling_interval
        self._native: BaseObserver | None = None
        self._polling: BaseObserver | None = None
        self._watches: dict[str, tuple[BaseObserver, ObservedWatch, WatchMode]] = {}
        self._lock = threading.Lock()

    def watch(self, root: str) -> WatchMode:
        with self._lock:
            if root in self._watches:
                return self._watches[root][2]
            fstype = self._filesystem_of(root)
            if fstype in NETWORK_FILESYSTEMS:
                return self._poll(
                    root,
                    f"{root} is on a network drive ({fstype}); change notifications do "
                    f"not cross the network, so Glimpse checks it every "
                    f"{self._polling_interval:g} s.",
                )
            try:
                if self._native is None:
                    self._native = self._native_factory()
                    self._native.start()
                watch = self._native.schedule(self._handler, root, recursive=True)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EMFILE):
                    return self._poll(root, INOTIFY_HELP)
                return self._poll(
                    root,
                    f"Native change notifications failed for {root} ({exc}); "
                    f"polling every {self._polling_interval:g} s instead.",
                )
            mode = WatchMode(root, "native")
            self._watches[root] = (self._native, watch, mode)
            return mode

    def _poll(self, root: str, reason: str) -> WatchMode:
        log.warning("%s", reason)
        if self._polling is None:
            self._polling = PollingObserver(timeout=self._polling_interval)
            self._polling.start()
        watch = self._polling.schedule(self._handler, root, recursive=True)
        mode = WatchMode(root, "polling", reason)
        self._watches[root] = (self._polling, watch, mode)
        return mode

    def unwatch(self, root: str) -> None:
        with self._lock:
            entry = self._watches.pop(root, None)
        if entry is not None:
            observer, watch, _ = entry
            with contextlib.suppress(KeyError, OSError):  # the folder vanished, and its watch with it
                observer.unschedule(watch)

    def modes(self) -> list[WatchMode]:
        with self._lock:
            return [m for _, _, m in self._watches.values()]

    def stop(self) -> None:
        for observer in (self._native, self._polling):
            if observer is not None:
                observer.stop()
        for observer in (self._native, self._polling):
            if observer is not None and observer.is_alive():
                observer.join(timeout=5)
        self._native = self._polling = None
        self._watches.clear()
