"""The tag model: every tag of one embedding space as matrices, and the calibrated scores.

Raw cosine similarities are not comparable across tags (some prompts sit closer to
every photo than others), so zero-shot scores are calibrated into a probability
that the tag describes the photo better than its competitors: a set of generic
background prompts ("a photo.", "an image."). In *exclusive* groups (indoors /
outdoors) the group as a whole competes with the background and its tags are then
told apart among themselves (``_exclusive``). A vocabulary without background prompts
makes every tag compete with the whole vocabulary instead. That is a softmax at the
model's own temperature, so one threshold (0.5 by default) means the same for every
tag.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from store.records import TagRecord, TagSource
from store.tags import Assignment

CHUNK = 8192


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
    # First column of each tag in ``weights`` when tags have several (one per phrase): a tag's
    # logit is its best phrase's, so a photo matches the tag if it matches any phrase well, and
    # adding a phrase never takes a photo away. None: one column per tag.
    starts: np.ndarray | None = None

    def columns(self) -> list[tuple[int, int, bool]]:
        """Each tag's columns of ``weights`` as (first, end, taught)."""
        n = self.weights.shape[1]
        starts = self.starts.tolist() if self.starts is not None else list(range(len(self.tags)))
        ends = [*starts[1:], n]
        return [(a, b, bool(t)) for a, b, t in zip(starts, ends, self.taught.tolist(), strict=True)]

    def tag_logits(self, vectors: np.ndarray) -> np.ndarray:
        """Raw similarity of every tag for every vector (the best of its phrases): (n, n_tags)."""
        sims = vectors @ self.weights
        if self.starts is not None:
            sims = np.maximum.reduceat(sims, self.starts, axis=1)
        return sims

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """Calibrated probability of every tag for every vector: (n, n_tags) float32."""
        logits = self.tag_logits(vectors) * self.scale + self.bias
        n = len(vectors)
        if self.background.shape[1]:
            bg_logits = (vectors @ self.background) * self.temperature
            # The background is one competitor, however many prompts and templates spell it out.
            bg = _logsumexp(bg_logits, axis=1) - np.log(bg_logits.shape[1])
            denom = np.logaddexp(logits, bg[:, None])
        else:
            bg = np.full(n, -np.inf, np.float32)
            # No background prompts: a tag competes with the whole vocabulary (plain CLIP softmax).
            zero_shot = ~self.taught
            vocab = _logsumexp(logits[:, zero_shot], axis=1) if zero_shot.any() else bg
            denom = np.broadcast_to(vocab[:, None], logits.shape).copy()
        # Zero-shot: p = exp(l) / (exp(l) + exp(bg)).
        probs = np.exp(logits - denom)
        for cols in self.exclusive_groups:
            probs[:, cols] = _exclusive(logits[:, cols], bg)
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
        for start in range(0, len(ids), CHUNK):
            probs = self.probabilities(vectors[start : start + CHUNK])
            passed = probs >= self.thresholds
            if self.max_tags < len(self.tags):
                # Keep only each row's best max_tags (ties broken arbitrarily).
                kth = -np.partition(-probs, self.max_tags - 1, axis=1)[:, self.max_tags - 1 : self.max_tags]
                passed &= probs >= kth
            rows, cols = np.nonzero(passed)
            chunk_ids = ids[start : start + CHUNK]
            out.extend(
                (int(chunk_ids[r]), int(tag_ids[c]), sources[c], float(probs[r, c]))
                for r, c in zip(rows.tolist(), cols.tolist(), strict=True)
            )
        return out


def _exclusive(logits: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Probabilities of an exclusive group's tags (indoors / outdoors; one colour of six).

    Two questions, answered apart: does the group apply at all (its tags together against
    the background), and which of its tags is it (zero-shot classification among them, what
    ranking gets right). The group's best tag gets ``p(group) * share / (share + runner-up's
    share)``: a clear winner gets nearly all the group's probability, a tie between two gets
    half (and neither tag), and every other tag gets its share against the winner's. Splitting
    one probability mass among close rivals, as a plain softmax does, left a photo with no
    tag of a group it plainly belongs to when two of its tags were alike (a star that was a
    little like a cross).
    """
    lse = _logsumexp(logits, axis=1)
    present = 1.0 / (1.0 + np.exp(bg - lse))  # p(the group applies); bg = -inf: 1
    share = np.exp(logits - lse[:, None])
    order = np.argsort(-share, axis=1)
    rows = np.arange(len(share))
    first, second = share[rows, order[:, 0]], share[rows, order[:, 1]] if share.shape[1] > 1 else 0.0
    out = present[:, None] * share / (share + first[:, None])
    out[rows, order[:, 0]] = present * first / (first + second)
    return out


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    return (np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m).squeeze(axis)


def fingerprint(*parts: object) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
