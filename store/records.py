"""Plain records that cross the store boundary.

Callers get frozen dataclasses, not ORM objects, so nothing outside the store
holds a session or triggers lazy SQL from another thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# The schema version this code reads and writes (``store.database`` migrates older ones).
SCHEMA_VERSION = 6


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


@dataclass(frozen=True)
class FolderRecord:
    id: int
    path: str
    added_at: datetime
    enabled: bool
    online: bool = True


@dataclass(frozen=True)
class FileState:
    """What the scanner compares against the disk."""

    id: int
    path: str
    size: int
    mtime_ns: int
    status: str
    content_hash: str | None


@dataclass(frozen=True)
class ImageRecord:
    id: int
    path: str
    folder_id: int | None
    size: int
    mtime_ns: int
    status: str
    width: int | None = None
    height: int | None = None
    taken_at: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    error: str | None = None
    thumbnail_key: str | None = None
    content_hash: str | None = None
    fingerprint: int | None = None  # 64-bit perceptual hash, unsigned; None before schema v6 re-decodes


@dataclass(frozen=True)
class ModelRecord:
    """An embedding space; ``key`` identifies architecture + exact weights."""

    key: str
    name: str
    dim: int
    preprocess: str
    pretrained: str | None = None
    weights_id: str | None = None
    id: int | None = None


@dataclass(frozen=True)
class NewFile:
    path: str
    folder_id: int | None
    size: int
    mtime_ns: int
    content_hash: str | None


@dataclass(frozen=True)
class ChangedFile:
    id: int
    size: int
    mtime_ns: int
    content_hash: str | None


@dataclass(frozen=True)
class MovedFile:
    id: int
    new_path: str
    folder_id: int | None
    size: int
    mtime_ns: int


@dataclass
class ScanChanges:
    """Everything one scan found, applied in one transaction."""

    new: list[NewFile] = field(default_factory=list)
    changed: list[ChangedFile] = field(default_factory=list)
    moved: list[MovedFile] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.new or self.changed or self.moved or self.removed)


@dataclass(frozen=True)
class EmbeddedImage:
    """A successfully decoded and embedded photo, ready to commit."""

    image_id: int
    vector: bytes  # float16 little-endian, L2-normalised
    width: int
    height: int
    taken_at: datetime | None
    camera_make: str | None
    camera_model: str | None
    orientation: int | None
    thumbnail_key: str | None
    fingerprint: int | None = None  # 64-bit perceptual hash (``indexer.ingest.decode.fingerprint``)


@dataclass(frozen=True)
class FailedImage:
    image_id: int
    error: str


@dataclass(frozen=True)
class IndexStateRecord:
    generation: int
    count: int
    clean: bool
    digest: str | None = None  # BLAKE2b of the saved file, checked in full by ``glimpse doctor``


@dataclass(frozen=True)
class TagRecord:
    """A tag of the vocabulary. ``prompts`` are the phrases a zero-shot tag is matched by."""

    id: int
    name: str
    group: str
    kind: str  # "prompts" | "example" | "manual"
    prompts: tuple[str, ...]
    enabled: bool
    threshold: float | None


@dataclass(frozen=True)
class DescriptionsRecord:
    """What the vocabulary can say about any photo in one model's space (``store.schema.Description``)."""

    model_id: int
    key: str
    temperature: float
    background: int  # the first ``background`` rows are the background prompts
    count: int
    vectors: bytes  # float32, (count, dim)


@dataclass(frozen=True)
class TagVectorRecord:
    """A tag's direction in one embedding space (see ``store.schema.TagVector``)."""

    tag_id: int
    fingerprint: str
    vector: bytes  # float32
    bias: float
    threshold: float | None
    precision: float | None
    recall: float | None


@dataclass(frozen=True)
class ImageTagRecord:
    """A tag on one photo, as shown to the user."""

    tag_id: int
    name: str
    group: str
    source: str
    score: float


@dataclass(frozen=True)
class RegionVector:
    """One embedded region of a photo, ready to commit: box in fractions of the upright photo."""

    image_id: int
    box: tuple[float, float, float, float]
    vector: bytes  # float16 little-endian, L2-normalised
