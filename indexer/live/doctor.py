"""``glimpse doctor``: check the library's consistency, repair what can be repaired, say what was done.

Checks, in order: SQLite's own integrity check; every photo row against the disk
(files gone from reachable folders are removed, changed files go back to pending);
embeddings without a photo; each model's vector index against the database (by
generation, by the digest recorded when it was saved, by the exact set of ids and by a
sample of the vectors themselves), rebuilt when they differ; leftover temporary files
from interrupted saves.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text

from indexer.ingest.scanner import Scanner
from store.flat import file_digest
from store.library import LibraryStore
from store.vectors import VectorIndex, claim_index_dir, index_path, rebuild_vector_index

# Vectors compared one by one between the index and the database. Swapped rows change the
# digest too; the sample also catches an index that was wrong before it was saved.
SAMPLE = 2000
# float16 storage is exact in the index (it holds the rounded values); anything above
# this is another vector.
_TOLERANCE = 1e-3

log = logging.getLogger(__name__)


@dataclass
class DoctorReport:
    checks: list[str] = field(default_factory=list)  # what was looked at and found fine
    repairs: list[str] = field(default_factory=list)  # what was wrong and has been fixed
    problems: list[str] = field(default_factory=list)  # what is wrong and needs a person

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        return {"healthy": self.healthy, "checks": self.checks, "repairs": self.repairs, "problems": self.problems}


def run_doctor(store: LibraryStore, index_dir: Path, thumbnails_dir: Path | None = None) -> DoctorReport:
    report = DoctorReport()
    with store.engine.connect() as conn:
        result = [r[0] for r in conn.execute(text("PRAGMA integrity_check")).all()]
    if result == ["ok"]:
        report.checks.append("database integrity: ok")
    else:
        report.problems.append(
            "SQLite reports damage: " + "; ".join(result[:5]) + ". Move the library file aside and re-index."
        )
        return report

    _check_files(store, report)
    _check_orphans(store, report)
    for model in store.models():
        assert model.id is not None
        _check_index(store, model.id, model.dim, model.key, index_dir, report)
    if thumbnails_dir is not None:
        _check_thumbnails(store, thumbnails_dir, report)
    leftovers = claim_index_dir(store, index_dir)  # as the owner: another process may be mid-save
    if leftovers:
        report.repairs.append(f"removed {leftovers} temporary file(s) left by an interrupted save")
    return report


def _check_files(store: LibraryStore, report: DoctorReport) -> None:
    """Rows against the disk, through the scanner, so a photo that moved is recognised as a move."""
    online = [Path(f.path) for f in store.folders() if f.enabled and Path(f.path).is_dir()]
    offline = [f.path for f in store.folders() if f.enabled and not Path(f.path).is_dir()]
    scan = Scanner(store).scan(online)
    if offline:
        report.checks.append("not checked (folder unavailable, photos kept): " + ", ".join(offline))
    fixed = []
    if scan.removed:
        fixed.append(f"removed {scan.removed} photo(s) whose files are gone")
    if scan.moved:
        fixed.append(f"recorded {scan.moved} moved photo(s) (vectors kept)")
    if scan.changed or scan.new:
        fixed.append(f"queued {scan.changed + scan.new} new or changed photo(s) for indexing")
    report.repairs += fixed
    report.checks.append(f"photos on disk: {scan.found} found in {len(online)} folder(s)")


def _check_orphans(store: LibraryStore, report: DoctorReport) -> None:
    with store.engine.begin() as conn:
        orphans = conn.execute(text("DELETE FROM embeddings WHERE image_id NOT IN (SELECT id FROM images)")).rowcount
        lost = conn.execute(
            text(
                "UPDATE images SET status='pending' WHERE status='indexed' "
                "AND id NOT IN (SELECT image_id FROM embeddings)"
            )
        ).rowcount
    if orphans:
        report.repairs.append(f"deleted {orphans} vector(s) of photos no longer in the library")
    if lost:
        report.repairs.append(f"queued {lost} photo(s) marked indexed but without a vector")
    if not orphans and not lost:
        report.checks.append("vectors and photos match")


def _check_index(store: LibraryStore, model_id: int, dim: int, key: str, index_dir: Path, report: DoctorReport) -> None:
    path = index_path(index_dir, model_id)
    state = store.index_state(model_id)
    expected = {int(i) for ids, _ in store.iter_embeddings(model_id, dim) for i in ids}
    reason = None
    if not path.exists():
        reason = "the index file is missing"
    else:
        try:
            index = VectorIndex.load(path, dim)
        except Exception as exc:
            reason = f"the index file is unreadable ({exc})"
        else:
            actual = {int(i) for i in index.ids()}
            if actual != expected:
                reason = (
                    f"the index holds {len(actual)} vectors, the library {len(expected)} "
                    f"({len(actual - expected)} extra, {len(expected - actual)} missing)"
                )
            elif not state.clean or index.generation != state.generation:
                reason = "the index file is not the generation the library recorded"
            elif state.digest is not None and file_digest(path) != state.digest:
                reason = "the index file's contents changed after it was saved (its digest differs)"
            else:
                reason = _sample_problem(store, model_id, dim, index, sorted(expected))
    if reason is None:
        report.checks.append(f"vector index for {key}: ok ({len(expected)} vectors)")
        return
    rebuild_vector_index(store, model_id, dim, index_dir)
    report.repairs.append(f"rebuilt the vector index for {key} from the library: {reason}")


def _sample_problem(store: LibraryStore, model_id: int, dim: int, index: VectorIndex, ids: list[int]) -> str | None:
    """Compare up to ``SAMPLE`` vectors of the index with the library's; why they differ, or None."""
    sample = ids if len(ids) <= SAMPLE else random.Random(len(ids)).sample(ids, SAMPLE)
    wrong = 0
    for image_id in sample:
        stored = store.embedding(image_id, model_id, dim)
        held = index.get([image_id])
        if stored is None or len(held) == 0 or float(abs(held[0] - stored).max()) > _TOLERANCE:
            wrong += 1
    if wrong:
        return f"{wrong} of {len(sample)} sampled vectors in the index differ from the library's"
    return None


def _check_thumbnails(store: LibraryStore, thumbnails_dir: Path, report: DoctorReport) -> None:
    """Thumbnails of photos that left the library (or of older versions of a photo) are deleted."""
    if not thumbnails_dir.exists():
        return
    with store.engine.connect() as conn:
        keys = {r[0] for r in conn.execute(text("SELECT thumbnail_key FROM images WHERE thumbnail_key IS NOT NULL"))}
    stale = [p for p in thumbnails_dir.glob("*/*.jpg") if p.is_file() and p.stem not in keys]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        report.repairs.append(f"deleted {len(stale)} thumbnail(s) of photos no longer in the library")
    else:
        report.checks.append("thumbnails: ok")
    # A kill between writing a thumbnail's temporary file and renaming it leaves the temporary
    # file: expected debris, not a fault of the library (the photo is thumbnailed again).
    unfinished = [p for p in thumbnails_dir.glob("*/*.tmp") if p.is_file()]
    for path in unfinished:
        path.unlink(missing_ok=True)
    if unfinished:
        report.checks.append(f"thumbnails: removed {len(unfinished)} unfinished write(s) left by an interrupted run")
