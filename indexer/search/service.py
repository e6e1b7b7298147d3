"""Search: turn a query into one vector and rank the library against it.

Each term is embedded and L2-normalised, then the signed, weighted terms are
summed and normalised again (the arithmetic rclip and the CLIP paper use). Image
terms reuse the stored vector when the photo is indexed, so "find similar" on a
library photo costs no model call at all.
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
from indexer.search.query import Query, Term, parse_query
from store.flat import SearchHits
from store.records import ImageRecord, ImageTagRecord, TagRecord

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
REGION_SLACK = 0.05  # cosine: how far below the best whole photo a region may score and still count


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
    # when a region of it matched better than the whole photo (region index on).
    region: tuple[float, float, float, float] | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.image_id,
            "path": self.path,
            "score": round(float(self.score), 6),
            "width": self.width,
            "height": self.height,
            "taken_at": self.taken_at.isoformat() if self.taken_at else None,
            "tags": list(self.tags),
            "region": [round(v, 4) for v in self.region] if self.region else None,
        }


class SearchService:
    def __init__(self, store: PhotoReads, slot: SearchSpace, tags: TagReads | None = None) -> None:
        self.store = store
        self.slot = slot
        self.tags = tags

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
        allowed = self._allowed(query, folders)
        if not query.terms:
            # Only tag filters: list the first tag's photos, best first, within the other filters.
            assert self.tags is not None and query.tags
            ranked = self.tags.images_with_tag(self.tags.tag(query.tags[0]).id)
            ok = set(allowed.tolist()) if allowed is not None else None
            listed = [(i, s) for i, s, _ in ranked if ok is None or i in ok][:k]
            keep: list[tuple[int, float, Box | None]] = [(i, s, None) for i, s in listed]
        else:
            vec, query_ids = self.query_vector(query, self._vectors())
            keep = self._rank(vec, k, allowed, query_ids)
        return self._results(keep)

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
        return self._results(self._rank(vector, k, allowed, exclude or set()))

    def _rank(
        self, vec: np.ndarray, k: int, allowed: np.ndarray | None, exclude: set[int]
    ) -> list[tuple[int, float, Box | None]]:
        """Best photos for ``vec``; with a region index, a photo scores its best part or itself."""
        vectors = self._vectors()
        hits = vectors.search(vec, k + len(exclude), allowed)
        best: dict[int, tuple[float, Box | None]] = {
            int(i): (float(s), None) for i, s in zip(hits.ids, hits.scores, strict=True)
        }
        if len(vectors.regions) and len(hits.scores):
            # A part of a photo counts only when it matches about as well as the best whole
            # photos: the index is there to rescue small objects that match strongly, not to
            # re-rank the long tail by whichever corner happens to score a little higher.
            floor = float(hits.scores[0]) - REGION_SLACK
            for hit in vectors.regions.search(vec, k + len(exclude), allowed):
                if hit.score >= floor and hit.score > best.get(hit.image_id, (-2.0, None))[0]:
                    best[hit.image_id] = (hit.score, hit.box)
        ranked = sorted(best.items(), key=lambda item: -item[1][0])
        return [(i, s, box) for i, (s, box) in ranked if i not in exclude][:k]

    def _results(self, keep: Sequence[tuple[int, float, Box | None]]) -> list[SearchResult]:
        records = self.store.images([i for i, _, _ in keep])
        tags = self.tags.tags_of([i for i, _, _ in keep]) if self.tags is not None else {}
        results = []
        for image_id, score, region in keep:
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
                )
            )
        return results

    def query_vector(self, query: Query, vectors: VectorReads) -> tuple[np.ndarray, set[int]]:
        """The unit query vector, and the ids of indexed photos used as terms (to leave out)."""
        texts = [t for t in query.terms if t.kind == "text"]
        text_vecs = self.embedder.embed_texts([t.value for t in texts]) if texts else np.empty((0, 0))
        total = np.zeros(vectors.dim, dtype=np.float64)
        query_ids: set[int] = set()
        for term, vec in zip(texts, text_vecs, strict=True):
            total += term.weight * vec
        for term in query.terms:
            if term.kind == "text":
                continue
            vec, image_id = self._image_vector(term, vectors)
            if image_id is not None:
                query_ids.add(image_id)
            total += term.weight * vec
        norm = np.linalg.norm(total)
        if norm < 1e-6:
            raise QueryError("The terms cancel each other out; there is nothing left to search for.")
        return (total / norm).astype(np.float32), query_ids

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
