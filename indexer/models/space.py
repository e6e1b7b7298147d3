"""Which model a library uses: its identity, and the embedding space (model + vectors) in use.

A library's vectors only mean something next to the model that made them, so the
library records its model itself (``model.active`` in its ``meta`` table: the name
and weights file the user chose, and the key that pins the exact weights), whatever
chose it: a flag, ``GLIMPSE_MODEL``, the settings dialog. A command that asks for
another model is refused with a way to switch (:class:`ModelMismatchError`), and
nothing is recorded until a model has actually loaded, so a failed load changes
nothing.

While a switch is under way, ``model.target`` names the model being built; search
keeps answering with the active space until the target covers every photo, then
:class:`ModelSlot` swaps them atomically (see ``indexer.live.switch``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from indexer.models.choice import (
    CheckedEmbedder,
    ModelChoice,
    check_weights,
)
from indexer.models.embedder import Embedder
from store.library import LibraryStore
from store.records import ModelRecord
from store.vectors import ModelVectors

log = logging.getLogger(__name__)


def legacy_model(store: LibraryStore, saved: ModelChoice | None) -> ModelChoice | None:
    """A library indexed before it recorded its model: the saved setting, else the model with vectors."""
    if saved is not None:
        return saved
    best: tuple[int, str] | None = None
    for rec in store.models():
        assert rec.id is not None
        count = store.count_embeddings(rec.id)
        if count and (best is None or count > best[0]):
            best = (count, rec.name)
    return ModelChoice(best[1]) if best else None


class EmbeddingSpace:
    """One model and its vectors in this library, opened on first use.

    ``vectors()`` opens the model's vector index. When the library already knows the
    model (its recorded key), that takes no model at all: id and size come from the
    library. Otherwise the model loads (to learn its identity and size) and is
    registered; with ``record_as`` set, the first successful open records the model
    under that meta key if the library has none yet, so a new library learns its
    model from the first command that actually loads one.
    """

    def __init__(
        self,
        store: LibraryStore,
        embedder: Embedder,
        index_dir: Path,
        choice: ModelChoice | None = None,
        save_interval: float = 60.0,
        record_as: str | None = None,
    ) -> None:
        self.store = store
        self._checked = CheckedEmbedder(embedder, self.check)
        self.embedder: Embedder = self._checked
        self.index_dir = index_dir
        self.choice = choice
        self.save_interval = save_interval
        self.record_as = record_as
        self._vectors: ModelVectors | None = None
        self._lock = threading.Lock()

    @property
    def key(self) -> str:
        """The embedding space's identity: from the library's record, else from the loaded model."""
        if self.choice is not None and self.choice.key:
            return self.choice.key
        return self.embedder.record.key

    def embed_prompts(self, texts: list[str]) -> np.ndarray:
        """Tag prompts: through the model's per-machine prompt cache where it has one (the engine)."""
        return self._checked.embed_prompts(texts)

    def check(self, loaded_key: str) -> None:
        """The model that loaded must be the one the library's vectors came from."""
        check_weights(self.choice, loaded_key)

    def vectors(self) -> ModelVectors:
        with self._lock:
            if self._vectors is None:
                known = self._known()
                if known is not None:
                    assert known.id is not None
                    model_id, dim = known.id, known.dim
                else:
                    record = self.embedder.record  # loads (and checks) the model
                    model_id, dim = self.store.register_model(record), record.dim
                    if self.record_as and self.choice is not None and not self.store.get_meta(self.record_as):
                        chosen = ModelChoice(self.choice.name, self.choice.weights, record.key)
                        self.store.set_meta(self.record_as, chosen.to_json())
                        self.choice = chosen
                self._vectors = ModelVectors.open(self.store, model_id, dim, self.index_dir, self.save_interval)
            return self._vectors

    def _known(self) -> ModelRecord | None:
        """The library's record of this space, if the choice names its key and the library has it."""
        if self.choice is None or not self.choice.key:
            return None
        return next((m for m in self.store.models() if m.key == self.choice.key), None)


class ModelSlot:
    """The embedding space that answers searches now; swapped atomically when a model switch completes.

    Search, tagging and indexing read ``space`` once per request, so a request that
    started before a swap finishes with the old space and the next one uses the new.
    """

    def __init__(self, space: EmbeddingSpace) -> None:
        self._space = space
        self._lock = threading.Lock()

    @property
    def space(self) -> EmbeddingSpace:
        with self._lock:
            return self._space

    @property
    def embedder(self) -> Embedder:
        return self.space.embedder

    def vectors(self) -> ModelVectors:
        return self.space.vectors()

    def swap(self, space: EmbeddingSpace) -> EmbeddingSpace:
        with self._lock:
            old, self._space = self._space, space
            return old


def single_space(store: LibraryStore, embedder: Embedder, index_dir: Path, save_interval: float = 60.0) -> ModelSlot:
    """A slot over one model that never switches: for scripts, benchmarks and tests."""
    return ModelSlot(EmbeddingSpace(store, embedder, index_dir, save_interval=save_interval))
