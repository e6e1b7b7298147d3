"""What a person does to tags: name photos, tag them by hand, teach a tag, edit the vocabulary.

Separate from :class:`~indexer.tags.tagger.Tagger`, which keeps the automatic tags
true: every edit here is a writer command on the library, and the vocabulary edits
are followed by a re-tag by their caller (the CLI or the GUI), which reports it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from indexer.errors import NotFoundError, TeachError
from indexer.tags.tagger import Tagger
from indexer.tags.teaching import TeachReport, fit_tag
from store.errors import StoreError
from store.library import LibraryStore
from store.records import TagRecord
from store.tags import TagStore

log = logging.getLogger(__name__)


class TagEditor:
    """User actions on tags, over the library's tag store and its tagger."""

    def __init__(self, tags: TagStore, store: LibraryStore, tagger: Tagger) -> None:
        self.tags = tags
        self.store = store
        self.tagger = tagger

    def resolve_images(self, photos: Sequence[str | int]) -> list[int]:
        """Image ids for paths or ids the user named; unknown ones are a clear error."""
        ids: list[int] = []
        for photo in photos:
            if isinstance(photo, int) or (isinstance(photo, str) and photo.startswith("#") and photo[1:].isdigit()):
                image_id = int(photo) if isinstance(photo, int) else int(photo[1:])
                if image_id not in self.store.images([image_id]):
                    raise NotFoundError(f"No photo in the library has id #{image_id}.")
                ids.append(image_id)
                continue
            path = str(Path(photo).expanduser().resolve())
            rec = self.store.image_by_path(path)
            if rec is None:
                raise NotFoundError(f"{path} is not in the library. Index its folder first: glimpse index FOLDER")
            ids.append(rec.id)
        return ids

    def tag_photos(self, name: str, image_ids: Sequence[int], present: bool = True) -> TagRecord:
        """Put a tag on photos by hand (creating it as a hand-only tag if new), or take it off."""
        tag = self.tags.find(name)
        if tag is None:
            if not present:
                raise NotFoundError(f'There is no tag called "{name}".')
            tag = self.tags.add_tag(name, group="mine", kind="manual")
        self.tags.set_by_user(image_ids, tag.id, present)
        return tag

    def add_tag(self, name: str, prompts: Sequence[str] = (), group: str = "mine") -> TagRecord:
        """A new zero-shot tag (its name is the prompt unless prompts are given)."""
        return self.tags.add_tag(name, group=group, prompts=prompts, kind="prompts")

    def teach(self, name: str, positives: Sequence[int], negatives: Sequence[int] = ()) -> TeachReport:
        """Mark examples, fit a classifier on their vectors, apply it to the whole library.

        The examples become overrides (they carry, or never carry, the tag whatever the
        classifier says), and the estimated precision is measured on examples held out
        of fitting, so the user knows how far to trust the tag.
        """
        if not positives:
            raise TeachError("Mark at least one photo that shows the tag (ideally five or more).")
        tag = self.tags.find(name)
        if tag is None:
            tag = self.tags.add_tag(name, group="mine", kind="example")
        elif tag.kind != "example":
            tag = self.tags.update_tag(tag.id, kind="example")
        self.tags.set_by_user(positives, tag.id, True)
        if negatives:
            self.tags.set_by_user(negatives, tag.id, False)
        pos, neg = self.tags.examples(tag.id)
        vectors = self.tagger.slot.vectors()
        rec = fit_tag(tag, pos, neg, self.store, vectors, self.tagger.background_sample)
        self.tags.save_vectors(vectors.model_id, [rec])
        report = self.tagger.retag()
        counts = self.tags.counts()
        log.info("taught %s from %d+/%d- examples in %.2f s", tag.name, len(pos), len(neg), report.seconds)
        return TeachReport(
            tag.name, len(pos), len(neg), rec.precision, rec.recall, rec.threshold or 0.5, counts.get(tag.id, 0)
        )

    def rename(self, name: str, new_name: str) -> TagRecord:
        return self.tags.update_tag(self.tags.tag(name).id, name=new_name)

    def delete(self, name: str) -> None:
        tag = self.tags.tag(name)
        self.tags.delete_tag(tag.id)

    def edit(
        self,
        name: str,
        prompts: Sequence[str] | None = None,
        add_prompts: Sequence[str] = (),
        enabled: bool | None = None,
        threshold: float | None = None,
        group: str | None = None,
    ) -> TagRecord:
        tag = self.tags.tag(name)
        changes: dict[str, object] = {}
        if prompts is not None or add_prompts:
            base = list(prompts) if prompts is not None else (list(tag.prompts) or [tag.name])
            changes["prompts"] = [*base, *add_prompts]
            if tag.kind == "manual":
                changes["kind"] = "prompts"
        if enabled is not None:
            changes["enabled"] = enabled
        if threshold is not None:
            if not 0.0 < threshold < 1.0:
                raise StoreError("A threshold is a probability between 0 and 1.", title="Bad threshold")
            changes["threshold"] = threshold
        if group is not None:
            changes["group"] = group
        return self.tags.update_tag(tag.id, **changes) if changes else tag
