"""Object search end to end: toy scenes with two shapes, the real toy model, a flood-fill segmenter."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from indexer.errors import QueryError
from indexer.ingest.pipeline import IndexingPipeline, PipelineConfig
from indexer.models.embedder import OpenClipEmbedder
from indexer.models.space import single_space
from indexer.search.service import SearchService
from indexer.segment.objects import ObjectSearch, cutout, mask_box, object_crop
from indexer.toyworld.world import ShapeSpec, all_specs, background, draw_shape
from store.library import LibraryStore
from store.paths import AppPaths
from tests.fakes import FloodFillSegmenter
from tests.photos import write_photo


def two_shape_scene(path: Path, left: ShapeSpec, right: ShapeSpec, seed: int, orientation: int = 1) -> Path:
    """A 480x240 photo: ``left`` centred at (120, 120), ``right`` at (360, 120), radius 70."""
    rng = random.Random(seed)
    img = background(rng, (480, 240), dark=False)
    draw = ImageDraw.Draw(img)
    draw_shape(draw, left, 120, 120, 70, rng)
    draw_shape(draw, right, 360, 120, 70, rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    if orientation == 6:  # stored rotated; EXIF says "rotate 90 CW to display"
        exif = Image.Exif()
        exif[0x0112] = 6
        img.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)
    else:
        img.save(path, quality=95)
    return path


@pytest.fixture
def objects(paths: AppPaths, toy_embedder: OpenClipEmbedder, tmp_path: Path):
    store = LibraryStore.open(paths.database)
    pipeline = IndexingPipeline(
        store, single_space(store, toy_embedder, paths.index_dir), None, PipelineConfig(batch_size=32)
    )
    root = tmp_path / "library"
    truth = {}
    for n, spec in enumerate(all_specs()):
        for i in range(3):
            path = write_photo(root / f"{spec.colour}-{spec.shape}-{i}.jpg", spec, seed=700 + 10 * n + i)
            truth[str(path.resolve())] = spec
    for _ in pipeline.run([root]):
        pass
    segmenter = FloodFillSegmenter()
    search = SearchService(store, pipeline.slot)
    yield ObjectSearch(store, search, lambda: segmenter), segmenter, truth
    store.close()


BLUE_STAR, RED_CIRCLE = ShapeSpec("star", "blue"), ShapeSpec("circle", "red")


@pytest.mark.parametrize("orientation", [1, 6])
def test_clicking_one_shape_finds_that_shape_not_the_other(objects, tmp_path: Path, orientation: int) -> None:
    search, segmenter, truth = objects
    scene = two_shape_scene(tmp_path / "scene.jpg", BLUE_STAR, RED_CIRCLE, seed=5, orientation=orientation)
    star = search.segment(scene, [(120, 120)], [1])  # upright photo pixels, whatever the file's rotation
    assert star.photo.size == (480, 240)
    x0, y0, x1, y1 = mask_box(star.full_mask())
    assert 45 <= x0 < 120 < x1 <= 195 and 45 <= y0 < 120 < y1 <= 195  # the star, on the left
    results = search.search_object(star, k=3)
    assert [truth[r.path] for r in results] == [BLUE_STAR] * 3
    circle = search.segment(scene, [(360, 120)], [1])
    assert [truth[r.path] for r in search.search_object(circle, k=3)] == [RED_CIRCLE] * 3
    assert segmenter.encoder_calls == 1  # two objects, several clicks: one encoding of the photo
    # A box around the circle alone works as a region search.
    region = search.search_region(scene, (280, 40, 440, 200), k=3)
    assert truth[region[0].path].shape == "circle"


def test_the_source_photo_is_left_out_and_points_scale_to_the_working_copy(objects, tmp_path: Path) -> None:
    search, segmenter, truth = objects
    library_star = next(p for p, s in truth.items() if s == BLUE_STAR)
    seg = search.segment(library_star, [(48, 48)], [1])
    results = search.search_object(seg, k=5)
    assert library_star not in [r.path for r in results]
    big = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 1500), (200, 200, 200)).save(big)
    search.segment(big, [(1500, 750)], [1])
    points = segmenter.calls[-1][0]
    np.testing.assert_allclose(points, [[512.0, 256.0]])  # long side 3000 -> 1024


def test_object_crop_neutralises_the_background_and_cutout_is_transparent() -> None:
    pixels = np.zeros((100, 100, 3), np.uint8)
    pixels[:] = (255, 0, 0)
    pixels[:, :40] = (0, 0, 255)  # a blue neighbour left of the object, inside the margin
    mask = np.zeros((100, 100), bool)
    mask[40:60, 40:60] = True
    crop = object_crop(pixels, mask, margin=0.5)
    assert crop.shape == (40, 40, 3)  # 20x20 box + 10 px margin each side
    assert tuple(crop[20, 20]) == (255, 0, 0)
    # Outside the mask: one flat colour, the mean of what was there (800 red, 400 blue pixels).
    outside = crop[~mask[30:70, 30:70]]
    assert (outside == outside[0]).all() and tuple(outside[0]) == (170, 0, 85)
    cut = cutout(pixels, mask)
    assert cut.mode == "RGBA" and cut.size == (20, 20) and cut.getpixel((0, 0))[3] == 255
    with pytest.raises(QueryError):
        object_crop(pixels, np.zeros((100, 100), bool))
