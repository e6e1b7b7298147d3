"""Automatic tags from stored image vectors: zero-shot prompts and tags taught by example.

Tagging never looks at pixels again. Each tag is one or more directions in the
embedding space, computed once per model and cached in ``tag_vectors``:

* a **zero-shot** tag has one direction per phrase: the mean of that phrase's text
  embeddings under several templates ("a photo of {}.", …), the prompt ensembling of
  the CLIP paper. The phrases are a union: the best-matching one decides, so "something
  red" and "something yellow" on one tag find red photos and yellow ones (their mean
  found neither well), and adding a phrase never takes a photo away;
* a **taught** tag's direction is a logistic-regression classifier fitted on the
  vectors of photos the user marked (``indexer.tags.teaching``).

Scores are calibrated as ``indexer.tags.model`` explains. Re-tagging the whole
library is one matrix product over the vectors in memory and one transaction,
which is why vocabulary edits apply in seconds.

Concurrency: building a tag model may call the text encoder, so it runs on the
caller's thread (the model thread in the GUI). Applying it is a writer command:
the re-tag reads the vectors and replaces every automatic tag inside one
``BEGIN IMMEDIATE`` transaction, and each indexed batch gets its tags inside its
own commit command, with the tag model installed at that moment. No batch can land
between a re-tag's snapshot and its write, so none loses its tags.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from indexer.errors import TeachError
from indexer.models.space import EmbeddingSpace, ModelSlot
from indexer.tags.model import CHUNK, TagModel, fingerprint
from indexer.tags.teaching import fit_tag
from indexer.tags.vocabulary import VOCABULARY_KEY, Vocabulary, vocabulary_ref
from store.library import LibraryStore
from store.records import DescriptionsRecord, TagRecord, TagVectorRecord
from store.schema import Embedding
from store.tags import Assignment, TagStore

log = logging.getLogger(__name__)

# What a zero-shot tag's stored vectors are: one per phrase (a union). Part of each tag's
# fingerprint, so vectors stored as one mean of all phrases are embedded again once.
_PER_PHRASE = "prompts/per-phrase"
# How scores are calibrated (``indexer.tags.model``): part of the state key, so a library tagged
# by an older rule is re-tagged once by the next index run.
_CALIBRATION = "exclusive-groups/2, background as one"


@dataclass
class RetagReport:
    tags: int = 0
    photos: int = 0
    assigned: int = 0
    texts_embedded: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "tags": self.tags,
            "photos": self.photos,
            "assigned": self.assigned,
            "texts_embedded": self.texts_embedded,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class _Built:
    """A tag model and the state it was built from (model key + every tag's inputs)."""

    key: str
    model: TagModel
    model_id: int


class Tagger:
    """Keeps the automatic tags on every photo in step with the vocabulary, the model and the user.

    The pipeline calls :meth:`assign` for each committed batch (inside the batch's writer
    command); vocabulary edits call :meth:`retag`; a completed model switch calls
    :meth:`retag` with the new space.
    """

    def __init__(
        self,
        tags: TagStore,
        store: LibraryStore,
        slot: ModelSlot,
        vocabulary_path: Path,
        background_sample: int = 2000,
    ) -> None:
        self.tags = tags
        self.store = store
        self.slot = slot
        self.vocabulary_path = vocabulary_path
        self.background_sample = background_sample
        self._vocabulary: Vocabulary | None = None
        self._built: dict[int, _Built] = {}  # per model id: the newest tag model built
        self._installed: _Built | None = None  # what batch commits tag with (writer thread)
        self.texts_embedded = 0  # prompts sent to the text encoder by the last build
        self._lock = threading.RLock()

    @property
    def vocabulary(self) -> Vocabulary:
        if self._vocabulary is None:
            self._vocabulary = Vocabulary.load(self.vocabulary_path)
        return self._vocabulary

    def seed_vocabulary(self) -> bool:
        """Add the vocabulary file's tags to the library, once per vocabulary.

        Called only by commands that index with the library's own model (``index``,
        ``watch``, the app, a model switch): reading tags never merges a vocabulary in.
        """
        vocab = self.vocabulary
        if not self.store.get_meta(VOCABULARY_KEY):
            self.store.set_meta(VOCABULARY_KEY, vocabulary_ref(self.vocabulary_path))
        added = self.tags.seed(vocab.tags, vocab.key)
        if added:
            log.info("seeded %d tags from vocabulary %s", len(vocab.tags), vocab.key)
        return added

    # ---- building the tag model ------------------------------------------------------------

    def _prompt_texts(self, tag: TagRecord) -> list[str]:
        phrases = list(tag.prompts) or [tag.name]
        return [t.format(p) for p in phrases for t in self.vocabulary.templates_for(tag.group)]

    def _wanted(self, tag: TagRecord) -> str:
        """The fingerprint a tag's vector must have to be current (prompts and templates, or examples)."""
        if tag.kind == "example":
            pos, neg = self.tags.examples(tag.id)
            return fingerprint("example", pos, neg)
        return fingerprint(_PER_PHRASE, self._prompt_texts(tag))

    def _state_key(self, model_key: str, tags: Sequence[TagRecord], wanted: dict[int, str]) -> str:
        """What the automatic tags depend on: model, vocabulary settings, every tag's inputs."""
        vocab = self.vocabulary
        return fingerprint(
            model_key,
            _CALIBRATION,
            vocab.key,
            vocab.threshold,
            vocab.max_tags,
            list(vocab.background),
            [(t.id, t.kind, t.enabled, t.threshold, t.group, wanted[t.id]) for t in tags],
        )

    def model(self, space: EmbeddingSpace | None = None) -> TagModel:
        """The tag model for ``space`` (the active one by default), recomputing stale tag vectors."""
        return self._built_model(space or self.slot.space).model

    def _built_model(self, space: EmbeddingSpace) -> _Built:
        built = self._build(space)
        assert built is not None  # embed_prompts=True always builds
        return built

    def _state(self, space: EmbeddingSpace) -> tuple[list[TagRecord], dict[int, str], str]:
        """The automatic tags, what each one's vector must be made from, and the state key (no model)."""
        tags = [t for t in self.tags.tags(include_disabled=False) if t.kind != "manual"]
        wanted = {t.id: self._wanted(t) for t in tags}
        return tags, wanted, self._state_key(space.key, tags, wanted)

    def _stale_prompts(
        self, space: EmbeddingSpace, tags: Sequence[TagRecord], wanted: dict[int, str]
    ) -> list[TagRecord]:
        stored = self.tags.vectors(space.vectors().model_id)
        return [
            t for t in tags if t.kind == "prompts" and (t.id not in stored or stored[t.id].fingerprint != wanted[t.id])
        ]

    def _build(self, space: EmbeddingSpace, embed_prompts: bool = True) -> _Built | None:
        """Only tags whose prompts, templates or examples changed are embedded again.

        ``embed_prompts=False`` returns None instead of embedding prompts, for callers
        that must not wait for the text encoder (an indexing batch).
        Serialised: the pipeline's first batch and a GUI edit may ask at the same time.
        """
        with self._lock:
            self.texts_embedded = 0
            vectors = space.vectors()
            tags, wanted, key = self._state(space)
            built = self._built.get(vectors.model_id)
            if built is not None and built.key == key:
                return built
            if not embed_prompts and self._stale_prompts(space, tags, wanted):
                return None
            stored = self._tag_vectors(space, tags, wanted)
            model = self._assemble(space, [t for t in tags if t.id in stored], stored)
            built = _Built(key, model, vectors.model_id)
            self._built[vectors.model_id] = built
            self._save_descriptions(space, model, self._descriptions_key(space, tags, wanted))
            return built

    def _descriptions_key(self, space: EmbeddingSpace, tags: Sequence[TagRecord], wanted: dict[int, str]) -> str:
        """What search's descriptions are made of: the model, the background prompts, every zero-shot tag's phrases."""
        vocab = self.vocabulary
        phrases = sorted(wanted[t.id] for t in tags if t.kind == "prompts")
        return fingerprint("descriptions/1", space.key, list(vocab.background), list(vocab.templates), phrases)

    def _save_descriptions(self, space: EmbeddingSpace, model: TagModel, key: str) -> None:
        """Give search what the vocabulary can say about any photo (``indexer.search.relevance``),
        when that changed: the background prompts' vectors, then every zero-shot phrase's."""
        model_id = space.vectors().model_id
        if self.tags.descriptions_key(model_id) == key:
            return
        background = np.ascontiguousarray(model.background.T, np.float32)
        phrases = [model.weights[:, a:b].T for a, b, taught in model.columns() if not taught]  # a tag's phrase columns
        rows = np.concatenate([background, *phrases]) if phrases else background
        self.tags.save_descriptions(
            DescriptionsRecord(
                model_id, key, float(model.temperature), len(background), len(rows), rows.astype(np.float32).tobytes()
            )
        )

    def _tag_vectors(
        self, space: EmbeddingSpace, tags: Sequence[TagRecord], wanted: dict[int, str]
    ) -> dict[int, TagVectorRecord]:
        vectors = space.vectors()
        stored = self.tags.vectors(vectors.model_id)
        stale = self._stale_prompts(space, tags, wanted)
        if stale:
            fresh = self._embed_prompts(space, stale)
            self.tags.save_vectors(vectors.model_id, fresh)
            stored.update({r.tag_id: r for r in fresh})
        for tag in tags:  # taught tags whose examples changed since they were fitted
            if tag.kind == "example":
                rec = stored.get(tag.id)
                if rec is None or rec.fingerprint != wanted[tag.id]:
                    pos, neg = self.tags.examples(tag.id)
                    try:
                        stored[tag.id] = fit_tag(tag, pos, neg, self.store, vectors, self.background_sample)
                        self.tags.save_vectors(vectors.model_id, [stored[tag.id]])
                    except TeachError as exc:
                        log.warning("taught tag %s is not applied: %s", tag.name, exc.message)
                        stored.pop(tag.id, None)
        return stored

    def _assemble(
        self, space: EmbeddingSpace, usable: Sequence[TagRecord], stored: dict[int, TagVectorRecord]
    ) -> TagModel:
        vocab = self.vocabulary
        dim = space.vectors().dim
        temperature = float(getattr(space.embedder, "logit_scale", 100.0))
        columns = [np.frombuffer(stored[tag.id].vector, np.float32).reshape(-1, dim) for tag in usable]
        starts = np.cumsum([0] + [len(c) for c in columns[:-1]]).astype(np.intp)
        weights = np.ascontiguousarray(np.concatenate(columns).T) if columns else np.zeros((dim, 0), np.float32)
        bias = np.zeros(len(usable), np.float32)
        scale = np.ones(len(usable), np.float32)
        thresholds = np.zeros(len(usable), np.float32)
        taught = np.zeros(len(usable), bool)
        groups: dict[str, list[int]] = {}
        for col, tag in enumerate(usable):
            rec = stored[tag.id]
            bias[col] = rec.bias
            taught[col] = tag.kind == "example"
            scale[col] = 1.0 if taught[col] else temperature
            default = rec.threshold if rec.threshold is not None else vocab.threshold
            thresholds[col] = tag.threshold if tag.threshold is not None else default
            if not taught[col] and vocab.exclusive(tag.group):
                groups.setdefault(tag.group, []).append(col)
        background = np.zeros((dim, 0), np.float32)
        if vocab.background:
            bg = space.embed_prompts([t.format(p) for p in vocab.background for t in vocab.templates])
            background = np.ascontiguousarray(bg.T, np.float32)
        return TagModel(
            list(usable),
            weights,
            scale,
            bias,
            thresholds,
            taught,
            background,
            temperature,
            [np.asarray(c) for c in groups.values() if len(c) > 1],
            vocab.max_tags,
            starts if weights.shape[1] != len(usable) else None,
        )

    def _embed_prompts(self, space: EmbeddingSpace, tags: Sequence[TagRecord]) -> list[TagVectorRecord]:
        """Prompt ensembling per phrase: each phrase's template embeddings averaged and renormalised;
        a tag keeps one vector per phrase (its phrases are a union, see ``TagModel.starts``)."""
        texts: list[str] = []
        spans: list[tuple[int, int]] = []
        for tag in tags:
            prompts = self._prompt_texts(tag)
            spans.append((len(texts), len(texts) + len(prompts)))
            texts.extend(prompts)
        started = time.perf_counter()
        embedded = np.concatenate([space.embed_prompts(texts[i : i + 256]) for i in range(0, len(texts), 256)])
        self.texts_embedded = len(texts)
        log.info("embedded %d prompts for %d tags in %.1f s", len(texts), len(tags), time.perf_counter() - started)
        out = []
        for tag, (a, b) in zip(tags, spans, strict=True):
            per_template = len(self.vocabulary.templates_for(tag.group))
            means = embedded[a:b].reshape(-1, per_template, embedded.shape[1]).mean(axis=1)
            means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
            fp = fingerprint(_PER_PHRASE, texts[a:b])
            out.append(TagVectorRecord(tag.id, fp, means.astype(np.float32).tobytes(), 0.0, None, None, None))
        return out

    # ---- applying ------------------------------------------------------------------------

    def prepare(self) -> _Built:
        """Build (if stale) the tag model for the active space, off the writer: it may embed prompts."""
        return self._built_model(self.slot.space)

    def prepare_if_ready(self) -> _Built | None:
        """The tag model if every prompt is already embedded, else None (nothing is embedded here).

        Indexing commits photos with tags only when this is ready, so photos become
        searchable first and prompts are embedded afterwards (:meth:`embed_stale_prompts`).
        """
        return self._build(self.slot.space, embed_prompts=False)

    def embed_stale_prompts(self, chunk: int = 256) -> Generator[tuple[int, int], None, None]:
        """Embed the prompts whose tag vectors are missing or stale, in chunks; yields (done, total) prompts.

        Each chunk's tag vectors are saved as it finishes, so an interrupted run resumes
        where it stopped. No lock is held between chunks: a vocabulary edit meanwhile is
        caught by the fingerprints the next build compares.
        """
        space = self.slot.space
        with self._lock:
            tags, wanted, _key = self._state(space)
            stale = self._stale_prompts(space, tags, wanted)
        total = sum(len(self._prompt_texts(t)) for t in stale)
        done = 0
        group: list[TagRecord] = []
        for i, tag in enumerate(stale):
            group.append(tag)
            size = sum(len(self._prompt_texts(t)) for t in group)
            if size >= chunk or i == len(stale) - 1:
                self.tags.save_vectors(space.vectors().model_id, self._embed_prompts(space, group))
                done += size
                group = []
                yield done, total

    def assign(self, ids: np.ndarray, vectors: np.ndarray, prepared: _Built | None = None) -> list[Assignment]:
        """Automatic tags for freshly embedded photos; runs inside the batch's writer command.

        Uses the tag model the last re-tag installed, so a batch is tagged exactly like the
        rest of the library. ``prepared`` (from :meth:`prepare`) is installed when none is,
        or when the installed one belongs to another model; nothing is built here, because
        building may need the writer and the writer is busy running this.
        """
        installed = self._installed
        if prepared is not None and (installed is None or installed.model_id != prepared.model_id):
            installed = self._installed = prepared
        if installed is None:
            installed = self._built_model(self.slot.space)  # called outside the writer (tests, scripts)
        return installed.model.assign(ids, vectors)

    def is_current(self) -> bool:
        """Whether the stored automatic tags, and the descriptions search calibrates with, were
        computed with today's vocabulary and model.

        Reads only: the state key comes from the tags' inputs, so no model loads to tell.
        """
        space = self.slot.space
        with self._lock:
            tags, wanted, key = self._state(space)
            described = self.tags.descriptions_key(space.vectors().model_id)
        return self.store.get_meta(self._meta_key(space)) == key and described == self._descriptions_key(
            space, tags, wanted
        )

    @staticmethod
    def _meta_key(space: EmbeddingSpace) -> str:
        return f"tagging:{space.key}"

    def retag(self, space: EmbeddingSpace | None = None, before_write: Any = None) -> RetagReport:
        """Recompute every automatic tag of the library from the stored vectors (no pixels, no image model).

        The tag model is built here (it may embed prompts); reading the vectors and
        replacing the tags is one writer command. ``before_write(conn)``, if given, runs
        first inside that command (a model switch makes its swap there).
        """
        started = time.perf_counter()
        space = space or self.slot.space
        built = self._built_model(space)
        texts = self.texts_embedded
        counts = {"photos": 0, "written": 0}

        def command(conn: Connection) -> None:
            if before_write is not None:
                before_write(conn)
            vectors = space.vectors()
            # The index in memory and the rows agree inside a writer command; the id filter
            # makes that certain, so no tag can ever point at a photo that just left.
            emb = Embedding
            present = np.fromiter(
                conn.execute(select(emb.c.image_id).where(emb.c.model_id == vectors.model_id)).scalars(), np.int64
            )
            rows: list[Assignment] = []

            def tag_chunk(ids: np.ndarray, vecs: np.ndarray) -> None:
                keep = np.isin(ids, present)
                counts["photos"] += int(keep.sum())
                rows.extend(built.model.assign(ids[keep], vecs[keep]))

            vectors.index.each_chunk(tag_chunk, CHUNK)
            counts["written"] = self.tags.replace_automatic(rows)
            self.store.set_meta(self._meta_key(space), built.key)
            self._installed = built

        self.store.write(command)
        report = RetagReport(
            len(built.model.tags), counts["photos"], counts["written"], texts, time.perf_counter() - started
        )
        log.info("re-tagged %d photos with %d tags in %.2f s", report.photos, report.tags, report.seconds)
        return report
