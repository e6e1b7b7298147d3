"""Automatic tags from stored image vectors: zero-shot prompts and tags taught by example.

Tagging never looks at pixels again. Each tag is a direction in the embedding
space, computed once per model and cached in ``tag_vectors``:

* a **zero-shot** tag's direction is the mean of its prompts' text embeddings under
  several templates ("a photo of {}.", …), the prompt ensembling of the CLIP paper;
* a **taught** tag's direction is a logistic-regression classifier fitted on the
  vectors of photos the user marked (positives, optional negatives, and a sample of
  the library as unlabelled background).

Raw cosine similarities are not comparable across tags (some prompts sit closer to
every photo than others), so zero-shot scores are calibrated into a probability
that the tag describes the photo better than its competitors: a set of generic
background prompts ("a photo.", "an image.") and, in *exclusive* groups (indoors /
outdoors), the other tags of the group. A vocabulary without background prompts
(the toy world's) makes every tag compete with the whole vocabulary instead. That is a softmax at the model's own
temperature, so one threshold (0.5 by default) means the same for every tag.

Re-tagging the whole library is one matrix product over the vectors in memory and
one transaction, which is why vocabulary edits apply in seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.embedder import Embedder
from indexer.errors import NotFoundError, TeachError, VocabularyError
from indexer.models import ModelSpec
from store.errors import StoreError
from store.library import LibraryStore
from store.records import TagRecord, TagVectorRecord
from store.schema import TagSource
from store.tags import Assignment, TagStore
from store.vectors import ModelVectors

log = logging.getLogger(__name__)

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
DEFAULT_VOCABULARY = RESOURCES / "vocabulary.json"
TOYWORLD_VOCABULARY = Path(__file__).resolve().parent / "toyworld" / "vocabulary.json"
_CHUNK = 8192


@dataclass(frozen=True)
class GroupSpec:
    name: str
    exclusive: bool = False  # at most one tag of the group fits a photo (indoors / outdoors)
    templates: tuple[str, ...] | None = None  # None: the vocabulary's templates


@dataclass(frozen=True)
class Vocabulary:
    """A tag vocabulary file: templates, background prompts, groups of tags with prompts."""

    key: str
    templates: tuple[str, ...]
    background: tuple[str, ...]
    groups: dict[str, GroupSpec]
    tags: tuple[tuple[str, str, tuple[str, ...]], ...]  # (name, group, prompts)
    threshold: float = 0.5
    max_tags: int = 15

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            groups: dict[str, GroupSpec] = {}
            tags: list[tuple[str, str, tuple[str, ...]]] = []
            for gname, g in data["groups"].items():
                templates = tuple(g["templates"]) if "templates" in g else None
                groups[gname] = GroupSpec(gname, bool(g.get("exclusive", False)), templates)
                for tname, prompts in g["tags"].items():
                    tags.append((tname, gname, tuple(prompts)))
            vocab = cls(
                key=str(data.get("name", path.stem)),
                templates=tuple(data.get("templates", ["{}"])),
                background=tuple(data.get("background", [])),
                groups=groups,
                tags=tuple(tags),
                threshold=float(data.get("threshold", 0.5)),
                max_tags=int(data.get("max_tags", 15)),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise VocabularyError(f"Cannot read the tag vocabulary {path}: {exc}") from exc
        for template in (*vocab.templates, *(t for g in groups.values() for t in g.templates or ())):
            if "{}" not in template:
                raise VocabularyError(f'Template "{template}" in {path} has no {{}} for the tag\'s phrase.')
        if not vocab.background and not all(g.exclusive for g in groups.values()):
            raise VocabularyError(
                f"{path} has groups that are not exclusive but no background prompts; their scores could "
                'not be calibrated. Add generic prompts such as "a photo." under "background".'
            )
        return vocab

    def templates_for(self, group: str) -> tuple[str, ...]:
        spec = self.groups.get(group)
        return spec.templates if spec is not None and spec.templates else self.templates

    def exclusive(self, group: str) -> bool:
        spec = self.groups.get(group)
        return bool(spec and spec.exclusive)


def vocabulary_for(model: ModelSpec, override: str | None = None) -> Path:
    """The vocabulary a library starts with: the user's file, or the one that fits the model."""
    if override:
        return Path(override).expanduser()
    return TOYWORLD_VOCABULARY if model.name == "toyworld" else DEFAULT_VOCABULARY


