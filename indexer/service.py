"""The library service: keeps the index equal to the disk, in the background.

One object owns the folder watcher, the event queue and one worker thread. The
worker starts with a stat-based reconciliation of every root (changes made while
Glimpse was closed), then applies coalesced watcher events through the same
scanner and pipeline as ``glimpse index``. Every change is a database transaction,
so stopping or killing the process at any moment leaves a library that the next
start completes.

State and progress reach the CLI and the GUI through the ``on_status`` callback,
called from the worker thread (the GUI forwards it to its own thread as a signal).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from indexer.pipeline import Control, IndexingPipeline, Progress
from indexer.scanner import ScanReport
from indexer.tagging import Tagger
from indexer.watcher import ChangeBatch, EventCoalescer, FolderWatcher, TreeChange, WatchMode
from store.errors import GlimpseError, NotFoundError
from store.library import LibraryStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceStatus:
    state: str  # "stopped" | "starting" | "scanning" | "indexing" | "idle" | "paused"
    progress: Progress | None = None
    queued_events: int = 0
    applied_events: int = 0
    folders: tuple[WatchMode, ...] = ()
    offline: tuple[str, ...] = ()
    message: str | None = None


@dataclass
class ServiceConfig:
    quiet: float = 1.0  # seconds without events before a burst is applied
    poll_interval: float = 5.0  # for roots that cannot be watched natively
    root_check_interval: float = 5.0  # how often to look for roots that vanished or came back
    settle: float = 1.0  # a file modified this recently is still being written: wait


class LibraryService:
    def __init__(
        self,
        store: LibraryStore,
        pipeline: IndexingPipeline,
        tagger: Tagger | None = None,
        config: ServiceConfig | None = None,
        on_status: Callable[[ServiceStatus], None] | None = None,
        watcher_factory: Callable[..., FolderWatcher] = FolderWatcher,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.tagger = tagger
        self.config = config or ServiceConfig()
        self.on_status = on_status
        self.events = EventCoalescer(self.config.quiet)
        self._watcher = watcher_factory(self.events.push, polling_interval=self.config.poll_interval)
        self._control = Control()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        self._status = ServiceStatus("stopped")
        self._offline: set[str] = set()
        self._applied = 0
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    # ---- control ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._control = Control()
        self._thread = threading.Thread(target=self._run, name="glimpse-library", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Finish the batch in hand, save, and stop watching."""
        self._stop.set()
        self._control.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._watcher.stop()
        self._publish(state="stopped", progress=None)

    def pause(self) -> None:
        self._control.pause()
        self._publish(state="paused")

    def resume(self) -> None:
        self._control.resume()
        self._publish(state="idle" if self._idle.is_set() else "indexing")

    def wait_idle(self, timeout: float) -> bool:
        """Block until all known changes are applied (for the CLI and tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error is not None:
                raise self.error
            if self._idle.is_set() and self.events.pending == 0:
                return True
            time.sleep(0.05)
        return False

    @property
    def status(self) -> ServiceStatus:
        return self._status

    def add_folder(self, path: str | Path) -> None:
        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise NotFoundError(f"{path} is not a folder.", title="Folder not found")
        self.store.add_folder(str(root))
        if self._thread is not None:
            self._watch(str(root))
            self.events.push_scan(str(root))

    def remove_folder(self, path: str | Path) -> None:
        root = str(Path(path).expanduser().resolve())
        self._watcher.unwatch(root)
        ids = self.store.remove_folder(root)
        self.pipeline.vectors().remove(ids)
        self.pipeline.vectors().save()

    # ---- the worker --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._publish(state="starting")
            self.pipeline.vectors()  # loads the model, opens (or rebuilds) the vector index
            self._retag_if_stale()
            roots = [f.path for f in self.store.folders() if f.enabled]
            for root in roots:
                if Path(root).is_dir():
                    self._watch(root)
            # Watch first, then reconcile: a change during the scan is caught by one or the other.
            self._reconcile(roots)
            last_check = time.monotonic()
            while not self._stop.is_set():
                self._control.wait_if_paused()
                batch = self.events.take(timeout=0.2)
                if batch:
                    try:
                        self._apply(batch)
                    finally:
                        self.events.done()
                if time.monotonic() - last_check >= self.config.root_check_interval:
                    self._check_roots()
                    last_check = time.monotonic()
                if not batch and self.events.pending == 0:
                    self._set_idle()
        except BaseException as exc:  # surfaced through wait_idle and the status message
            log.exception("library service stopped by an error")
            self.error = exc
            self._publish(state="stopped", message=str(exc))

    def _retag_if_stale(self) -> None:
        """Bring automatic tags up to date if the vocabulary or model changed while we were away."""
        if self.tagger is None:
            return
        try:
            report = self.tagger.retag_if_stale()
        except GlimpseError as exc:  # tags are an extra: a bad vocabulary must not stop the library
            self._publish(message=f"Tags not updated: {exc.message}")
            return
        if report is not None:
            log.info("re-tagged %d photos (vocabulary or model changed)", report.photos)

    def _watch(self, root: str) -> None:
        mode = self._watcher.watch(root)
        if mode.reason:
            self._publish(message=mode.reason)

    def _set_idle(self) -> None:
        if not self._idle.is_set():
            self._idle.set()
            self._publish(state="paused" if self._control.paused else "idle", progress=None)

    def _reconcile(self, roots: Sequence[str]) -> None:
        """Catch up with changes made while Glimpse was not running (stat-based, fast)."""
        self._idle.clear()
        self._publish(state="scanning")
        report = self.pipeline.scanner.scan([Path(r) for r in roots])
        self._after_scan(report)
        self._index()

    def _after_scan(self, report: ScanReport) -> None:
        self.pipeline.vectors().remove(report.stale_ids)
        for root in report.offline_roots:
            self._offline.add(root)
        if report.offline_roots:
            self._publish(message="Not available (kept, not deleted): " + ", ".join(report.offline_roots))

    def _index(self) -> None:
        for progress in self.pipeline.index_pending(None, self._control, background=True):
            if progress.phase == "indexing":
                self._publish(state="indexing", progress=progress)
            if self._stop.is_set():
                self._control.cancel()

    def _apply(self, batch: ChangeBatch) -> None:
        self._idle.clear()
        settling = {p for p in batch.files if _recently_modified(p, self.config.settle)}
        if settling:
            self.events.requeue(settling)
        files = set(batch.files) - settling
        stale: list[int] = []
        for change in batch.tree:
            stale += self._apply_tree(change)
        self.pipeline.vectors().remove(stale)
        if files:
            self._after_scan(self.pipeline.scanner.scan_paths(sorted(files)))
        self._applied += batch.events
        self._index()
        self._publish(applied_events=self._applied)

    def _apply_tree(self, change: TreeChange) -> list[int]:
        """Apply one structural change; returns ids whose vectors must leave the index."""
        roots = self._roots()
        if change.kind == "dir_move" and change.dest:
            dest_root = _owner(change.dest, roots)
            if dest_root is None:  # moved out of every watched folder: gone from the library
                return self.store.remove_under(change.path)
            self.store.move_tree(change.path, change.dest, roots[dest_root])
            # Anything that changed inside the folder in the same burst, or a folder moved in
            # from outside the watched tree, is caught by a (stat-only) scan of the new place.
            return self._scan_tree(change.dest)
        if change.kind == "dir_delete":
            if change.path in roots:
                self._mark_offline(change.path)
                return []
            return self.store.remove_under(change.path)
        if change.kind == "dir_scan":
            return self._scan_tree(change.path)
        return []

    def _scan_tree(self, path: str) -> list[int]:
        report = self.pipeline.scanner.scan_tree(path)
        self._after_scan(report)
        return report.stale_ids

    def _check_roots(self) -> None:
        """Notice roots that vanished (unplugged) or came back."""
        for folder in self.store.folders():
            there = Path(folder.path).is_dir()
            if not there and folder.path not in self._offline:
                self._mark_offline(folder.path)
            elif there and (folder.path in self._offline or not folder.online):
                self._offline.discard(folder.path)
                self._watcher.unwatch(folder.path)
                self._watch(folder.path)
                self._publish(message=f"{folder.path} is back; checking it for changes.")
                self._reconcile([folder.path])

    def _mark_offline(self, root: str) -> None:
        self._offline.add(root)
        self.store.set_folder_online(root, False)
        self._watcher.unwatch(root)
        self._publish(message=f"{root} is not available (unplugged?); its photos are kept until it returns.")

    def _roots(self) -> dict[str, int]:
        return {f.path: f.id for f in self.store.folders()}

    def _publish(self, **changes: Any) -> None:
        with self._lock:
            folders = tuple(self._watcher.modes())
            self._status = replace(
                self._status,
                folders=folders,
                offline=tuple(sorted(self._offline)),
                queued_events=self.events.pending,
                **changes,
            )
            status = self._status
        if self.on_status is not None:
            self.on_status(status)


def _owner(path: str, roots: dict[str, int]) -> str | None:
    best = None
    for root in roots:
        if (path == root or path.startswith(root.rstrip(os.sep) + os.sep)) and (best is None or len(root) > len(best)):
            best = root
    return best


def _recently_modified(path: str, settle: float) -> bool:
    try:
        return time.time() - os.stat(path).st_mtime < settle
    except OSError:
        return False
