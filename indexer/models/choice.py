"""Which model a library uses, as the user names it and as the library records it.

A library's vectors only mean something next to the model that made them, so the
library records its model itself (``model.active`` in its ``meta`` table: the name
and weights file the user chose, and the key that pins the exact weights), whatever
chose it: a flag, ``GLIMPSE_MODEL``, the settings dialog. A command that asks for
another model is refused with a way to switch (:class:`ModelMismatchError`).

This module imports neither the store's SQLAlchemy layer nor a model library: a
one-shot search on a read-only snapshot (``indexer.cli.snapshot``) decides its
model from here too.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from indexer.errors import ModelMismatchError
from indexer.models.embedder import Embedder
from indexer.models.preprocess import PreprocessSpec
from indexer.models.presets import DEFAULT_MODEL, MODEL_ENV, WEIGHTS_ENV, default_model
from store.records import ModelRecord

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


class MetaReader(Protocol):
    def get_meta(self, key: str) -> str | None: ...


def recorded_model(store: MetaReader, key: str = ACTIVE_KEY) -> ModelChoice | None:
    """The model the library records under ``key`` (None for a new library)."""
    text = store.get_meta(key)
    if not text:
        return None
    try:
        return ModelChoice.from_json(text)
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring a damaged %s record in the library: %r", key, text)
        return None


def choose_model(
    recorded: ModelChoice | None, requested: ModelChoice | None, requested_by: str = "--model"
) -> ModelChoice:
    """The model a command runs with: the library's own; a different request is refused. A new
    library gets what was asked for, else the default for the system's language (``default_model``)."""
    if recorded is None:
        return requested or ModelChoice(default_model()[0])
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


def requested_model_from_env(environ: dict[str, str] | None = None) -> tuple[ModelChoice | None, str]:
    """The model ``GLIMPSE_MODEL`` / ``GLIMPSE_WEIGHTS`` ask for (for a new library), and which variable asked."""
    env = os.environ if environ is None else environ
    name, weights = env.get(MODEL_ENV), env.get(WEIGHTS_ENV)
    if not (name or weights):
        return None, ""
    return ModelChoice(name or DEFAULT_MODEL, weights), MODEL_ENV if name else WEIGHTS_ENV


def check_weights(choice: ModelChoice | None, loaded_key: str) -> None:
    """The model that loaded must be the one the library's vectors came from (``choice.key``)."""
    if choice is not None and choice.key and choice.key != loaded_key:
        raise ModelMismatchError(
            f"The weights of {choice.display} are not the ones this library was indexed with "
            f"(library: {choice.key}, on disk now: {loaded_key}). To index the library again "
            f"with these weights, run: glimpse model use {choice.name}"
            f"{' --weights ' + choice.weights if choice.weights else ''}"
        )


class CheckedEmbedder:
    """A space's embedder, checked against the library's record the first time it loads.

    The space opens its vectors from the library's record without loading the model
    (a search by a stored photo, a rescan with nothing new never need it); when the
    model does load, its weights must still be the ones the vectors came from
    (``check``: :func:`check_weights` for the space's choice).
    """

    def __init__(self, inner: Embedder, check: Callable[[str], None]) -> None:
        self.inner = inner
        self._check = check
        self._checked = False

    def load(self) -> None:
        self.inner.load()
        if not self._checked:
            self._check(self.inner.record.key)
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
