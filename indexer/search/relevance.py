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
  better than the generic background and better than the photo's best tag does, less a
  margin (:data:`TAG_MARGIN`) because a query usually names one of the tags. A
  wallpaper does not match "a green circle" because "a photo." describes it better;
  a red square does not match "a red circle" because its tags "red" and "square"
  describe it better.
* **Photo queries** (similar photos, objects, a file, a mix of photos and words) have
  no words to compare with. They are calibrated against the library's own scores for
  the query (an even sample of every photo, :data:`store.flat.SAMPLE_ROWS`): a photo
  matches when it stands out from the library as a robust z-score (median and MAD) of
  at least :data:`IMAGE_Z`.
* **The gap structure** of the ranked list then has the last word: a cliff in the
  scores of the matches, much larger than every step above it, ends the matches there
  (:func:`cut`), so near misses just above the calibration line are not listed beside
  the clear hits.

Everything here is NumPy on vectors search already has in hand (the candidates' own
vectors and a sample of scores), so the cutoff costs a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from store.records import DescriptionsRecord

CUTOFF = 0.5  # a strength at least this is a match
# In nats (logits at the model's temperature): how much better than the photo's best tag a
# query may be beaten and still match. "a dog" on a photo whose best tag is "dog" is a match.
TAG_MARGIN = 1.0
IMAGE_Z = 6.0  # how many robust standard deviations above the library a photo must stand
IMAGE_SLOPE = 1.0  # strength per z above IMAGE_Z (logistic)
# A cliff: a step of at least this many nats between two consecutive matches, and at least
# CLIFF_RATIO times every step above it.
CLIFF_NATS = 2.0
CLIFF_RATIO = 3.0
# The temperature a cliff is measured at when the library has no descriptions yet (CLIP's).
DEFAULT_TEMPERATURE = 100.0


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


def text_strengths(scores: np.ndarray, rows: np.ndarray, descriptions: Descriptions) -> np.ndarray:
    """Strength of a text query on each candidate (``scores``: its cosines, ``rows``: the candidates' vectors).

    ``p = e^(T s) / (e^(T s) + e^(T b) + e^(T t - margin))``: the query against the
    background (``b``, the background prompts' log-mean-exp: one competitor however many
    templates it has) and against the photo's best tag phrase (``t``).
    """
    if len(scores) == 0:
        return np.empty(0, np.float32)
    t = descriptions.temperature
    logits = [t * scores.astype(np.float64)]
    competitors = []
    if len(descriptions.background):
        competitors.append(_log_mean_exp(t * (rows @ descriptions.background.T).astype(np.float64), axis=1))
    if len(descriptions.phrases):
        competitors.append(t * (rows @ descriptions.phrases.T).max(axis=1).astype(np.float64) - TAG_MARGIN)
    stacked = np.stack(logits + competitors, axis=1)
    top = stacked.max(axis=1, keepdims=True)
    weights = np.exp(stacked - top)
    return (weights[:, 0] / weights.sum(axis=1)).astype(np.float32)


def image_strengths(scores: np.ndarray, sample: np.ndarray | None) -> np.ndarray:
    """Strength of a photo query on each candidate: how far its score stands above the library's.

    ``sample``: the query's scores on an even sample of the searched photos. Median and
    MAD are robust to the few photos that do match; a sample too small to tell (a tiny
    library) counts the candidates themselves in.
    """
    if len(scores) == 0:
        return np.empty(0, np.float32)
    if sample is None or len(sample) < 32:
        sample = np.concatenate([scores, sample if sample is not None else np.empty(0, np.float32)])
    pool = sample.astype(np.float64)
    median = float(np.median(pool))
    spread = 1.4826 * float(np.median(np.abs(pool - median)))
    spread = max(spread, 1e-3)
    z = (scores.astype(np.float64) - median) / spread
    return (1.0 / (1.0 + np.exp(-IMAGE_SLOPE * (z - IMAGE_Z)))).astype(np.float32)


def cut(scores: np.ndarray, strengths: np.ndarray, temperature: float) -> np.ndarray:
    """The candidates' final strengths: as calibrated, down to the first cliff; below it, less.

    ``scores`` are the candidates' cosines. Among those strong enough (at least
    :data:`CUTOFF`), in score order, a step of at least :data:`CLIFF_NATS` (at
    ``temperature``) that is also :data:`CLIFF_RATIO` times every step above it ends the
    matches: what lies below it is a different kind of answer from what lies above. A
    photo below the cliff keeps its strength times ``e^-(gap)``, its gap in nats to the last
    match above: how much less likely it is than the matches, so no weaker match shows a
    strength above the cutoff.
    """
    out = strengths.astype(np.float32, copy=True)
    matched = [int(i) for i in np.argsort(-scores, kind="stable") if strengths[i] >= CUTOFF]
    logits = temperature * scores.astype(np.float64)
    largest = 0.0
    for j in range(len(matched) - 1):
        step = float(logits[matched[j]] - logits[matched[j + 1]])
        if step >= CLIFF_NATS and step >= CLIFF_RATIO * largest:
            edge = logits[matched[j]]
            below = logits < edge - step + 1e-9  # everything from the cliff down, matched or not
            out[below] = np.minimum(out[below] * np.exp(logits[below] - edge), CUTOFF - 1e-4)
            break
        largest = max(largest, step)
    return out
