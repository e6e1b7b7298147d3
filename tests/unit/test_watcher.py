"""Event coalescing and observer fallback, without touching the file system's notifications."""

from __future__ import annotations

import errno
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
)
from watchdog.observers.polling import PollingObserver

from indexer.live.watcher import INOTIFY_HELP, EventCoalescer, FolderWatcher, TreeChange, filesystem_type, is_temporary


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_for_one_file_becomes_one_change() -> None:
    clock = Clock()
    q = EventCoalescer(quiet=1.0, clock=clock)
    for event in (FileCreatedEvent("/p/a.jpg"), FileModifiedEvent("/p/a.jpg"), FileClosedEvent("/p/a.jpg")):
        q.push(event)
    assert q.take(timeout=0) is None, "nothing is applied before the quiet period"
    clock.now += 1.5
    batch = q.take(timeout=0)
    assert batch is not None and batch.files == {"/p/a.jpg"} and batch.events == 3 and not batch.tree
    q.done()
    assert q.pending == 0


def test_moves_deletes_and_temporary_files() -> None:
    clock = Clock()
    q = EventCoalescer(quiet=0.5, clock=clock)
    q.push(FileCreatedEvent("/p/new.jpg"))
    q.push(FileDeletedEvent("/p/new.jpg"))  # created and deleted: reconciling finds nothing to do
    q.push(FileMovedEvent("/p/a.jpg", "/p/b.jpg"))
    q.push(FileCreatedEvent("/p/download.jpg.crdownload"))
    q.push(FileModifiedEvent("/p/download.jpg.crdownload"))
    q.push(FileMovedEvent("/p/download.jpg.crdownload", "/p/download.jpg"))
    q.push(FileCreatedEvent("/p/.hidden.jpg"))
    q.push(FileCreatedEvent("/p/notes.txt"))
    q.push(DirMovedEvent("/p/album", "/p/Album 2024"))
    q.push(DirDeletedEvent("/p/old"))
    q.push(DirCreatedEvent("/p/from-outside"))
    clock.now += 1
    batch = q.take(timeout=0)
    assert batch is not None
    assert batch.files == {"/p/new.jpg", "/p/a.jpg", "/p/b.jpg", "/p/download.jpg"}
    assert batch.tree == [
        TreeChange("dir_move", "/p/album", "/p/Album 2024"),
        TreeChange("dir_delete", "/p/old"),
        TreeChange("dir_scan", "/p/from-outside"),
    ]


def test_requeued_files_wait_for_another_quiet_period() -> None:
    clock = Clock()
    q = EventCoalescer(quiet=1.0, clock=clock)
    q.requeue({"/p/growing.jpg"})
    assert q.take(timeout=0) is None
    clock.now += 1.1
    assert q.take(timeout=0).files == {"/p/growing.jpg"}


def test_temporary_names() -> None:
    for name in ("a.jpg.part", "b.JPG.crdownload", "c.jpg~", ".d.jpg", "~$e.jpg", "f.tmp"):
        assert is_temporary(f"/x/{name}"), name
    assert not is_temporary("/x/holiday.jpg")


def test_inotify_limit_falls_back_to_polling_and_says_how_to_fix(tmp_path: Path) -> None:
    class FullInotify(PollingObserver):
        def schedule(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

    watcher = FolderWatcher(lambda e: None, polling_interval=0.5, native_factory=FullInotify)
    try:
        mode = watcher.watch(str(tmp_path))
        assert mode.mode == "polling" and mode.reason == INOTIFY_HELP
        assert "fs.inotify.max_user_watches" in mode.reason
    finally:
        watcher.stop()


def test_network_filesystem_is_polled(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(f"server:/export {tmp_path} nfs4 rw 0 0\n/dev/sda1 / ext4 rw 0 0\n")
    assert filesystem_type(str(tmp_path / "photos"), str(mounts)) == "nfs4"
    assert filesystem_type("/usr", str(mounts)) == "ext4"
    watcher = FolderWatcher(lambda e: None, filesystem_of=lambda p: filesystem_type(p, str(mounts)))
    try:
        mode = watcher.watch(str(tmp_path))
        assert mode.mode == "polling" and "network drive (nfs4)" in (mode.reason or "")
    finally:
        watcher.stop()


def test_taken_batch_stays_pending_until_done() -> None:
    """Waiters must not see "nothing pending" between the consumer taking a batch and applying it."""
    clock = Clock()
    q = EventCoalescer(quiet=0.1, clock=clock)
    q.push(FileCreatedEvent("/p/a.jpg"))
    clock.now += 1
    assert q.take(timeout=0) is not None
    assert q.pending == 1
    q.done()
    assert q.pending == 0
