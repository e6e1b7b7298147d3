"""Search: turn a query into one vector and rank the library against it.

Each term is embedded and L2-normalised, then the signed, weighted terms are
summed and normalised again (the arithmetic rclip and the CLIP paper use). Image
terms reuse the stored vector when the photo is indexed, so "find similar" on a
library photo costs no model call at all.

A query answers with the photos that match it, not a fixed count: every candidate
gets a calibrated match strength (``indexer.search.relevance``), the matches come
first, and the weaker candidates follow, marked ``weak``, for front ends that offer
"show weaker matches". ``k`` bounds both together.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from indexer.errors import NotFoundError, QueryError
from indexer.models.embedder import Embedder
from indexer.search import relevance
from indexer.search.groups import collapse, keep_order, photo_date
from indexer.search.query import Query, Term, parse_query
from indexer.search.relevance import Descriptions
from store.flat import SearchHits
from store.records import DescriptionsRecord, ImageRecord, ImageTagRecord, TagRecord

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
# How many candidates a query calibrates at the least (more when k asks for more): enough to
# find every match a person would look through, few enough to cost milliseconds.
POOL = 200


class PhotoReads(Protocol):
    """What search reads about photos: the library (``store.library.LibraryStore``) or a
    read-only snapshot of it (``store.snapshot.LibrarySnapshot``); both run the same
    queries (``store.reads``)."""

    def images(self, ids: Sequence[int]) -> dict[int, ImageRecord]: ...
    def image_by_path(self, path: str) -> ImageRecord | None: ...
    def ids_under(self, folders: Sequence[str]) -> np.ndarray: ...
    def embedding(self, image_id: int, model_id: int, dim: int) -> np.ndarray | None: ...


class TagReads(Protocol):
    """What tag filters read (``store.tags.TagStore`` or a snapshot)."""

    def tag(self, name: str) -> TagRecord: ...
    def image_ids(self, all_of: Sequence[int] = (), none_of: Sequence[int] = ()) -> np.ndarray: ...
    def images_with_tag(self, tag_id: int, limit: int | None = None) -> list[tuple[int, float, str]]: ...
    def tags_of(self, image_ids: Sequence[int]) -> dict[int, list[ImageTagRecord]]: ...
    def descriptions(self, model_id: int) -> DescriptionsRecord | None: ...
    def descriptions_key(self, model_id: int) -> str | None: ...


class RegionSearch(Protocol):
    def __len__(self) -> int: ...
    def search(self, query: np.ndarray, k: int, allowed_images: np.ndarray | None = None) -> Sequence[RegionMatch]: ...


class RegionMatch(Protocol):
    @property
    def image_id(self) -> int: ...
    @property
    def score(self) -> float: ...
    @property
    def box(self) -> tuple[float, float, float, float]: ...
    @property
    def vector(self) -> np.ndarray | None: ...


class VectorReads(Protocol):
    """One model's vectors: exact search, and its region index (possibly empty)."""

    @property
    def model_id(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def regions(self) -> RegionSearch: ...
    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> SearchHits: ...


class SearchSpace(Protocol):
    """The model that answers now and its vectors (``indexer.models.space.ModelSlot``)."""

    @property
    def embedder(self) -> Embedder: ...
    def vectors(self) -> VectorReads: ...


@dataclass(frozen=True)
class SearchResult:
    image_id: int
    path: str
    score: float
    width: int | None = None
    height: int | None = None
    taken_at: datetime | None = None
    thumbnail_key: str | None = None
    camera: str | None = None
    tags: tuple[str, ...] = ()
    # Where in the photo the match is, in fractions of the upright photo (x0, y0, x1, y1),
    # when a part of it matches and the whole photo does not (region index on).
    region: tuple[float, float, float, float] | None = None
    strength: float = 1.0  # calibrated match strength, 0-1 (``indexer.search.relevance``)
    weak: bool = False  # below the cutoff: listed only after the matches, when asked for
    # Near-duplicates among the results: a group is shown as its best-ranked photo, which
    # lists the others (``similar``); each other one names it (``duplicate_of``).
    similar: tuple[int, ...] = ()
    duplicate_of: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.image_id,
            "path": self.path,
            "match": round(float(self.strength), 4),
            "weak": self.weak,
            "cosine": round(float(self.score), 6),
            "width": self.width,
            "height": self.height,
            "taken_at": self.taken_at.isoformat() if self.taken_at else None,
            "tags": list(self.tags),
            "region": [round(v, 4) for v in self.region] if self.region else None,
            "similar": list(self.similar),
            "duplicate_of": self.duplicate_of,
        }


