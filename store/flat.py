"""Exact vector search and the vector-index file, without FAISS.

The library's vector index (``store.vectors``) is a FAISS ``IndexIDMap2`` over an
``IndexFlatIP``, saved behind a small header. Its search already bypasses FAISS for an
unfiltered query (one BLAS matrix-vector product over FAISS's own storage, measured
faster than FAISS's single-query path); that arithmetic lives here, so a one-shot
search can read the same file with NumPy alone and rank it the same way
(``store.snapshot``), without importing FAISS (~15 MB and 25 ms a command) and without
holding the vectors in memory (:class:`FlatIndexFile` streams them).

File layout: the header (:data:`HEADER`: magic, generation, count, dim), then FAISS's
serialisation of the index: ``IxM2`` + index header, ``IxFI`` + index header, the
vectors (a 64-bit count of floats, then the float32s), the ids (a 64-bit count, then
the int64s).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from store.errors import StoreError
from store.records import IndexStateRecord

MAGIC = b"GLMPVEC1"
HEADER = struct.Struct("<8sQQQ")  # magic, generation, count, dim
# FAISS's index header: d (int32), ntotal (int64), two unused int64s, is_trained (uint8), metric (int32).
_FAISS_HEADER = struct.Struct("<iqqqBi")
_METRIC_INNER_PRODUCT = 0


def new_digest() -> Any:
    """The digest of a vector-index file (BLAKE2b: about 1 GB/s here, so 2 s at a million photos)."""
    return hashlib.blake2b(digest_size=16)


def file_digest(path: Path) -> str:
    """The digest of a whole vector-index file, read in 4 MiB blocks."""
    digest = new_digest()
    with open(path, "rb", buffering=0) as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return str(digest.hexdigest())


def vouched_file(path: Path, dim: int, state: IndexStateRecord) -> tuple[FlatIndexFile | None, str | None]:
    """The vector-index file at ``path``, open for searching, if the database vouches for it
    (clean, same generation, same count), else None and why ("missing", "stale", "damaged").

    Cheap (the headers, the ids and the file's length, never the vectors): the one-shot
    search and ``glimpse status`` run it. The full digest is ``glimpse doctor``'s.
    """
    if not path.is_file():
        return None, "missing"
    if not state.clean:
        return None, "stale"
    try:
        flat = read_flat_index(path, dim)
    except StoreError:
        return None, "damaged"
    if flat.generation != state.generation or len(flat) != state.count:
        flat.close()
        return None, "stale"
    return flat, None


def file_problem(path: Path, dim: int, state: IndexStateRecord) -> str | None:
    """Why the vector-index file at ``path`` is not the one the database vouches for, or None."""
    flat, problem = vouched_file(path, dim, state)
    if flat is not None:
        flat.close()
    return problem


def index_path(index_dir: Path, model_id: int) -> Path:
    """Where the vector index of one model of a library lives."""
    return index_dir / f"model-{model_id}.faiss"


# How many scores of a search's rows are kept as the library's distribution for that query
# (search calibrates image queries against it: ``indexer.search.relevance``).
SAMPLE_ROWS = 2048


@dataclass(frozen=True)
class SearchHits:
    ids: np.ndarray  # int64, best first
    scores: np.ndarray  # float32 cosine similarity
    rows: np.ndarray | None = None  # (len(ids), dim) float32: the hits' own vectors, when the index has them
    sample: np.ndarray | None = None  # float32: the query's scores on an even sample of the searched rows


def no_hits() -> SearchHits:
    return SearchHits(np.empty(0, np.int64), np.empty(0, np.float32), None, np.empty(0, np.float32))


def sample_stride(n: int) -> int:
    """Every how many rows one is kept in a search's sample (about :data:`SAMPLE_ROWS` of ``n``)."""
    return max(1, n // SAMPLE_ROWS)


def top_k(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> SearchHits:
    """The ``k`` rows of ``vectors`` (n, dim) with the highest inner product with ``query``, best first,
    with their vectors, and every :func:`sample_stride`-th score as the sample.

    Ties keep storage order (a stable sort), so two readers of the same file agree.
    """
    n = len(vectors)
    if n == 0 or k <= 0:
        return no_hits()
    k = min(k, n)
    scores = vectors @ query
    top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
    order = top[np.argsort(-scores[top], kind="stable")]
    sample = scores[:: sample_stride(n)].astype(np.float32)
    return SearchHits(ids[order].astype(np.int64), scores[order].astype(np.float32), vectors[order].copy(), sample)


def _read_exact(fh: BinaryIO, size: int) -> bytes:
    data = fh.read(size)
    if len(data) != size:
        raise ValueError("the file ends early")
    return data


def _faiss_header(fh: BinaryIO, fourcc: bytes, dim: int, count: int) -> None:
    if _read_exact(fh, 4) != fourcc:
        raise ValueError(f"not a {fourcc.decode()} index")
    d, ntotal, _, _, _, metric = _FAISS_HEADER.unpack(_read_exact(fh, _FAISS_HEADER.size))
    if d != dim or ntotal != count or metric != _METRIC_INNER_PRODUCT:
        raise ValueError("the index header does not match the file header")


def _read_array(fh: BinaryIO, dtype: type, count: int) -> np.ndarray:
    """A FAISS vector: a 64-bit element count, then the elements, read straight into one array."""
    (n,) = struct.unpack("<Q", _read_exact(fh, 8))
    if n != count:
        raise ValueError(f"expected {count} values, the file has {n}")
    out: np.ndarray = np.empty(count, dtype)
    _fill(fh, out)
    return out


class FlatIndexFile:
    """A saved vector index searched straight from its file, a chunk of rows at a time.

    A one-shot search reads every vector once: holding them all (2 GB at a million
    photos) would only raise the process's peak. Reading :data:`CHUNK_ROWS` rows into
    one reused buffer keeps a search at the size of that buffer and the ids, whatever the
    library's size, with the same results as ranking everything at once. The file stays
    open, so a newer file moved into place meanwhile is never mixed in.
    """

    CHUNK_ROWS = 16384

    def __init__(self, fh: BinaryIO, generation: int, dim: int, vectors_at: int, ids: np.ndarray) -> None:
        self._fh = fh
        self.generation = generation
        self.dim = dim
        self._vectors_at = vectors_at
        self.ids = ids  # int64 (n,): the image id of each row

    def __len__(self) -> int:
        return len(self.ids)

    def close(self) -> None:
        self._fh.close()

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> SearchHits:
        """The ``k`` nearest vectors to ``query``, optionally among ``allowed`` ids."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(self.dim)
        n = len(self.ids)
        if n == 0 or k <= 0:
            return no_hits()
        buffer: np.ndarray = np.empty((min(self.CHUNK_ROWS, n), self.dim), np.float32)
        kept: list[SearchHits] = []
        # The library's distribution for this query: every stride-th row of the whole file, filter
        # or not, the same rows the in-memory index samples (``store.vectors``).
        stride = sample_stride(n)
        samples: list[np.ndarray] = []
        self._fh.seek(self._vectors_at)
        for start in range(0, n, self.CHUNK_ROWS):
            rows = buffer[: min(self.CHUNK_ROWS, n - start)]
            _fill(self._fh, rows)
            samples.append(rows[(-start) % stride :: stride] @ q)
            ids = self.ids[start : start + len(rows)]
            if allowed is not None:
                keep = np.isin(ids, allowed)
                rows, ids = rows[keep], ids[keep]
            kept.append(top_k(rows, ids, q, k))
        sample = np.concatenate(samples).astype(np.float32)
        if not any(len(h.ids) for h in kept):
            return SearchHits(no_hits().ids, no_hits().scores, None, sample)
        ids_all = np.concatenate([h.ids for h in kept])
        scores_all = np.concatenate([h.scores for h in kept])
        rows_all = np.concatenate([h.rows for h in kept if h.rows is not None])
        order = np.argsort(-scores_all, kind="stable")[:k]  # candidates are in file order: ties keep it
        return SearchHits(ids_all[order], scores_all[order], rows_all[order], sample)


def _fill(fh: BinaryIO, out: np.ndarray) -> None:
    """Read exactly ``out.nbytes`` bytes into ``out`` (``readinto`` may return less than asked)."""
    view = out.reshape(-1).view(np.uint8)
    done = 0
    while done < out.nbytes:
        got = fh.readinto(view[done:])  # type: ignore[attr-defined]
        if not got:
            raise ValueError("the file ends early")
        done += got


def read_flat_index(path: Path, dim: int) -> FlatIndexFile:
    """Open a saved vector index of dimension ``dim`` for searching (its ids read, its vectors
    left on disk); ``StoreError`` if it is damaged or of another kind. Close it when done."""
    fh = open(path, "rb")  # noqa: SIM115 (kept open by the FlatIndexFile, closed by its close())
    try:
        magic, generation, count, file_dim = HEADER.unpack(_read_exact(fh, HEADER.size))
        if magic != MAGIC or file_dim != dim:
            raise ValueError("not a Glimpse vector index of this dimension")
        _faiss_header(fh, b"IxM2", dim, count)
        _faiss_header(fh, b"IxFI", dim, count)
        (floats,) = struct.unpack("<Q", _read_exact(fh, 8))
        if floats != count * dim:
            raise ValueError(f"expected {count * dim} values, the file has {floats}")
        vectors_at = fh.tell()
        fh.seek(vectors_at + count * dim * 4)
        ids = _read_array(fh, np.int64, count)
        if fh.read(1):
            raise ValueError("unexpected data after the ids")
    except (OSError, ValueError, struct.error) as exc:
        fh.close()
        raise StoreError(f"Vector index {path} is unreadable ({exc}).") from exc
    except BaseException:
        fh.close()
        raise
    return FlatIndexFile(fh, int(generation), dim, vectors_at, ids)


class NoRegions:
    """The region index of a library that has none (what a snapshot searches beside its photos)."""

    def __len__(self) -> int:
        return 0

    def search(self, query: np.ndarray, k: int, allowed_images: np.ndarray | None = None) -> list[Any]:
        return []


@dataclass(frozen=True)
class SnapshotVectors:
    """One model's saved vectors, as search reads them (``indexer.search.service.VectorReads``)."""

    model_id: int
    dim: int
    flat: FlatIndexFile
    regions: NoRegions = field(default_factory=NoRegions)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> SearchHits:
        return self.flat.search(query, k, allowed)
