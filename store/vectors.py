"""FAISS vector index per embedding model, a rebuildable cache of ``embeddings``.

Vectors are L2-normalised, so inner product is cosine similarity. Ids are
``images.id`` through ``IndexIDMap2`` (which can also reconstruct a vector by id).
The file holds a small header (magic, generation, count) and the serialised
index, written to a temporary file and moved into place with ``os.replace``,
so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from store.diskerrors import disk_error, is_disk_error
from store.errors import StoreError
from store.flat import HEADER, MAGIC, SearchHits, index_path, new_digest, no_hits, sample_stride, top_k
from store.library import LibraryStore

log = logging.getLogger(__name__)


class VectorIndex:
    """An exact inner-product index keyed by image id; thread-safe."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._lock = threading.RLock()
        self._id_array: np.ndarray | None = None  # position -> image id, rebuilt after changes
        self.generation = 0

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors for ids not yet in the index (callers remove stale ids first).

        No implicit replace: ``remove_ids`` scans the whole flat index, which would
        make every batch O(n) while indexing a large library.
        """
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected {len(ids)} vectors of dim {self.dim}, got {vectors.shape}")
        with self._lock:
            self._index.add_with_ids(vectors, ids)
            self._id_array = None

    def remove(self, ids: np.ndarray | list[int]) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        with self._lock:
            self._id_array = None
            return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def ids(self) -> np.ndarray:
        with self._lock:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def contains(self, image_id: int) -> bool:
        with self._lock:
            try:
                self._index.reconstruct(int(image_id))
            except RuntimeError:
                return False
            return True

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> SearchHits:
        """The ``k`` nearest vectors to ``query`` (one vector), optionally among ``allowed`` ids."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(self.dim)
        with self._lock:
            n = len(self)
            if n == 0 or k <= 0 or (allowed is not None and len(allowed) == 0):
                return no_hits()
            if allowed is None:
                return self._search_all(q, min(k, n))
            # SearchParameters keeps a raw pointer: the selector must outlive the search call.
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, np.int64))
            scores, ids = self._index.search(q[None], min(k, n), params=faiss.SearchParameters(sel=selector))  # type: ignore[call-arg]
            del selector
            keep = ids[0] >= 0
            found = ids[0][keep].astype(np.int64)
            # The library's distribution for this query: an even sample of every row, filter or not.
            sample = (self._storage()[:: sample_stride(n)] @ q).astype(np.float32)
            return SearchHits(found, scores[0][keep].astype(np.float32), self.get(found), sample)

    def _search_all(self, q: np.ndarray, k: int) -> SearchHits:
        """Exact top-k as one BLAS matrix-vector product over FAISS's own storage (no copy).

        For a single query FAISS takes a non-BLAS path that measured 1.6x slower here
        (bench/query_bench.py); the vectors are the same, so the results are identical.
        """
        return top_k(self._storage(), self._positions(), q, k)

    def _storage(self) -> np.ndarray:
        """FAISS's own vector storage as an (n, dim) view; valid while the lock is held and nothing changes."""
        n = len(self)
        flat = faiss.downcast_index(self._index.index)
        return faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)  # type: ignore[attr-defined]

    def _positions(self) -> np.ndarray:
        """Image id of each storage row (cached until the next change)."""
        if self._id_array is None:
            self._id_array = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        return self._id_array

    def get(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` that are in the index, in order (absent ids are skipped)."""
        out = []
        with self._lock:
            for image_id in ids:
                try:
                    out.append(self._index.reconstruct(int(image_id)))
                except RuntimeError:
                    continue
        return np.stack(out).astype(np.float32) if out else np.empty((0, self.dim), np.float32)

    def each_chunk(self, fn: Callable[[np.ndarray, np.ndarray], None], chunk: int = 8192) -> None:
        """Call ``fn(ids, vectors)`` over the whole index in chunks, without copying it.

        The lock is held throughout, so ``fn`` sees one consistent snapshot; the views
        are only valid inside ``fn``.
        """
        with self._lock:
            n = len(self)
            if n == 0:
                return
            vectors, ids = self._storage(), self._positions()
            for start in range(0, n, chunk):
                fn(ids[start : start + chunk], vectors[start : start + chunk])

    # ---- persistence --------------------------------------------------------------------

    def save(self, path: Path, generation: int) -> str:
        """Write atomically (temp file in the same folder, fsync, ``os.replace``); returns the
        file's digest, which the database records so that ``glimpse doctor`` can check it."""
        with self._lock:
            blob = faiss.serialize_index(self._index)
            count = len(self)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        digest = new_digest()
        try:
            with os.fdopen(fd, "wb") as fh:
                for part in (HEADER.pack(MAGIC, generation, count, self.dim), blob.data):
                    digest.update(part)
                    fh.write(part)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.generation = generation
        return digest.hexdigest()

    @classmethod
    def load(cls, path: Path, dim: int) -> VectorIndex:
        """Read a saved index; raises ``StoreError`` if the file is damaged or of another shape.

        FAISS reads straight from the file into the index's own storage: the vectors are
        in memory once (reading the file into bytes and deserialising them held two
        copies, 7.1 GB at the peak of a search at 1M photos for a 2 GB file).
        """
        try:
            with open(path, "rb", buffering=0) as fh:
                header = fh.read(HEADER.size)
                magic, generation, count, file_dim = HEADER.unpack(header)
                if magic != MAGIC or file_dim != dim:
                    raise ValueError("not a Glimpse vector index of this dimension")
                index = faiss.read_index(faiss.PyCallbackIOReader(fh.read, 1 << 22))  # type: ignore[attr-defined]
            if index.ntotal != count or index.d != dim:
                raise ValueError("header does not match the index")
        except (OSError, ValueError, RuntimeError, struct.error) as exc:
            raise StoreError(f"Vector index {path} is unreadable ({exc}).") from exc
        out = cls(dim)
        out._index = index  # type: ignore[assignment]  # deserialize_index returns the IDMap2
        out._id_array = None
        out.generation = generation
        return out


def open_vector_index(store: LibraryStore, model_id: int, dim: int, index_dir: Path) -> VectorIndex:
    """Load the model's index file if the database vouches for it, else rebuild it.

    The file is trusted only when ``index_state`` is clean, its generation matches
    the file's, and the counts agree; anything else (a kill between a commit and a
    save, a deleted or damaged file) rebuilds from ``embeddings``.
    """
    path = index_path(index_dir, model_id)
    state = store.index_state(model_id)
    if path.exists() and state.clean:
        try:
            index = VectorIndex.load(path, dim)
        except StoreError as exc:
            log.warning("%s; rebuilding from the library", exc.message)
        else:
            if index.generation == state.generation and len(index) == state.count:
                return index
            log.info(
                "vector index for model %d is stale (file gen %d, db gen %d); rebuilding",
                model_id,
                index.generation,
                state.generation,
            )
    return rebuild_vector_index(store, model_id, dim, index_dir)


def claim_index_dir(store: LibraryStore, index_dir: Path) -> int:
    """Become the library's owner (waiting for another to finish) and sweep what a killed owner left.

    A kill during a save leaves the temporary file it was writing. Only the owner may
    delete such files (another process could be writing one), so this is a writer
    command: it takes the library lock first. Returns how many were removed.
    """

    def command(_conn: object) -> int:
        debris = list(index_dir.glob("*.tmp")) if index_dir.exists() else []
        for tmp in debris:
            tmp.unlink(missing_ok=True)
        if debris:
            log.info("removed %d temporary file(s) left by an interrupted save", len(debris))
        return len(debris)

    return int(store.write(command))


def rebuild_vector_index(store: LibraryStore, model_id: int, dim: int, index_dir: Path) -> VectorIndex:
    """Build the index from the stored vectors and save it as the next generation.

    Saving is a write: a process that does not own the library (a search while the
    app indexes) keeps the rebuilt index in memory and leaves the file to the owner.
    """
    index = VectorIndex(dim)
    for ids, vecs in store.iter_embeddings(model_id, dim):
        index.add(ids, vecs)
    try:
        saved, _ = store.db.writer.try_call(lambda _conn: save_vector_index(store, model_id, index, index_dir))
    except (OSError, SQLAlchemyError) as exc:
        if not is_disk_error(exc):
            raise
        # A full or read-only disk: search goes on with the index in memory; a writer reports it.
        log.warning("%s", disk_error(index_dir, exc).message)
        saved = False
    log.info(
        "rebuilt vector index for model %d with %d vectors%s",
        model_id,
        len(index),
        "" if saved else " (in memory; another process owns the library)",
    )
    return index


def save_vector_index(store: LibraryStore, model_id: int, index: VectorIndex, index_dir: Path) -> None:
    """Save as the next generation, then record that generation in the database.

    One writer command: no batch can land between writing the file and vouching for it.
    """

    def command(_conn: object) -> None:
        generation = max(store.index_state(model_id).generation, index.generation) + 1
        digest = index.save(index_path(index_dir, model_id), generation)
        store.mark_index_saved(model_id, generation, len(index), digest)

    store.write(command)


@dataclass(frozen=True)
class RegionHit:
    image_id: int
    score: float
    box: tuple[float, float, float, float]
    vector: np.ndarray | None = None  # the region's own vector (search calibrates it like a photo)


class RegionIndex:
    """Vectors of photo regions (object proposals), searched beside the whole-photo index.

    Held in memory only and built from the ``regions`` table when a library opens (region
    indexing is optional and its vectors are a few per photo); every hit maps back to its
    photo and box.
    """

    def __init__(self, dim: int) -> None:
        self.index = VectorIndex(dim)
        self._owner: dict[int, int] = {}
        self._boxes: dict[int, tuple[float, float, float, float]] = {}
        self._by_image: dict[int, list[int]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.index)

    def add(self, region_ids: np.ndarray, image_ids: np.ndarray, boxes: np.ndarray, vectors: np.ndarray) -> None:
        if len(region_ids) == 0:
            return
        with self._lock:
            self._drop(sorted({int(i) for i in image_ids} & set(self._by_image)))
            self.index.add(region_ids, vectors)
            for rid, iid, box in zip(region_ids.tolist(), image_ids.tolist(), boxes.tolist(), strict=True):
                self._owner[rid] = iid
                self._boxes[rid] = (box[0], box[1], box[2], box[3])
                self._by_image.setdefault(iid, []).append(rid)

    def remove_images(self, image_ids: Sequence[int] | np.ndarray) -> None:
        with self._lock:
            self._drop(image_ids)

    def _drop(self, image_ids: Sequence[int] | np.ndarray) -> None:
        """Forget the regions of ``image_ids`` (the caller holds the lock)."""
        gone = [r for i in image_ids for r in self._by_image.pop(int(i), [])]
        for r in gone:
            self._owner.pop(r, None)
            self._boxes.pop(r, None)
        if gone:
            self.index.remove(np.asarray(gone, np.int64))

    def search(self, query: np.ndarray, k: int, allowed_images: np.ndarray | None = None) -> list[RegionHit]:
        """The best region of each of the ``k`` best-matching photos."""
        with self._lock:
            allowed = None
            if allowed_images is not None:
                allowed = np.asarray(
                    [r for i in allowed_images.tolist() for r in self._by_image.get(int(i), [])], np.int64
                )
            hits = self.index.search(query, k * 3, allowed)
            best: dict[int, RegionHit] = {}
            for row, (rid, score) in enumerate(zip(hits.ids.tolist(), hits.scores.tolist(), strict=True)):
                owner = self._owner.get(rid)
                if owner is not None and owner not in best:
                    vector = hits.rows[row] if hits.rows is not None else None
                    best[owner] = RegionHit(owner, float(score), self._boxes[rid], vector)
            return list(best.values())[:k]


def load_regions(store: LibraryStore, model_id: int, dim: int) -> RegionIndex:
    regions = RegionIndex(dim)
    for ids, owners, boxes, vecs in store.iter_regions(model_id, dim):
        regions.add(ids, owners, boxes, vecs)
    if len(regions):
        log.info("loaded %d region vectors for model %d", len(regions), model_id)
    return regions


class ModelVectors:
    """The vector index of one embedding model, kept in step with the library.

    Adds and removes go to memory at once; the file is rewritten at most every
    ``save_interval`` seconds while indexing (and always by :meth:`save`). A kill in
    between is harmless: the database marks the file unclean and the next open
    rebuilds it from ``embeddings``.
    """

    def __init__(
        self,
        store: LibraryStore,
        model_id: int,
        dim: int,
        index_dir: Path,
        index: VectorIndex,
        save_interval: float = 60.0,
    ) -> None:
        self.store = store
        self.model_id = model_id
        self.dim = dim
        self.index_dir = index_dir
        self.index = index
        self.save_interval = save_interval
        self.regions = RegionIndex(dim)
        self._dirty = False
        self._last_save = time.monotonic()

    @classmethod
    def open(
        cls, store: LibraryStore, model_id: int, dim: int, index_dir: Path, save_interval: float = 60.0
    ) -> ModelVectors:
        index = open_vector_index(store, model_id, dim, index_dir)
        vectors = cls(store, model_id, dim, index_dir, index, save_interval)
        vectors.regions = load_regions(store, model_id, dim)
        return vectors

    def __len__(self) -> int:
        return len(self.index)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors (a writer command, so it is ordered with the database changes)."""
        if len(ids):
            self.store.write(lambda _conn: self._add(ids, vectors))

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add(ids, vectors)
        self._dirty = True

    def remove(self, ids: np.ndarray | list[int]) -> None:
        """Drop the vectors (and regions) of ``ids`` (a writer command)."""
        if len(ids):
            self.store.write(lambda _conn: self._remove(ids))

    def _remove(self, ids: np.ndarray | list[int]) -> None:
        if self.index.remove(ids):
            self._dirty = True
        if len(self.regions):
            self.regions.remove_images(ids)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> SearchHits:
        return self.index.search(query, k, allowed)

    def maybe_save(self) -> None:
        if self._dirty and time.monotonic() - self._last_save >= self.save_interval:
            self.save()

    def save(self) -> None:
        """Persist if anything changed since the last save (or the database distrusts the file)."""

        def command(_conn: object) -> None:
            if self._dirty or not self.store.index_state(self.model_id).clean:
                save_vector_index(self.store, self.model_id, self.index, self.index_dir)
            self._dirty = False
            self._last_save = time.monotonic()

        self.store.write(command)
