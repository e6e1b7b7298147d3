"""The indexing pipeline: scan, decode in processes, embed in batches, commit.

Decoding bounds indexing on a CPU, so it runs in worker processes (the GIL rules
out threads) while one model thread embeds the previous batch. The generator's
own thread is the single database writer: each batch is one transaction that
stores vectors, metadata and statuses together, then the vectors join the FAISS
index. A kill at any point loses at most the batches in flight; the next run
picks up exactly the images that have no vector yet, so nothing is embedded
twice and nothing is lost.

``run()`` is a generator of :class:`Progress`; it honours pause and cancel at
every yield. The CLI draws a progress bar from it; the GUI runs it on a worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.decode import DEFAULT_MAX_PIXELS, THUMBNAIL_SIZE
from indexer.decode_worker import Decoded, DecodeJob, decode_job, init_worker
from indexer.embedder import Embedder
from indexer.scanner import Scanner, ScanReport
from indexer.thumbnails import ThumbnailCache, thumbnail_key
from store.library import LibraryStore
from store.records import EmbeddedImage, FailedImage
from store.vectors import ModelVectors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    phase: str  # "loading" | "scanning" | "indexing" | "done"
    done: int = 0
    total: int = 0
    failed: int = 0
    current_path: str | None = None
    rate: float = 0.0  # images per second
    eta_s: float | None = None


@dataclass
class IndexReport:
    scan: ScanReport | None = None
    indexed: int = 0
    failed: int = 0
    cancelled: bool = False
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class PipelineConfig:
    batch_size: int = 32
    decode_workers: int = max(1, min(8, os.cpu_count() or 1))
    thumbnail_size: int | None = THUMBNAIL_SIZE
    max_pixels: int = DEFAULT_MAX_PIXELS
    save_interval: float = 60.0


class Control:
    """Pause, resume and cancel, shared between the caller and the running generator."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def cancel(self) -> None:
        self._cancel.set()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_if_paused(self) -> None:
        self._running.wait()


# ---- the pipeline -------------------------------------------------------------------------

