"""Teaching a tag by example: a classifier on stored vectors, and an honest estimate of how good it is.

A few hundred examples in a few hundred dimensions: Newton's method converges in
under ten steps with NumPy alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from indexer.errors import TeachError
from indexer.tags.model import fingerprint
from store.library import LibraryStore
from store.records import TagRecord, TagVectorRecord
from store.vectors import ModelVectors


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


def fit_tag(
    tag: TagRecord,
    pos: Sequence[int],
    neg: Sequence[int],
    store: LibraryStore,
    vectors: ModelVectors,
    background_sample: int = 2000,
) -> TagVectorRecord:
    """Fit a taught tag's classifier on the stored vectors of its examples and a background sample."""
    dim = vectors.dim

    def load(ids: Sequence[int]) -> np.ndarray:
        got = [store.embedding(i, vectors.model_id, dim) for i in ids]
        return np.stack([g for g in got if g is not None]) if any(g is not None for g in got) else np.empty((0, dim))

    xp, xn = load(pos), load(neg)
    if len(xp) == 0:
        raise TeachError(f'None of the photos marked "{tag.name}" has been indexed yet.')
    # Unlabelled background: a seeded sample of the library, minus the examples.
    # Sorted, so the seeded sample depends on the library, not on the order batches landed in the index.
    pool = np.setdiff1d(vectors.index.ids(), np.asarray([*pos, *neg], np.int64))
    rng = np.random.default_rng(len(pool))
    sample = rng.choice(pool, min(background_sample, len(pool)), replace=False) if len(pool) else pool
    xu = vectors.index.get(sample)
    if len(xn) + len(xu) == 0:
        raise TeachError("The library has no other photos to tell the tag apart from.")
    x = np.vstack([xp, xn, xu]).astype(np.float32)
    y = np.concatenate([np.ones(len(xp)), np.zeros(len(xn) + len(xu))])
    unl = np.concatenate([np.zeros(len(xp) + len(xn), bool), np.ones(len(xu), bool)])
    threshold, precision, recall = cross_validate(x, y, unl)
    w, b = fit_pu(x, y, unl)
    fp = fingerprint("example", list(pos), list(neg))
    return TagVectorRecord(tag.id, fp, w.tobytes(), b, threshold, precision, recall)


def cross_validate(x: np.ndarray, y: np.ndarray, unl: np.ndarray) -> tuple[float, float | None, float | None]:
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
    # unlabelled photos, or the strongest counter-example if higher).
    weakest = float(scores[y == 1].min())
    rest = [float(np.quantile(scores[unl], 0.95))] if unl.any() else []
    if ((y == 0) & ~unl).any():
        rest.append(float(scores[(y == 0) & ~unl].max()))
    threshold = min((weakest + max(rest)) / 2, weakest) if rest else weakest
    predicted = scores >= threshold
    tp = float((predicted & (y == 1)).sum())
    recall = tp / n_pos
    # Precision only on photos someone labelled: held-out positives against held-out
    # counter-examples. Counting unlabelled photos that pass as wrong (the old estimate)
    # reported 42% for a tag whose every photo was right, since finding unlabelled photos
    # that show the tag is the point of teaching. Without counter-examples there is nothing
    # to measure precision on, and it is reported as unknown.
    labelled_negative = (y == 0) & ~unl
    if not labelled_negative.any():
        return threshold, None, round(recall, 4)
    fp = float((predicted & labelled_negative).sum())
    precision = tp / max(tp + fp, 1.0)
    return threshold, round(precision, 4), round(recall, 4)
