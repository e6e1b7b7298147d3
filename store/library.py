"""Repository over the library database.

Reads run on the caller's thread over the read engine. Every write is a command
on the library's one :class:`~store.writer.Writer`: one unit of work (a scan's
findings, a batch of embeddings) is one ``BEGIN IMMEDIATE`` transaction, so a
kill at any moment leaves either all of it or none of it, and no other write can
come between what a command reads and what it writes. Hot paths use Core
statements (``executemany``), several times faster than the ORM unit of work at
100k rows (docs/performance.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    String,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

from store import reads
from store.database import Database, utc_now
from store.errors import NotFoundError
from store.filenames import to_db
from store.reads import CHUNK, chunks
from store.records import (
    EmbeddedImage,
    FailedImage,
    FileState,
    FolderRecord,
    ImageRecord,
    ImageStatus,
    IndexStateRecord,
    ModelRecord,
    RegionVector,
    ScanChanges,
)
from store.schema import Embedding, Folder, Image, IndexState, Meta, Model, Region, ScanProblem
from store.tags import Assignment, write_automatic_tags
from store.writer import REVISION_KEY

# Core statements over the ORM tables: bulk executemany without the unit of work.
_images = Image
_emb = Embedding
_folders = Folder
_models = Model
_state = IndexState
_regions = Region
_meta = Meta
_problems = ScanProblem

T = TypeVar("T")


_FILE_STATE_COLS = (
    _images.c.id,
    _images.c.path,
    _images.c.size,
    _images.c.mtime_ns,
    _images.c.status,
    _images.c.content_hash,
)


def _file_state(r: Row[Any, Any, Any, Any, Any, Any]) -> FileState:
    return FileState(r.id, r.path, r.size, r.mtime_ns, r.status, r.content_hash)


def _path_under(folders: Sequence[str]) -> ColumnElement[bool]:
    """Images under any of ``folders``, as range conditions on the unique path index."""
    return or_(*(and_(_images.c.path >= lo, _images.c.path < hi) for lo, hi in map(reads.under_bounds, folders)))


def _update_images(conn: Connection, rows: list[dict[str, Any]], **same: Any) -> None:
    """One executemany UPDATE of ``images`` by id: per-row values from ``rows``, shared ones in ``same``."""
    if not rows:
        return
    per_row = [k for k in rows[0] if k != "id"]
    stmt = (
        update(_images)
        .where(_images.c.id == bindparam("b_id"))
        .values(**{k: bindparam(f"b_{k}") for k in per_row}, **same)
    )
    conn.execute(stmt, [{f"b_{k}": v for k, v in row.items()} for row in rows])


def _has_vector(model_id: int) -> ColumnElement[bool]:
    """The image of the enclosing query has a vector from ``model_id``."""
    return select(_emb.c.image_id).where(and_(_emb.c.model_id == model_id, _emb.c.image_id == _images.c.id)).exists()


def _folder(row: Any) -> FolderRecord:
    m = row._mapping
    return FolderRecord(m["id"], m["path"], m["added_at"], m["enabled"], bool(m["online"]))


def _to_record(row: object) -> ImageRecord:
    m = row._mapping  # type: ignore[attr-defined]
    return ImageRecord(
        id=m["id"],
        path=m["path"],
        folder_id=m["folder_id"],
        size=m["size"],
        mtime_ns=m["mtime_ns"],
        status=m["status"],
        width=m["width"],
        height=m["height"],
        taken_at=m["taken_at"],
        camera_make=m["camera_make"],
        camera_model=m["camera_model"],
        error=m["error"],
        thumbnail_key=m["thumbnail_key"],
        content_hash=m["content_hash"],
    )


def _signed(value: int | None) -> int | None:
    """A 64-bit unsigned hash as SQLite's signed integer (read back with ``& (2**64 - 1)``)."""
    if value is None:
        return None
    return value - 2**64 if value >= 2**63 else value


