"""The indexing pipeline's settings, apart from the pipeline so that reading them costs no
import of the pipeline's machinery (process pools, decoders): a search never indexes."""

from __future__ import annotations

import os
from dataclasses import dataclass

from indexer.ingest.decode import DEFAULT_MAX_PIXELS, THUMBNAIL_SIZE


@dataclass(frozen=True)
class PipelineConfig:
    batch_size: int = 32
    decode_workers: int = max(1, min(8, os.cpu_count() or 1))
    thumbnail_size: int | None = THUMBNAIL_SIZE
    max_pixels: int = DEFAULT_MAX_PIXELS
    # One photo may take this long to decode (a 250 MP PNG takes about 5 s here); a file on a
    # stalled network share or a decoder caught in a loop is failed with a reason instead.
    decode_timeout_s: float = 60.0
    save_interval: float = 60.0
    nice: int = 0  # added to decode workers' niceness; the background service uses it to stay out of the way
    regions: bool = False  # also embed len(REGION_BOXES) object proposals per photo (that many more model runs)
