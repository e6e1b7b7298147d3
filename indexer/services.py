"""The composition root: the one place that builds Glimpse's services.

The CLI and the GUI both call :func:`build_services`; every class takes its
collaborators as arguments, so tests can hand in fakes. Nothing here runs at
import time, and nothing is global: two libraries can be open in one process.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from indexer.decode import register_heif
from indexer.embedder import Embedder, OpenClipEmbedder
from indexer.models import ModelSpec, resolve_model
from indexer.objects import ObjectSearch
from indexer.pipeline import IndexingPipeline, PipelineConfig
from indexer.search import SearchService
from indexer.segment import DEFAULT_SEGMENTER, SEGMENTERS, SamSegmenter, Segmenter
from indexer.service import LibraryService
from indexer.tagging import Tagger, vocabulary_for
from indexer.thumbnails import ThumbnailCache
from store.errors import StoreError
from store.library import LibraryStore
from store.paths import AppPaths
from store.tags import TagStore

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """User choices. Unset fields mean "decide automatically"."""

    model: str | None = None
    weights: str | None = None
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    batch_size: int | None = None
    decode_workers: int | None = None
    vocabulary: str | None = None  # a tag vocabulary file; None: the one that fits the model
    segmenter: str = DEFAULT_SEGMENTER  # mobile_sam, sam_vit_b, sam_vit_l, sam_vit_h
    sam_weights: str | None = None  # a checkpoint file instead of the model folder / download
    segment_disk_cache: bool = False  # keep image encodings on disk (about 2 MB per photo)
    regions: bool = False  # region index: embed object proposals too (finds small objects; ~4x the indexing time)

    @classmethod
    def load(cls, path: Path) -> Settings:
        """Saved settings (the GUI writes them); a missing or damaged file means defaults."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    def pipeline_config(self) -> PipelineConfig:
        base = PipelineConfig()
        return PipelineConfig(
            batch_size=self.batch_size or base.batch_size,
            decode_workers=self.decode_workers or base.decode_workers,
            regions=self.regions,
        )


@dataclass
class Services:
    paths: AppPaths
    settings: Settings
    model: ModelSpec
    store: LibraryStore
    embedder: Embedder
    thumbnails: ThumbnailCache
    pipeline: IndexingPipeline
    search: SearchService
    library: LibraryService
    tags: TagStore
    tagger: Tagger
    objects: ObjectSearch

    def close(self) -> None:
        self.library.stop()
        self.store.close()


# The Hugging Face convention for "never touch the network", honoured for SAM weights too.
OFFLINE_ENV = ("HF_HUB_OFFLINE", "GLIMPSE_OFFLINE")


def segmenter_factory(paths: AppPaths, settings: Settings, device: str) -> Callable[[], Segmenter]:
    """The segmenter is heavy and optional: built on first use, once, from the settings."""
    if settings.segmenter not in SEGMENTERS:
        raise StoreError(
            f'Unknown segmentation model "{settings.segmenter}"; choose one of {", ".join(SEGMENTERS)}.',
            title="Unknown segmentation model",
        )
    spec = SEGMENTERS[settings.segmenter]
    built: list[Segmenter] = []
    lock = threading.Lock()

    def get() -> Segmenter:
        with lock:
            if not built:
                built.append(
                    SamSegmenter(
                        spec,
                        paths.models_dir,
                        Path(settings.sam_weights).expanduser() if settings.sam_weights else None,
                        device=device,
                        cache_dir=paths.cache_dir / "segments" if settings.segment_disk_cache else None,
                        allow_download=not any(os.environ.get(v) == "1" for v in OFFLINE_ENV),
                    )
                )
            return built[0]

    return get


def build_services(
    paths: AppPaths,
    settings: Settings,
    embedder: Embedder | None = None,
    segmenter: Callable[[], Segmenter] | None = None,
) -> Services:
    """Open the library at ``paths`` and wire up the services (the model loads lazily)."""
    paths.ensure()
    register_heif()
    model = resolve_model(settings.model, settings.weights)
    store = LibraryStore.open(paths.database)
    if embedder is None:
        embedder = OpenClipEmbedder(
            model, device=settings.device, precision=settings.precision, threads=settings.threads
        )
    thumbnails = ThumbnailCache(paths.thumbnails_dir)
    pipeline = IndexingPipeline(store, embedder, paths.index_dir, thumbnails, settings.pipeline_config())
    tags = TagStore(store.engine)
    tagger = Tagger(tags, store, embedder, pipeline.vectors, vocabulary_for(model, settings.vocabulary))
    pipeline.tagger = tagger.assign
    search = SearchService(store, embedder, pipeline.vectors, tags)
    library = LibraryService(store, pipeline, tagger)
    device = "cpu" if settings.device in ("auto", "mps") else settings.device
    objects = ObjectSearch(store, embedder, search, segmenter or segmenter_factory(paths, settings, device))
    return Services(
        paths, settings, model, store, embedder, thumbnails, pipeline, search, library, tags, tagger, objects
    )
