"""The indexing pipeline with the real toy-world model: meaning, failures, resume, no repeated work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.ingest.decode_worker import Decoded, DecodeJob
from indexer.ingest.pipeline import Control, DecodePool, IndexingPipeline, IndexReport, PipelineConfig
from indexer.ingest.thumbnails import ThumbnailCache
from indexer.models.embedder import OpenClipEmbedder
from indexer.models.preprocess import PreprocessSpec
from indexer.models.space import single_space
from indexer.search.service import SearchService
from indexer.toyworld.world import all_specs
from store.library import LibraryStore
from store.paths import AppPaths
from store.records import FailedImage, ImageStatus
from tests.photos import write_photo
from tests.steps import drain


def _run(pipeline: IndexingPipeline, roots: list[Path], control: Control | None = None) -> IndexReport:
    return drain(pipeline.run(roots, control))


def _decode_all(pool: DecodePool) -> tuple[list[Decoded], list[FailedImage]]:
    """Pump ``pool`` until every job is decoded or failed, then close it."""
    ok: list[Decoded] = []
    bad: list[FailedImage] = []
    try:
        while not pool.exhausted:
            good, failed = pool.pump(timeout=0.1)
            ok += good
            bad += failed
    finally:
        pool.close()
    return ok, bad


@pytest.fixture
def library(paths: AppPaths, toy_embedder: OpenClipEmbedder):
    store = LibraryStore.open(paths.database)
    pipeline = IndexingPipeline(
        store,
        single_space(store, toy_embedder, paths.index_dir),
        ThumbnailCache(paths.thumbnails_dir),
        PipelineConfig(batch_size=16, decode_workers=2),
    )
    yield store, pipeline
    store.close()


def _toy_folder(root: Path, per_spec: int = 2) -> dict[Path, str]:
    truth = {}
    for n, spec in enumerate(all_specs()):
        for i in range(per_spec):
            path = write_photo(root / spec.shape / f"{spec.colour}-{i}.jpg", spec, seed=1000 + n * 10 + i)
            truth[path] = spec.caption
    return truth


def test_index_then_search_finds_the_right_shapes(library, tmp_path: Path, toy_embedder) -> None:
    store, pipeline = library
    truth = _toy_folder(tmp_path / "photos")
    report = _run(pipeline, [tmp_path / "photos"])
    assert (report.indexed, report.failed) == (len(truth), 0)
    search = SearchService(store, pipeline.slot)
    hits = 0
    for spec in all_specs():
        top = search.search(spec.caption, k=2)
        hits += sum(truth[Path(r.path)] == spec.caption for r in top)
    accuracy = hits / (2 * len(all_specs()))
    print(f"toy-world retrieval precision@2 over {len(all_specs())} captions: {accuracy:.2%}")
    assert accuracy >= 0.75


def test_bad_files_are_recorded_and_skipped(library, tmp_path: Path) -> None:
    store, pipeline = library
    root = tmp_path / "photos"
    _toy_folder(root, per_spec=1)
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.png").write_text("not a picture")
    (root / "cut.jpg").write_bytes((root / "circle" / "red-0.jpg").read_bytes()[:400])
    report = _run(pipeline, [root])
    assert report.indexed == 36 and report.failed == 3
    failures = {Path(f.path).name: f.error for f in store.failures()}
    assert set(failures) == {"empty.jpg", "text.png", "cut.jpg"}
    assert "empty" in failures["empty.jpg"] and "truncated" in failures["cut.jpg"]
    assert store.status_counts()[ImageStatus.INDEXED] == 36
    assert len(pipeline.vectors()) == 36


def test_rerun_does_no_work_and_thumbnails_exist(library, tmp_path: Path, paths: AppPaths, toy_embedder) -> None:
    store, pipeline = library
    root = tmp_path / "photos"
    _toy_folder(root, per_spec=1)
    _run(pipeline, [root])
    calls = toy_embedder.image_calls
    again = _run(pipeline, [root])
    assert again.indexed == 0 and again.scan is not None and again.scan.unchanged == 36
    assert toy_embedder.image_calls == calls, "an unchanged library must not be embedded again"
    rec = store.image_by_path(str(root / "star" / "blue-0.jpg"))
    assert rec is not None and rec.thumbnail_key
    assert ThumbnailCache(paths.thumbnails_dir).path_for(rec.thumbnail_key).is_file()
    assert (rec.width, rec.height) == (320, 240)


def test_cancel_keeps_finished_batches_and_resume_completes(library, tmp_path: Path) -> None:
    store, pipeline = library
    root = tmp_path / "photos"
    _toy_folder(root, per_spec=3)  # 108 photos, 7 batches
    control = Control()
    gen = pipeline.run([root], control)
    for progress in gen:
        if progress.phase == "indexing" and progress.done >= 16:
            control.cancel()
    model_id = pipeline.vectors().model_id
    first = store.count_embeddings(model_id)
    assert 16 <= first < 108
    report = _run(pipeline, [root])
    assert report.indexed == 108 - first, "the second run embeds exactly what the first did not"
    assert store.count_embeddings(model_id) == 108
    assert sorted(pipeline.vectors().index.ids().tolist()) == sorted(
        s.id for s in store.files_under(str(root)).values()
    )


def test_pause_blocks_until_resumed(library, tmp_path: Path) -> None:
    import threading
    import time

    _, pipeline = library
    root = tmp_path / "photos"
    _toy_folder(root, per_spec=1)
    control = Control()
    control.pause()
    done = threading.Event()

    def worker() -> None:
        _run(pipeline, [root], control)
        done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(1.5)
    assert not done.is_set()
    control.resume()
    thread.join(timeout=120)
    assert done.is_set()


def test_changed_photo_is_re_embedded_and_vector_replaced(library, tmp_path: Path) -> None:
    store, pipeline = library
    root = tmp_path / "photos"
    spec_a, spec_b = all_specs()[0], all_specs()[-1]
    path = write_photo(root / "p.jpg", spec_a, seed=1)
    write_photo(root / "q.jpg", spec_b, seed=2)
    _run(pipeline, [root])
    vectors = pipeline.vectors()
    image_id = store.image_by_path(str(path)).id
    before = store.embedding(image_id, vectors.model_id, vectors.dim)
    write_photo(path, spec_b, seed=3)
    import os

    os.utime(path, ns=(1, 10**18))
    report = _run(pipeline, [root])
    assert report.scan.changed == 1 and report.indexed == 1
    after = store.embedding(image_id, vectors.model_id, vectors.dim)
    assert float(np.dot(before, after)) < 0.99
    assert len(vectors) == 2


def test_a_decoder_crash_fails_only_the_guilty_photo(tmp_path: Path) -> None:
    from tests.crashy import crash_on_named

    paths = [write_photo(tmp_path / f"ok{i}.jpg", all_specs()[i], seed=i) for i in range(9)]
    paths.insert(4, write_photo(tmp_path / "crash.jpg", all_specs()[0], seed=99))
    jobs = [DecodeJob(i, str(p), None) for i, p in enumerate(paths)]
    spec = PreprocessSpec(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    pool = DecodePool(jobs, spec, PipelineConfig(batch_size=4, decode_workers=2), None, job_fn=crash_on_named)
    ok, bad = _decode_all(pool)
    assert sorted(d.job.image_id for d in ok) == [i for i in range(10) if i != 4]
    assert [(f.image_id, "crashed" in f.error) for f in bad] == [(4, True)]


def test_a_photo_gone_before_its_decode_is_not_recorded_as_unreadable(library, tmp_path: Path) -> None:
    """Moved or deleted while queued: the row stays pending for the watcher or the next scan to
    settle, instead of being marked failed (which would strand a photo that merely moved)."""
    store, pipeline = library
    _toy_folder(tmp_path / "photos", per_spec=1)
    pipeline.scanner.scan([tmp_path / "photos"])
    pending = store.pending_images(pipeline.vectors().model_id)
    gone_id, gone_path = pending[0]
    Path(gone_path).unlink()
    report = drain(pipeline.index_pending())
    assert report.failed == 0 and report.indexed == len(pending) - 1
    assert store.images([gone_id])[gone_id].status == ImageStatus.PENDING
    _run(pipeline, [tmp_path / "photos"])  # the next scan notices it is gone
    assert store.image_by_path(gone_path) is None


def test_a_stalled_decode_is_failed_with_a_reason_and_the_rest_decode(tmp_path: Path) -> None:
    """A photo that stalls past the time limit is failed, whether the stall can be interrupted
    (soft limit) or not (the worker is killed and replaced); the others decode normally."""
    from tests.crashy import stall_on_named

    paths = [write_photo(tmp_path / f"ok{i}.jpg", all_specs()[i], seed=i) for i in range(6)]
    paths.insert(2, write_photo(tmp_path / "stall.jpg", all_specs()[0], seed=98))
    paths.insert(5, write_photo(tmp_path / "hang.jpg", all_specs()[0], seed=99))
    jobs = [DecodeJob(i, str(p), None) for i, p in enumerate(paths)]
    spec = PreprocessSpec(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    cfg = PipelineConfig(batch_size=4, decode_workers=2, decode_timeout_s=1.0)
    pool = DecodePool(jobs, spec, cfg, None, job_fn=stall_on_named)
    ok, bad = _decode_all(pool)
    assert sorted(d.job.image_id for d in ok) == [i for i in range(8) if i not in (2, 5)]
    assert sorted(f.image_id for f in bad) == [2, 5]
    assert all("took longer than 1 s to decode" in f.error for f in bad), bad
