"""The composition root: the one place that builds Glimpse's services.

The CLI and the GUI both call :func:`build_services`; every class takes its
collaborators as constructor arguments, so tests can hand in fakes. Nothing here
runs at import time, and nothing is global: two libraries can be open in one
process.

The library decides its own model (``indexer.models.space``): the request of a
flag or ``GLIMPSE_MODEL`` only picks the model of a *new* library, and a request
for another model than the library's is refused with the way to switch.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.ingest.config import PipelineConfig
from indexer.models.choice import ACTIVE_KEY, ModelChoice, choose_model, recorded_model
from indexer.models.embedder import Embedder, check_device
from indexer.models.engine import ModelEngine
from indexer.models.presets import ModelSpec, resolve_model
from indexer.models.space import EmbeddingSpace, ModelSlot, legacy_model
from indexer.search.service import SearchService
from indexer.segment.sam import SEGMENTERS, Segmenter
from indexer.settings import Settings
from indexer.tags.tagger import Tagger
from indexer.tags.vocabulary import library_vocabulary
from store.errors import NoLibraryError, StoreError
from store.library import LibraryStore
from store.paths import AppPaths
from store.tags import TagStore

if TYPE_CHECKING:  # built on first use (Services); their modules are imported then
    from indexer.ingest.pipeline import IndexingPipeline
    from indexer.ingest.thumbnails import ThumbnailCache
    from indexer.live.service import LibraryService
    from indexer.live.switch import ModelSwitch
    from indexer.search.duplicates import DuplicateFinder
    from indexer.segment.objects import ObjectSearch
    from indexer.tags.editor import TagEditor

log = logging.getLogger(__name__)


class Services:
    """Everything a front end needs, wired once; the heavy parts are built on first use.

    A ``glimpse search`` needs the store, the model slot, tags and search; indexing,
    watching, model switches, tag editing and object search pull in decoding, process
    pools, watchdog and SAM, so those are made (and their modules imported) only when a
    command first asks for them.
    """

    def __init__(
        self,
        paths: AppPaths,
        settings: Settings,
        model: ModelSpec,
        choice: ModelChoice,
        store: LibraryStore,
        slot: ModelSlot,
        tags: TagStore,
        tagger: Tagger,
        search: SearchService,
        builders: _Builders,
    ) -> None:
        self.paths = paths
        self.settings = settings
        self.model = model
        self.choice = choice
        self.store = store
        self.slot = slot
        self.tags = tags
        self.tagger = tagger
        self.search = search
        self._builders = builders
        self.new_library = False  # the library had no model of its own before this command (``_wire``)

    @functools.cached_property
    def thumbnails(self) -> ThumbnailCache:
        from indexer.ingest.thumbnails import ThumbnailCache

        return ThumbnailCache(self.paths.thumbnails_dir)

    @functools.cached_property
    def pipeline(self) -> IndexingPipeline:
        from indexer.ingest.pipeline import IndexingPipeline

        return IndexingPipeline(self.store, self.slot, self.thumbnails, self._builders.config, self.tagger)

    @functools.cached_property
    def switch(self) -> ModelSwitch:
        from indexer.ingest.pipeline import IndexingPipeline
        from indexer.live.switch import ModelSwitch

        config = self._builders.config
        return ModelSwitch(
            self.store,
            self.slot,
            self.tagger,
            self._builders.make_space,
            lambda target: IndexingPipeline(self.store, target, None, config),
            self.paths.index_dir,
        )

    @functools.cached_property
    def library(self) -> LibraryService:
        from indexer.live.service import LibraryService

        return LibraryService(self.store, self.pipeline, self.tagger, self.switch)

    @functools.cached_property
    def tag_editor(self) -> TagEditor:
        from indexer.tags.editor import TagEditor

        return TagEditor(self.tags, self.store, self.tagger)

    @functools.cached_property
    def duplicates(self) -> DuplicateFinder:
        from indexer.search.duplicates import DuplicateFinder

        return DuplicateFinder(self.store, self.slot, self.settings.duplicate_similarity)

    @functools.cached_property
    def objects(self) -> ObjectSearch:
        from indexer.segment.objects import ObjectSearch

        return ObjectSearch(self.store, self.search, self._builders.segmenter())

    @property
    def embedder(self) -> Embedder:
        return self.slot.embedder

    def close(self) -> None:
        if "library" in self.__dict__:  # built: it may be running
            self.library.stop()
        self.store.close()


@dataclass(frozen=True)
class _Builders:
    """What the lazily built services are made from."""

    config: PipelineConfig
    make_space: Callable[..., EmbeddingSpace]
    segmenter: Callable[[], Callable[[], Segmenter]]


# The Hugging Face convention for "never touch the network", honoured for SAM weights too.
OFFLINE_ENV = ("HF_HUB_OFFLINE", "GLIMPSE_OFFLINE")


def segmenter_factory(paths: AppPaths, settings: Settings, device: str) -> Callable[[], Segmenter]:
    """The segmenter is heavy and optional: built on first use, once, from the settings."""
    from indexer.segment.sam import SamSegmenter

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
    requested: ModelChoice | None = None,
    requested_by: str = "--model",
    embedder: Embedder | None = None,
    segmenter: Callable[[], Segmenter] | None = None,
    create: bool = True,
    short_lived: bool = False,
) -> Services:
    """Open the library at ``paths`` and wire up the services (models load lazily).

    ``requested``: the model a flag or environment variable names (``requested_by``
    says which, for messages); it must be the library's own, or pick a new library's.
    ``create=False`` is for read-only commands: no library is created where none is.
    ``short_lived``: a one-shot command (a CLI query), whose model should open fast.
    """
    settings.validate()
    check_device(settings.device)
    if not create and not paths.database.exists():
        raise NoLibraryError(
            f"There is no Glimpse library in {paths.data_dir} yet. Index a folder first: glimpse index FOLDER"
        )
    paths.ensure()
    store = LibraryStore.open(paths.database)
    try:
        return _wire(paths, settings, store, requested, requested_by, embedder, segmenter, short_lived)
    except BaseException:
        store.close()
        raise


def _wire(
    paths: AppPaths,
    settings: Settings,
    store: LibraryStore,
    requested: ModelChoice | None,
    requested_by: str,
    embedder: Embedder | None,
    segmenter: Callable[[], Segmenter] | None,
    short_lived: bool = False,
) -> Services:
    legacy = ModelChoice(settings.model, settings.weights) if settings.model else None
    recorded = recorded_model(store, ACTIVE_KEY) or legacy_model(store, legacy)
    choice = choose_model(recorded, requested, requested_by)
    config = settings.pipeline_config()

    def make_space(chosen: ModelChoice, spec: ModelSpec | None = None, record_as: str | None = None) -> EmbeddingSpace:
        spec = spec or resolve_model(chosen.name, chosen.weights)
        model = ModelEngine(
            spec, paths.models_dir, settings.device, settings.precision, settings.threads, settings.runtime, short_lived
        )
        return EmbeddingSpace(store, model, paths.index_dir, chosen, config.save_interval, record_as)

    # The library's own model was checked when it was first used: resolving it again must not
    # import open_clip (an ARCH/TAG name would), or every read-only command would pay for it.
    spec = resolve_model(choice.name, choice.weights, validate=recorded is None or not choice.same_model(recorded))
    active = (
        EmbeddingSpace(store, embedder, paths.index_dir, choice, config.save_interval, ACTIVE_KEY)
        if embedder is not None
        else make_space(choice, spec, ACTIVE_KEY)
    )
    slot = ModelSlot(active)
    tags = TagStore(store.db)
    tagger = Tagger(tags, store, slot, library_vocabulary(store, spec, settings.vocabulary))
    device = "cpu" if settings.device in ("auto", "mps") else settings.device

    def segmenter_source() -> Callable[[], Segmenter]:
        return segmenter or segmenter_factory(paths, settings, device)

    builders = _Builders(config, make_space, segmenter_source)
    services = Services(
        paths,
        settings,
        spec,
        choice,
        store,
        slot,
        tags,
        tagger,
        SearchService(store, slot, tags, settings.duplicate_similarity),
        builders,
    )
    services.new_library = recorded is None
    return services