# ---- results -------------------------------------------------------------------------------


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


@dataclass
class TeachReport:
    tag: str
    positives: int
    negatives: int
    precision: float | None  # estimated on held-out examples (None: too few to tell)
    recall: float | None
    threshold: float
    tagged: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "tag": self.tag,
            "positives": self.positives,
            "negatives": self.negatives,
            "estimated_precision": self.precision,
            "estimated_recall": self.recall,
            "threshold": round(self.threshold, 4),
            "tagged": self.tagged,
        }


@dataclass
class TagModel:
    """Everything needed to tag vectors of one embedding space, as matrices.

    Columns of ``weights`` are tag directions; ``exclusive_groups`` lists column
    index arrays whose tags compete with each other.
    """

    tags: list[TagRecord]
    weights: np.ndarray  # (dim, n_tags) float32
    scale: np.ndarray  # (n_tags,) temperature (zero-shot) or 1 (taught)
    bias: np.ndarray  # (n_tags,)
    thresholds: np.ndarray  # (n_tags,)
    taught: np.ndarray  # (n_tags,) bool: logistic classifier instead of softmax against background
    background: np.ndarray  # (dim, n_background) float32
    temperature: float
    exclusive_groups: list[np.ndarray] = field(default_factory=list)
    max_tags: int = 15

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """Calibrated probability of every tag for every vector: (n, n_tags) float32."""
        logits = (vectors @ self.weights) * self.scale + self.bias
        n = len(vectors)
        if self.background.shape[1]:
            bg_logits = (vectors @ self.background) * self.temperature
            bg = _logsumexp(bg_logits, axis=1)
            denom = np.logaddexp(logits, bg[:, None])
        else:
            bg = np.full(n, -np.inf, np.float32)
            # No background prompts: a tag competes with the whole vocabulary (plain CLIP softmax).
            zero_shot = ~self.taught
            vocab = _logsumexp(logits[:, zero_shot], axis=1) if zero_shot.any() else bg
            denom = np.broadcast_to(vocab[:, None], logits.shape).copy()
        # Zero-shot: p = exp(l) / (exp(l) + exp(bg) [+ rivals in an exclusive group]).
        for cols in self.exclusive_groups:
            group_lse = _logsumexp(logits[:, cols], axis=1)
            denom[:, cols] = np.logaddexp(group_lse, bg)[:, None]
        probs = np.exp(logits - denom)
        if self.taught.any():
            cols = np.flatnonzero(self.taught)
            probs[:, cols] = 1.0 / (1.0 + np.exp(-logits[:, cols]))
        return probs.astype(np.float32, copy=False)

    def assign(self, ids: np.ndarray, vectors: np.ndarray) -> list[Assignment]:
        """The tags each vector gets: above its tag's threshold, best ``max_tags`` at most."""
        if not self.tags or len(ids) == 0:
            return []
        out: list[Assignment] = []
        tag_ids = np.fromiter((t.id for t in self.tags), np.int64, len(self.tags))
        sources = [TagSource.EXAMPLE if x else TagSource.ZERO_SHOT for x in self.taught]
        for start in range(0, len(ids), _CHUNK):
            probs = self.probabilities(vectors[start : start + _CHUNK])
            passed = probs >= self.thresholds
            if self.max_tags < len(self.tags):
                # Keep only each row's best max_tags (ties broken arbitrarily).
                kth = -np.partition(-probs, self.max_tags - 1, axis=1)[:, self.max_tags - 1 : self.max_tags]
                passed &= probs >= kth
            rows, cols = np.nonzero(passed)
            chunk_ids = ids[start : start + _CHUNK]
            out.extend(
                (int(chunk_ids[r]), int(tag_ids[c]), sources[c], float(probs[r, c]))
                for r, c in zip(rows.tolist(), cols.tolist(), strict=True)
            )
        return out


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    return (np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m).squeeze(axis)


