"""Repository for tags: the vocabulary, the tags on each photo, overrides, tag vectors.

``image_tags`` always holds the tags a photo carries *now*: automatic rows
(zero-shot or taught) minus what the user removed, plus what the user added. The
user's decisions live separately in ``tag_overrides``, so re-tagging can delete
and recompute every automatic row and still honour them. Re-tagging a library
replaces all automatic rows in one transaction: a kill leaves the old tags or
the new ones, never a mix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update

from store import reads
from store.database import Database, utc_now
from store.errors import InvalidNameError, NotFoundError, StoreError
from store.reads import chunks
from store.records import DescriptionsRecord, ImageTagRecord, TagRecord, TagSource, TagVectorRecord
from store.schema import Description, Image, ImageTag, Meta, Tag, TagOverride, TagVector

_tags = Tag
_image_tags = ImageTag
_overrides = TagOverride
_tag_vectors = TagVector
_meta = Meta
_images = Image

T = TypeVar("T")

# One automatic tag on one photo: (image_id, tag_id, source, score).
Assignment = tuple[int, int, str, float]


def _tag(row: Any) -> TagRecord:
    m = row._mapping
    return TagRecord(
        id=m["id"],
        name=m["name"],
        group=m["grp"],
        kind=m["kind"],
        prompts=tuple(json.loads(m["prompts"] or "[]")),
        enabled=bool(m["enabled"]),
        threshold=m["threshold"],
    )


MAX_TAG_NAME = 64


def check_tag_name(name: str) -> str:
    """``name`` stripped, if it can be a tag: printable UTF-8 (no control characters, nothing
    an XMP sidecar cannot hold) and at most ``MAX_TAG_NAME`` characters; else a clear error."""
    name = name.strip()
    if not name:
        raise InvalidNameError("A tag needs a name.")
    if len(name) > MAX_TAG_NAME:
        raise InvalidNameError(f"A tag name can be at most {MAX_TAG_NAME} characters ({len(name)} given).")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidNameError(
            "A tag name must be text (UTF-8); this one holds bytes that are not: "
            + name.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        ) from None
    bad = [ch for ch in name if not ch.isprintable() and ch != " "]
    if bad or "|" in name:
        shown = ", ".join(sorted({repr(ch) for ch in bad} | ({"'|'"} if "|" in name else set())))
        raise InvalidNameError(
            f"A tag name cannot hold control characters or '|' (the XMP hierarchy separator): {shown}."
        )
    return name


def _named(conn: Connection, name: str) -> Any:
    """The row of the tag called ``name`` (case-insensitive), or None."""
    return conn.execute(select(_tags).where(func.lower(_tags.c.name) == name.strip().lower())).first()


def removed_pairs(conn: Connection, image_ids: Sequence[int] | None = None) -> set[tuple[int, int]]:
    """(image_id, tag_id) pairs the user took a tag off (or put one on): automatic rows skip them."""
    query = select(_overrides.c.image_id, _overrides.c.tag_id)
    if image_ids is None:
        return {(r[0], r[1]) for r in conn.execute(query)}
    out: set[tuple[int, int]] = set()
    for chunk in chunks(list(image_ids)):
        out |= {(r[0], r[1]) for r in conn.execute(query.where(_overrides.c.image_id.in_(chunk)))}
    return out


def write_automatic_tags(conn: Connection, image_ids: Sequence[int], rows: Sequence[Assignment]) -> None:
    """Replace the automatic tags of ``image_ids`` with ``rows``, inside the caller's transaction.

    Used when photos are (re-)embedded, so their tags change with their vectors in the
    same commit. Pairs the user decided on are left as the user left them.
    """
    if not image_ids:
        return
    for chunk in chunks(list(image_ids)):
        conn.execute(
            delete(_image_tags).where(
                and_(_image_tags.c.image_id.in_(chunk), _image_tags.c.source.in_(TagSource.AUTOMATIC))
            )
        )
    if rows:
        _insert_automatic(conn, rows, removed_pairs(conn, image_ids))


def _insert_automatic(conn: Connection, rows: Sequence[Assignment], decided: set[tuple[int, int]]) -> int:
    """Insert automatic tag rows except on pairs the user decided on; returns how many went in."""
    keep = [r for r in rows if (r[0], r[1]) not in decided]
    if keep:
        conn.exec_driver_sql("INSERT INTO image_tags (image_id, tag_id, source, score) VALUES (?, ?, ?, ?)", keep)
    return len(keep)


class TagStore:
    """Tags in the library's database (the same SQLite file as :class:`LibraryStore`).

    Reads use the read engine; every change is a command on the library's writer.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.engine: Engine = db.read

    def _write(self, fn: Callable[[Connection], T]) -> T:
        return self.db.writer.call(fn)

    # ---- vocabulary ----------------------------------------------------------------------

    def seed(self, tags: Sequence[tuple[str, str, Sequence[str]]], key: str) -> bool:
        """Load a default vocabulary once per library (``key`` names it).

        Seeding is remembered, so a user who deletes default tags does not get them back.
        Returns whether anything was added.
        """

        def command(conn: Connection) -> Any:
            meta_key = f"vocabulary_seeded:{key}"
            if conn.execute(select(_meta.c.value).where(_meta.c.key == meta_key)).first():
                return False
            existing = set(conn.execute(select(_tags.c.name)).scalars())
            now = utc_now()
            rows = [
                {"name": name, "grp": group, "kind": "prompts", "prompts": json.dumps(list(prompts)),
                 "enabled": True, "threshold": None, "created_at": now}
                for name, group, prompts in tags
                if name not in existing
            ]  # fmt: skip
            if rows:
                conn.execute(insert(_tags), rows)
            conn.execute(insert(_meta).prefix_with("OR REPLACE"), [{"key": meta_key, "value": now.isoformat()}])
            return bool(rows)

        return bool(self._write(command))

    def tags(self, include_disabled: bool = True) -> list[TagRecord]:
        query = select(_tags).order_by(_tags.c.grp, _tags.c.name)
        if not include_disabled:
            query = query.where(_tags.c.enabled.is_(True))
        with self.engine.connect() as conn:
            return [_tag(r) for r in conn.execute(query)]

    def tag(self, name: str) -> TagRecord:
        """The tag called ``name`` (case-insensitive), or :class:`NotFoundError`."""
        with self.db.reading() as conn:
            return reads.tag(conn, name)

    def find(self, name: str) -> TagRecord | None:
        try:
            return self.tag(name)
        except NotFoundError:
            return None

    def add_tag(
        self,
        name: str,
        group: str = "other",
        prompts: Sequence[str] = (),
        kind: str = "prompts",
        threshold: float | None = None,
    ) -> TagRecord:
        name = check_tag_name(name)

        def command(conn: Connection) -> Any:
            # Checked inside the command: no other write can add the same name in between.
            if _named(conn, name) is not None:
                raise StoreError(f'A tag called "{name}" already exists.', title="Tag exists")
            conn.execute(
                insert(_tags).values(
                    name=name,
                    grp=group,
                    kind=kind,
                    prompts=json.dumps(list(prompts)),
                    enabled=True,
                    threshold=threshold,
                    created_at=utc_now(),
                )
            )

        self._write(command)
        return self.tag(name)

    def update_tag(self, tag_id: int, **changes: Any) -> TagRecord:
        """Change ``name``, ``group``, ``kind``, ``prompts``, ``enabled`` or ``threshold``."""
        values: dict[str, Any] = {}
        for key, value in changes.items():
            if key == "prompts":
                values["prompts"] = json.dumps(list(value))
            elif key == "group":
                values["grp"] = value
            elif key == "name":
                values["name"] = check_tag_name(value)
            elif key in ("kind", "enabled", "threshold"):
                values[key] = value
            else:
                raise ValueError(f"unknown tag field {key}")

        def command(conn: Connection) -> Any:
            if "name" in values:
                other = _named(conn, values["name"])
                if other is not None and other.id != tag_id:
                    raise StoreError(f'A tag called "{values["name"]}" already exists.', title="Tag exists")
            conn.execute(update(_tags).where(_tags.c.id == tag_id).values(**values))
            return conn.execute(select(_tags).where(_tags.c.id == tag_id)).first()

        row = self._write(command)
        if row is None:
            raise NotFoundError(f"Tag #{tag_id} no longer exists.")
        return _tag(row)

    def delete_tag(self, tag_id: int) -> None:
        """Delete a tag with everything hanging off it (photo tags, overrides, vectors)."""

        def command(conn: Connection) -> Any:
            conn.execute(delete(_tags).where(_tags.c.id == tag_id))

        self._write(command)

    # ---- tags on photos ------------------------------------------------------------------

    def counts(self) -> dict[int, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(_image_tags.c.tag_id, func.count()).group_by(_image_tags.c.tag_id))
            return {r[0]: int(r[1]) for r in rows}

    def tags_of(self, image_ids: Sequence[int]) -> dict[int, list[ImageTagRecord]]:
        """The tags each photo carries, best first (tags the user added first of all)."""
        with self.db.reading() as conn:
            return reads.tags_of(conn, image_ids)

    def image_ids(self, all_of: Sequence[int] = (), none_of: Sequence[int] = ()) -> np.ndarray:
        """Ids of photos carrying every tag in ``all_of`` and none in ``none_of`` (all photos if none)."""
        with self.db.reading() as conn:
            return reads.image_ids(conn, all_of, none_of)

    def images_with_tag(self, tag_id: int, limit: int | None = None) -> list[tuple[int, float, str]]:
        """(image_id, score, source) of photos carrying a tag: hand-added first, then by score."""
        with self.db.reading() as conn:
            return reads.images_with_tag(conn, tag_id, limit)

    def set_by_user(self, image_ids: Sequence[int], tag_id: int, present: bool) -> None:
        """The user puts a tag on photos, or takes it off: this wins over every re-tagging."""
        now = utc_now()

        def command(conn: Connection) -> Any:
            conn.execute(
                insert(_overrides).prefix_with("OR REPLACE"),
                [{"image_id": i, "tag_id": tag_id, "present": present, "created_at": now} for i in image_ids],
            )
            for chunk in chunks(list(image_ids)):
                conn.execute(
                    delete(_image_tags).where(and_(_image_tags.c.tag_id == tag_id, _image_tags.c.image_id.in_(chunk)))
                )
            if present:
                conn.execute(
                    insert(_image_tags),
                    [{"image_id": i, "tag_id": tag_id, "source": TagSource.USER, "score": 1.0} for i in image_ids],
                )

        self._write(command)

    def clear_by_user(self, image_ids: Sequence[int], tag_id: int) -> None:
        """Forget the user's decision on these photos (the automatic tagging decides again)."""

        def command(conn: Connection) -> Any:
            for chunk in chunks(list(image_ids)):
                conn.execute(
                    delete(_overrides).where(and_(_overrides.c.tag_id == tag_id, _overrides.c.image_id.in_(chunk)))
                )
                conn.execute(
                    delete(_image_tags).where(
                        and_(
                            _image_tags.c.tag_id == tag_id,
                            _image_tags.c.image_id.in_(chunk),
                            _image_tags.c.source == TagSource.USER,
                        )
                    )
                )

        self._write(command)

    def examples(self, tag_id: int) -> tuple[list[int], list[int]]:
        """(positives, negatives): photos the user put this tag on, and took it off."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_overrides.c.image_id, _overrides.c.present)
                .where(_overrides.c.tag_id == tag_id)
                .order_by(_overrides.c.image_id)
            ).all()
        return [r[0] for r in rows if r[1]], [r[0] for r in rows if not r[1]]

    def replace_automatic(self, rows: Sequence[Assignment]) -> int:
        """Re-tagging: swap every automatic row for ``rows``.

        One transaction, so readers see the old tags until the new ones are complete.
        Returns how many rows were written.
        """

        def command(conn: Connection) -> Any:
            conn.execute(delete(_image_tags).where(_image_tags.c.source.in_(TagSource.AUTOMATIC)))
            return _insert_automatic(conn, rows, removed_pairs(conn))

        return int(self._write(command))

    # ---- per-model tag vectors -----------------------------------------------------------

    def vectors(self, model_id: int) -> dict[int, TagVectorRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(_tag_vectors).where(_tag_vectors.c.model_id == model_id))
            return {
                r.tag_id: TagVectorRecord(r.tag_id, r.fingerprint, r.vector, r.bias, r.threshold, r.precision, r.recall)
                for r in rows
            }

    def save_vectors(self, model_id: int, records: Sequence[TagVectorRecord]) -> None:
        if not records:
            return

        def command(conn: Connection) -> Any:
            conn.execute(
                insert(_tag_vectors).prefix_with("OR REPLACE"),
                [
                    {
                        "tag_id": r.tag_id,
                        "model_id": model_id,
                        "fingerprint": r.fingerprint,
                        "vector": r.vector,
                        "bias": r.bias,
                        "threshold": r.threshold,
                        "precision": r.precision,
                        "recall": r.recall,
                    }
                    for r in records
                ],
            )

        self._write(command)

    # ---- what the vocabulary can say about any photo (search's calibration) --------------

    def descriptions(self, model_id: int) -> DescriptionsRecord | None:
        with self.db.reading() as conn:
            return reads.descriptions(conn, model_id)

    def descriptions_key(self, model_id: int) -> str | None:
        with self.db.reading() as conn:
            return reads.descriptions_key(conn, model_id)

    def save_descriptions(self, record: DescriptionsRecord) -> None:
        def command(conn: Connection) -> Any:
            conn.execute(
                insert(Description).prefix_with("OR REPLACE"),
                [
                    {
                        "model_id": record.model_id,
                        "key": record.key,
                        "temperature": record.temperature,
                        "background": record.background,
                        "count": record.count,
                        "vectors": record.vectors,
                    }
                ],
            )

        self._write(command)
