"""A decode job that kills its worker process on files named "crash*" (tests only): a codec segfault, on demand."""

from __future__ import annotations

import os
from pathlib import Path

from indexer.ingest.decode_worker import Decoded, DecodeJob, decode_job


def crash_on_named(job: DecodeJob, *args: object) -> Decoded:
    if Path(job.path).name.startswith("crash"):
        os._exit(139)  # what a segfaulting decoder looks like to the pool
    return decode_job(job, *args)  # type: ignore[arg-type]
