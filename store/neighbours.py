"""Pairs of stored vectors that are nearly the same: the raw material of the duplicate finder.

Comparing every photo with every other is ``n² · dim`` multiply-adds: 5 · 10¹² at
100,000 photos of 512 dimensions, half a minute of two cores even as one BLAS product.
Near-duplicates are rare and very close, so above :data:`EXACT_UP_TO` photos the pairs
come from an inverted-file index instead (FAISS ``IndexIVFFlat``, range search): each
photo is compared only with the photos of the few cells nearest to it, where a copy of
it always lies (its vector is almost its own). Below that size every pair is compared,
in tiles that keep memory flat.
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)

EXACT_UP_TO = 20_000  # photos; above this, the inverted-file index
TILE = 4096  # rows per side of one tile of the exact comparison (64 MB of scores)
PROBES = 8  # cells of the inverted-file index searched per photo (a copy lies in its own cell or next to it)


def near_pairs(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of rows ``(i, j)``, ``i < j``, whose unit vectors have inner product at least
    ``threshold``: (rows i, rows j, similarities), each an array."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    if len(vectors) < 2:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.float32)
    if len(vectors) <= EXACT_UP_TO:
        return _exact(vectors, threshold)
    return _inverted(vectors, threshold)


def _exact(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    found_i, found_j, found_s = [], [], []
    n = len(vectors)
    for a in range(0, n, TILE):
        block = vectors[a : a + TILE]
        for b in range(a, n, TILE):
            scores = block @ vectors[b : b + TILE].T
            if a == b:
                scores = np.triu(scores, k=1) + np.tril(np.full_like(scores, -2.0))  # each pair once, no self
            i, j = np.nonzero(scores >= threshold)
            found_i.append(i + a)
            found_j.append(j + b)
            found_s.append(scores[i, j])
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_s).astype(np.float32)


def _inverted(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import faiss  # the only path here that needs it

    n, dim = vectors.shape
    cells = max(16, int(4 * math.sqrt(n)))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, cells, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    train = vectors[rng.choice(n, size=min(n, cells * 40), replace=False)]
    index.train(train)
    index.add(vectors)
    index.nprobe = min(PROBES, cells)
    found_i, found_j, found_s = [], [], []
    for start in range(0, n, TILE):
        lims, scores, rows = index.range_search(vectors[start : start + TILE], float(threshold))
        counts = np.diff(lims).astype(np.int64)
        queries = np.repeat(np.arange(start, start + len(counts)), counts)
        keep = rows > queries  # each pair once, no self
        found_i.append(queries[keep])
        found_j.append(rows[keep])
        found_s.append(scores[keep])
    log.debug("near pairs of %d vectors through %d cells", n, cells)
    return (
        np.concatenate(found_i).astype(np.int64),
        np.concatenate(found_j).astype(np.int64),
        np.concatenate(found_s).astype(np.float32),
    )
