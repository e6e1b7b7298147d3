"""A decode job that kills its worker process on files named "crash*" (tests only): a codec segfault, on demand."""

from __future__ import annotations

import os
from pathlib import Path

from indexer.ingest.decode_worker import Decoded, DecodeJob, decode_job


def crash_on_named(job: DecodeJob, *args: object) -> Decoded:
    if Path(job.path).name.startswith("crash"):
        os._exit(139)  # what a segfaulting decoder looks like to the pool
    return decode_job(job, *args)  # type: ignore[arg-type]


def stall_on_named(job: DecodeJob, *args: object) -> Decoded:
    """Files named "stall*" stall in Python code (a read on a hung share); "hang*" stall where no
    signal handler can run (a codec caught in a loop): only the hard limit ends those."""
    import signal
    import time

    from indexer.ingest import decode_worker

    name = Path(job.path).name
    real = decode_worker.decode_photo
    decode_worker.HARD_GRACE_S = 0.5

    def slow(*a: object, **kw: object) -> object:
        if name.startswith("hang"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        if name.startswith(("stall", "hang")):
            time.sleep(30)
        return real(*a, **kw)  # type: ignore[arg-type]

    decode_worker.decode_photo = slow  # type: ignore[assignment]
    try:
        return decode_job(job, *args)  # type: ignore[arg-type]
    finally:
        decode_worker.decode_photo = real
