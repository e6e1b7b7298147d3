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

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.errors import ModelMismatchError
from indexer.models.embedder import Embedder
from indexer.models.preprocess import PreprocessSpec
from indexer.models.presets import DEFAULT_MODEL, MODEL_ENV
from store.library import LibraryStore
from store.records import ModelRecord
from store.vectors import ModelVectors

log = logging.getLogger(__name__)

ACTIVE_KEY = "model.active"
TARGET_KEY = "model.target"


@dataclass(frozen=True)
class ModelChoice:
    """A model as the user names it: a preset, ``ARCH/TAG``, ``local-dir:``/``hf-hub:``, plus a weights file."""

    name: str
    weights: str | None = None
    key: str | None = None  # the embedding space's exact identity, once the model has loaded

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", model_name(self.name))
        object.__setattr__(self, "weights", _norm(self.weights))

    def same_model(self, other: ModelChoice) -> bool:
        return self.name == other.name and _norm(self.weights) == _norm(other.weights)

    @property
    def display(self) -> str:
        return f"{self.name} (weights {self.weights})" if self.weights else self.name

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "weights": self.weights, "key": self.key}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelChoice:
        data = json.loads(text)
        return cls(str(data["name"]), data.get("weights"), data.get("key"))


def model_name(name: str) -> str:
    """A model name as the library records it: ``local-dir:`` folders as absolute paths, so the
    record means the same from any working directory."""
    if name.startswith("local-dir:"):
        return "local-dir:" + str(Path(name[len("local-dir:") :]).expanduser().resolve())
    return name


def _norm(weights: str | None) -> str | None:
    return str(Path(weights).expanduser().resolve()) if weights else None


def recorded_model(store: LibraryStore, key: str = ACTIVE_KEY) -> ModelChoice | None:
    """The model the library records under ``key`` (None for a new library)."""
    text = store.get_meta(key)
    if not text:
        return None
    try:
        return ModelChoice.from_json(text)
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring a damaged %s record in the library: %r", key, text)
        return None


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


def choose_model(
    recorded: ModelChoice | None, requested: ModelChoice | None, requested_by: str = "--model"
) -> ModelChoice:
    """The model a command runs with: the library's own; a different request is refused."""
    if recorded is None:
        return requested or ModelChoice(DEFAULT_MODEL)
    if requested is not None and not requested.same_model(recorded):
        raise ModelMismatchError(
            f"This library is indexed with {recorded.display}, but {requested_by} asks for "
            f"{requested.display}. Nothing was changed.\n"
            f"  - To use the library as it is, leave out {requested_by}"
            f"{' (unset ' + MODEL_ENV + ')' if requested_by == MODEL_ENV else ''}.\n"
            f"  - To switch the library to {requested.name}, run: glimpse model use {requested.name}"
            f"{' --weights ' + requested.weights if requested.weights else ''}\n"
            "    (every photo is embedded again in the background; search keeps working meanwhile)."
        )
    return recorded


class _CheckedEmbedder:
    """A space's embedder, checked against the library's record the first time it loads.

    The space opens its vectors from the library's record without loading the model
    (a search by a stored photo, a rescan with nothing new never need it); when the
    model does load, its weights must still be the ones the vectors came from.
    """

    def __init__(self, inner: Embedder, space: EmbeddingSpace) -> None:
        self.inner = inner
        self._space = space
        self._checked = False

    def load(self) -> None:
        self.inner.load()
        if not self._checked:
            self._space.check(self.inner.record.key)
            self._checked = True

    @property
    def record(self) -> ModelRecord:
        self.load()
        return self.inner.record

    @property
    def dim(self) -> int:
        self.load()
        return self.inner.dim

    @property
    def preprocess(self) -> PreprocessSpec:
        self.load()
        return self.inner.preprocess

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        self.load()
        return self.inner.embed_images(pixels)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        self.load()
        return self.inner.embed_texts(texts)

    def embed_prompts(self, texts: list[str]) -> np.ndarray:
        """Tag prompts: through the engine's per-model cache where it has one."""
        self.load()
        embed = getattr(self.inner, "embed_prompts", None) or self.inner.embed_texts
        result: np.ndarray = embed(texts)
        return result

    def __getattr__(self, name: str) -> Any:  # logit_scale, device, precision, call counters
        return getattr(self.inner, name)


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
        self._checked = _CheckedEmbedder(embedder, self)
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
        if self.choice is not None and self.choice.key and self.choice.key != loaded_key:
            raise ModelMismatchError(
                f"The weights of {self.choice.display} are not the ones this library was indexed with "
                f"(library: {self.choice.key}, on disk now: {loaded_key}). To index the library again "
                f"with these weights, run: glimpse model use {self.choice.name}"
                f"{' --weights ' + self.choice.weights if self.choice.weights else ''}"
            )

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
