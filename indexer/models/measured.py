"""Image-encoder speed as measured on this machine, for the figures the product prints.

``glimpse models`` and the settings dialog's cost estimate used fixed numbers taken
on another CPU. Instead the engine times its own image batches while it indexes
and keeps the result per model, runtime and precision in ``models/measured.json``
(a small JSON file; written when a run has embedded enough photos to mean
something). Where nothing was measured yet, nothing is claimed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE = "measured.json"
MIN_IMAGES = 64  # fewer than this is warm-up, not a rate


class SpeedMeter:
    """Accumulates one model's image-embedding time in a process; saves the rate now and then."""

    def __init__(self, models_dir: Path, model: str) -> None:
        self.models_dir = models_dir
        self.model = model
        self._lock = threading.Lock()
        self._images = 0
        self._seconds = 0.0
        self._saved_at = 0

    def add(self, runtime: str, precision: str, images: int, seconds: float) -> None:
        with self._lock:
            self._images += images
            self._seconds += seconds
            due = self._images >= MIN_IMAGES and self._images >= 2 * self._saved_at
            if due:
                self._saved_at = self._images
                rate = self._images / max(self._seconds, 1e-9)
        if due:
            record(self.models_dir, self.model, runtime, precision, rate)


def record(models_dir: Path, model: str, runtime: str, precision: str, images_per_s: float) -> None:
    path = models_dir / FILE
    data = read(models_dir)
    data.setdefault(model, {})[f"{runtime} {precision}"] = {
        "images_per_s": round(images_per_s, 1),
        "when": time.strftime("%Y-%m-%d"),
    }
    tmp = path.with_name(f"{FILE}.{os.getpid()}.tmp")
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(path)
    except OSError as exc:  # a figure for display: never worth failing a run over
        log.debug("could not save the measured speed: %s", exc)
        with contextlib.suppress(OSError):
            tmp.unlink()


def read(models_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((models_dir / FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def measured_rate(models_dir: Path, model: str) -> tuple[float, str] | None:
    """The fastest rate measured for ``model`` here, and on what ("onnxruntime fp32"), if any."""
    rows = read(models_dir).get(model)
    if not isinstance(rows, dict):
        return None
    best = [(float(v["images_per_s"]), k) for k, v in rows.items() if isinstance(v, dict) and "images_per_s" in v]
    return max(best) if best else None
