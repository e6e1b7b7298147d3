"""The library service with a real watchdog observer on real folders: the store ends equal to the disk."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from indexer.ingest.pipeline import IndexingPipeline, PipelineConfig
from indexer.ingest.scanner import walk_photos
from indexer.live.service import LibraryService, ServiceConfig
from indexer.models.space import single_space
from indexer.toyworld.world import all_specs
from store.library import LibraryStore
from store.paths import AppPaths
from tests.fakes import FakeEmbedder
from tests.photos import write_photo

SPECS = all_specs()


def photo(path: Path, n: int) -> Path:
    return write_photo(path, SPECS[n % len(SPECS)], seed=n, size=(96, 72))


@pytest.fixture
def live(paths: AppPaths, tmp_path: Path):
    store = LibraryStore.open(paths.database)
    embedder = FakeEmbedder({})
    pipeline = IndexingPipeline(
        store, single_space(store, embedder, paths.index_dir), None, PipelineConfig(batch_size=64, decode_workers=1)
    )
    root = tmp_path / "Photos"
    root.mkdir()
    store.add_folder(str(root))
    service = LibraryService(
        store, pipeline, config=ServiceConfig(quiet=0.3, settle=0.2, root_check_interval=0.3, poll_interval=0.5)
    )
    yield service, store, pipeline, embedder, root
    service.stop()
    store.close()


def settle(service: LibraryService, timeout: float = 120) -> None:
    time.sleep(0.5)  # let the observer deliver what the test just did
    assert service.wait_idle(timeout), service.status


def eventually_matches(store: LibraryStore, pipeline: IndexingPipeline, root: Path, timeout: float = 30) -> dict:
    """The store equals the disk, allowing for events the kernel delivers late under load
    (a folder moved out of the tree is reported only after inotify gives up pairing the move)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return assert_matches_disk(store, pipeline, root)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def assert_matches_disk(store: LibraryStore, pipeline: IndexingPipeline, root: Path) -> dict[str, int]:
    disk = {f.path for f in walk_photos(root)}
    rows = store.files_under(str(root))
    assert set(rows) == disk
    assert {s.status for s in rows.values()} <= {"indexed"}, [(f.path, f.error) for f in store.failures()]
    assert sorted(pipeline.vectors().index.ids().tolist()) == sorted(s.id for s in rows.values())
    assert store.count_embeddings(pipeline.vectors().model_id) == len(rows)
    return {p: s.id for p, s in rows.items()}


def test_files_created_modified_deleted_and_moved(live) -> None:
    service, store, pipeline, _embedder, root = live
    for n in range(10):
        photo(root / f"p{n}.jpg", n)
    service.start()
    settle(service)
    ids = assert_matches_disk(store, pipeline, root)

    for n in range(10, 15):
        photo(root / "new" / f"p{n}.jpg", n)
    photo(root / "p0.jpg", 99)  # edited
    os.utime(root / "p0.jpg", ns=(1, 1_000_000_000))
    (root / "p1.jpg").unlink()
    (root / "p2.jpg").rename(root / "renamed.jpg")
    (root / "new" / "sub").mkdir()
    (root / "p3.jpg").rename(root / "new" / "sub" / "p3.jpg")
    (root / "download.jpg.part").write_bytes(b"half a photo")
    settle(service)
    after = eventually_matches(store, pipeline, root)
    assert after[str(root / "renamed.jpg")] == ids[str(root / "p2.jpg")], "a renamed photo keeps its id"
    assert after[str(root / "new" / "sub" / "p3.jpg")] == ids[str(root / "p3.jpg")]
    assert after[str(root / "p0.jpg")] == ids[str(root / "p0.jpg")]

    # A download finishing: the partial file is renamed to its real name.
    shutil.copy(root / "p4.jpg", root / "download.jpg.part")
    (root / "download.jpg.part").rename(root / "done.jpg")
    settle(service)
    eventually_matches(store, pipeline, root)


def test_folder_of_500_photos_moved_keeps_every_vector(live) -> None:
    service, store, pipeline, embedder, root = live
    album = root / "album"
    for n in range(500):
        photo(album / f"img{n:03d}.jpg", n)
    service.start()
    settle(service)
    before = assert_matches_disk(store, pipeline, root)
    calls = embedder.image_calls
    album.rename(root / "Holidays 2024")
    settle(service)
    after = eventually_matches(store, pipeline, root)
    assert {Path(p).name: i for p, i in after.items()} == {Path(p).name: i for p, i in before.items()}
    assert embedder.image_calls == calls, "moving a folder must not re-embed anything"
    # And out of the library entirely: every row and vector goes.
    shutil.move(str(root / "Holidays 2024"), str(root.parent / "elsewhere"))
    settle(service)
    assert eventually_matches(store, pipeline, root) == {}


def test_burst_of_2000_events(live) -> None:
    service, store, pipeline, _, root = live
    service.start()
    settle(service)
    for n in range(400):  # create + close: ~800 events
        photo(root / f"d{n % 8}" / f"b{n:03d}.jpg", n)
    for n in range(0, 400, 2):  # 200 renames
        (root / f"d{n % 8}" / f"b{n:03d}.jpg").rename(root / f"d{n % 8}" / f"r{n:03d}.jpg")
    for n in range(1, 400, 4):  # 100 deletes
        (root / f"d{n % 8}" / f"b{n:03d}.jpg").unlink()
    for n in range(3, 400, 4):  # 100 edits (modify + close events)
        with open(root / f"d{n % 8}" / f"b{n:03d}.jpg", "ab") as fh:
            fh.write(b"\0")
    (root / "d0").rename(root / "d0-renamed")
    (root / "d1").rename(root / "d0")  # a name reused at once
    settle(service)
    assert len(eventually_matches(store, pipeline, root)) == 300
    assert service.status.applied_events >= 1000


def test_unplugged_root_is_offline_not_deleted(live, tmp_path: Path) -> None:
    service, store, pipeline, _, root = live
    for n in range(5):
        photo(root / f"p{n}.jpg", n)
    service.start()
    settle(service)
    ids = assert_matches_disk(store, pipeline, root)
    root.rename(tmp_path / "unplugged")
    deadline = time.monotonic() + 30
    while store.folders()[0].online and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not store.folders()[0].online
    assert set(store.files_under(str(root))) == set(ids), "photos of an unplugged drive are kept"
    (tmp_path / "unplugged").rename(root)
    deadline = time.monotonic() + 30
    while not store.folders()[0].online and time.monotonic() < deadline:
        time.sleep(0.1)
    settle(service)
    assert store.folders()[0].online
    assert assert_matches_disk(store, pipeline, root) == ids