class IndexingPipeline:
    def __init__(self, store: LibraryStore, embedder: Embedder, index_dir: Path,
                 thumbnails: ThumbnailCache | None = None, config: PipelineConfig | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.index_dir = index_dir
        self.thumbnails = thumbnails
        self.config = config or PipelineConfig()
        self.scanner = Scanner(store)
        self._vectors: ModelVectors | None = None
        self._vectors_lock = threading.Lock()

    def vectors(self) -> ModelVectors:
        """The active model's vector index (loads the model to learn its id and size)."""
        with self._vectors_lock:
            if self._vectors is None:
                self.embedder.load()
                model_id = self.store.register_model(self.embedder.record)
                self._vectors = ModelVectors.open(self.store, model_id, self.embedder.dim, self.index_dir,
                                                  self.config.save_interval)
            return self._vectors

    def run(self, roots: Sequence[Path] | None = None, control: Control | None = None
            ) -> Generator[Progress, None, IndexReport]:
        """Scan ``roots`` (all watched folders if None), then embed everything pending."""
        control = control or Control()
        report = IndexReport()
        started = time.monotonic()
        yield Progress("loading")
        vectors = self.vectors()
        roots = [Path(r) for r in roots] if roots is not None else [Path(f.path) for f in self.store.folders()
                                                                   if f.enabled]
        yield Progress("scanning")
        report.scan = self.scanner.scan(list(roots))
        vectors.remove(report.scan.stale_ids)
        pending = self.store.pending_images(vectors.model_id, [str(r) for r in roots] if roots else None)
        try:
            yield from self._embed_all(pending, vectors, control, report)
        finally:
            vectors.save()
        report.seconds = time.monotonic() - started
        yield Progress("done", report.indexed, len(pending), report.failed, rate=report.rate)
        return report

    def _embed_all(self, pending: list[tuple[int, str]], vectors: ModelVectors, control: Control,
                   report: IndexReport) -> Generator[Progress, None, None]:
        if not pending:
            return
        cfg = self.config
        spec = self.embedder.preprocess
        thumb_dir = str(self.thumbnails.root) if self.thumbnails is not None else None
        hashes = self._thumb_keys([i for i, _ in pending])
        jobs = [DecodeJob(i, p, hashes.get(i)) for i, p in pending]
        total = len(jobs)
        next_job = 0
        in_flight: dict[Future[Decoded], DecodeJob] = {}
        crashes: dict[int, int] = {}
        decoded: list[Decoded] = []
        failed: list[FailedImage] = []
        model_futures: list[tuple[Future[np.ndarray], list[Decoded]]] = []
        max_in_flight = max(cfg.decode_workers * 4, cfg.batch_size * 2)
        t0 = time.monotonic()

        def new_pool() -> ProcessPoolExecutor:
            return ProcessPoolExecutor(cfg.decode_workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=init_worker, initargs=(cfg.max_pixels,))

        pool = new_pool()
        model_thread = ThreadPoolExecutor(1, thread_name_prefix="glimpse-model")
        try:
            while True:
                control.wait_if_paused()
                if control.cancelled:
                    report.cancelled = True
                    break
                while next_job < total and len(in_flight) < max_in_flight:
                    job = jobs[next_job]
                    next_job += 1
                    in_flight[pool.submit(decode_job, job, spec, thumb_dir, cfg.thumbnail_size,
                                          cfg.max_pixels)] = job
                if in_flight:
                    finished, _ = wait(list(in_flight), timeout=0.05, return_when=FIRST_COMPLETED)
                    broken = False
                    for fut in finished:
                        job = in_flight.pop(fut)
                        try:
                            res = fut.result()
                        except BrokenProcessPool:
                            broken = True
                            crashes[job.image_id] = crashes.get(job.image_id, 0) + 1
                            if crashes[job.image_id] >= 2:
                                why = f"{Path(job.path).name}: the decoder crashed on this file (damaged?)"
                                failed.append(FailedImage(job.image_id, why))
                                report.failures.append((job.path, why))
                            else:
                                jobs.append(job)
                                total += 1
                            continue
                        if res.error is not None:
                            failed.append(FailedImage(job.image_id, res.error))
                            report.failures.append((job.path, res.error))
                        else:
                            decoded.append(res)
                    if broken:
                        # A worker died (a decoder crash): resubmit the others in a fresh pool.
                        for job in in_flight.values():
                            crashes[job.image_id] = crashes.get(job.image_id, 0) + 1
                            jobs.append(job)
                            total += 1
                        in_flight.clear()
                        pool.shutdown(wait=False, cancel_futures=True)
                        pool = new_pool()
                all_submitted = next_job >= total and not in_flight
                if len(decoded) >= cfg.batch_size or (all_submitted and decoded):
                    batch, decoded = decoded[: cfg.batch_size], decoded[cfg.batch_size:]
                    pixels = np.stack([d.pixels for d in batch])  # type: ignore[misc]
                    model_futures.append((model_thread.submit(self.embedder.embed_images, pixels), batch))
                # Commit finished model batches in order; keep at most two in flight.
                while model_futures and (model_futures[0][0].done() or len(model_futures) > 2
                                         or (all_submitted and not decoded)):
                    fut, batch = model_futures.pop(0)
                    vecs = fut.result()
                    self._commit(vectors, batch, vecs, failed)
                    report.indexed += len(batch)
                    report.failed += len(failed)
                    failed = []
                    vectors.maybe_save()
                    elapsed = time.monotonic() - t0
                    rate = report.indexed / elapsed if elapsed > 0 else 0.0
                    left = total - report.indexed - report.failed
                    yield Progress("indexing", report.indexed + report.failed, total, report.failed,
                                   batch[-1].job.path, rate, left / rate if rate > 0 else None)
                if failed and not model_futures and not decoded:
                    self._commit(vectors, [], np.empty((0, 0), np.float32), failed)
                    report.failed += len(failed)
                    failed = []
                    yield Progress("indexing", report.indexed + report.failed, total, report.failed)
                if all_submitted and not decoded and not model_futures and not failed:
                    break
            # Cancelled: commit what the model already finished; drop the rest (it stays pending).
            for fut, batch in model_futures:
                self._commit(vectors, batch, fut.result(), [])
                report.indexed += len(batch)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            model_thread.shutdown(wait=True)

    def _thumb_keys(self, ids: list[int]) -> dict[int, str]:
        recs = self.store.images(ids)
        return {i: thumbnail_key(r.content_hash, r.path, r.size, r.mtime_ns) for i, r in recs.items()}

    def _commit(self, vectors: ModelVectors, batch: list[Decoded], vecs: np.ndarray,
                failed: list[FailedImage]) -> None:
        vecs16 = vecs.astype("<f2")
        done = []
        for vec, d in zip(vecs16, batch, strict=True):
            meta = d.meta
            assert meta is not None  # decoded results always carry metadata
            done.append(EmbeddedImage(
                image_id=d.job.image_id, vector=vec.tobytes(), width=meta.width, height=meta.height,
                taken_at=meta.taken_at, camera_make=meta.camera_make, camera_model=meta.camera_model,
                orientation=meta.orientation, thumbnail_key=d.job.thumb_key))
        self.store.save_batch(vectors.model_id, done, failed)
        if batch:
            # The index holds exactly what the database holds: the float16-rounded vectors.
            ids = np.fromiter((d.job.image_id for d in batch), np.int64, len(batch))
            vectors.add(ids, vecs16.astype(np.float32))
