"""The part of indexing that runs in decode worker processes.

Kept in its own small module so a freshly spawned worker imports Pillow, NumPy
and the decoder only: no torch, FAISS or SQLAlchemy to load before it can work.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.errors import DecodeError, PhotoVanishedError
from indexer.ingest.decode import PhotoMetadata, decode_photo, register_heif
from indexer.ingest.thumbnails import ThumbnailCache
from indexer.models.preprocess import PreprocessSpec
from store.diskerrors import is_disk_error
from store.filenames import shown

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeJob:
    image_id: int
    path: str
    thumb_key: str | None
    regions: bool = False


@dataclass(frozen=True)
class Decoded:
    job: DecodeJob
    pixels: np.ndarray | None = None
    meta: PhotoMetadata | None = None
    error: str | None = None
    regions: np.ndarray | None = None
    vanished: bool = False  # the file was gone (moved or deleted): not a failure of the photo
    disk_errno: int | None = None  # the thumbnail could not be written: the library's disk is full or read-only


# A worker that outlives its deadline by this much is stuck in native code where no Python
# signal handler can run: it exits, the pool is rebuilt and the file is reported.
HARD_GRACE_S = 5.0


class DecodeTimeoutError(DecodeError):
    """A photo that took longer than the decode time limit (a stalled network file, a codec loop)."""


def die_with_parent(parent: int) -> None:
    """Make this worker die when the indexing process does, even on ``kill -9``.

    Linux delivers ``SIGKILL`` on the parent's death (``PR_SET_PDEATHSIG``); the check of
    ``getppid`` closes the race where the parent died before the call. Elsewhere a daemon
    thread watches the parent and exits the worker when it is gone.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:
                    os._exit(1)
                return

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="glimpse-parent-watch", daemon=True).start()


@contextlib.contextmanager
def time_limit(seconds: float | None, name: str) -> Iterator[None]:
    """Fail the decode inside after ``seconds``; kill the worker if even that cannot happen.

    The soft limit is ``SIGALRM`` raising :class:`DecodeTimeoutError` in the decoding
    thread, which interrupts a blocking read and Python-level loops. A C decoder stuck in
    a loop never returns to Python, so ``faulthandler``'s watchdog thread (native, no GIL
    needed) ends the process ``HARD_GRACE_S`` later; the pool sees a crashed worker.
    """
    if not seconds or seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(_signum: int, _frame: object) -> None:
        raise DecodeTimeoutError(f"{name}: took longer than {seconds:.0f} s to decode (stalled file or decoder).")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    with open(os.devnull, "w") as sink:
        faulthandler.dump_traceback_later(seconds + HARD_GRACE_S, exit=True, file=sink)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def init_worker(max_pixels: int, nice: int = 0, parent: int | None = None) -> None:
    from PIL import Image

    if parent is not None:
        die_with_parent(parent)
    # Ctrl-C reaches the whole process group; the parent decides what stops, and it shuts
    # the pool down. A worker that died of the signal would turn a clean stop into a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice and hasattr(os, "nice"):
        os.nice(nice)
    # Our own limit is checked before decoding; lift Pillow's lower default to match it.
    Image.MAX_IMAGE_PIXELS = max_pixels
    register_heif()


def decode_job(
    job: DecodeJob,
    spec: PreprocessSpec,
    thumb_dir: str | None,
    thumb_size: int | None,
    max_pixels: int,
    timeout_s: float | None = None,
) -> Decoded:
    """Decode one photo; every failure comes back as a reason, never as an exception."""
    try:
        with time_limit(timeout_s, shown(Path(job.path).name)):
            photo = decode_photo(job.path, spec, thumb_size if thumb_dir else None, max_pixels, job.regions)
    except PhotoVanishedError as exc:
        return Decoded(job, error=exc.message, vanished=True)
    except DecodeError as exc:
        return Decoded(job, error=exc.message)
    except Exception as exc:  # an unexpected decoder bug must cost one photo, not the run
        return Decoded(job, error=f"{shown(Path(job.path).name)}: unexpected decoder error: {exc!r}")
    if thumb_dir and job.thumb_key and photo.thumbnail:
        try:
            ThumbnailCache(Path(thumb_dir)).put(job.thumb_key, photo.thumbnail)
        except OSError as exc:
            if is_disk_error(exc):  # every later photo would fail alike: the run stops, told once
                return Decoded(job, disk_errno=exc.errno)
            log.warning("cannot write thumbnail for %s: %s", shown(job.path), exc)
    return Decoded(job, pixels=photo.pixels, meta=photo.metadata, regions=photo.regions)