def _fingerprint(*parts: object) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# ---- teaching ------------------------------------------------------------------------------


def fit_logistic(x: np.ndarray, y: np.ndarray, weights: np.ndarray, l2: float = 1.0) -> tuple[np.ndarray, float]:
    """Weighted L2-regularised logistic regression by Newton's method (IRLS).

    A few hundred examples in a few hundred dimensions: Newton converges in under
    ten steps and needs no learning rate, and NumPy is all it takes.
    """
    n, d = x.shape
    xb = np.hstack([x.astype(np.float64), np.ones((n, 1))])
    w = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 1e-6  # the bias is not shrunk
    for _ in range(25):
        z = np.clip(xb @ w, -30, 30)
        p = 1.0 / (1.0 + np.exp(-z))
        grad = xb.T @ (weights * (p - y)) + reg * w
        hess = (xb * (weights * p * (1 - p))[:, None]).T @ xb + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-6:
            break
    return w[:-1].astype(np.float32), float(w[-1])


def fit_pu(x: np.ndarray, y: np.ndarray, unlabelled: np.ndarray) -> tuple[np.ndarray, float]:
    """Fit on positives against negatives and unlabelled photos, then once more without the
    unlabelled photos the first fit already takes for positives.

    The unlabelled background is mostly negatives, but it also holds the very photos the
    user wants found; left in as negatives they would teach the classifier to reject
    them. Dropping the likely positives and refitting (the "reliable negatives" step of
    positive-unlabelled learning) lets them through.
    """
    w, b = fit_logistic(x, y, _balanced_weights(y, unlabelled))
    likely = unlabelled & (x @ w + b > 0)
    if likely.any():
        keep = ~likely
        w, b = fit_logistic(x[keep], y[keep], _balanced_weights(y[keep], unlabelled[keep]))
    return w, b


def _balanced_weights(y: np.ndarray, unlabelled: np.ndarray) -> np.ndarray:
    """Positives and negatives weigh the same in total; unlabelled background counts half as much."""
    w = np.ones(len(y))
    pos, neg = y == 1, y == 0
    w[pos] = 1.0 / max(pos.sum(), 1)
    w[neg & ~unlabelled] = 1.0 / max((neg & ~unlabelled).sum(), 1)
    w[neg & unlabelled] = 0.5 / max((neg & unlabelled).sum(), 1)
    return w * len(y) / w.sum()


# ---- the service -------------------------------------------------------------------------


