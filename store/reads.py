"""The library's read queries, in plain SQL on a standard-library ``sqlite3`` connection.

Search and its filters read a handful of things: the model records, the vector index's
state, the photos behind result ids, tags. These queries exist once, here, and serve
two callers:

* :class:`store.library.LibraryStore` and :class:`store.tags.TagStore` run them on the
  raw connection under their SQLAlchemy engine (inside a read transaction);
* :class:`store.snapshot.LibrarySnapshot` runs them on its own read-only connection, so
  a one-shot ``glimpse search`` never imports SQLAlchemy (about 0.13 s and 26 MB of
  a 0.5 s command; see ``docs/performance.md``).

Writes, the schema and migrations stay on SQLAlchemy Core in ``store.library`` and
``store.database``; nothing here changes the database.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime

import numpy as np

from store.errors import NotFoundError
from store.filenames import from_db, to_db
from store.records import (
    DescriptionsRecord,
    ImageRecord,
    ImageTagRecord,
    IndexStateRecord,
    ModelRecord,
    TagRecord,
    TagSource,
)

CHUNK = 5000

_IMAGE_COLUMNS = (
    "id, path, folder_id, size, mtime_ns, status, width, height, taken_at, camera_make, camera_model, "
    "error, thumbnail_key, content_hash, fingerprint"
)


def chunks(items: Sequence[int], size: int = CHUNK) -> Iterator[Sequence[int]]:
    """``items`` in slices small enough for one ``IN (...)`` each."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def parse_time(value: str | datetime | None) -> datetime | None:
    """A stored timestamp (SQLAlchemy writes naive ``YYYY-MM-DD HH:MM:SS.ffffff`` text) as a datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _image(row: tuple[object, ...]) -> ImageRecord:
    (id_, path, folder_id, size, mtime_ns, status, width, height, taken_at, make, model, error, thumb, digest, fp) = row
    return ImageRecord(
        id=int(id_),  # type: ignore[call-overload]
        path=from_db(str(path)),
        folder_id=folder_id,  # type: ignore[arg-type]
        size=size,  # type: ignore[arg-type]
        mtime_ns=mtime_ns,  # type: ignore[arg-type]
        status=str(status),
        width=width,  # type: ignore[arg-type]
        height=height,  # type: ignore[arg-type]
        taken_at=parse_time(taken_at),  # type: ignore[arg-type]
        camera_make=make,  # type: ignore[arg-type]
        camera_model=model,  # type: ignore[arg-type]
        error=error,  # type: ignore[arg-type]
        thumbnail_key=thumb,  # type: ignore[arg-type]
        content_hash=digest,  # type: ignore[arg-type]
        fingerprint=None if fp is None else int(fp) & (2**64 - 1),  # type: ignore[call-overload]
    )


def under_bounds(path: str) -> tuple[str, str]:
    """Bounds for a range query that selects every path strictly under a folder.

    ``path + os.sep`` up to the next character after the separator: a range on
    the unique index instead of a LIKE, which would need escaping and scan.
    """
    prefix = path.rstrip(os.sep) + os.sep
    return prefix, prefix[:-1] + chr(ord(os.sep) + 1)


# ---- library -------------------------------------------------------------------------------


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def models(conn: sqlite3.Connection) -> list[ModelRecord]:
    rows = conn.execute(
        "SELECT key, name, dim, preprocess, pretrained, weights_id, id FROM models ORDER BY id"
    ).fetchall()
    return [ModelRecord(*row) for row in rows]


def index_state(conn: sqlite3.Connection, model_id: int) -> IndexStateRecord:
    row = conn.execute(
        "SELECT generation, count, clean, digest FROM index_state WHERE model_id = ?", (model_id,)
    ).fetchone()
    if row is None:
        return IndexStateRecord(0, 0, False)
    return IndexStateRecord(int(row[0]), int(row[1]), bool(row[2]), row[3])


def count_regions(conn: sqlite3.Connection, model_id: int) -> int:
    return int(conn.execute("SELECT count(*) FROM regions WHERE model_id = ?", (model_id,)).fetchone()[0])


def embedding(conn: sqlite3.Connection, image_id: int, model_id: int, dim: int) -> np.ndarray | None:
    row = conn.execute(
        "SELECT vector FROM embeddings WHERE model_id = ? AND image_id = ?", (model_id, image_id)
    ).fetchone()
    return None if row is None else np.frombuffer(row[0], dtype="<f2").reshape(dim).astype(np.float32)


def images(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, ImageRecord]:
    out: dict[int, ImageRecord] = {}
    for chunk in chunks(list(ids)):
        sql = f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id IN ({_marks(len(chunk))})"
        for row in conn.execute(sql, tuple(chunk)):
            out[int(row[0])] = _image(row)
    return out


def image_by_path(conn: sqlite3.Connection, path: str) -> ImageRecord | None:
    row = conn.execute(f"SELECT {_IMAGE_COLUMNS} FROM images WHERE path = ?", (to_db(path),)).fetchone()
    return None if row is None else _image(row)


def ids_under(conn: sqlite3.Connection, folders: Sequence[str]) -> np.ndarray:
    """Ids of every image under any of ``folders`` (for filtered search)."""
    found: set[int] = set()
    for lo, hi in map(under_bounds, folders):
        bounds = (to_db(lo), to_db(hi))
        found.update(r[0] for r in conn.execute("SELECT id FROM images WHERE path >= ? AND path < ?", bounds))
    return np.fromiter(sorted(found), np.int64, len(found))


# ---- tags ----------------------------------------------------------------------------------

_TAG_COLUMNS = "id, name, grp, kind, prompts, enabled, threshold"


def tag_record(row: tuple[object, ...]) -> TagRecord:
    id_, name, group, kind, prompts, enabled, threshold = row
    return TagRecord(
        id=int(id_),  # type: ignore[call-overload]
        name=str(name),
        group=str(group),
        kind=str(kind),
        prompts=tuple(json.loads(str(prompts or "[]"))),
        enabled=bool(enabled),
        threshold=threshold,  # type: ignore[arg-type]
    )


def tag(conn: sqlite3.Connection, name: str) -> TagRecord:
    """The tag called ``name`` (case-insensitive), or :class:`NotFoundError`."""
    sql = f"SELECT {_TAG_COLUMNS} FROM tags WHERE lower(name) = ?"
    row = conn.execute(sql, (name.strip().lower(),)).fetchone()
    if row is None:
        raise NotFoundError(f'There is no tag called "{name}". See them with: glimpse tags list')
    return tag_record(row)


def tags_of(conn: sqlite3.Connection, image_ids: Sequence[int]) -> dict[int, list[ImageTagRecord]]:
    """The enabled tags each photo carries, best first (tags the user added first of all)."""
    out: dict[int, list[ImageTagRecord]] = {i: [] for i in image_ids}
    for chunk in chunks(list(image_ids)):
        sql = (
            "SELECT it.image_id, it.tag_id, t.name, t.grp, it.source, it.score "
            "FROM image_tags AS it JOIN tags AS t ON t.id = it.tag_id "
            f"WHERE it.image_id IN ({_marks(len(chunk))}) AND t.enabled = 1"
        )
        for r in conn.execute(sql, tuple(chunk)):
            out[r[0]].append(ImageTagRecord(r[1], r[2], r[3], r[4], float(r[5])))
    for tags in out.values():
        tags.sort(key=lambda t: (t.source != TagSource.USER, -t.score, t.name))
    return out


def image_ids(conn: sqlite3.Connection, all_of: Sequence[int] = (), none_of: Sequence[int] = ()) -> np.ndarray:
    """Ids of photos carrying every tag in ``all_of`` and none in ``none_of``.

    With an empty ``all_of`` this means every photo that has a row in ``images``.
    """

    def with_tag(tag_id: int) -> set[int]:
        return {r[0] for r in conn.execute("SELECT image_id FROM image_tags WHERE tag_id = ?", (tag_id,))}

    if all_of:
        keep = with_tag(all_of[0])
        for tag_id in all_of[1:]:
            keep &= with_tag(tag_id)
    else:
        keep = {r[0] for r in conn.execute("SELECT id FROM images")}
    for tag_id in none_of:
        keep -= with_tag(tag_id)
    return np.fromiter(sorted(keep), np.int64, len(keep))


def images_with_tag(conn: sqlite3.Connection, tag_id: int, limit: int | None = None) -> list[tuple[int, float, str]]:
    """(image_id, score, source) of photos carrying a tag: hand-added first, then by score."""
    sql = (
        "SELECT image_id, score, source FROM image_tags WHERE tag_id = ? "
        "ORDER BY source != ?, score DESC, image_id" + (" LIMIT ?" if limit is not None else "")
    )
    params: tuple[object, ...] = (tag_id, TagSource.USER) + ((limit,) if limit is not None else ())
    return [(int(r[0]), float(r[1]), str(r[2])) for r in conn.execute(sql, params)]


def descriptions_key(conn: sqlite3.Connection, model_id: int) -> str | None:
    """What the saved descriptions of ``model_id`` were computed from (None: none saved); a cheap check."""
    row = conn.execute("SELECT key FROM descriptions WHERE model_id = ?", (model_id,)).fetchone()
    return None if row is None else str(row[0])


def descriptions(conn: sqlite3.Connection, model_id: int) -> DescriptionsRecord | None:
    """The descriptions a query is calibrated against in ``model_id``'s space, if the tagger saved them."""
    row = conn.execute(
        "SELECT model_id, key, temperature, background, count, vectors FROM descriptions WHERE model_id = ?",
        (model_id,),
    ).fetchone()
    if row is None:
        return None
    return DescriptionsRecord(int(row[0]), str(row[1]), float(row[2]), int(row[3]), int(row[4]), bytes(row[5]))
