"""The optional region index: small objects found by text and by photo, with where they are."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import ImageDraw

from indexer.ingest.decode import REGION_BOXES
from indexer.ingest.pipeline import IndexingPipeline, PipelineConfig
from indexer.models.embedder import OpenClipEmbedder
from indexer.models.space import single_space
from indexer.search.service import SearchService
from indexer.toyworld.world import ShapeSpec, all_specs, background, draw_shape
from store.library import LibraryStore
from store.paths import AppPaths
from tests.photos import write_photo


def small_objects_scene(path: Path) -> Path:
    """640x640: a small blue star top left, a small red circle bottom right, lots of empty floor."""
    rng = random.Random(11)
    img = background(rng, (640, 640), dark=False)
    draw = ImageDraw.Draw(img)
    draw_shape(draw, ShapeSpec("star", "blue"), 110, 110, 55, rng)
    draw_shape(draw, ShapeSpec("circle", "red"), 530, 530, 55, rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=95)
    return path


def _run(pipeline: IndexingPipeline, root: Path) -> None:
    for _ in pipeline.run([root]):
        pass


@pytest.fixture
def library(paths: AppPaths, toy_embedder: OpenClipEmbedder, tmp_path: Path):
    store = LibraryStore.open(paths.database)
    pipeline = IndexingPipeline(
        store, single_space(store, toy_embedder, paths.index_dir), None, PipelineConfig(batch_size=16)
    )
    root = tmp_path / "photos"
    for n, spec in enumerate(s for s in all_specs() if s != ShapeSpec("star", "blue")):
        write_photo(root / f"{spec.colour}-{spec.shape}.jpg", spec, seed=900 + n)
    scene = small_objects_scene(root / "scene.jpg")
    yield store, pipeline, root, str(scene.resolve())
    store.close()


def test_regions_find_small_objects_and_say_where(library, toy_embedder) -> None:
    store, pipeline, root, scene = library
    _run(pipeline, root)  # first without regions
    search = SearchService(store, pipeline.slot)
    assert store.count_regions(pipeline.vectors().model_id) == 0
    before = search.search("a blue star", k=40)
    rank_before = [r.path for r in before].index(scene)

    calls = toy_embedder.image_calls
    pipeline.config = replace(pipeline.config, regions=True)
    _run(pipeline, root)  # turning regions on re-embeds what has none
    photos = store.status_counts()["indexed"]
    assert store.count_regions(pipeline.vectors().model_id) == photos * len(REGION_BOXES)
    assert toy_embedder.image_calls > calls

    after = search.search("a blue star", k=40)
    print(f"\nsmall blue star: rank {rank_before + 1} without regions, "
          f"{[r.path for r in after].index(scene) + 1} with")  # fmt: skip
    assert after[0].path == scene
    assert after[0].region == REGION_BOXES[0]  # the top-left region, where the star is
    circle = search.search("a red circle", k=40)
    hit = next(r for r in circle if r.path == scene)
    assert hit.region == REGION_BOXES[3]  # bottom right

    # Regions follow their photo: gone from the index and the database with it.
    Path(scene).unlink()
    _run(pipeline, root)
    assert store.count_regions(pipeline.vectors().model_id) == (photos - 1) * len(REGION_BOXES)
    assert scene not in [r.path for r in search.search("a blue star", k=40)]


def test_region_index_is_rebuilt_from_the_database_on_open(library, toy_embedder, paths: AppPaths) -> None:
    store, pipeline, root, scene = library
    pipeline.config = replace(pipeline.config, regions=True)
    _run(pipeline, root)
    fresh = IndexingPipeline(store, single_space(store, toy_embedder, paths.index_dir), None, PipelineConfig())
    assert len(fresh.vectors().regions) == len(pipeline.vectors().regions) > 0
    top = SearchService(store, fresh.slot).search("a blue star", k=1)[0]
    assert top.path == scene and top.region == REGION_BOXES[0]


def test_a_strong_part_counts_and_a_whole_match_is_reported_whole(library, toy_embedder, paths: AppPaths) -> None:
    """Regions on calibrated strengths: a part counts on its own strength, however far below the
    best whole photo its cosine is, and a photo that matches as a whole is reported whole."""
    from indexer.tags.tagger import Tagger
    from indexer.tags.vocabulary import TOYWORLD_VOCABULARY
    from store.tags import TagStore

    store, pipeline, root, scene = library
    tags = TagStore(store.db)
    tagger = Tagger(tags, store, pipeline.slot, TOYWORLD_VOCABULARY)
    tagger.seed_vocabulary()
    pipeline.tagger = tagger
    pipeline.config = replace(pipeline.config, regions=True)
    _run(pipeline, root)
    tagger.retag()
    assert tags.descriptions(pipeline.vectors().model_id) is not None, "the tagger saved what search calibrates with"
    search = SearchService(store, pipeline.slot, tags)

    stars = search.search("a blue star", k=40)
    matches = [r for r in stars if not r.weak]
    hit = next(r for r in matches if r.path == scene)
    assert hit.region == REGION_BOXES[0], "the small star is a match by its part, top left"

    circles = [r for r in search.search("a red circle", k=40) if not r.weak]
    whole = next(r for r in circles if Path(r.path).name == "red-circle.jpg")
    assert whole.region is None, "a red circle that fills its photo matches as a whole"
    part = next(r for r in circles if r.path == scene)
    assert part.region == REGION_BOXES[3]
