"""Test doubles (tests only): an embedder whose vectors are chosen by the test."""

from __future__ import annotations

import json

import numpy as np

from indexer.models.preprocess import PreprocessSpec
from store.records import ModelRecord


class FakeEmbedder:
    """Texts map to given vectors; an image's vector is its mean colour (so tests can predict it)."""

    def __init__(self, texts: dict[str, list[float]], dim: int = 3) -> None:
        self.texts = {k: np.asarray(v, np.float32) for k, v in texts.items()}
        self._dim = dim
        self.image_calls = 0
        self.text_calls = 0
        self._preprocess = PreprocessSpec(size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def load(self) -> None:
        pass

    @property
    def record(self) -> ModelRecord:
        return ModelRecord(key=f"fake/{self._dim}", name="fake", dim=self._dim, preprocess=json.dumps({"size": 8}))

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def preprocess(self) -> PreprocessSpec:
        return self._preprocess

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        self.image_calls += 1
        v = pixels.reshape(len(pixels), -1, 3).mean(axis=1).astype(np.float32)[:, : self._dim] + 1e-3
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        self.text_calls += 1
        v = np.stack([self.texts[t] for t in texts])
        return v / np.linalg.norm(v, axis=1, keepdims=True)


class FloodFillSegmenter:
    """A segmenter double: the mask is the region of similar colour around the positive click.

    Good enough for toy-world scenes (flat shapes on a flat background), and it counts
    encodings so tests can check the "encode once per photo" contract of callers.
    """

    def __init__(self, tolerance: int = 60) -> None:
        self.tolerance = tolerance
        self.encoder_calls = 0
        self.image: np.ndarray | None = None
        self._key: str | None = None
        self.calls: list[tuple[object, object, object]] = []

    def set_image(self, image: np.ndarray, key: str | None = None) -> None:
        if key is None or key != self._key:
            self.encoder_calls += 1
        self.image, self._key = image, key

    def predict(self, points, labels, box=None):  # type: ignore[no-untyped-def]
        from collections import deque

        from indexer.segment.sam import Prediction

        assert self.image is not None
        self.calls.append((None if points is None else points.copy(), labels, box))
        h, w = self.image.shape[:2]
        mask = np.zeros((h, w), bool)
        if points is not None:
            for (x, y), label in zip(points, labels, strict=True):
                if label != 1:
                    continue
                x, y = round(float(x)), round(float(y))
                seed = self.image[y, x].astype(int)
                close = np.abs(self.image.astype(int) - seed).sum(axis=2) <= self.tolerance
                queue = deque([(y, x)])
                while queue:
                    cy, cx = queue.popleft()
                    if 0 <= cy < h and 0 <= cx < w and close[cy, cx] and not mask[cy, cx]:
                        mask[cy, cx] = True
                        queue.extend(((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)))
        elif box is not None:
            x0, y0, x1, y1 = (round(float(v)) for v in box)
            mask[y0:y1, x0:x1] = True
        whole = np.ones((h, w), bool)
        return Prediction(np.stack([mask, mask, whole]), np.array([0.95, 0.6, 0.1], np.float32))
