"""A read-only, consistent view of a library, on the standard library alone.

A one-shot ``glimpse search`` reads a few rows and the vector index, then exits. Over
the full store that costs importing SQLAlchemy and FAISS, about 0.15 s and 40 MB of a
half-second command. A snapshot answers the same reads (the queries of
``store.reads``, shared with the store) on a ``sqlite3`` connection opened read-only,
inside one read transaction, so everything it returns, vectors included, is from one
moment of the library. It never writes, never creates or migrates a database, and
never repairs anything: where it cannot vouch for what it would read (an older or
newer schema, a vector index the database does not vouch for), :meth:`open` and
:meth:`vectors` say None and the caller uses the full store, which knows how.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from store import reads
from store.diskerrors import read_only_folder
from store.flat import FlatIndexFile, vouched_file
from store.records import (
    SCHEMA_VERSION,
    DescriptionsRecord,
    ImageRecord,
    ImageTagRecord,
    IndexStateRecord,
    ModelRecord,
    TagRecord,
)

log = logging.getLogger(__name__)


class LibrarySnapshot:
    """Reads of one library at one moment; the same methods (and results) as ``LibraryStore``
    and ``TagStore`` for what search needs."""

    def __init__(self, conn: sqlite3.Connection, database: Path) -> None:
        self._conn = conn
        self.database = database
        self._files: list[FlatIndexFile] = []

    @classmethod
    def open(cls, database: Path) -> LibrarySnapshot | None:
        """A snapshot of the library at ``database``, or None where only the full store may open it
        (no such file, a schema to create or migrate, or one from a newer Glimpse)."""
        if not database.is_file():
            return None
        # On a read-only file system SQLite cannot make the WAL's shared memory: read it immutable.
        mode = "mode=ro&immutable=1" if read_only_folder(database.parent) else "mode=ro"
        try:
            conn = sqlite3.connect(f"{database.as_uri()}?{mode}", uri=True, timeout=10.0, isolation_level=None)
        except sqlite3.Error:
            return None
        try:
            conn.execute("BEGIN")  # one read transaction: every read below sees the same commit
            if reads.get_meta(conn, "schema_version") != str(SCHEMA_VERSION):
                conn.close()
                return None
        except sqlite3.Error as exc:
            log.debug("no snapshot of %s: %s", database, exc)
            conn.close()
            return None
        return cls(conn, database)

    def close(self) -> None:
        for file in self._files:
            file.close()
        self._conn.close()

    # ---- library ---------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        return reads.get_meta(self._conn, key)

    def models(self) -> list[ModelRecord]:
        return reads.models(self._conn)

    def index_state(self, model_id: int) -> IndexStateRecord:
        return reads.index_state(self._conn, model_id)

    def count_regions(self, model_id: int) -> int:
        return reads.count_regions(self._conn, model_id)

    def embedding(self, image_id: int, model_id: int, dim: int) -> np.ndarray | None:
        return reads.embedding(self._conn, image_id, model_id, dim)

    def images(self, ids: Sequence[int]) -> dict[int, ImageRecord]:
        return reads.images(self._conn, ids)

    def image_by_path(self, path: str) -> ImageRecord | None:
        return reads.image_by_path(self._conn, path)

    def ids_under(self, folders: Sequence[str]) -> np.ndarray:
        return reads.ids_under(self._conn, folders)

    # ---- tags ------------------------------------------------------------------------------

    def tag(self, name: str) -> TagRecord:
        return reads.tag(self._conn, name)

    def tags_of(self, image_ids: Sequence[int]) -> dict[int, list[ImageTagRecord]]:
        return reads.tags_of(self._conn, image_ids)

    def image_ids(self, all_of: Sequence[int] = (), none_of: Sequence[int] = ()) -> np.ndarray:
        return reads.image_ids(self._conn, all_of, none_of)

    def images_with_tag(self, tag_id: int, limit: int | None = None) -> list[tuple[int, float, str]]:
        return reads.images_with_tag(self._conn, tag_id, limit)

    def descriptions(self, model_id: int) -> DescriptionsRecord | None:
        return reads.descriptions(self._conn, model_id)

    def descriptions_key(self, model_id: int) -> str | None:
        return reads.descriptions_key(self._conn, model_id)

    # ---- vectors ---------------------------------------------------------------------------

    def vectors(self, model_id: int, dim: int, index_file: Path) -> FlatIndexFile | None:
        """The model's saved vector index, if the database vouches for exactly that file
        (clean, same generation, same count), else None: the full store rebuilds it."""
        flat, problem = vouched_file(index_file, dim, self.index_state(model_id))
        if flat is None:
            log.debug("vector index %s not used by a snapshot: %s", index_file, problem)
            return None
        self._files.append(flat)
        return flat
