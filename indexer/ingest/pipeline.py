"""The indexing pipeline: scan, decode in processes, embed in batches, commit.

Decoding bounds indexing on a CPU, so it runs in worker processes (the GIL rules
out threads) while one model thread embeds the previous batch. The generator's
thread commits each batch as one command on the library's writer
(``store.writer``): one transaction stores vectors, metadata, statuses and tags
together, and the vectors join the in-memory FAISS index inside the same command,
so no other change can come between them. A kill at any point loses at most the batches in flight; the next run
picks up exactly the images that have no vector yet, so nothing is embedded
twice and nothing is lost.

``run()`` is a generator of :class:`Progress`; it honours pause and cancel at
every yield. The CLI draws a progress bar from it; the GUI runs it on a worker.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from indexer.errors import GlimpseError
from indexer.ingest.config import PipelineConfig
from indexer.ingest.decode import REGION_BOXES
from indexer.ingest.decode_worker import Decoded, DecodeJob, decode_job, init_worker
from indexer.ingest.scanner import Scanner, ScanReport
from indexer.ingest.thumbnails import ThumbnailCache, thumbnail_key
from indexer.models.embedder import Embedder
from indexer.models.preprocess import PreprocessSpec
from indexer.models.space import ModelSlot
from store.filenames import shown
from store.library import LibraryStore
from store.records import EmbeddedImage, FailedImage, RegionVector
from store.tags import Assignment
from store.vectors import ModelVectors, claim_index_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    phase: str  # "loading" | "scanning" | "indexing" | "tagging" (done/total: prompts) | "done"
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


class _ClosedPool(ProcessPoolExecutor):
    """What a closed :class:`DecodePool` holds: no processes, nothing to shut down."""

    def __init__(self) -> None:  # no super().__init__: it would make queues and a semaphore
        self._processes = None  # type: ignore[assignment]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


_CLOSED_POOL = _ClosedPool()


class DecodePool:
    """Decode jobs in worker processes, a bounded number in flight, surviving worker crashes.

    A decoder that crashes (a segfault in a codec on a hostile file) kills its worker and
    breaks the whole pool, failing every job in flight. Those jobs become suspects and are
    retried one at a time in a fresh pool: a suspect that crashes while running alone is
    the culprit and is reported as failed; the others decode normally. One bad file
    cannot stop a library from being indexed, nor take innocent photos down with it.
    """

    def __init__(
        self,
        jobs: list[DecodeJob],
        spec: PreprocessSpec,
        cfg: PipelineConfig,
        thumb_dir: str | None,
        job_fn: Callable[..., Decoded] = decode_job,
    ) -> None:
        self._queue = list(reversed(jobs))  # pop() from the end keeps the original order
        self._suspects: list[DecodeJob] = []
        self._paths = {j.image_id: j.path for j in jobs}
        self._thumb_dir = thumb_dir
        self._args = (spec, thumb_dir, cfg.thumbnail_size, cfg.max_pixels, cfg.decode_timeout_s)
        self._job_fn = job_fn
        self._cfg = cfg
        self._max_in_flight = max(cfg.decode_workers * 4, cfg.batch_size * 2)
        self._in_flight: dict[Future[Decoded], DecodeJob] = {}
        self._started: dict[Future[Decoded], float] = {}
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: forking a process that holds torch's thread pools can deadlock.
        return ProcessPoolExecutor(
            self._cfg.decode_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_worker,
            initargs=(self._cfg.max_pixels, self._cfg.nice, os.getpid()),
        )

    @property
    def exhausted(self) -> bool:
        return not self._queue and not self._suspects and not self._in_flight

    def path_of(self, image_id: int) -> str:
        return self._paths[image_id]

    def _submit(self, job: DecodeJob) -> None:
        future = self._pool.submit(self._job_fn, job, *self._args)
        self._in_flight[future] = job
        self._started[future] = time.monotonic()

    def pump(self, timeout: float) -> tuple[list[Decoded], list[FailedImage]]:
        """Top up the workers, then collect whatever finishes within ``timeout``."""
        if self._suspects:
            if not self._in_flight:  # isolation: one suspect at a time, nothing beside it
                self._submit(self._suspects.pop())
        else:
            while self._queue and len(self._in_flight) < self._max_in_flight:
                self._submit(self._queue.pop())
        ok: list[Decoded] = []
        bad: list[FailedImage] = []
        if not self._in_flight:
            return ok, bad
        alone = len(self._in_flight) == 1
        finished, _ = wait(list(self._in_flight), timeout=timeout, return_when=FIRST_COMPLETED)
        broken = False
        for future in finished:
            job = self._in_flight.pop(future)
            started = self._started.pop(future, time.monotonic())
            try:
                result = future.result()
            except BrokenProcessPool:
                broken = True
                if alone:
                    bad.append(FailedImage(job.image_id, self._crash_reason(job, time.monotonic() - started)))
                else:
                    self._suspects.append(job)
                continue
            if result.disk_errno is not None:
                raise OSError(result.disk_errno, os.strerror(result.disk_errno), self._thumb_dir)
            if result.vanished:
                # Moved or deleted while queued: the row stays pending; the watcher or the next
                # scan settles where it went. Recording it as unreadable would strand a moved photo.
                log.info("skipped %s: %s", job.path, result.error)
                continue
            if result.error is not None:
                bad.append(FailedImage(job.image_id, result.error))
            else:
                ok.append(result)
        if broken:
            self._suspects.extend(self._in_flight.values())
            self._in_flight.clear()
            self._started.clear()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
        return ok, bad

    def _crash_reason(self, job: DecodeJob, seconds: float) -> str:
        name = shown(Path(job.path).name)
        limit = self._cfg.decode_timeout_s
        if limit and seconds >= limit:
            return f"{name}: took longer than {limit:.0f} s to decode (stalled file or decoder?)."
        return f"{name}: the decoder crashed on this file (damaged or hostile image?)"

    def close(self, wait: bool = True) -> None:
        """Stop the workers; ``wait=False`` (on Ctrl-C) kills them instead of finishing their photos."""
        if not wait:
            for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
                with contextlib.suppress(OSError, AttributeError):
                    proc.kill()
        self._pool.shutdown(wait=wait, cancel_futures=True)
        # Let the executor (and its semaphores) go now, not when a traceback that holds this
        # pool is collected after the command has stopped multiprocessing's resource tracker.
        self._pool = _CLOSED_POOL


# ---- the pipeline -------------------------------------------------------------------------


class BatchTagger(Protocol):
    """What the pipeline needs from tagging (``indexer.tags.Tagger``): ingest does not import tags."""

    def prepare_if_ready(self) -> Any: ...

    def assign(self, ids: np.ndarray, vectors: np.ndarray, prepared: Any) -> list[Assignment]: ...

    def embed_stale_prompts(self) -> Generator[tuple[int, int], None, None]: ...

    def is_current(self) -> bool: ...

    def retag(self) -> Any: ...


class IndexingPipeline:
    """Scan, decode, embed and commit photos for the embedding space in ``slot``.

    Collaborators come in through the constructor: ``tagger`` (optional) gives each
    committed batch its automatic tags, computed from the new vectors inside the
    batch's own writer command (its tag model is prepared before, off the writer).

    Tags never hold photos back: a batch is tagged in its commit only when the tag
    model is ready. Otherwise (a new library: ~2,000 prompts to embed) photos are
    committed untagged and searchable at once, and the "tagging" phase after the last
    batch embeds the prompts in chunks, with progress, and then tags every photo.
    """

    def __init__(
        self,
        store: LibraryStore,
        slot: ModelSlot,
        thumbnails: ThumbnailCache | None = None,
        config: PipelineConfig | None = None,
        tagger: BatchTagger | None = None,
    ) -> None:
        self.store = store
        self.slot = slot
        self.thumbnails = thumbnails
        self.config = config or PipelineConfig()
        self.scanner = Scanner(store)
        self.tagger = tagger
        self._untagged = False  # a batch was committed without tags (the tag model was not ready)

    @property
    def embedder(self) -> Embedder:
        return self.slot.embedder

    def vectors(self) -> ModelVectors:
        """The space's vector index (loads the model to learn its id and size)."""
        return self.slot.vectors()

    def run(
        self, roots: Sequence[Path] | None = None, control: Control | None = None
    ) -> Generator[Progress, None, IndexReport]:
        """Scan ``roots`` (all watched folders if None), then embed everything pending."""
        control = control or Control()
        report = IndexReport()
        started = time.monotonic()
        yield Progress("loading")
        vectors = self.vectors()
        claim_index_dir(self.store, vectors.index_dir)  # indexing writes: own the library from the start
        roots = (
            [Path(r) for r in roots] if roots is not None else [Path(f.path) for f in self.store.folders() if f.enabled]
        )
        yield Progress("scanning")
        report.scan = self.scanner.scan(list(roots))
        vectors.remove(report.scan.stale_ids)
        yield from self.index_pending([str(r) for r in roots], control, report, check_tags=True)
        report.seconds = time.monotonic() - started
        return report

    def index_pending(
        self,
        under: Sequence[str] | None = None,
        control: Control | None = None,
        report: IndexReport | None = None,
        background: bool = False,
        check_tags: bool = False,
    ) -> Generator[Progress, None, IndexReport]:
        """Embed every photo under ``under`` (everything if None) that has no vector yet.

        ``background`` lowers the decode workers' priority, so a library that indexes
        itself while the user works keeps the machine responsive. Tags follow the photos
        (see the class doc); ``check_tags`` also brings stale tags up to date (a run
        killed in its tagging phase, a vocabulary changed while no one was watching).
        """
        control = control or Control()
        report = report if report is not None else IndexReport()
        started = time.monotonic()
        vectors = self.vectors()
        pending = self.store.pending_images(vectors.model_id, under or None)
        if self.config.regions:
            # Region indexing turned on after these were indexed: embed them again, with regions.
            backfill = self.store.images_without_regions(vectors.model_id, under or None)
            if backfill:
                vectors.remove(np.asarray([i for i, _ in backfill], np.int64))
                pending = sorted({*pending, *backfill})
        try:
            config = replace(self.config, nice=max(self.config.nice, 10)) if background else self.config
            yield from self._embed_all(pending, vectors, control, report, config)
        finally:
            vectors.save()
        if not control.cancelled:
            yield from self._tag_phase(check_tags)
        report.seconds += time.monotonic() - started
        yield Progress("done", report.indexed, len(pending), report.failed, rate=report.rate)
        return report

    def _embed_all(
        self,
        pending: list[tuple[int, str]],
        vectors: ModelVectors,
        control: Control,
        report: IndexReport,
        cfg: PipelineConfig,
    ) -> Generator[Progress, None, None]:
        if not pending:
            return
        plan = getattr(self.embedder, "plan_images", None)
        if plan is not None:  # the engine may pick a faster runtime for a large job
            plan(len(pending))
        keys = self._thumb_keys([i for i, _ in pending])
        jobs = [DecodeJob(i, p, keys.get(i), cfg.regions) for i, p in pending]
        total = len(jobs)
        decoded: list[Decoded] = []
        failed: list[FailedImage] = []
        model_batches: list[tuple[Future[tuple[np.ndarray, np.ndarray | None]], list[Decoded]]] = []
        t0 = time.monotonic()

        def progress(path: str | None) -> Progress:
            done = report.indexed + report.failed
            rate = report.indexed / max(time.monotonic() - t0, 1e-9)
            return Progress(
                "indexing", done, total, report.failed, path, rate, (total - done) / rate if rate > 0 else None
            )

        decoder = DecodePool(
            jobs, self.embedder.preprocess, cfg, str(self.thumbnails.root) if self.thumbnails is not None else None
        )
        model_thread = ThreadPoolExecutor(1, thread_name_prefix="glimpse-model")
        try:
            while True:
                control.wait_if_paused()
                if control.cancelled:
                    report.cancelled = True
                    break
                ok, bad = decoder.pump(timeout=0.05)
                decoded += ok
                failed += bad
                report.failures += [(decoder.path_of(f.image_id), f.error) for f in bad]
                if len(decoded) >= cfg.batch_size or (decoder.exhausted and decoded):
                    batch, decoded = decoded[: cfg.batch_size], decoded[cfg.batch_size :]
                    model_batches.append((model_thread.submit(self._embed_batch, batch), batch))
                # Commit finished model batches in order; at most two wait on the model at a time.
                while model_batches and (
                    model_batches[0][0].done() or len(model_batches) > 2 or (decoder.exhausted and not decoded)
                ):
                    future, batch = model_batches.pop(0)
                    self._commit(vectors, batch, *future.result(), failed, report)
                    failed = []
                    vectors.maybe_save()
                    yield progress(batch[-1].job.path)
                if failed and not model_batches and not decoded:
                    self._commit(vectors, [], np.empty((0, 0), np.float32), None, failed, report)
                    failed = []
                    yield progress(None)
                if decoder.exhausted and not decoded and not model_batches and not failed:
                    break
            # Cancelled: keep what the model already finished; the rest stays pending for next time.
            for future, batch in model_batches:
                self._commit(vectors, batch, *future.result(), [], report)
        except BaseException as exc:
            # Ctrl-C: stop now, killing the workers; a failed commit (a full disk): let the workers
            # finish their photo and go. Either way, photos in flight stay pending, for next time.
            decoder.close(wait=not isinstance(exc, KeyboardInterrupt))
            model_thread.shutdown(wait=True, cancel_futures=True)
            raise
        decoder.close()
        model_thread.shutdown(wait=True)

    def _embed_batch(self, batch: list[Decoded]) -> tuple[np.ndarray, np.ndarray | None]:
        """Runs on the model thread: the photos' vectors, and their regions' when asked for."""
        vecs = self.embedder.embed_images(np.stack([d.pixels for d in batch if d.pixels is not None]))
        crops = [d.regions for d in batch if d.regions is not None]
        if not crops:
            return vecs, None
        region_vecs = np.concatenate(
            [self.embedder.embed_images(c) for c in np.array_split(np.concatenate(crops), max(1, len(crops) // 8))]
        )
        return vecs, region_vecs

    def _prepare_tags(self) -> object | None:
        """The tagger's model if it is ready (never embeds prompts); a broken vocabulary must not stop indexing."""
        if self.tagger is None:
            return None
        try:
            prepared = self.tagger.prepare_if_ready()
        except GlimpseError as exc:
            log.warning("photos indexed without tags: %s", exc)
            return None
        if prepared is None:
            self._untagged = True
        return prepared

    def _tag_phase(self, check: bool) -> Generator[Progress, None, None]:
        """After the photos: embed missing prompts (with progress) and tag every photo."""
        if self.tagger is None or not (
            self._untagged or (check and len(self.vectors()) and not self.tagger.is_current())
        ):
            return
        try:
            for done, total in self.tagger.embed_stale_prompts():
                yield Progress("tagging", done, total)
            self.tagger.retag()
            self._untagged = False
        except GlimpseError as exc:
            log.warning("photos indexed without tags: %s", exc)

    def _thumb_keys(self, ids: list[int]) -> dict[int, str]:
        recs = self.store.images(ids)
        return {i: thumbnail_key(r.content_hash, r.path, r.size, r.mtime_ns) for i, r in recs.items()}

    def _commit(
        self,
        vectors: ModelVectors,
        batch: list[Decoded],
        vecs: np.ndarray,
        region_vecs: np.ndarray | None,
        failed: list[FailedImage],
        report: IndexReport,
    ) -> None:
        """One transaction for a batch (and any failures since the last), then the in-memory index."""
        vecs16 = vecs.astype("<f2")
        done = []
        for vec, d in zip(vecs16, batch, strict=True):
            meta = d.meta
            assert meta is not None  # decoded results always carry metadata
            done.append(
                EmbeddedImage(
                    image_id=d.job.image_id,
                    vector=vec.tobytes(),
                    width=meta.width,
                    height=meta.height,
                    taken_at=meta.taken_at,
                    camera_make=meta.camera_make,
                    camera_model=meta.camera_model,
                    orientation=meta.orientation,
                    thumbnail_key=d.job.thumb_key,
                    fingerprint=meta.fingerprint,
                )
            )
        ids = np.fromiter((d.job.image_id for d in batch), np.int64, len(batch))
        # The index holds exactly what the database holds: the float16-rounded vectors.
        stored = vecs16.astype(np.float32)
        regions: list[RegionVector] | None = None
        r16 = None
        if region_vecs is not None:
            owners = [d.job.image_id for d in batch if d.regions is not None for _ in REGION_BOXES]
            boxes = [b for d in batch if d.regions is not None for b in REGION_BOXES]
            r16 = region_vecs.astype("<f2")
            regions = [RegionVector(o, b, v.tobytes()) for o, b, v in zip(owners, boxes, r16, strict=True)]

        prepared = self._prepare_tags() if batch else None

        def command(_conn: object) -> None:
            # One writer command: the rows, the photos' tags (computed here, with the tag model
            # in force now, so no re-tag can slip between them) and the in-memory indexes.
            tags = None
            if prepared is not None and self.tagger is not None:
                tags = self.tagger.assign(ids, stored, prepared)
            region_ids = self.store.save_batch(vectors.model_id, done, failed, tags, regions)
            if batch:
                vectors.add(ids, stored)
            if regions and r16 is not None:
                vectors.regions.add(
                    np.asarray(region_ids, np.int64),
                    np.asarray([r.image_id for r in regions], np.int64),
                    np.asarray([r.box for r in regions], np.float64),
                    r16.astype(np.float32),
                )

        self.store.write(command)
        report.indexed += len(batch)
        report.failed += len(failed)