def _keep_key(rec: ImageRecord | None) -> tuple[int, float, int, int, int]:
    if rec is None:
        return (1, float("inf"), 1, 0, 1 << 30)
    return keep_order(rec.path, rec.width, rec.height, rec.size, photo_date(rec))


@dataclass(frozen=True)
class _Candidate:
    """One photo a query ranked: its cosine, calibrated strength, matching part, and verdict."""

    image_id: int
    score: float
    strength: float
    box: Box | None
    weak: bool
    row: np.ndarray | None = None  # the photo's vector, to find near-duplicates among results


def _unit(total: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(total)
    if norm < 1e-6:
        raise QueryError("The terms cancel each other out; there is nothing left to search for.")
    return (total / norm).astype(np.float32)


@dataclass(frozen=True)
class _Calibration:
    """What a text query is calibrated with: its positive terms' direction, and its negative terms
    (weight, unit vector), which compete with it on every photo."""

    positive: np.ndarray
    negatives: tuple[tuple[float, np.ndarray], ...] = ()


class SearchService:
    """Answers queries. ``duplicate_similarity``: the cosine at which two results are
    near-duplicates and shown as one (the setting of that name; None: never)."""

    def __init__(
        self,
        store: PhotoReads,
        slot: SearchSpace,
        tags: TagReads | None = None,
        duplicate_similarity: float | None = None,
    ) -> None:
        self.store = store
        self.slot = slot
        self.tags = tags
        self.duplicate_similarity = duplicate_similarity
        # The last descriptions read, by (model id, key): a long-lived service reads the blob once.
        self._described: tuple[tuple[int, str], Descriptions] | None = None

    @property
    def embedder(self) -> Embedder:
        """The model of the space that answers now (it changes when a model switch completes)."""
        return self.slot.embedder

    def _vectors(self) -> VectorReads:
        return self.slot.vectors()

    def search(
        self,
        text: str,
        k: int = 20,
        folders: Sequence[str] | None = None,
        base_dir: Path | None = None,
        tags: Sequence[str] = (),
        without_tags: Sequence[str] = (),
    ) -> list[SearchResult]:
        """Rank the library for a query in the shared query language, optionally filtered by tags."""
        query = parse_query(text, base_dir)
        query = replace(query, tags=(*query.tags, *tags), without_tags=(*query.without_tags, *without_tags))
        return self.search_query(query, k, folders)

    def by_tag(self, tag: str, k: int = 20, folders: Sequence[str] | None = None) -> list[SearchResult]:
        """Photos carrying ``tag``: those tagged by hand first, then by score."""
        return self.search_query(Query((), (tag,)), k, folders)

    def _allowed(self, query: Query, folders: Sequence[str] | None) -> np.ndarray | None:
        """Ids the folder and tag filters let through (None: no filter)."""
        allowed = None
        if folders:
            allowed = self.store.ids_under([str(Path(f).expanduser().resolve()) for f in folders])
        if query.tags or query.without_tags:
            if self.tags is None:
                raise QueryError("Tag filters need the tag store; this search service has none.")
            need = [self.tags.tag(t).id for t in query.tags]
            avoid = [self.tags.tag(t).id for t in query.without_tags]
            tagged = self.tags.image_ids(need, avoid)
            allowed = tagged if allowed is None else np.intersect1d(allowed, tagged, assume_unique=True)
        return allowed

    def similar(
        self,
        image: str | int,
        k: int = 20,
        folders: Sequence[str] | None = None,
        tags: Sequence[str] = (),
        without_tags: Sequence[str] = (),
    ) -> list[SearchResult]:
        """Photos like ``image`` (a file path or an indexed image id); the image itself is left out."""
        if isinstance(image, int):
            term = Term("id", str(image), 1.0)
        else:
            path = Path(image).expanduser()
            if not path.is_file():
                raise NotFoundError(f"{path} does not exist or is not a file.")
            term = Term("file", str(path.resolve()), 1.0)
        return self.search_query(Query((term,), tuple(tags), tuple(without_tags)), k, folders)

    def search_query(self, query: Query, k: int = 20, folders: Sequence[str] | None = None) -> list[SearchResult]:
        """The matches for ``query`` (best first), then weaker candidates marked ``weak``; ``k`` at most."""
        allowed = self._allowed(query, folders)
        if not query.terms:
            # Only tag filters: the first tag's photos, best first, within the other filters. A tag
            # is already a calibrated decision, so every photo that carries it is a match.
            assert self.tags is not None and query.tags
            ranked = self.tags.images_with_tag(self.tags.tag(query.tags[0]).id)
            ok = set(allowed.tolist()) if allowed is not None else None
            listed = [(i, s) for i, s, _ in ranked if ok is None or i in ok][:k]
            return self._results([_Candidate(i, s, s, None, False) for i, s in listed])
        vec, query_ids, calibration = self.query_vector(query, self._vectors())
        return self._results(self._rank(vec, k, allowed, query_ids, calibration))

    def search_vector(
        self,
        vector: np.ndarray,
        k: int = 20,
        folders: Sequence[str] | None = None,
        filters: Query | None = None,
        exclude: set[int] | None = None,
    ) -> list[SearchResult]:
        """Rank the library against a ready-made unit vector (object search), with the usual filters."""
        allowed = self._allowed(filters or Query(()), folders)
        return self._results(self._rank(vector, k, allowed, exclude or set(), None))

    def _descriptions(self, vectors: VectorReads) -> Descriptions | None:
        """What the vocabulary can say about photos in this space (None: not computed yet)."""
        if self.tags is None:
            return None
        key = self.tags.descriptions_key(vectors.model_id)
        cached = self._described
        if key is not None and (cached is None or cached[0] != (vectors.model_id, key)):
            record = self.tags.descriptions(vectors.model_id)
            if record is None:  # replaced between the two reads: the next query reads it
                return None
            cached = self._described = ((record.model_id, record.key), Descriptions.from_record(record, vectors.dim))
        if key is None or cached is None or not cached[1]:
            return None
        return cached[1]

    def _strengths(
        self,
        calibration: _Calibration | None,
        scores: np.ndarray,
        rows: np.ndarray | None,
        sample: np.ndarray | None,
        vectors: VectorReads,
    ) -> np.ndarray:
        """Calibrated strengths: a text query against the vocabulary's descriptions where the
        library has them (its negative terms competing too), anything else against the library's
        own distribution."""
        described = self._descriptions(vectors) if calibration is not None and rows is not None else None
        if described:
            assert rows is not None and calibration is not None
            return relevance.text_strengths(
                rows @ calibration.positive, rows, described, calibration.positive, calibration.negatives
            )
        return relevance.image_strengths(scores, sample)

    def _rank(
        self, vec: np.ndarray, k: int, allowed: np.ndarray | None, exclude: set[int], calibration: _Calibration | None
    ) -> list[_Candidate]:
        """Candidates for ``vec``, calibrated: matches first, then weaker ones; ``k`` at most.

        With a region index, a photo that does not match as a whole may match by a part of
        it (a small object): the part counts when its own strength is a match, and a photo
        that matches as a whole is reported whole.
        """
        vectors = self._vectors()
        pool = max(k, POOL) + len(exclude)
        hits = vectors.search(vec, pool, allowed)
        strengths = self._strengths(calibration, hits.scores, hits.rows, hits.sample, vectors)
        rows = hits.rows if hits.rows is not None else [None] * len(hits.ids)
        best: dict[int, _Candidate] = {
            int(i): _Candidate(int(i), float(s), float(m), None, False, r)
            for i, s, m, r in zip(hits.ids, hits.scores, strengths, rows, strict=True)
        }
        if len(vectors.regions) and len(hits.scores):
            parts = [h for h in vectors.regions.search(vec, pool, allowed) if h.vector is not None]
            if parts:
                part_scores = np.asarray([h.score for h in parts], np.float32)
                part_rows = np.stack([np.asarray(h.vector, np.float32) for h in parts])
                part_strengths = self._strengths(calibration, part_scores, part_rows, hits.sample, vectors)
                for hit, m in zip(parts, part_strengths.tolist(), strict=True):
                    whole = best.get(hit.image_id)
                    if whole is not None and whole.strength >= relevance.CUTOFF:
                        continue  # it matches as a whole: reported whole
                    if whole is None or m > whole.strength:
                        row = whole.row if whole is not None else None
                        best[hit.image_id] = _Candidate(hit.image_id, hit.score, m, hit.box, False, row)
        found = [c for c in best.values() if c.image_id not in exclude]
        if not found:
            return []
        scores = np.asarray([c.score for c in found], np.float32)
        final = relevance.cut(scores, np.asarray([c.strength for c in found], np.float32), hits.sample)
        ranked = [replace(c, strength=m, weak=m < relevance.CUTOFF) for c, m in zip(found, final.tolist(), strict=True)]
        ranked.sort(key=lambda c: (c.weak, -c.strength, -c.score))
        return ranked[:k]

    def _collapse(self, keep: Sequence[_Candidate], records: dict[int, ImageRecord]) -> dict[int, list[int]]:
        """Near-duplicates among the results: best-ranked id -> the ids it stands for."""
        if self.duplicate_similarity is None or len(keep) < 2 or any(c.row is None for c in keep):
            return {}
        rows = np.stack([np.asarray(c.row, np.float32) for c in keep])
        found = [records.get(c.image_id) for c in keep]
        hashes = [r.content_hash if r is not None else None for r in found]
        fingerprints = [r.fingerprint if r is not None else None for r in found]
        out: dict[int, list[int]] = {}
        for group in collapse(rows, self.duplicate_similarity, hashes, fingerprints):
            if len(group) < 2:
                continue
            # The group is shown as the copy one would keep (largest, oldest, best-named).
            members = [keep[i].image_id for i in group]
            leader = min(members, key=lambda i: _keep_key(records.get(i)))
            out[leader] = [m for m in members if m != leader]
        return out

    def _results(self, keep: Sequence[_Candidate]) -> list[SearchResult]:
        records = self.store.images([c.image_id for c in keep])
        tags = self.tags.tags_of([c.image_id for c in keep]) if self.tags is not None else {}
        groups = self._collapse(keep, records)
        leader = {member: first for first, members in groups.items() for member in members}
        if groups:  # each group's leader takes the place of its best-ranked member
            order = [c.image_id for c in keep]
            for first, members in groups.items():
                top = min(order.index(i) for i in (first, *members))
                order.remove(first)
                order.insert(top, first)
            by_id = {c.image_id: c for c in keep}
            keep = [by_id[i] for i in order]
        results = []
        for cand in keep:
            image_id, score, region = cand.image_id, cand.score, cand.box
            rec = records.get(image_id)
            if rec is None:  # deleted between the vector search and this lookup
                continue
            camera = " ".join(p for p in (rec.camera_make, rec.camera_model) if p) or None
            names = tuple(t.name for t in tags.get(image_id, ()))
            results.append(
                SearchResult(
                    image_id,
                    rec.path,
                    score,
                    rec.width,
                    rec.height,
                    rec.taken_at,
                    rec.thumbnail_key,
                    camera,
                    names,
                    region,
                    cand.strength,
                    cand.weak,
                    tuple(groups.get(image_id, ())),
                    leader.get(image_id),
                )
            )
        return results

    def query_vector(self, query: Query, vectors: VectorReads) -> tuple[np.ndarray, set[int], _Calibration | None]:
        """The unit query vector, the ids of indexed photos used as terms (to leave out), and, for a
        query of words only, what its matches are calibrated with (its positive and negative terms)."""
        terms = self._term_vectors(query, vectors)
        vec = _unit(sum((t.weight * v for t, v, _ in terms), np.zeros(vectors.dim, np.float64)))
        query_ids = {i for _, _, i in terms if i is not None}
        if not all(t.kind == "text" for t in query.terms):
            return vec, query_ids, None
        positive = _unit(sum((t.weight * v for t, v, _ in terms if t.weight > 0), np.zeros(vectors.dim)))
        negatives = tuple((-t.weight, np.asarray(v, np.float32)) for t, v, _ in terms if t.weight < 0)
        return vec, query_ids, _Calibration(positive, negatives)

    def _term_vectors(self, query: Query, vectors: VectorReads) -> list[tuple[Term, np.ndarray, int | None]]:
        """Each term's unit vector (texts embedded in one batch), with the photo id of an indexed photo term."""
        texts = [t for t in query.terms if t.kind == "text"]
        text_vecs = self.embedder.embed_texts([t.value for t in texts]) if texts else np.empty((0, 0))
        embedded = dict(zip((id(t) for t in texts), text_vecs, strict=True))
        out: list[tuple[Term, np.ndarray, int | None]] = []
        for term in query.terms:
            if term.kind == "text":
                out.append((term, embedded[id(term)], None))
            else:
                vec, image_id = self._image_vector(term, vectors)
                out.append((term, vec, image_id))
        return out

    def _image_vector(self, term: Term, vectors: VectorReads) -> tuple[np.ndarray, int | None]:
        if term.kind == "id":
            vec = self.store.embedding(term.image_id, vectors.model_id, vectors.dim)
            if vec is None:
                raise NotFoundError(f"No indexed photo has id #{term.image_id}.")
            return vec, term.image_id
        rec = self.store.image_by_path(term.value)
        if rec is not None:
            vec = self.store.embedding(rec.id, vectors.model_id, vectors.dim)
            if vec is not None:
                return vec, rec.id
        # Not in the library (or not embedded yet): decode and embed it now.
        from indexer.ingest.decode import decode_photo  # Pillow and friends: only for photos outside the library

        photo = decode_photo(term.value, self.embedder.preprocess, thumbnail_size=None)
        return self.embedder.embed_images(photo.pixels[None])[0], None
