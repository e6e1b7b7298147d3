"""Exact vector search and the vector-index file, without FAISS.

The library's vector index (``store.vectors``) is a FAISS ``IndexIDMap2`` over an
``IndexFlatIP``, saved behind a small header. Its search already bypasses FAISS for an
unfiltered query (one BLAS matrix-vector product over FAISS's own storage, measured
faster than FAISS's single-query path); that arithmetic lives here, so a one-shot
search can read the same file with NumPy alone and rank it the same way
(``store.snapshot``), without importing FAISS (~15 MB and 25 ms a command).

File layout: the header (:data:`HEADER`: magic, generation, count, dim), then FAISS's
serialisation of the index: ``IxM2`` + index header, ``IxFI`` + index header, the
vectors (a 64-bit count of floats, then the float32s), the ids (a 64-bit count, then
the int64s).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from store.errors import StoreError

MAGIC = b"GLMPVEC1"
HEADER = struct.Struct("<8sQQQ")  # magic, generation, count, dim
# FAISS's index header: d (int32), ntotal (int64), two unused int64s, is_trained (uint8), metric (int32).
_FAISS_HEADER = struct.Struct("<iqqqBi")
_METRIC_INNER_PRODUCT = 0


def index_path(index_dir: Path, model_id: int) -> Path:
    """Where the vector index of one model of a library lives."""
    return index_dir / f"model-{model_id}.faiss"


@dataclass(frozen=True)
class SearchHits:
    ids: np.ndarray  # int64, best first
    scores: np.ndarray  # float32 cosine similarity


def no_hits() -> SearchHits:
    return SearchHits(np.empty(0, np.int64), np.empty(0, np.float32))


def top_k(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> SearchHits:
    """The ``k`` rows of ``vectors`` (n, dim) with the highest inner product with ``query``, best first.

    Ties keep storage order (a stable sort), so two readers of the same file agree.
    """
    n = len(vectors)
    if n == 0 or k <= 0:
        return no_hits()
    k = min(k, n)
    scores = vectors @ query
    top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
    order = top[np.argsort(-scores[top], kind="stable")]
    return SearchHits(ids[order].astype(np.int64), scores[order].astype(np.float32))


@dataclass(frozen=True)
class FlatVectors:
    """A saved vector index read into memory as two arrays (no FAISS)."""

    generation: int
    vectors: np.ndarray  # float32 (n, dim), L2-normalised
    ids: np.ndarray  # int64 (n,): the image id of each row

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> SearchHits:
        """The ``k`` nearest vectors to ``query``, optionally among ``allowed`` ids."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(self.vectors.shape[1])
        if allowed is None:
            return top_k(self.vectors, self.ids, q, k)
        rows = np.flatnonzero(np.isin(self.ids, allowed))
        return top_k(self.vectors[rows], self.ids[rows], q, k)


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
    view = out.view(np.uint8)
    done = 0
    while done < out.nbytes:  # readinto may return less than asked for; read until full
        got = fh.readinto(view[done:])  # type: ignore[attr-defined]
        if not got:
            raise ValueError("the file ends early")
        done += got
    return out


def read_flat_index(path: Path, dim: int) -> FlatVectors:
    """Read a saved vector index of dimension ``dim``; ``StoreError`` if it is damaged or of another kind."""
    try:
        with open(path, "rb") as fh:
            magic, generation, count, file_dim = HEADER.unpack(_read_exact(fh, HEADER.size))
            if magic != MAGIC or file_dim != dim:
                raise ValueError("not a Glimpse vector index of this dimension")
            _faiss_header(fh, b"IxM2", dim, count)
            _faiss_header(fh, b"IxFI", dim, count)
            vectors = _read_array(fh, np.float32, count * dim).reshape(count, dim)
            ids = _read_array(fh, np.int64, count)
    except (OSError, ValueError, struct.error) as exc:
        raise StoreError(f"Vector index {path} is unreadable ({exc}).") from exc
    return FlatVectors(int(generation), vectors, ids)


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
    flat: FlatVectors
    regions: NoRegions = field(default_factory=NoRegions)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> SearchHits:
        return self.flat.search(query, k, allowed)
