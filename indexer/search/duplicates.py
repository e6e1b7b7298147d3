"""Duplicates: exact copies and near-duplicates, grouped, with the one to keep suggested.

* **Exact copies** share their bytes: photos whose fast content hash (size, first and
  last 64 KiB, recorded by the scanner) agrees are confirmed by a hash of the whole file.
* **Near-duplicates** (resized, re-encoded, lightly cropped or edited, bursts) are found
  from what indexing stored, no pixels decoded: two photos whose vectors have a cosine of
  at least the threshold (the ``duplicate_similarity`` setting, which the user can move;
  ``store.neighbours`` finds the pairs) and whose perceptual hashes agree
  (``indexer.search.groups.same_picture``: the vectors say what a photo shows, the hash
  that it is the same picture, not another photo of the same thing) are linked, and
  linked photos form one group.

In every group the photo to keep comes first: the largest (in pixels), then
the oldest (taken, else modified), then the best-named (no "copy", "(2)" or "-1" of a
copy). Nothing here deletes anything: :func:`move_to_trash` moves files to the
system's trash, and only when a front end has the user's explicit confirmation.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from indexer.models.space import ModelSlot
from indexer.search.groups import Links, keep_order, photo_date, same_picture
from store.library import LibraryStore
from store.neighbours import near_pairs
from store.records import ImageRecord

log = logging.getLogger(__name__)

DEFAULT_SIMILARITY = 0.96


@dataclass(frozen=True)
class Member:
    image_id: int
    path: str
    width: int | None
    height: int | None
    size: int
    when: datetime | None  # taken, else modified
    why_keep: str = ""  # for the suggested keeper: why it is the one


@dataclass(frozen=True)
class DuplicateGroup:
    members: tuple[Member, ...]  # the suggested keeper first
    exact: bool  # every member has the same bytes
    similarity: float  # the lowest cosine between linked members (1.0 for exact copies)

    @property
    def keep(self) -> Member:
        return self.members[0]

    @property
    def extra(self) -> tuple[Member, ...]:
        return self.members[1:]

    def to_json(self) -> dict[str, object]:
        return {
            "kind": "exact" if self.exact else "near",
            "similarity": round(self.similarity, 4),
            "keep": self.keep.path,
            "why": self.keep.why_keep,
            "members": [
                {
                    "id": m.image_id,
                    "path": m.path,
                    "width": m.width,
                    "height": m.height,
                    "bytes": m.size,
                    "date": m.when.isoformat() if m.when else None,
                }
                for m in self.members
            ],
        }


def _member(rec: ImageRecord) -> Member:
    return Member(rec.id, rec.path, rec.width, rec.height, rec.size, photo_date(rec))


def _order(m: Member) -> tuple[int, float, int, int, int]:
    return keep_order(m.path, m.width, m.height, m.size, m.when)


def suggest_keep(members: Sequence[Member]) -> tuple[Member, ...]:
    """``members`` with the one to keep first, and why it is that one."""
    ordered = sorted(members, key=_order)
    first, second = _order(ordered[0]), _order(ordered[1]) if len(ordered) > 1 else None
    if second is None or first[0] != second[0]:
        why = "largest"
    elif first[1] != second[1]:
        why = "oldest"
    elif first[2] != second[2]:
        why = "best name"
    elif first[3] != second[3]:
        why = "largest file"
    else:
        why = "shortest name"
    keeper = ordered[0]
    return (Member(keeper.image_id, keeper.path, keeper.width, keeper.height, keeper.size, keeper.when, why),
            *ordered[1:])  # fmt: skip


def full_hash(path: str) -> str | None:
    """A hash of the whole file (None: it cannot be read now)."""
    h = hashlib.blake2b(digest_size=20)
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except OSError as exc:
        log.debug("cannot hash %s: %s", path, exc)
        return None
    return h.hexdigest()


def find_duplicates(
    ids: np.ndarray, vectors: np.ndarray, records: dict[int, ImageRecord], similarity: float = DEFAULT_SIMILARITY
) -> list[DuplicateGroup]:
    """Groups of duplicates among the photos ``ids`` (rows of ``vectors``), largest groups first."""
    if not 0.5 <= similarity <= 1.0:
        raise ValueError(f"similarity must be between 0.5 and 1, not {similarity}")
    links = Links()
    by_hash: dict[str, list[int]] = {}
    for rec in records.values():
        if rec.content_hash:
            by_hash.setdefault(rec.content_hash, []).append(rec.id)
    identical: dict[int, str] = {}  # image id -> its whole file's hash, for photos with a twin
    for same in by_hash.values():
        if len(same) < 2:
            continue
        hashed: dict[str, list[int]] = {}
        for image_id in same:
            digest = full_hash(records[image_id].path)
            if digest is not None:
                hashed.setdefault(digest, []).append(image_id)
                identical[image_id] = digest
        for twins in hashed.values():
            for other in twins[1:]:
                links.link(twins[0], other, 1.0)
    rows_i, rows_j, sims = near_pairs(vectors, similarity)
    for i, j, s in zip(ids[rows_i].tolist(), ids[rows_j].tolist(), sims.tolist(), strict=True):
        if i in records and j in records and same_picture(records[i].fingerprint, records[j].fingerprint):
            links.link(i, j, min(float(s), 1.0))
    groups = []
    for root, members in links.groups().items():
        digests = {identical.get(m) for m in members}
        exact = len(digests) == 1 and None not in digests
        ordered = suggest_keep([_member(records[m]) for m in members])
        groups.append(DuplicateGroup(ordered, exact, 1.0 if exact else links.weakest.get(root, 1.0)))
    groups.sort(key=lambda g: (-len(g.members), -g.similarity, g.keep.path))
    return groups


def move_to_trash(paths: Sequence[str]) -> list[tuple[str, str]]:
    """Move ``paths`` to the system's trash (restorable from there); returns (path, reason) for
    each one that could not be moved. Call only with the user's explicit confirmation."""
    from send2trash import send2trash  # only a confirmed clean-up needs it

    failed = []
    for path in paths:
        try:
            send2trash(path)
        except OSError as exc:
            failed.append((path, exc.strerror or str(exc)))
        except Exception as exc:  # send2trash raises its own TrashPermissionError and others
            failed.append((path, str(exc) or type(exc).__name__))
    return failed


