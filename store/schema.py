"""SQLite schema: the source of truth for the library.

Vectors live in ``embeddings`` so that every FAISS index is a cache that can be
rebuilt from here. ``index_state`` records which generation of each vector
index file matches the database, which is how a kill between a database commit
and an index save is detected at the next start.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

from store.filenames import from_db, to_db
from store.records import ImageStatus


class FilePath(TypeDecorator[str]):
    """A file system path: any bytes a file name holds, stored as valid UTF-8 (``store.filenames``)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: object) -> str | None:
        return None if value is None else to_db(value)

    def process_result_value(self, value: str | None, dialect: object) -> str | None:
        return None if value is None else from_db(value)


# Core tables, not ORM classes: the repositories only ever used Core statements on them,
# and declaring them through the ORM cost every command an import of sqlalchemy.orm.
metadata = MetaData()


Meta = Table(
    "meta",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", String, nullable=False),
)


Folder = Table(
    "folders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", FilePath, unique=True, nullable=False),
    Column("added_at", DateTime, nullable=False),
    Column("enabled", Boolean, default=True, nullable=False),
    # False while the root is unreachable (unplugged drive, share down): its photos stay.
    Column("online", Boolean, default=True, server_default="1", nullable=False),
)


Image = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", FilePath, unique=True, nullable=False),
    Column("folder_id", Integer, ForeignKey("folders.id", ondelete="SET NULL"), index=True, nullable=True),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("content_hash", String, index=True, nullable=True),
    Column("width", Integer, nullable=True),
    Column("height", Integer, nullable=True),
    Column("taken_at", DateTime, nullable=True),
    Column("camera_make", String, nullable=True),
    Column("camera_model", String, nullable=True),
    Column("orientation", Integer, nullable=True),
    Column("status", String, default=ImageStatus.PENDING, nullable=False),
    Column("error", Text, nullable=True),
    Column("thumbnail_key", String, nullable=True),
    Column("indexed_at", DateTime, nullable=True),
    # A 64-bit perceptual hash of the picture, stored signed (SQLite's integers are).
    Column("fingerprint", BigInteger, nullable=True),
    Index("ix_images_status", "status"),
)


# One embedding space: vectors from different models are never compared.
Model = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String, unique=True, nullable=False),
    Column("name", String, nullable=False),
    Column("pretrained", String, nullable=True),
    Column("weights_id", String, nullable=True),
    Column("dim", Integer, nullable=False),
    Column("preprocess", Text, nullable=False),  # JSON
    Column("created_at", DateTime, nullable=False),
)


# An L2-normalised image vector, stored as little-endian float16.
Embedding = Table(
    "embeddings",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("vector", LargeBinary, nullable=False),
    Index("ix_embeddings_image", "image_id"),
)


# Bookkeeping for the vector index file of one model.
#
# ``clean`` is cleared in the same transaction as any change to that model's
# embeddings, and set again only after the index file has been written with
# ``generation``. A file is trusted only if it is clean and generations match.
IndexState = Table(
    "index_state",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("generation", Integer, default=0, nullable=False),
    Column("count", Integer, default=0, nullable=False),
    Column("clean", Boolean, default=False, nullable=False),
    # A digest of the whole file as saved: a file whose structure is intact but whose
    # vectors were changed (swapped rows, a bad disk) is caught by it (``glimpse doctor``).
    Column("digest", String, nullable=True),
)


# What the last scan of each folder could not read (a folder without permission, a file
# it could not stat), for ``glimpse status`` and the app's failure list. Photos that fail
# to decode have their reason on their own row (``images.error``).
ScanProblem = Table(
    "scan_problems",
    metadata,
    Column("path", FilePath, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("seen_at", DateTime, nullable=False),
)


# One tag of the vocabulary.
#
# ``kind`` says how it is applied: ``prompts`` (zero-shot from ``prompts``, a JSON list),
# ``example`` (a classifier taught from marked photos) or ``manual`` (only by hand).
Tag = Table(
    "tags",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String, unique=True, nullable=False),
    Column("grp", String, default="other", nullable=False),
    Column("kind", String, default="prompts", nullable=False),
    Column("prompts", Text, default="[]", nullable=False),  # JSON list of phrases
    Column("enabled", Boolean, default=True, nullable=False),
    Column("threshold", Float, nullable=True),  # None: the vocabulary default
    Column("created_at", DateTime, nullable=False),
)


# A tag a photo carries now (automatic or by hand), with its calibrated score.
ImageTag = Table(
    "image_tags",
    metadata,
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", Integer, ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
    Column("source", String, nullable=False),
    Column("score", Float, nullable=False),
    Index("ix_image_tags_tag", "tag_id", "score"),
)


# The user's word on one photo and one tag: ``present`` true (added) or false (removed).
#
# Overrides are what survives re-tagging, and they are the examples a taught tag
# learns from.
TagOverride = Table(
    "tag_overrides",
    metadata,
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", Integer, ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
    Column("present", Boolean, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Index("ix_tag_overrides_tag", "tag_id"),
)


# A tag's direction in one embedding space: the ensembled prompt embedding, or a taught
# classifier's weights. ``fingerprint`` says what it was computed from, so a changed
# prompt or a new example is noticed and only that tag is recomputed.
TagVector = Table(
    "tag_vectors",
    metadata,
    Column("tag_id", Integer, ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("fingerprint", String, nullable=False),
    Column("vector", LargeBinary, nullable=False),  # float32
    Column("bias", Float, default=0.0, nullable=False),
    Column("threshold", Float, nullable=True),
    Column("precision", Float, nullable=True),  # estimated on held-out examples
    Column("recall", Float, nullable=True),
)


# What the library's vocabulary can say about any photo, in one model's space: the
# vocabulary's background prompts ("a photo.") and every zero-shot tag's phrases, as unit
# vectors (float32, ``count`` rows). Search calibrates a query against them: a photo
# matches a query when the query describes it better than these do (``indexer.search.relevance``).
# ``key`` says what they were computed from; the tagger rewrites the row when that changes.
Description = Table(
    "descriptions",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String, nullable=False),
    Column("temperature", Float, nullable=False),
    Column("background", Integer, nullable=False),  # the first ``background`` rows are background prompts
    Column("count", Integer, nullable=False),
    Column("vectors", LargeBinary, nullable=False),
)


# An embedded part of a photo (an object proposal), so small objects can be found.
#
# The box is in fractions of the upright photo (0-1), so it survives re-decoding at
# another size. Only written when region indexing is on.
Region = Table(
    "regions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    Column("x0", Float, nullable=False),
    Column("y0", Float, nullable=False),
    Column("x1", Float, nullable=False),
    Column("y1", Float, nullable=False),
    Column("vector", LargeBinary, nullable=False),  # float16, L2-normalised
    Index("ix_regions_model_image", "model_id", "image_id"),
)
