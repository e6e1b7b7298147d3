"""SQLite schema: the source of truth for the library.

Vectors live in ``embeddings`` so that every FAISS index is a cache that can be
rebuilt from here. ``index_state`` records which generation of each vector
index file matches the database, which is how a kill between a database commit
and an index save is detected at the next start.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 4


class ImageStatus:
    """Values of ``images.status``.

    ``pending``: found, not yet embedded for the active model. ``indexed``: decoded and
    embedded. ``failed``: could not be decoded; retried only when size or mtime change.
    ``missing``: the file vanished and the row waits to be removed or matched to a move.
    """

    PENDING = "pending"
    INDEXED = "indexed"
    FAILED = "failed"
    MISSING = "missing"
    ALL = (PENDING, INDEXED, FAILED, MISSING)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(String)


class Folder(Base):
    __tablename__ = "folders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String, unique=True)
    added_at: Mapped[datetime] = mapped_column(DateTime)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # False while the root is unreachable (unplugged drive, share down): its photos stay.
    online: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")


class Image(Base):
    __tablename__ = "images"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String, unique=True)
    folder_id: Mapped[int | None] = mapped_column(ForeignKey("folders.id", ondelete="SET NULL"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str | None] = mapped_column(String, index=True)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    taken_at: Mapped[datetime | None] = mapped_column(DateTime)
    camera_make: Mapped[str | None] = mapped_column(String)
    camera_model: Mapped[str | None] = mapped_column(String)
    orientation: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String, default=ImageStatus.PENDING)
    error: Mapped[str | None] = mapped_column(Text)
    thumbnail_key: Mapped[str | None] = mapped_column(String)
    indexed_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (Index("ix_images_status", "status"),)


class Model(Base):
    """One embedding space: vectors from different models are never compared."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String, unique=True)
    name: Mapped[str] = mapped_column(String)
    pretrained: Mapped[str | None] = mapped_column(String)
    weights_id: Mapped[str | None] = mapped_column(String)
    dim: Mapped[int] = mapped_column(Integer)
    preprocess: Mapped[str] = mapped_column(Text)  # JSON
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Embedding(Base):
    """An L2-normalised image vector, stored as little-endian float16."""

    __tablename__ = "embeddings"
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_embeddings_image", "image_id"),)


class IndexState(Base):
    """Bookkeeping for the vector index file of one model.

    ``clean`` is cleared in the same transaction as any change to that model's
    embeddings, and set again only after the index file has been written with
    ``generation``. A file is trusted only if it is clean and generations match.
    """

    __tablename__ = "index_state"
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    count: Mapped[int] = mapped_column(Integer, default=0)
    clean: Mapped[bool] = mapped_column(Boolean, default=False)


class TagSource:
    """Values of ``image_tags.source``: who put a tag on a photo.

    ``zero-shot``: the tag's prompts matched the photo's vector. ``example``: a classifier
    taught from photos the user marked. ``user``: added by hand; wins over both, and is
    never touched by re-tagging.
    """

    ZERO_SHOT = "zero-shot"
    EXAMPLE = "example"
    USER = "user"
    AUTOMATIC = (ZERO_SHOT, EXAMPLE)


class Tag(Base):
    """One tag of the vocabulary.

    ``kind`` says how it is applied: ``prompts`` (zero-shot from ``prompts``, a JSON list),
    ``example`` (a classifier taught from marked photos) or ``manual`` (only by hand).
    """

    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String, unique=True)
    group: Mapped[str] = mapped_column("grp", String, default="other")
    kind: Mapped[str] = mapped_column(String, default="prompts")
    prompts: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of phrases
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    threshold: Mapped[float | None] = mapped_column(Float)  # None: the vocabulary default
    created_at: Mapped[datetime] = mapped_column(DateTime)


class ImageTag(Base):
    """A tag a photo carries now (automatic or by hand), with its calibrated score."""

    __tablename__ = "image_tags"
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String)
    score: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_image_tags_tag", "tag_id", "score"),)


class TagOverride(Base):
    """The user's word on one photo and one tag: ``present`` true (added) or false (removed).

    Overrides are what survives re-tagging, and they are the examples a taught tag
    learns from.
    """

    __tablename__ = "tag_overrides"
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)
    present: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (Index("ix_tag_overrides_tag", "tag_id"),)


class TagVector(Base):
    """A tag's direction in one embedding space: the ensembled prompt embedding, or a taught
    classifier's weights. ``fingerprint`` says what it was computed from, so a changed
    prompt or a new example is noticed and only that tag is recomputed.
    """

    __tablename__ = "tag_vectors"
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32
    bias: Mapped[float] = mapped_column(Float, default=0.0)
    threshold: Mapped[float | None] = mapped_column(Float)
    precision: Mapped[float | None] = mapped_column(Float)  # estimated on held-out examples
    recall: Mapped[float | None] = mapped_column(Float)


class Region(Base):
    """An embedded part of a photo (an object proposal), so small objects can be found.

    The box is in fractions of the upright photo (0-1), so it survives re-decoding at
    another size. Only written when region indexing is on.
    """

    __tablename__ = "regions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    x0: Mapped[float] = mapped_column(Float)
    y0: Mapped[float] = mapped_column(Float)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float16, L2-normalised

    __table_args__ = (Index("ix_regions_model_image", "model_id", "image_id"),)
