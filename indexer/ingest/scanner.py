"""Finding photos on disk and reconciling them with the library.

A rescan of an unchanged library must take seconds, so the comparison is by
``(size, mtime_ns)`` from one ``stat`` per file against one range query per
root; file contents are read only for new or changed files. A new path whose
content hash matches a row whose file is gone is a move: the row keeps its id
and its vectors, and nothing is re-embedded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from indexer.ingest.walk import FoundFile, is_photo, walk_photos
from store.library import LibraryStore
from store.records import ChangedFile, FileState, FolderRecord, ImageStatus, MovedFile, NewFile, ScanChanges

log = logging.getLogger(__name__)

_HASH_BLOCK = 64 * 1024


@dataclass
class ScanReport:
    """What a scan changed; ``stale_ids`` must leave every vector index."""

    found: int = 0
    new: int = 0
    changed: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    stale_ids: list[int] = field(default_factory=list)
    unreadable_dirs: list[str] = field(default_factory=list)  # "path: reason", for people
    problems: dict[str, str] = field(default_factory=dict)  # path -> reason: what could not be read
    offline_roots: list[str] = field(default_factory=list)


def content_hash(path: str | Path, size: int | None = None) -> str:
    """A fast identity for a file's content: its size and its first and last 64 KiB.

    Enough to tell photos apart (their headers and tails differ), and it reads at most
    128 KiB, so recognising a moved folder of large photos stays cheap.
    """
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        if size is None:
            size = os.fstat(fh.fileno()).st_size
        h.update(size.to_bytes(8, "little"))
        h.update(fh.read(_HASH_BLOCK))
        if size > 2 * _HASH_BLOCK:
            fh.seek(-_HASH_BLOCK, os.SEEK_END)
            h.update(fh.read(_HASH_BLOCK))
        elif size > _HASH_BLOCK:
            h.update(fh.read())
    return h.hexdigest()


def _safe_hash(path: str, size: int) -> str | None:
    try:
        return content_hash(path, size)
    except OSError as exc:
        log.debug("cannot hash %s: %s", path, exc)
        return None


class _Reconciler:
    """Collects what one scan saw and turns it into one :class:`ScanChanges`.

    Shared by the full scan of a root and the targeted scan of paths the watcher
    reports, so both recognise changes and moves the same way.
    """

    def __init__(self, store: LibraryStore, report: ScanReport) -> None:
        self.store = store
        self.report = report
        self.changes = ScanChanges()
        self.candidates: list[tuple[FoundFile, int | None]] = []  # paths new to the library
        self.gone: dict[str, FileState] = {}

    def see(self, found: FoundFile, row: FileState | None, folder_id: int | None) -> None:
        self.report.found += 1
        if row is None:
            self.candidates.append((found, folder_id))
        elif row.size == found.size and row.mtime_ns == found.mtime_ns and row.status != ImageStatus.MISSING:
            self.report.unchanged += 1
        else:
            hashed = _safe_hash(found.path, found.size)
            self.changes.changed.append(ChangedFile(row.id, found.size, found.mtime_ns, hashed))

    def missing(self, row: FileState) -> None:
        self.gone[row.path] = row

    def apply(self) -> ScanReport:
        """Match new paths to vanished rows by content (moves), then commit everything at once."""
        report, changes = self.report, self.changes
        hashes = {c.path: _safe_hash(c.path, c.size) for c, _ in self.candidates}
        by_hash = self.store.files_with_hash(h for h in hashes.values() if h)
        claimed: set[int] = set()
        for found, folder_id in self.candidates:
            h = hashes[found.path]
            origin = self._moved_from(by_hash.get(h, []) if h else [], found, claimed)
            if origin is not None:
                claimed.add(origin.id)
                self.gone.pop(origin.path, None)
                changes.moved.append(MovedFile(origin.id, found.path, folder_id, found.size, found.mtime_ns))
            else:
                changes.new.append(NewFile(found.path, folder_id, found.size, found.mtime_ns, h))
        changes.removed = [row.id for row in self.gone.values()]
        report.new = len(changes.new)
        report.changed = len(changes.changed)
        report.moved = len(changes.moved)
        report.removed = len(changes.removed)
        report.stale_ids = changes.removed + [c.id for c in changes.changed]
        self.store.apply_scan(changes)
        log.info(
            "scan: %d found, %d new, %d changed, %d moved, %d removed",
            report.found,
            report.new,
            report.changed,
            report.moved,
            report.removed,
        )
        return report

    def _moved_from(self, rows: list[FileState], found: FoundFile, claimed: set[int]) -> FileState | None:
        """The row this file was moved from: same content, and its old path is gone."""
        for row in rows:
            if row.id in claimed or row.size != found.size:
                continue
            if row.path in self.gone or not os.path.exists(row.path):
                return row
        return None


def _is_under(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


class Scanner:
    """Reconciles the store with what is on disk."""

    def __init__(self, store: LibraryStore) -> None:
        self.store = store

    def scan(self, roots: list[Path], on_found: Callable[[int], None] | None = None) -> ScanReport:
        """Walk every root and apply what changed in one transaction.

        A root that is not there (an unplugged drive, a network share that is down) is
        reported and left alone: its photos are kept, not deleted. Photos under a folder
        that could not be read are kept too.
        """
        report = ScanReport()
        session = _Reconciler(self.store, report)
        for root in roots:
            if not root.is_dir():
                report.offline_roots.append(str(root))
                self.store.set_folder_online(str(root), False)
                log.warning("folder %s is not available; its photos are kept", root)
                continue
            folder = self.store.add_folder(str(root))
            if not folder.online:
                self.store.set_folder_online(str(root), True)
            self._walk_into(session, root, folder.id, on_found)
        result = session.apply()
        scanned = [str(r) for r in roots if str(r) not in report.offline_roots]
        self.store.set_scan_problems(scanned, result.problems)  # what status and the app list
        return result

    def scan_tree(self, path: str) -> ScanReport:
        """Reconcile one folder inside a root (e.g. moved in from outside, or just renamed)."""
        report = ScanReport()
        session = _Reconciler(self.store, report)
        owner = next((f for f in self._folders_longest_first() if _is_under(path, f.path) or path == f.path), None)
        if owner is not None and Path(path).is_dir():
            self._walk_into(session, Path(path), owner.id, None)
        return session.apply()

    def _walk_into(
        self, session: _Reconciler, tree: Path, folder_id: int, on_found: Callable[[int], None] | None
    ) -> None:
        known = self.store.files_under(str(tree))
        unreadable: list[str] = []
        for found in walk_photos(tree, session.report.unreadable_dirs, unreadable, session.report.problems):
            session.see(found, known.pop(found.path, None), folder_id)
            if on_found is not None and session.report.found % 500 == 0:
                on_found(session.report.found)
        for row in known.values():  # known rows the walk did not find
            if not any(_is_under(row.path, d) for d in unreadable):
                session.missing(row)

    def _folders_longest_first(self) -> list[FolderRecord]:
        return sorted(self.store.folders(), key=lambda f: len(f.path), reverse=True)

    def scan_paths(self, paths: Iterable[str]) -> ScanReport:
        """Reconcile individual files, e.g. those the watcher saw change.

        Each path either exists (new or changed) or not (removed); a path that
        appears where a vanished photo with the same content was is a move.
        """
        report = ScanReport()
        session = _Reconciler(self.store, report)
        folders = self._folders_longest_first()
        wanted = sorted(set(paths))
        known = self.store.file_states(wanted)
        for path in wanted:
            folder = next((f for f in folders if _is_under(path, f.path)), None)
            found = _stat_photo(path)
            if found is not None and folder is not None:
                session.see(found, known.get(path), folder.id)
            elif found is None and path in known:
                session.missing(known[path])
        return session.apply()


def _stat_photo(path: str) -> FoundFile | None:
    name = os.path.basename(path)
    if not is_photo(name) or name.startswith("."):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FoundFile(path, st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None
