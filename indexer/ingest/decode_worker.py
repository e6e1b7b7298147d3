"""The part of indexing that runs in decode worker processes.

Kept in its own small module so a freshly spawned worker imports Pillow, NumPy
and the decoder only: no torch, FAISS or SQLAlchemy to load before it can work.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.errors import DecodeError, PhotoVanishedError
from indexer.ingest.decode import PhotoMetadata, decode_photo, register_heif
from indexer.ingest.thumbnails import ThumbnailCache
from indexer.models.preprocess import PreprocessSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeJob:
    image_id: int
    path: str
    thumb_key: str | None
    regions: bool = False


@dataclass(frozen=True)
class Decoded:
    job: DecodeJob
    pixels: np.ndarray | None = None
    meta: PhotoMetadata | None = None
    error: str | None = None
    regions: np.ndarray | None = None
    vanished: bool = False  # the file was gone (moved or deleted): not a failure of the photo


def init_worker(max_pixels: int, nice: int = 0) -> None:
    from PIL import Image

    if nice and hasattr(os, "nice"):
        os.nice(nice)
    # Our own limit is checked before decoding; lift Pillow's lower default to match it.
    Image.MAX_IMAGE_PIXELS = max_pixels
    register_heif()


def decode_job(
    job: DecodeJob, spec: PreprocessSpec, thumb_dir: str | None, thumb_size: int | None, max_pixels: int
) -> Decoded:
    """Decode one photo; every failure comes back as a reason, never as an exception."""
    try:
        photo = decode_photo(job.path, spec, thumb_size if thumb_dir else None, max_pixels, job.regions)
    except PhotoVanishedError as exc:
        return Decoded(job, error=exc.message, vanished=True)
    except DecodeError as exc:
        return Decoded(job, error=exc.message)
    except Exception as exc:  # an unexpected decoder bug must cost one photo, not the run
        return Decoded(job, error=f"{Path(job.path).name}: unexpected decoder error: {exc!r}")
    if thumb_dir and job.thumb_key and photo.thumbnail:
        try:
            ThumbnailCache(Path(thumb_dir)).put(job.thumb_key, photo.thumbnail)
        except OSError as exc:
            log.warning("cannot write thumbnail for %s: %s", job.path, exc)
    return Decoded(job, pixels=photo.pixels, meta=photo.metadata, regions=photo.regions)