class Tagger:
    """Keeps the tags on every photo in step with the vocabulary, the model and the user.

    The pipeline calls :meth:`assign` for each committed batch (tags land in the same
    transaction as the vectors); vocabulary edits call :meth:`retag`.
    """

    def __init__(
        self,
        tags: TagStore,
        store: LibraryStore,
        embedder: Embedder,
        vectors: Callable[[], ModelVectors],
        vocabulary_path: Path,
        background_sample: int = 2000,
    ) -> None:
        self.tags = tags
        self.store = store
        self.embedder = embedder
        self._vectors = vectors
        self.vocabulary_path = vocabulary_path
        self.background_sample = background_sample
        self._vocabulary: Vocabulary | None = None
        self._model: TagModel | None = None
        self._model_key: str | None = None
        self.texts_embedded = 0  # prompts sent to the text encoder by the last re-tag
        self._lock = threading.RLock()

    @property
    def vocabulary(self) -> Vocabulary:
        if self._vocabulary is None:
            self._vocabulary = Vocabulary.load(self.vocabulary_path)
        return self._vocabulary

    def ensure_vocabulary(self) -> None:
        """Seed the library's tags from the vocabulary file the first time it is used."""
        vocab = self.vocabulary
        if self.tags.seed(vocab.tags, vocab.key):  # the tag model's key notices the new tags
            log.info("seeded %d tags from vocabulary %s", len(vocab.tags), vocab.key)

    # ---- the tag model -------------------------------------------------------------------

    def _prompt_texts(self, tag: TagRecord) -> list[str]:
        phrases = list(tag.prompts) or [tag.name]
        return [t.format(p) for p in phrases for t in self.vocabulary.templates_for(tag.group)]

    def _wanted(self, tag: TagRecord) -> str:
        """The fingerprint a tag's vector must have to be current (prompts and templates, or examples)."""
        if tag.kind == "example":
            pos, neg = self.tags.examples(tag.id)
            return _fingerprint("example", pos, neg)
        return _fingerprint("prompts", self._prompt_texts(tag))

    def _state_key(self, tags: Sequence[TagRecord], wanted: dict[int, str]) -> str:
        """What the automatic tags depend on: model, vocabulary settings, every tag's inputs."""
        vocab = self.vocabulary
        return _fingerprint(
            self.embedder.record.key,
            vocab.key,
            vocab.threshold,
            vocab.max_tags,
            list(vocab.background),
            [(t.id, t.kind, t.enabled, t.threshold, t.group, wanted[t.id]) for t in tags],
        )

    def model(self) -> TagModel:
        """The tag model for the active embedding space, (re)computing stale tag vectors.

        Only tags whose prompts, templates or examples changed are embedded again; the
        text encoder runs for nothing else. Serialised: the indexing pipeline and a
        vocabulary edit from the GUI may ask at the same time.
        """
        with self._lock:
            return self._build_model()

    def _build_model(self) -> TagModel:
        self.ensure_vocabulary()
        model_vectors = self._vectors()
        model_id = model_vectors.model_id
        tags = [t for t in self.tags.tags(include_disabled=False) if t.kind != "manual"]
        wanted = {t.id: self._wanted(t) for t in tags}
        key = self._state_key(tags, wanted)
        if self._model is not None and self._model_key == key:
            return self._model
        vocab = self.vocabulary
        stored = self.tags.vectors(model_id)
        stale = [
            t for t in tags if t.kind == "prompts" and (t.id not in stored or stored[t.id].fingerprint != wanted[t.id])
        ]
        if stale:
            fresh = self._embed_prompts(stale)
            self.tags.save_vectors(model_id, fresh)
            stored.update({r.tag_id: r for r in fresh})
        for tag in tags:  # taught tags whose examples changed since they were fitted
            if tag.kind == "example":
                rec = stored.get(tag.id)
                if rec is None or rec.fingerprint != wanted[tag.id]:
                    pos, neg = self.tags.examples(tag.id)
                    try:
                        stored[tag.id] = self._fit(tag, pos, neg, model_vectors)
                        self.tags.save_vectors(model_id, [stored[tag.id]])
                    except TeachError as exc:
                        log.warning("taught tag %s is not applied: %s", tag.name, exc.message)
        usable = [t for t in tags if t.id in stored]
        dim = model_vectors.dim
        temperature = float(getattr(self.embedder, "logit_scale", 100.0))
        weights = np.zeros((dim, len(usable)), np.float32)
        bias = np.zeros(len(usable), np.float32)
        scale = np.ones(len(usable), np.float32)
        thresholds = np.zeros(len(usable), np.float32)
        taught = np.zeros(len(usable), bool)
        groups: dict[str, list[int]] = {}
        for col, tag in enumerate(usable):
            rec = stored[tag.id]
            weights[:, col] = np.frombuffer(rec.vector, np.float32)
            bias[col] = rec.bias
            taught[col] = tag.kind == "example"
            scale[col] = 1.0 if taught[col] else temperature
            default = rec.threshold if rec.threshold is not None else vocab.threshold
            thresholds[col] = tag.threshold if tag.threshold is not None else default
            if not taught[col] and vocab.exclusive(tag.group):
                groups.setdefault(tag.group, []).append(col)
        background = np.zeros((dim, 0), np.float32)
        if vocab.background:
            bg = self.embedder.embed_texts([t.format(p) for p in vocab.background for t in vocab.templates])
            background = np.ascontiguousarray(bg.T, np.float32)
        self._model = TagModel(
            usable,
            weights,
            scale,
            bias,
            thresholds,
            taught,
            background,
            temperature,
            [np.asarray(c) for c in groups.values() if len(c) > 1],
            vocab.max_tags,
        )
        self._model_key = key
        return self._model

    def _embed_prompts(self, tags: Sequence[TagRecord]) -> list[TagVectorRecord]:
        """Prompt ensembling: average each tag's template × phrase embeddings, renormalise."""
        texts: list[str] = []
        spans: list[tuple[int, int]] = []
        for tag in tags:
            prompts = self._prompt_texts(tag)
            spans.append((len(texts), len(texts) + len(prompts)))
            texts.extend(prompts)
        started = time.perf_counter()
        embedded = np.concatenate([self.embedder.embed_texts(texts[i : i + 256]) for i in range(0, len(texts), 256)])
        self.texts_embedded = len(texts)
        log.info("embedded %d prompts for %d tags in %.1f s", len(texts), len(tags), time.perf_counter() - started)
        out = []
        for tag, (a, b) in zip(tags, spans, strict=True):
            mean = embedded[a:b].mean(axis=0)
            mean /= max(float(np.linalg.norm(mean)), 1e-12)
            fp = _fingerprint("prompts", texts[a:b])
            out.append(TagVectorRecord(tag.id, fp, mean.astype(np.float32).tobytes(), 0.0, None, None, None))
        return out

    # ---- applying ------------------------------------------------------------------------

    def assign(self, ids: np.ndarray, vectors: np.ndarray) -> list[Assignment]:
        """Automatic tags for freshly embedded photos (called by the pipeline per batch)."""
        return self.model().assign(ids, vectors)

    def is_current(self) -> bool:
        """Whether the stored automatic tags were computed with today's vocabulary and model."""
        self.model()
        return self.tags.get_meta(self._meta_key()) == self._model_key

    def _meta_key(self) -> str:
        return f"tagging:{self.embedder.record.key}"

    def retag(self) -> RetagReport:
        """Recompute every automatic tag of the library from the stored vectors (no pixels, no image model)."""
        started = time.perf_counter()
        self.texts_embedded = 0
        model = self.model()
        vectors = self._vectors()
        rows: list[Assignment] = []
        photos = 0

        def tag_chunk(ids: np.ndarray, vecs: np.ndarray) -> None:
            nonlocal photos
            photos += len(ids)
            rows.extend(model.assign(ids, vecs))

        vectors.index.each_chunk(tag_chunk, _CHUNK)
        written = self.tags.replace_automatic(rows)
        assert self._model_key is not None
        self.tags.set_meta(self._meta_key(), self._model_key)
        report = RetagReport(len(model.tags), photos, written, self.texts_embedded, time.perf_counter() - started)
        log.info("re-tagged %d photos with %d tags in %.2f s", photos, len(model.tags), report.seconds)
        return report

    def retag_if_stale(self) -> RetagReport | None:
        """Re-tag when the vocabulary or model changed since the last re-tag (e.g. a kill mid-edit)."""
        if len(self._vectors()) == 0 or self.is_current():
            return None
        return self.retag()

    # ---- user actions --------------------------------------------------------------------

    def resolve_images(self, photos: Sequence[str | int]) -> list[int]:
        """Image ids for paths or ids the user named; unknown ones are a clear error."""
        ids: list[int] = []
        for photo in photos:
            if isinstance(photo, int) or (isinstance(photo, str) and photo.startswith("#") and photo[1:].isdigit()):
                image_id = int(photo) if isinstance(photo, int) else int(photo[1:])
                if image_id not in self.store.images([image_id]):
                    raise NotFoundError(f"No photo in the library has id #{image_id}.")
                ids.append(image_id)
                continue
            path = str(Path(photo).expanduser().resolve())
            rec = self.store.image_by_path(path)
            if rec is None:
                raise NotFoundError(f"{path} is not in the library. Index its folder first: glimpse index FOLDER")
            ids.append(rec.id)
        return ids

    def tag_photos(self, name: str, image_ids: Sequence[int], present: bool = True) -> TagRecord:
        """Put a tag on photos by hand (creating it as a hand-only tag if new), or take it off."""
        tag = self.tags.find(name)
        if tag is None:
            if not present:
                raise NotFoundError(f'There is no tag called "{name}".')
            tag = self.tags.add_tag(name, group="mine", kind="manual")
        self.tags.set_by_user(image_ids, tag.id, present)
        return tag

    def add_tag(self, name: str, prompts: Sequence[str] = (), group: str = "mine") -> TagRecord:
        """A new zero-shot tag (its name is the prompt unless prompts are given)."""
        return self.tags.add_tag(name, group=group, prompts=prompts, kind="prompts")

    def teach(self, name: str, positives: Sequence[int], negatives: Sequence[int] = ()) -> TeachReport:
        """Mark examples, fit a classifier on their vectors, apply it to the whole library.

        The examples become overrides (they carry, or never carry, the tag whatever the
        classifier says), and the estimated precision is measured on examples held out
        of fitting, so the user knows how far to trust the tag.
        """
        if not positives:
            raise TeachError("Mark at least one photo that shows the tag (ideally five or more).")
        tag = self.tags.find(name)
        if tag is None:
            tag = self.tags.add_tag(name, group="mine", kind="example")
        elif tag.kind != "example":
            tag = self.tags.update_tag(tag.id, kind="example")
        self.tags.set_by_user(positives, tag.id, True)
        if negatives:
            self.tags.set_by_user(negatives, tag.id, False)
        pos, neg = self.tags.examples(tag.id)
        vectors = self._vectors()
        rec = self._fit(tag, pos, neg, vectors)
        self.tags.save_vectors(vectors.model_id, [rec])
        report = self.retag()
        counts = self.tags.counts()
        log.info("taught %s from %d+/%d- examples in %.2f s", tag.name, len(pos), len(neg), report.seconds)
        return TeachReport(
            tag.name, len(pos), len(neg), rec.precision, rec.recall, rec.threshold or 0.5, counts.get(tag.id, 0)
        )

    def _fit(self, tag: TagRecord, pos: Sequence[int], neg: Sequence[int], vectors: ModelVectors) -> TagVectorRecord:
        dim = vectors.dim

        def load(ids: Sequence[int]) -> np.ndarray:
            got = [self.store.embedding(i, vectors.model_id, dim) for i in ids]
            return (
                np.stack([g for g in got if g is not None]) if any(g is not None for g in got) else np.empty((0, dim))
            )

        xp, xn = load(pos), load(neg)
        if len(xp) == 0:
            raise TeachError(f'None of the photos marked "{tag.name}" has been indexed yet.')
        # Unlabelled background: a seeded sample of the library, minus the examples.
        # Sorted, so the seeded sample depends on the library, not on the order batches landed in the index.
        pool = np.setdiff1d(vectors.index.ids(), np.asarray([*pos, *neg], np.int64))
        rng = np.random.default_rng(len(pool))
        sample = rng.choice(pool, min(self.background_sample, len(pool)), replace=False) if len(pool) else pool
        xu = vectors.index.get(sample)
        if len(xn) + len(xu) == 0:
            raise TeachError("The library has no other photos to tell the tag apart from.")
        x = np.vstack([xp, xn, xu]).astype(np.float32)
        y = np.concatenate([np.ones(len(xp)), np.zeros(len(xn) + len(xu))])
        unl = np.concatenate([np.zeros(len(xp) + len(xn), bool), np.ones(len(xu), bool)])
        threshold, precision, recall = self._cross_validate(x, y, unl)
        w, b = fit_pu(x, y, unl)
        fp = _fingerprint("example", list(pos), list(neg))
        return TagVectorRecord(tag.id, fp, w.tobytes(), b, threshold, precision, recall)

    @staticmethod
    def _cross_validate(x: np.ndarray, y: np.ndarray, unl: np.ndarray) -> tuple[float, float | None, float | None]:
        """Held-out estimate: k-fold over the examples, then a threshold and its precision and recall.

        With fewer than three positives there is nothing to hold out; the threshold
        stays at 0.5 and the precision is reported as unknown.
        """
        n_pos = int(y.sum())
        if n_pos < 3:
            return 0.5, None, None
        folds = min(5, n_pos)
        rng = np.random.default_rng(0)
        fold_of = np.empty(len(y), int)
        for label in (0, 1):
            idx = np.flatnonzero(y == label)
            fold_of[idx] = rng.permutation(len(idx)) % folds
        scores = np.empty(len(y))
        for f in range(folds):
            train, test = fold_of != f, fold_of == f
            w, b = fit_pu(x[train], y[train], unl[train])
            scores[test] = 1.0 / (1.0 + np.exp(-np.clip(x[test] @ w + b, -30, 30)))
        # Unlabelled photos may show the tag too (that is the point of teaching), so they
        # cannot set the threshold by themselves: it goes halfway between the weakest
        # held-out positive and what the bulk of the rest scores (the 95th percentile of
        # unlabelled photos, or the strongest counter-example if higher). Precision counts
        # unlabelled hits as false, so it is a lower bound.
        weakest = float(scores[y == 1].min())
        rest = [float(np.quantile(scores[unl], 0.95))] if unl.any() else []
        if ((y == 0) & ~unl).any():
            rest.append(float(scores[(y == 0) & ~unl].max()))
        threshold = min((weakest + max(rest)) / 2, weakest) if rest else weakest
        predicted = scores >= threshold
        tp = float((predicted & (y == 1)).sum())
        precision = tp / max(float(predicted.sum()), 1.0)
        recall = tp / n_pos
        return threshold, round(precision, 4), round(recall, 4)

    def rename(self, name: str, new_name: str) -> TagRecord:
        return self.tags.update_tag(self.tags.tag(name).id, name=new_name)

    def delete(self, name: str) -> None:
        tag = self.tags.tag(name)
        self.tags.delete_tag(tag.id)

    def edit(
        self,
        name: str,
        prompts: Sequence[str] | None = None,
        add_prompts: Sequence[str] = (),
        enabled: bool | None = None,
        threshold: float | None = None,
        group: str | None = None,
    ) -> TagRecord:
        tag = self.tags.tag(name)
        changes: dict[str, object] = {}
        if prompts is not None or add_prompts:
            base = list(prompts) if prompts is not None else (list(tag.prompts) or [tag.name])
            changes["prompts"] = [*base, *add_prompts]
            if tag.kind == "manual":
                changes["kind"] = "prompts"
        if enabled is not None:
            changes["enabled"] = enabled
        if threshold is not None:
            if not 0.0 < threshold < 1.0:
                raise StoreError("A threshold is a probability between 0 and 1.", title="Bad threshold")
            changes["threshold"] = threshold
        if group is not None:
            changes["group"] = group
        return self.tags.update_tag(tag.id, **changes) if changes else tag


