"""Switching a library to another model without downtime.

Immich and rclip re-index from scratch, and search is empty until they finish.
Here the new model (the *target*, ``model.target`` in the library) embeds every
photo in the background while search keeps answering with the active model's
vectors. When the target covers every photo, one writer command makes it the
active model, recomputes the automatic tags in its space and drops the old
model's vectors; search moves over between two queries (:class:`ModelSlot`).

Everything is committed batch by batch, so a kill in the middle resumes where it
stopped: the target's vectors are already in the library and only the photos
without one are embedded again. A failed load of the target changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from pathlib import Path

from indexer.ingest.pipeline import Control, IndexingPipeline, IndexReport, Progress
from indexer.models.choice import ACTIVE_KEY, TARGET_KEY, ModelChoice, recorded_model
from indexer.models.space import EmbeddingSpace, ModelSlot
from indexer.tags.tagger import Tagger
from store.flat import index_path
from store.library import LibraryStore

log = logging.getLogger(__name__)


class _NotYet(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Photos arrived since the target's last pass: the swap waits for the next one."""


@dataclass(frozen=True)
class SwitchState:
    """Where a switch stands, for ``glimpse status`` and the GUI."""

    active: ModelChoice | None
    target: ModelChoice | None
    done: int = 0
    total: int = 0


class ModelSwitch:
    """Starts, advances, completes and cancels a library's move to another model."""

    def __init__(
        self,
        store: LibraryStore,
        slot: ModelSlot,
        tagger: Tagger,
        make_space: Callable[[ModelChoice], EmbeddingSpace],
        make_pipeline: Callable[[ModelSlot], IndexingPipeline],
        index_dir: Path,
    ) -> None:
        self.store = store
        self.slot = slot
        self.tagger = tagger
        self._make_space = make_space
        self._make_pipeline = make_pipeline
        self.index_dir = index_dir
        self._target: EmbeddingSpace | None = None

    # ---- state ---------------------------------------------------------------------------

    def target(self) -> ModelChoice | None:
        return recorded_model(self.store, TARGET_KEY)

    def state(self) -> SwitchState:
        active = recorded_model(self.store, ACTIVE_KEY)
        target = self.target()
        if target is None or target.key is None:
            return SwitchState(active, target)
        model_id = self.store.find_model(target.key)
        done = self.store.count_embeddings(model_id) if model_id is not None else 0
        counts = self.store.status_counts()
        return SwitchState(active, target, done, counts["indexed"] + counts["pending"])

    # ---- starting ------------------------------------------------------------------------

    def begin(self, choice: ModelChoice) -> str:
        """Make ``choice`` the library's model: at once for an empty library, else in the background.

        Loads the model first: if that fails the library is left exactly as it was.
        Returns "current", "switched" (nothing to re-embed) or "started".
        """
        # A library indexed before it recorded its model has its model in the slot only.
        active = recorded_model(self.store, ACTIVE_KEY) or self.slot.space.choice
        current = self.target()
        if active is not None and choice.same_model(active):
            if current is not None:
                self.cancel()
            return "current"
        if current is not None and choice.same_model(current):
            return "started"
        space = self._make_space(choice)
        vectors = space.vectors()  # loads the weights: a failure raises before anything is written
        record = replace(choice, key=space.embedder.record.key)
        if current is not None:
            self.cancel()
        has_photos = any(self.store.status_counts()[s] for s in ("indexed", "pending"))
        if not has_photos:  # nothing to embed again: the new model takes over at once
            self._target = space
            self.store.set_meta(TARGET_KEY, record.to_json())
            self._swap(space, record)
            return "switched"
        self.store.set_meta(TARGET_KEY, record.to_json())
        self._target = space
        log.info("switching the library to %s (model id %d) in the background", record.display, vectors.model_id)
        return "started"

    def cancel(self) -> None:
        """Stop a switch and drop what the target had embedded so far."""
        target = self.target()
        if target is None:
            return
        model_id = self.store.find_model(target.key) if target.key else None

        def command(_conn: object) -> None:
            self.store.set_meta(TARGET_KEY, None)
            if model_id is not None and self.slot.vectors().model_id != model_id:
                self.store.drop_model(model_id)

        self.store.write(command)
        if model_id is not None:
            index_path(self.index_dir, model_id).unlink(missing_ok=True)
        self._target = None

    # ---- advancing -----------------------------------------------------------------------

    def _target_space(self, choice: ModelChoice) -> EmbeddingSpace:
        if self._target is None:
            self._target = self._make_space(choice)
        return self._target

    def run(self, control: Control | None = None, background: bool = False) -> Generator[Progress, None, bool]:
        """Embed every photo the target lacks, then swap if it covers the library. Returns whether it swapped."""
        choice = self.target()
        if choice is None:
            return False
        control = control or Control()
        space = self._target_space(choice)
        pipeline = self._make_pipeline(ModelSlot(space))
        report = IndexReport()
        for progress in pipeline.index_pending(None, control, report, background=background):
            yield replace(progress, phase="switching" if progress.phase == "indexing" else progress.phase)
        if control.cancelled:
            return False
        yield Progress("switching", report.indexed, report.indexed, report.failed, current_path="swapping models")
        return self.complete()

    def complete(self) -> bool:
        """Swap if the target has a vector for every photo; re-tag in the new space in the same command."""
        choice = self.target()
        if choice is None:
            return False
        space = self._target_space(choice)
        model_id = space.vectors().model_id
        if self.store.pending_images(model_id):
            return False
        record = replace(choice, key=space.embedder.record.key)
        try:
            # The library keeps its vocabulary (its tags are the user's); only their vectors are new.
            self.tagger.retag(space, before_write=lambda _conn: self._swap(space, record))
        except _NotYet:
            return False
        for stale in self.index_dir.glob("model-*.faiss"):
            if stale != index_path(self.index_dir, model_id):
                stale.unlink(missing_ok=True)
        log.info("the library now uses %s", record.display)
        return True

    def _swap(self, new: EmbeddingSpace, record: ModelChoice) -> None:
        """Inside a writer command: make ``new`` the active model and forget ``old``'s vectors."""

        def command(_conn: object) -> None:
            new_id = new.vectors().model_id
            if self.store.pending_images(new_id):  # committed state: nothing can land meanwhile
                raise _NotYet
            self.store.set_meta(ACTIVE_KEY, record.to_json())
            self.store.set_meta(TARGET_KEY, None)
            for rec in self.store.models():  # the old model's vectors, tag vectors and regions go
                if rec.id is not None and rec.id != new_id:
                    self.store.drop_model(rec.id)
            new.record_as = ACTIVE_KEY
            new.choice = record
            self.slot.swap(new)
            self._target = None

        self.store.write(command)
