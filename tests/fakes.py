"""Test doubles (tests only): an embedder whose vectors are chosen by the test."""

from __future__ import annotations

import json

import numpy as np

from indexer.decode import PreprocessSpec
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