# ---- export ----------------------------------------------------------------------------------


@dataclass
class ExportReport:
    written: list[str] = field(default_factory=list)
    skipped: int = 0  # no tags and no sidecar to update
    failures: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "written": len(self.written),
            "skipped": self.skipped,
            "failures": [{"path": p, "error": e} for p, e in self.failures],
        }


def export_sidecars(
    tags: TagStore, store: LibraryStore, image_ids: Sequence[int], style: str = "append"
) -> ExportReport:
    """Write each photo's tags to its XMP sidecar (dc:subject); the photos themselves are never touched.

    A photo that cannot be written (read-only folder, unplugged drive, broken
    sidecar) is reported and the others go on.
    """
    from indexer.xmp import Keyword, XmpError, sidecar_path, write_sidecar

    report = ExportReport()
    records = store.images(image_ids)
    on_photo = tags.tags_of(list(records))
    for image_id, rec in records.items():
        photo = Path(rec.path)
        keywords = [Keyword(t.name, t.group) for t in on_photo.get(image_id, [])]
        if not keywords and not sidecar_path(photo, style).exists():
            report.skipped += 1
            continue
        if not photo.exists():
            report.failures.append((rec.path, "the photo is not there (moved, or its drive is unplugged)"))
            continue
        try:
            report.written.append(str(write_sidecar(photo, keywords, style)))
        except XmpError as exc:
            report.failures.append((rec.path, exc.message))
    return report
