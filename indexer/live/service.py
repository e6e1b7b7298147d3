"""The library service: keeps the index equal to the disk, in the background.

One object owns the folder watcher, the event queue and one worker thread. The
worker starts with a stat-based reconciliation of every root (changes made while
Glimpse was closed), then applies coalesced watcher events through the same
scanner and pipeline as ``glimpse index``. Every change is a database transaction,
so stopping or killing the process at any moment leaves a library that the next
start completes.

State and progress reach the CLI and the GUI through the ``on_status`` callback
given to :meth:`LibraryService.start`, called from the worker thread (the GUI
forwards it to its own thread as a signal).

Folder changes asked for while the service runs (the GUI's "Add folder") are
queued to the worker thread: the caller never waits for SQL or for thousands of
inotify watches. A model switch in progress (``indexer.live.switch``) advances
here too, after the photos of the active model are up to date.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from indexer.ingest.pipeline import Control, IndexingPipeline, Progress
from indexer.ingest.scanner import ScanReport
from indexer.live.switch import ModelSwitch
from indexer.live.watcher import ChangeBatch, EventCoalescer, FolderWatcher, TreeChange, WatchMode
from indexer.tags.tagger import Tagger
from store.diskerrors import disk_error, is_disk_error
from store.errors import GlimpseError, NotFoundError
from store.library import LibraryStore
from store.vectors import claim_index_dir

log = logging.getLogger(__name__)


def tagging_message(progress: Progress) -> str:
    """What the tagging phase says in the CLI and the app."""
    return f"preparing tags: {progress.done:,} of {progress.total:,} prompts"


@dataclass(frozen=True)
class ServiceStatus:
    state: str  # "stopped" | "starting" | "scanning" | "indexing" | "tagging" | "switching" | "idle" | "paused"
    progress: Progress | None = None
    queued_events: int = 0
    applied_events: int = 0
    folders: tuple[WatchMode, ...] = ()
    offline: tuple[str, ...] = ()
    message: str | None = None


BACKUP_INTERVAL_S = 600.0


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
        switch: ModelSwitch | None = None,
        config: ServiceConfig | None = None,
        watcher_factory: Callable[..., FolderWatcher] = FolderWatcher,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.tagger = tagger
        self.switch = switch
        self.config = config or ServiceConfig()
        self.on_status: Callable[[ServiceStatus], None] | None = None
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
        self._requests: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._switch_due = threading.Event()
        self._switch_retry = 0.0
        self.error: BaseException | None = None

    # ---- control ---------------------------------------------------------------------------

    def start(self, on_status: Callable[[ServiceStatus], None] | None = None) -> None:
        """Start the worker; ``on_status`` is called from it with every change of state."""
        if on_status is not None:
            self.on_status = on_status
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
        """Add a watched root. While the service runs, the work is queued to its thread."""
        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise NotFoundError(f"{path} is not a folder.", title="Folder not found")
        self._on_worker(lambda: self._add_folder(str(root)))

    def _add_folder(self, root: str) -> None:
        self.store.add_folder(root)
        if self._thread is not None:
            self._watch(root)
            self.events.push_scan(root)
        self._publish(message=f"Added {root}.")

    def remove_folder(self, path: str | Path) -> None:
        """Forget a root and its photos (files are not touched); queued while the service runs."""
        root = str(Path(path).expanduser().resolve())
        self._on_worker(lambda: self._remove_folder(root))

    def _remove_folder(self, root: str) -> None:
        self._watcher.unwatch(root)
        ids = self.store.remove_folder(root)
        vectors = self.pipeline.vectors()
        vectors.remove(ids)
        vectors.save()
        self._publish(message=f"Removed {root} from the library.")

    def continue_switch(self) -> None:
        """A model switch was started (by the settings): advance it on the worker."""
        self._switch_due.set()

    def _on_worker(self, work: Callable[[], None]) -> None:
        """Run ``work`` on the service's thread if it is running (errors reach the status), else here."""
        if self._thread is None:
            work()
            return
        self._requests.put(work)

    # ---- the worker --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._publish(state="starting")
            vectors = self.pipeline.vectors()  # opens (or rebuilds) the vector index
            claim_index_dir(self.store, vectors.index_dir)  # the service writes: it owns the library
            self._seed_vocabulary()
            roots = [f.path for f in self.store.folders() if f.enabled]
            for root in roots:
                if Path(root).is_dir():
                    self._watch(root)
            # Watch first, then reconcile: a change during the scan is caught by one or the other.
            self._reconcile(roots)
            last_check = time.monotonic()
            self._advance_switch()
            while not self._stop.is_set():
                self._control.wait_if_paused()
                self._run_requests()
                if self._switch_due.is_set() or (self._switch_retry and time.monotonic() >= self._switch_retry):
                    self._switch_retry = 0.0
                    self._advance_switch()
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
            if is_disk_error(exc):  # a full or read-only disk: one plain message, no traceback
                exc = disk_error(self.store.db.path, exc)
                log.error("%s", exc)
            else:
                log.exception("library service stopped by an error")
            self.error = exc
            self._publish(state="stopped", message=str(exc))

    def _run_requests(self) -> None:
        while True:
            try:
                work = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                work()
            except GlimpseError as exc:  # reported, and the service goes on
                self._publish(message=f"{exc.title}: {exc.message}")

    def _advance_switch(self) -> None:
        """Embed what the target model lacks, then swap (search answers with the old model meanwhile)."""
        self._switch_due.clear()
        if self.switch is None or self.switch.target() is None:
            return
        self._idle.clear()
        try:
            gen = self.switch.run(self._control, background=True)
            while True:
                try:
                    progress = next(gen)
                except StopIteration as done:
                    swapped = bool(done.value)
                    break
                self._publish(state="switching", progress=progress)
                if self._stop.is_set():
                    self._control.cancel()
        except GlimpseError as exc:  # e.g. the target's weights vanished: the active model goes on
            self._publish(message=f"Model switch paused: {exc.message}")
            return
        if swapped:
            self._publish(message="The library now uses its new model.")
        else:
            self._switch_retry = time.monotonic() + 2.0  # photos arrived meanwhile: another pass soon

    def _seed_vocabulary(self) -> None:
        """Merge the vocabulary's tags in; the first indexing pass then brings tags up to date after the photos."""
        if self.tagger is None:
            return
        try:
            self.tagger.seed_vocabulary()
        except GlimpseError as exc:  # tags are an extra: a bad vocabulary must not stop the library
            self._publish(message=f"Tags not updated: {exc.message}")

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
        self._index(check_tags=True)

    def _after_scan(self, report: ScanReport) -> None:
        self.pipeline.vectors().remove(report.stale_ids)
        for root in report.offline_roots:
            self._offline.add(root)
        if report.offline_roots:
            self._publish(message="Not available (kept, not deleted): " + ", ".join(report.offline_roots))

    def _index(self, check_tags: bool = False) -> None:
        for progress in self.pipeline.index_pending(None, self._control, background=True, check_tags=check_tags):
            if progress.phase == "indexing":
                self._publish(state="indexing", progress=progress)
            elif progress.phase == "tagging":
                self._publish(state="tagging", progress=progress)
            if self._stop.is_set():
                self._control.cancel()
        if not self._control.cancelled:
            # The rotating backup; a watched library changes often, so at most every 10 minutes.
            self.store.db.backup(min_interval_s=BACKUP_INTERVAL_S)

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