class LibraryStore:
    """Folders, images, models and embeddings of one library."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.engine: Engine = db.read  # for reads only: writes go through ``write``

    @classmethod
    def open(cls, path: Path) -> LibraryStore:
        return cls(Database.open(path))

    def close(self) -> None:
        self.db.close()

    def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` as one command on the library's writer (inline if already inside one)."""
        return self.db.writer.call(fn)

    # ---- folders -------------------------------------------------------------------------

    def add_folder(self, path: str) -> FolderRecord:
        """Register a watched root (idempotent)."""

        def command(conn: Connection) -> Any:
            row = conn.execute(select(_folders).where(_folders.c.path == path)).first()
            if row is None:
                conn.execute(insert(_folders).values(path=path, added_at=utc_now(), enabled=True))
                row = conn.execute(select(_folders).where(_folders.c.path == path)).one()
            return _folder(row)

        return self.write(command)

    def folders(self) -> list[FolderRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(_folders).order_by(_folders.c.path)).all()
        return [_folder(r) for r in rows]

    def set_folder_online(self, path: str, online: bool) -> None:
        def command(conn: Connection) -> Any:
            conn.execute(update(_folders).where(_folders.c.path == path).values(online=online))

        self.write(command)

    def folder_counts(self) -> dict[str, dict[str, int]]:
        """Photos per status under each folder (for `glimpse folders list` and the library panel)."""
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_folders.c.path, _images.c.status, func.count())
                .select_from(_folders.join(_images, _images.c.folder_id == _folders.c.id, isouter=True))
                .group_by(_folders.c.path, _images.c.status)
            ).all()
        for path, status, count in rows:
            counts = out.setdefault(path, dict.fromkeys(ImageStatus.ALL, 0))
            if status is not None:
                counts[status] = int(count)
        return out

    def move_tree(self, src: str, dst: str, folder_id: int | None) -> list[int]:
        """A folder was moved or renamed: rewrite every path under it in one transaction.

        Ids, vectors and tags stay; returns the ids that moved.
        """
        n = len(to_db(src.rstrip(os.sep)))  # SQL below works on the stored form of the paths

        def command(conn: Connection) -> Any:
            ids = list(conn.execute(select(_images.c.id).where(_path_under([src]))).scalars())
            if ids:
                new_path = literal(to_db(dst.rstrip(os.sep)), String) + func.substr(_images.c.path, n + 1)
                conn.execute(update(_images).where(_path_under([src])).values(path=new_path, folder_id=folder_id))
            return ids

        return self.write(command)

    def remove_under(self, path: str) -> list[int]:
        """Forget every image under ``path`` (a deleted folder); returns their ids."""

        def command(conn: Connection) -> Any:
            ids = list(conn.execute(select(_images.c.id).where(_path_under([path]))).scalars())
            self._delete_images(conn, ids)
            return ids

        return self.write(command)

    def remove_images(self, ids: Sequence[int]) -> None:
        """Forget photos whose files were moved away on purpose (to the trash); their files are not touched."""

        def command(conn: Connection) -> Any:
            self._delete_images(conn, ids)

        self.write(command)

    def remove_folder(self, path: str) -> list[int]:
        """Forget a root and every image under it; returns the removed image ids."""

        def command(conn: Connection) -> Any:
            folder = conn.execute(select(_folders.c.id).where(_folders.c.path == path)).first()
            if folder is None:
                raise NotFoundError(f"{path} is not a folder of this library.")
            ids = list(conn.execute(select(_images.c.id).where(_path_under([path]))).scalars())
            self._delete_images(conn, ids)
            conn.execute(delete(_folders).where(_folders.c.id == folder.id))
            return ids

        return self.write(command)

    # ---- scanning ------------------------------------------------------------------------

    def set_scan_problems(self, roots: Sequence[str], problems: dict[str, str]) -> None:
        """Replace what the scans of ``roots`` could not read with ``problems`` (path -> reason)."""

        def command(conn: Connection) -> Any:
            for root in roots:
                conn.execute(delete(_problems).where(_problems.c.path == root))
                lo, hi = reads.under_bounds(root)
                conn.execute(delete(_problems).where(and_(_problems.c.path >= lo, _problems.c.path < hi)))
            if problems:
                now = utc_now()
                conn.execute(
                    insert(_problems).prefix_with("OR REPLACE"),
                    [{"path": p, "reason": r, "seen_at": now} for p, r in problems.items()],
                )

        if roots or problems:
            self.write(command)

    def scan_problems(self, limit: int = 1000) -> list[tuple[str, str]]:
        """What the last scans could not read: (path, reason), folders and files alike."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_problems.c.path, _problems.c.reason).order_by(_problems.c.path).limit(limit))
            return [(r.path, r.reason) for r in rows]

    def files_under(self, root: str) -> dict[str, FileState]:
        """Every known file under ``root``, keyed by path (one indexed range scan)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(*_FILE_STATE_COLS).where(_path_under([root]))).all()
        return {r.path: _file_state(r) for r in rows}

    def file_states(self, paths: Sequence[str]) -> dict[str, FileState]:
        """The known files among ``paths`` (for targeted rescans of watched changes)."""
        out: dict[str, FileState] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(paths), CHUNK):
                chunk = list(paths[start : start + CHUNK])
                for r in conn.execute(select(*_FILE_STATE_COLS).where(_images.c.path.in_(chunk))):
                    out[r.path] = _file_state(r)
        return out

    def files_with_hash(self, hashes: Iterable[str]) -> dict[str, list[FileState]]:
        """Known files by content hash; the scanner uses this to recognise moves."""
        wanted = list(set(hashes))
        found: dict[str, list[FileState]] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(wanted):  # type: ignore[arg-type]
                for r in conn.execute(select(*_FILE_STATE_COLS).where(_images.c.content_hash.in_(chunk))):
                    found.setdefault(r.content_hash, []).append(_file_state(r))
        return found

    def apply_scan(self, changes: ScanChanges) -> None:
        """Record what a scan found, atomically.

        Changed files lose their vectors (the pixels changed) and go back to pending;
        moved files keep id and vectors; removed files go with their vectors.
        """
        if changes.empty:
            return

        def command(conn: Connection) -> Any:
            if changes.removed:
                self._delete_images(conn, changes.removed)
            _update_images(
                conn,
                [
                    {"id": m.id, "path": m.new_path, "folder_id": m.folder_id, "size": m.size, "mtime_ns": m.mtime_ns}
                    for m in changes.moved
                ],
            )
            if changes.changed:
                for chunk in chunks([c.id for c in changes.changed]):
                    conn.execute(delete(_emb).where(_emb.c.image_id.in_(chunk)))
                self._mark_indexes_dirty(conn)
                _update_images(
                    conn,
                    [
                        {"id": c.id, "size": c.size, "mtime_ns": c.mtime_ns, "content_hash": c.content_hash}
                        for c in changes.changed
                    ],
                    status=ImageStatus.PENDING,
                    error=None,
                )
            if changes.new:
                conn.execute(
                    insert(_images),
                    [
                        {
                            "path": n.path,
                            "folder_id": n.folder_id,
                            "size": n.size,
                            "mtime_ns": n.mtime_ns,
                            "content_hash": n.content_hash,
                            "status": ImageStatus.PENDING,
                        }
                        for n in changes.new
                    ],
                )

        self.write(command)

    def _delete_images(self, conn: Connection, ids: Sequence[int]) -> None:
        if not ids:
            return
        for chunk in chunks(list(ids)):
            conn.execute(delete(_emb).where(_emb.c.image_id.in_(chunk)))
            conn.execute(delete(_regions).where(_regions.c.image_id.in_(chunk)))
            conn.execute(delete(_images).where(_images.c.id.in_(chunk)))
        self._mark_indexes_dirty(conn)

    @staticmethod
    def _mark_indexes_dirty(conn: Connection, model_id: int | None = None) -> None:
        stmt = update(_state).values(clean=False)
        if model_id is not None:
            stmt = stmt.where(_state.c.model_id == model_id)
        conn.execute(stmt)

    # ---- models --------------------------------------------------------------------------

    def find_model(self, key: str) -> int | None:
        """The id of the embedding space ``key`` if the library knows it (a read: never writes)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(_models.c.id).where(_models.c.key == key)).first()
        return None if row is None else int(row[0])

    def drop_model(self, model_id: int) -> None:
        """Forget an embedding space with its vectors, regions, tag vectors and index state (cascades)."""
        self.write(lambda conn: conn.execute(delete(_models).where(_models.c.id == model_id)))

    def register_model(self, model: ModelRecord) -> int:
        """The id of this embedding space, created on first use (reading first: no write if known)."""
        known = self.find_model(model.key)
        if known is not None:
            return known

        def command(conn: Connection) -> Any:
            row = conn.execute(select(_models.c.id).where(_models.c.key == model.key)).first()
            if row is not None:
                return int(row[0])
            res = conn.execute(
                insert(_models).values(
                    key=model.key,
                    name=model.name,
                    pretrained=model.pretrained,
                    weights_id=model.weights_id,
                    dim=model.dim,
                    preprocess=model.preprocess,
                    created_at=utc_now(),
                )
            )
            model_id = int(res.inserted_primary_key[0])  # type: ignore[index]
            conn.execute(insert(_state).values(model_id=model_id, generation=0, count=0, clean=False))
            return model_id

        return int(self.write(command))

    def models(self) -> list[ModelRecord]:
        with self.db.reading() as conn:
            return reads.models(conn)

    # ---- indexing ------------------------------------------------------------------------

    def pending_images(self, model_id: int, under: Sequence[str] | None = None) -> list[tuple[int, str]]:
        """Images that still need a vector from this model (failed ones excluded), by id."""
        cond = and_(_images.c.status.in_((ImageStatus.PENDING, ImageStatus.INDEXED)), ~_has_vector(model_id))
        if under:
            cond = and_(cond, _path_under(under))
        with self.engine.connect() as conn:
            rows = conn.execute(select(_images.c.id, _images.c.path).where(cond).order_by(_images.c.id)).all()
        return [(r.id, r.path) for r in rows]

    def images_without_regions(self, model_id: int, under: Sequence[str] | None = None) -> list[tuple[int, str]]:
        """Embedded images with no regions yet (region indexing was turned on after they were indexed)."""
        has_regions = (
            select(_regions.c.id)
            .where(and_(_regions.c.model_id == model_id, _regions.c.image_id == _images.c.id))
            .exists()
        )
        cond = and_(_images.c.status == ImageStatus.INDEXED, _has_vector(model_id), ~has_regions)
        if under:
            cond = and_(cond, _path_under(under))
        with self.engine.connect() as conn:
            rows = conn.execute(select(_images.c.id, _images.c.path).where(cond).order_by(_images.c.id)).all()
        return [(r.id, r.path) for r in rows]

    def save_batch(
        self,
        model_id: int,
        done: Sequence[EmbeddedImage],
        failed: Sequence[FailedImage],
        tags: Sequence[Assignment] | None = None,
        regions: Sequence[RegionVector] | None = None,
    ) -> list[int]:
        """Commit one batch: vectors, metadata, statuses and (when given) automatic tags and regions
        together, or nothing. Returns the ids of the region rows written, in order."""
        now = utc_now()

        def command(conn: Connection) -> Any:
            region_ids: list[int] = []
            if done:
                # INSERT OR REPLACE: a batch re-run after a crash must not duplicate.
                conn.execute(
                    insert(_emb).prefix_with("OR REPLACE"),
                    [{"model_id": model_id, "image_id": d.image_id, "vector": d.vector} for d in done],
                )
                _update_images(
                    conn,
                    [
                        {
                            "id": d.image_id,
                            "width": d.width,
                            "height": d.height,
                            "taken_at": d.taken_at,
                            "camera_make": d.camera_make,
                            "camera_model": d.camera_model,
                            "orientation": d.orientation,
                            "thumbnail_key": d.thumbnail_key,
                            "fingerprint": _signed(d.fingerprint),
                        }
                        for d in done
                    ],
                    status=ImageStatus.INDEXED,
                    error=None,
                    indexed_at=now,
                )
                self._mark_indexes_dirty(conn, model_id)
                if tags is not None:
                    write_automatic_tags(conn, [d.image_id for d in done], tags)
                if regions is not None:
                    region_ids = self._write_regions(conn, model_id, [d.image_id for d in done], regions)
            _update_images(
                conn,
                [{"id": f.image_id, "error": f.error} for f in failed],
                status=ImageStatus.FAILED,
                indexed_at=now,
            )
            return region_ids

        return list(self.write(command))

    @staticmethod
    def _write_regions(
        conn: Connection, model_id: int, image_ids: Sequence[int], regions: Sequence[RegionVector]
    ) -> list[int]:
        for chunk in chunks(list(image_ids)):
            conn.execute(delete(_regions).where(and_(_regions.c.model_id == model_id, _regions.c.image_id.in_(chunk))))
        ids = []
        for r in regions:  # one by one: SQLite hands back each new id (a few per photo, cheap)
            result = conn.execute(
                insert(_regions).values(
                    image_id=r.image_id,
                    model_id=model_id,
                    x0=r.box[0],
                    y0=r.box[1],
                    x1=r.box[2],
                    y1=r.box[3],
                    vector=r.vector,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            ids.append(int(key[0]))
        return ids

    def iter_regions(
        self, model_id: int, dim: int, chunk: int = 20000
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """(region ids, image ids, boxes (n, 4), vectors float32) in chunks, to build the region index."""
        last = -1
        cols = (_regions.c.id, _regions.c.image_id, _regions.c.x0, _regions.c.y0, _regions.c.x1, _regions.c.y1)
        with self.engine.connect() as conn:
            while True:
                rows = conn.execute(
                    select(*cols, _regions.c.vector)
                    .where(and_(_regions.c.model_id == model_id, _regions.c.id > last))
                    .order_by(_regions.c.id)
                    .limit(chunk)
                ).all()
                if not rows:
                    return
                ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
                owners = np.fromiter((r[1] for r in rows), np.int64, len(rows))
                boxes = np.array([r[2:6] for r in rows], np.float64)
                vecs = np.frombuffer(b"".join(r[6] for r in rows), dtype="<f2").reshape(len(rows), dim)
                yield ids, owners, boxes, vecs.astype(np.float32)
                last = int(ids[-1])

    def count_regions(self, model_id: int) -> int:
        with self.db.reading() as conn:
            return reads.count_regions(conn, model_id)

    # ---- vectors -------------------------------------------------------------------------

    def count_embeddings(self, model_id: int) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(_emb).where(_emb.c.model_id == model_id)).scalar_one()
            )

    def iter_embeddings(self, model_id: int, dim: int, chunk: int = 20000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64, vectors float32) in chunks, for rebuilding a vector index."""
        last = -1
        with self.engine.connect() as conn:
            while True:
                rows = conn.execute(
                    select(_emb.c.image_id, _emb.c.vector)
                    .where(and_(_emb.c.model_id == model_id, _emb.c.image_id > last))
                    .order_by(_emb.c.image_id)
                    .limit(chunk)
                ).all()
                if not rows:
                    return
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f2").reshape(len(rows), dim)
                yield ids, vecs.astype(np.float32)
                last = int(ids[-1])

    def embedding(self, image_id: int, model_id: int, dim: int) -> np.ndarray | None:
        with self.db.reading() as conn:
            return reads.embedding(conn, image_id, model_id, dim)

    def index_state(self, model_id: int) -> IndexStateRecord:
        with self.db.reading() as conn:
            return reads.index_state(conn, model_id)

    def mark_index_saved(self, model_id: int, generation: int, count: int, digest: str | None = None) -> None:
        """Called after the index file for ``generation`` is safely on disk.

        Only marks clean if the embedding count still matches, so a save that raced a
        commit is never trusted.
        """

        def command(conn: Connection) -> Any:
            actual = conn.execute(
                select(func.count()).select_from(_emb).where(_emb.c.model_id == model_id)
            ).scalar_one()
            conn.execute(
                update(_state)
                .where(_state.c.model_id == model_id)
                .values(generation=generation, count=count, clean=(actual == count), digest=digest)
            )

        self.write(command)

    # ---- queries -------------------------------------------------------------------------

    def images(self, ids: Sequence[int]) -> dict[int, ImageRecord]:
        with self.db.reading() as conn:
            return reads.images(conn, ids)

    def image_by_path(self, path: str) -> ImageRecord | None:
        with self.db.reading() as conn:
            return reads.image_by_path(conn, path)

    def ids_under(self, folders: Sequence[str]) -> np.ndarray:
        """Ids of every image under any of ``folders`` (for filtered search)."""
        with self.db.reading() as conn:
            return reads.ids_under(conn, folders)

    def status_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(_images.c.status, func.count()).group_by(_images.c.status)).all()
        counts = dict.fromkeys(ImageStatus.ALL, 0)
        counts.update({r[0]: int(r[1]) for r in rows})
        return counts

    def failures(self, limit: int = 1000) -> list[ImageRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_images).where(_images.c.status == ImageStatus.FAILED).order_by(_images.c.path).limit(limit)
            ).all()
        return [_to_record(r) for r in rows]

    # ---- bookkeeping ---------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self.db.reading() as conn:
            return reads.get_meta(conn, key)

    def set_meta_at_next_revision(self, key: str, make: Callable[[int], str]) -> None:
        """Set ``key`` to ``make(r)``, where ``r`` is the library revision this very command
        commits (the writer counts every command; see ``store.writer``)."""

        def command(conn: Connection) -> None:
            row = conn.execute(select(_meta.c.value).where(_meta.c.key == REVISION_KEY)).first()
            revision = int(row[0]) + 1 if row is not None else 1
            conn.execute(delete(_meta).where(_meta.c.key == key))
            conn.execute(insert(_meta).values(key=key, value=make(revision)))

        self.write(command)

    def set_meta(self, key: str, value: str | None) -> None:
        """Set (or with None, delete) a library-wide value, as a writer command."""

        def command(conn: Connection) -> None:
            conn.execute(delete(_meta).where(_meta.c.key == key))
            if value is not None:
                conn.execute(insert(_meta).values(key=key, value=value))

        self.write(command)
