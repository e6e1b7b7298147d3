"""The user's settings: typed, checked, saved as JSON beside the library.

Kept apart from the composition root so that a command which only needs the settings
(a one-shot search on a read-only snapshot, ``indexer.cli.snapshot``) does not import
everything the root wires together.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from indexer.errors import SettingsError
from indexer.ingest.config import PipelineConfig
from indexer.models.embedder import DEVICES
from indexer.models.engine import RUNTIMES
from indexer.segment.sam import DEFAULT_SEGMENTER, SEGMENTERS

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _positive_int(key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(f"{key} is {value!r}; allowed values: a whole number of at least 1, or null (automatic).")
    return value


def _choice(key: str, value: Any, allowed: tuple[str, ...] | list[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise SettingsError(f"{key} is {value!r}; allowed values: {', '.join(allowed)}.")
    return value


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{key} is {value!r}; allowed values: true, false.")
    return value


def similarity(key: str, value: Any) -> float:
    """A cosine threshold for near-duplicates: from 0.5 (very loose) to 1 (identical vectors)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.5 <= value <= 1.0:
        raise SettingsError(f"{key} is {value!r}; allowed values: a number from 0.5 to 1.")
    return float(value)


def _text(key: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise SettingsError(f"{key} is {value!r}; allowed values: a file path (text), or null.")
    return value


@dataclass
class Settings:
    """User choices, typed and checked (:meth:`validate`). Unset fields mean "decide automatically".

    The model is not a setting: the library records its own (``indexer.models.space``).
    ``model``/``weights`` are only read from settings files written before that, to
    adopt the model such a library was indexed with.
    """

    device: str = "auto"
    precision: str = "auto"
    runtime: str = "auto"  # auto: ONNX Runtime on the CPU, torch on GPUs (indexer.models.engine); onnx; torch
    threads: int | None = None
    batch_size: int | None = None
    decode_workers: int | None = None
    vocabulary: str | None = None  # a tag vocabulary file; None: the one that fits the model
    segmenter: str = DEFAULT_SEGMENTER  # mobile_sam, sam_vit_b, sam_vit_l, sam_vit_h
    sam_weights: str | None = None  # a checkpoint file instead of the model folder / download
    segment_disk_cache: bool = False  # keep image encodings on disk (about 2 MB per photo)
    regions: bool = False  # region index: embed object proposals too (finds small objects; ~4x the indexing time)
    # How alike two photos' vectors must be (cosine) to count as near-duplicates: `glimpse
    # duplicates` groups them and search shows a group as one result with "+N similar".
    duplicate_similarity: float = 0.96
    model: str | None = field(default=None, repr=False)  # legacy, see above
    weights: str | None = field(default=None, repr=False)  # legacy, see above

    def validate(self) -> Settings:
        """Raise :class:`SettingsError` naming the first bad key and what it may be."""
        device = _choice("device", self.device, DEVICES) if not str(self.device).startswith("cuda:") else self.device
        self.device = device
        self.precision = _choice("precision", self.precision, PRECISIONS)
        self.runtime = _choice("runtime", self.runtime, RUNTIMES)
        self.threads = _positive_int("threads", self.threads)
        self.batch_size = _positive_int("batch_size", self.batch_size)
        self.decode_workers = _positive_int("decode_workers", self.decode_workers)
        self.vocabulary = _text("vocabulary", self.vocabulary)
        self.segmenter = _choice("segmenter", self.segmenter, list(SEGMENTERS))
        self.sam_weights = _text("sam_weights", self.sam_weights)
        self.segment_disk_cache = _flag("segment_disk_cache", self.segment_disk_cache)
        self.regions = _flag("regions", self.regions)
        self.duplicate_similarity = similarity("duplicate_similarity", self.duplicate_similarity)
        self.model = _text("model", self.model)
        self.weights = _text("weights", self.weights)
        return self

    @classmethod
    def load(cls, path: Path) -> Settings:
        """Saved settings (the GUI writes them); a missing file means defaults, a bad one is an error."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise SettingsError(f"Cannot read the settings file {path}: {exc.strerror}.") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SettingsError(
                f"The settings file {path} is not valid JSON ({exc}). Fix it, or delete it to use the defaults."
            ) from exc
        if not isinstance(data, dict):
            raise SettingsError(f"The settings file {path} must hold a JSON object of settings.")
        known = {f.name for f in fields(cls)}
        for key in sorted(set(data) - known):
            log.warning("ignoring unknown setting %r in %s", key, path)
        try:
            return cls(**{k: v for k, v in data.items() if k in known}).validate()
        except SettingsError as exc:
            raise SettingsError(f"In {path}: {exc.message}") from exc

    def save(self, path: Path) -> None:
        self.validate()
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {k: v for k, v in asdict(self).items() if k not in ("model", "weights")}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)

    def pipeline_config(self) -> PipelineConfig:
        base = PipelineConfig()
        return PipelineConfig(
            batch_size=self.batch_size or base.batch_size,
            decode_workers=self.decode_workers or base.decode_workers,
            regions=self.regions,
        )