@dataclass(frozen=True)
class TrashReport:
    moved: list[str]
    failed: list[tuple[str, str]]  # (path, reason)


class DuplicateFinder:
    """The library's duplicates, from its stored vectors and hashes; the one front ends call.

    ``similarity`` is the default threshold (the ``duplicate_similarity`` setting).
    """

    def __init__(self, store: LibraryStore, slot: ModelSlot, similarity: float = DEFAULT_SIMILARITY) -> None:
        self.store = store
        self.slot = slot
        self.similarity = similarity

    def find(self, similarity: float | None = None, folders: Sequence[str] | None = None) -> list[DuplicateGroup]:
        vectors = self.slot.vectors()
        ids_kept: list[np.ndarray] = []
        rows_kept: list[np.ndarray] = []

        def keep_chunk(ids: np.ndarray, rows: np.ndarray) -> None:
            ids_kept.append(ids.copy())
            rows_kept.append(rows.copy())

        vectors.index.each_chunk(keep_chunk)
        if not ids_kept:
            return []
        ids, rows = np.concatenate(ids_kept), np.concatenate(rows_kept)
        if folders:
            keep = np.isin(ids, self.store.ids_under([str(Path(f).expanduser().resolve()) for f in folders]))
            ids, rows = ids[keep], rows[keep]
        records = self.store.images(ids.tolist())
        return find_duplicates(ids, rows, records, self.similarity if similarity is None else similarity)

    def trash(self, members: Sequence[Member]) -> TrashReport:
        """Move these photos' files to the system trash and forget them in the library.

        Only for an explicit confirmation by the user; a file that cannot be moved stays
        where it is, and in the library.
        """
        failed = move_to_trash([m.path for m in members])
        bad = {p for p, _ in failed}
        gone = [m for m in members if m.path not in bad]
        if gone:
            ids = [m.image_id for m in gone]
            self.store.remove_images(ids)
            vectors = self.slot.vectors()
            vectors.remove(ids)
            vectors.save()
        return TrashReport([m.path for m in gone], failed)
