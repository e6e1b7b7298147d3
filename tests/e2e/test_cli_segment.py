"""``glimpse segment`` and ``glimpse search --object`` with a real MobileSAM network (test-made weights)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from indexer.segment.sam import build_sam
from indexer.toyworld.world import ShapeSpec, all_specs
from tests.e2e.test_cli import env, run  # noqa: F401  (env is a fixture)
from tests.photos import write_photo
from tests.unit.test_objects import two_shape_scene


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_sam("vit_t")
    path = tmp_path_factory.mktemp("sam") / "mobile_sam.pt"
    torch.save(model.state_dict(), path)
    return path


def test_segment_writes_a_photo_sized_mask_and_a_cutout(tmp_path: Path, env: dict[str, str], checkpoint: Path) -> None:  # noqa: F811
    scene = two_shape_scene(tmp_path / "scene.jpg", ShapeSpec("star", "blue"), ShapeSpec("circle", "red"), 3, 6)
    mask, cut = tmp_path / "mask.png", tmp_path / "cut.png"
    res = run(["--sam-weights", str(checkpoint), "segment", str(scene), "--point", "120,120", "--negative",
               "360,120", "--out", str(mask), "--cutout", str(cut), "--json"], env)  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["size"] == [480, 240] and len(data["candidates"]) == 3
    with Image.open(mask) as m:
        assert m.size == (480, 240) and m.mode == "L"
    if data["box"] is not None:  # random weights may find nothing; when they do, the cut-out is RGBA
        with Image.open(cut) as c:
            assert c.mode == "RGBA"


def test_object_search_runs_and_offline_without_weights_says_what_to_do(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
    checkpoint: Path,
) -> None:
    root = tmp_path / "library"
    for n, spec in enumerate(all_specs()[:6]):
        write_photo(root / f"{n}.jpg", spec, seed=n)
    assert run(["index", str(root)], env).returncode == 0
    scene = two_shape_scene(root / "scene.jpg", ShapeSpec("star", "blue"), ShapeSpec("circle", "red"), 3)
    assert run(["index", str(root)], env).returncode == 0
    res = run(["--sam-weights", str(checkpoint), "search", "--object", str(scene), "--point", "120,120", "-k", "3",
               "--all", "--json"], env)  # fmt: skip
    assert res.returncode == 0, res.stderr
    hits = json.loads(res.stdout)
    assert len(hits) == 3 and str(scene.resolve()) not in [h["path"] for h in hits]
    res = run(["search", "--region", str(scene), "--box", "280,40,440,200", "-k", "2", "--all", "--json"], env)
    assert res.returncode == 0 and len(json.loads(res.stdout)) == 2
    # No weights on disk and no network: exit 4, naming the file, its size and where it goes.
    res = run(["segment", str(scene), "--point", "120,120"], env)
    assert res.returncode == 4
    assert "mobile_sam.pt" in res.stderr and "41 MB" in res.stderr and "--sam-weights" in res.stderr
