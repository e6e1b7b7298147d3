"""Near-duplicates among a query's results, and the grouping both search and the duplicate
finder use. NumPy only: a one-shot search collapses its results without the library's
heavier modules (``indexer.search.duplicates`` reads the whole library)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from store.neighbours import near_pairs
from store.records import ImageRecord

# How many of the 63 bits of two perceptual hashes may differ for the pictures to be the same
# picture: resizing, re-encoding, brightening or a 5% crop flip a few; another photo of the
# same scene flips about half.
FINGERPRINT_BITS = 16


# A name that says it is a copy: "IMG_1 copy.jpg", "IMG_1 (2).jpg", "IMG_1-1.jpg", "IMG_1~2.jpg".
_COPY_NAME = re.compile(r"(\bcopy\b|\bkopie\b|\bcopie\b|\(\d+\)|[-_ ~]\d{1,2}$)", re.IGNORECASE)


def keep_order(
    path: str, width: int | None, height: int | None, size: int, when: datetime | None
) -> tuple[int, float, int, int, int]:
    """Sort key of the copy to keep (smallest first): the largest (pixels), then the oldest, then
    the best-named (not called a copy), then the one with more bytes, then the shortest name. Bytes
    come late: an edited copy re-encoded at a higher quality is larger but not the original."""
    pixels = (width or 0) * (height or 0)
    stamp = when.timestamp() if when else float("inf")
    name = Path(path)
    return (-pixels, stamp, 1 if _COPY_NAME.search(name.stem) else 0, -size, len(name.name))


def photo_date(rec: ImageRecord) -> datetime | None:
    """When a photo was taken, else when its file was last modified (what "oldest" compares)."""
    return rec.taken_at or (datetime.fromtimestamp(rec.mtime_ns / 1e9) if rec.mtime_ns else None)


def same_picture(a: int | None, b: int | None) -> bool:
    """Whether two perceptual hashes allow the photos to be copies of one picture (unknown: yes,
    the vectors decide alone)."""
    return a is None or b is None or (a ^ b).bit_count() <= FINGERPRINT_BITS


class Links:
    """Union-find over photo ids, remembering the weakest link inside each group."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.weakest: dict[int, float] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def link(self, a: int, b: int, similarity: float) -> None:
        ra, rb = self.find(a), self.find(b)
        low = min(similarity, self.weakest.get(ra, 1.0), self.weakest.get(rb, 1.0))
        if ra != rb:
            self.parent[rb] = ra
        self.weakest[ra] = low

    def groups(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for x in list(self.parent):
            out.setdefault(self.find(x), []).append(x)
        return {root: ids for root, ids in out.items() if len(ids) > 1}


def collapse(
    rows: np.ndarray,
    similarity: float,
    hashes: Sequence[str | None] | None = None,
    fingerprints: Sequence[int | None] | None = None,
) -> list[list[int]]:
    """Results that are near-duplicates of each other, as lists of positions (the first of each,
    the best-ranked, stands for the group): ``rows`` are the results' vectors in rank order,
    ``hashes`` their files' content hashes, ``fingerprints`` their perceptual hashes."""
    n = len(rows)
    links = Links()
    for i in range(n):
        links.find(i)
    if n > 1:
        a, b, s = near_pairs(rows, similarity)
        for i, j, sim in zip(a.tolist(), b.tolist(), s.tolist(), strict=True):
            if fingerprints is None or same_picture(fingerprints[i], fingerprints[j]):
                links.link(i, j, sim)
    if hashes is not None:
        first: dict[str, int] = {}
        for i, digest in enumerate(hashes):
            if digest:
                links.link(first.setdefault(digest, i), i, 1.0)
    out: dict[int, list[int]] = {}
    for i in range(n):
        out.setdefault(links.find(i), []).append(i)
    return sorted((sorted(g) for g in out.values()), key=lambda g: g[0])
