"""Relevance: which of a query's ranked photos match it, and how strongly.

A cosine score means little on its own: its scale differs between models, between
queries ("a dog" scores lower everywhere than "a photo of a dog") and between
photos (some photos sit close to every text). So search never cuts at a fixed
score. It turns each candidate's score into a *match strength* between 0 and 1,
calibrated for that query, and returns the photos whose strength is at least
:data:`CUTOFF`:

* **Text queries** are calibrated per photo against what the library's vocabulary
  can already say about that photo (``store.schema.Description``): the background
  prompts ("a photo.", "a picture.") and each zero-shot tag's phrases. The strength is
  the probability, at the model's own temperature, that the query describes the photo
  better than the generic background and better than the photo's best tag does. A
  wallpaper does not match "a green circle" because "a photo." describes it better;
  a red square does not match "a red circle" when its tags "red" and "square"
  describe it better.
* **Photo queries** (similar photos, objects, a file, a mix of photos and words) have
  no words to compare with. They are calibrated against the library's own scores for
  the query (an even sample of every photo, :data:`store.flat.SAMPLE_ROWS`): a photo
  matches when it stands out from the library as a robust z-score (median and MAD) of
  at least :data:`IMAGE_Z`.
* **The gap structure** of the ranked list then has the last word (:func:`cut`): the
  matches of a query lie together at the top of its list, so a photo that scores far
  below the best match, more than :data:`WINDOW` of the library's spread for this query,
  is a near miss however well it beats its own descriptions; and when nothing beats its
  descriptions, nothing is listed as a match at all.

Everything here is NumPy on vectors search already has in hand (the candidates' own
vectors and a sample of scores), so the cutoff costs a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from store.records import DescriptionsRecord

CUTOFF = 0.5  # a strength at least this is a match
# In nats (logits at the model's temperature): the lead the photo's best tag has over the
# query. A photo matches a query that describes it clearly better than any of its tags does,
# and a tag phrase that says what the query says (text cosine SAME_AS_QUERY or more: "dog"
# for "a dog") is the query itself, not a rival.
TAG_LEAD = 2.0
SAME_AS_QUERY = 0.9
IMAGE_Z = 2.0  # how many robust standard deviations above the library a photo must stand
IMAGE_SLOPE = 1.5  # strength per z above IMAGE_Z (logistic)
# The gap structure: a match must score within WINDOW spreads (robust standard deviations of
# the query's scores over the library) of the best match; SOFTNESS spreads make the edge smooth.
WINDOW = 0.45
SOFTNESS = 0.05


@dataclass(frozen=True)
class Descriptions:
    """What the vocabulary can say about any photo in one model's space, as matrices."""

    background: np.ndarray  # (n_bg, dim) float32 unit vectors
    phrases: np.ndarray  # (n_phrases, dim) float32 unit vectors
    temperature: float

    @classmethod
    def from_record(cls, record: DescriptionsRecord, dim: int) -> Descriptions:
        rows = np.frombuffer(record.vectors, np.float32).reshape(record.count, dim)
        return cls(rows[: record.background], rows[record.background :], record.temperature)

    def __bool__(self) -> bool:
        return bool(len(self.background) or len(self.phrases))


def _log_mean_exp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    return (np.log(np.mean(np.exp(x - m), axis=axis, keepdims=True)) + m).squeeze(axis)


def text_strengths(
    scores: np.ndarray,
    rows: np.ndarray,
    descriptions: Descriptions,
    query: np.ndarray,
    negatives: Sequence[tuple[float, np.ndarray]] = (),
) -> np.ndarray:
    """Strength of a text query on each candidate (``scores``: its cosines, ``rows``: the candidates'
    vectors, ``query``: the query's unit vector).

    ``p = e^(T s) / (e^(T s) + e^(T b) + e^(T t + lead))``: the query against the
    background (``b``, the background prompts' log-mean-exp: one competitor however many
    templates it has) and against the photo's best tag phrase that is not the query itself
    (``t``). A negative term ("beach" - "people") competes too, weighted: a beach full of
    people is described by "people" as well as by "beach".
    """
    if len(scores) == 0:
        return np.empty(0, np.float32)
    t = descriptions.temperature
    logits = [t * scores.astype(np.float64)]
    competitors = []
    if len(descriptions.background):
        competitors.append(_log_mean_exp(t * (rows @ descriptions.background.T).astype(np.float64), axis=1))
    rivals = descriptions.phrases[descriptions.phrases @ query.astype(np.float32) < SAME_AS_QUERY]
    if len(rivals):
        competitors.append(t * (rows @ rivals.T).max(axis=1).astype(np.float64) + TAG_LEAD)
    for weight, negative in negatives:
        competitors.append(t * weight * (rows @ negative).astype(np.float64))
    stacked = np.stack(logits + competitors, axis=1)
    top = stacked.max(axis=1, keepdims=True)
    weights = np.exp(stacked - top)
    return (weights[:, 0] / weights.sum(axis=1)).astype(np.float32)


def spread(scores: np.ndarray, sample: np.ndarray | None) -> tuple[float, float]:
    """The library's median and robust spread (1.4826 MAD) of a query's scores, from the sample of
    every searched photo; a sample too small to tell (a tiny library) counts the candidates in."""
    if sample is None or len(sample) < 32:
        sample = np.concatenate([scores, sample if sample is not None else np.empty(0, np.float32)])
    pool = sample.astype(np.float64)
    median = float(np.median(pool))
    return median, max(1.4826 * float(np.median(np.abs(pool - median))), 1e-3)


def image_strengths(scores: np.ndarray, sample: np.ndarray | None) -> np.ndarray:
    """Strength of a photo query on each candidate: how far its score stands above the library's
    (median and MAD, robust to the few photos that do match)."""
    if len(scores) == 0:
        return np.empty(0, np.float32)
    median, sigma = spread(scores, sample)
    z = (scores.astype(np.float64) - median) / sigma
    return (1.0 / (1.0 + np.exp(-IMAGE_SLOPE * (z - IMAGE_Z)))).astype(np.float32)


def cut(scores: np.ndarray, strengths: np.ndarray, sample: np.ndarray | None) -> np.ndarray:
    """The candidates' final strengths: as calibrated, within the window of the best match.

    ``scores`` are the candidates' cosines, ``sample`` the query's scores on an even sample
    of the library. The matches of a query lie close together at the top of its ranked
    list; a photo that scores far below the best match (more than :data:`WINDOW` of the
    library's spread for this query) is a different kind of answer, a near miss, however
    well it beats its own descriptions. Its strength is lowered smoothly below the cutoff.
    """
    out = strengths.astype(np.float32, copy=True)
    matched = strengths >= CUTOFF
    if not matched.any():
        return out
    _median, sigma = spread(scores, sample)
    best = float(scores[matched].max())
    below = (best - scores.astype(np.float64)) / sigma  # in spreads under the best match
    edge = 1.0 / (1.0 + np.exp(-(WINDOW - below) / SOFTNESS))
    return np.minimum(out, edge).astype(np.float32)
