"""Run an exported model with ONNX Runtime: the lean CPU path (no torch, no open_clip).

An export (``indexer.models.onnx_export``) is a folder in the library's models
folder, named after the model and keyed by its embedding-space key (name and
weights digest)::

    models/onnx/toyworld-3f2a9c01d4e6/
        manifest.json   identity (the ModelRecord), tokenizer, versions; written last
        text.onnx       tokens -> unit vectors
        image.onnx      uint8 NHWC pixels -> unit vectors (normalisation inside the graph)
        tokenizer.sqlite  the tokenizer's vocabulary and merges (CLIP BPE), read on demand

Each tower is opened on first use, so a text query reads only the text tower and
indexing only the image tower. Sessions use as many threads as asked (default:
ONNX Runtime's, one per core).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.models.preprocess import PreprocessSpec
from store.records import ModelRecord

log = logging.getLogger(__name__)

FORMAT = 3  # bump when the folder layout, the graphs' inputs/outputs or the tokenizer tables change
MANIFEST = "manifest.json"
FAILED = "export-failed.json"
TOKENIZER = "tokenizer.sqlite"


@dataclass(frozen=True)
class ExportManifest:
    """What an export holds; enough to answer for the model without loading anything."""

    format: int
    key: str
    name: str
    dim: int
    preprocess: dict[str, Any]
    pretrained: str | None
    weights_id: str | None
    logit_scale: float
    context_length: int
    text_clean: str
    text: str | None  # file of the text tower, None where the tokenizer has no torch-free twin
    text_trim: bool  # the text tower runs on the batch's real token count, not the whole context
    image: str
    image_int8: str | None  # the image tower with int8 weights (ONNX Runtime dynamic quantisation), if it passed
    exported_with: dict[str, str]

    @property
    def record(self) -> ModelRecord:
        return ModelRecord(
            key=self.key,
            name=self.name,
            dim=self.dim,
            preprocess=json.dumps(self.preprocess, sort_keys=True),
            pretrained=self.pretrained,
            weights_id=self.weights_id,
        )

    def save(self, folder: Path) -> None:
        (folder / MANIFEST).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def read(cls, folder: Path) -> ExportManifest | None:
        """The folder's manifest if it is complete and of this format; None otherwise."""
        try:
            data = json.loads((folder / MANIFEST).read_text())
            manifest = cls(**data)
        except (OSError, ValueError, TypeError):
            return None
        if manifest.format != FORMAT or not (folder / manifest.image).is_file():
            return None
        if manifest.image_int8 is not None and not (folder / manifest.image_int8).is_file():
            return None
        if manifest.text is not None and not ((folder / manifest.text).is_file() and (folder / TOKENIZER).is_file()):
            return None
        return manifest


def export_dir(models_dir: Path, key: str, name: str) -> Path:
    """Where the export of the model with embedding-space ``key`` lives (readable name + key digest)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name.split(":", 1)[-1]).name or name).strip("-.")[:40]
    digest = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
    return models_dir / "onnx" / f"{readable or 'model'}-{digest}"


def failed_marker(folder: Path) -> Path:
    """Where a failed export of ``folder`` is remembered (beside it: the folder itself never exists then)."""
    return folder.with_name(f"{folder.name}.{FAILED}")


def onnxruntime_available() -> bool:
    """Installed, found without importing it (``glimpse status`` must not pay for the import)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


class OnnxEmbedder:
    """The Embedder protocol over an export; each tower's session opens on first use.

    ``int8``: run the int8 image tower where the export has one (text stays fp32).
    ``prepack_text=False``: open the text tower without repacking its weights for the
    CPU's kernels: 0.03 s instead of 0.19 s to open, ~5 ms more per query afterwards, the
    right trade for a process that answers one query and exits.
    """

    runtime = "onnxruntime"
    device = "cpu"

    def __init__(
        self,
        folder: Path,
        manifest: ExportManifest,
        threads: int | None = None,
        int8: bool = False,
        prepack_text: bool = True,
    ) -> None:
        self.folder = folder
        self.manifest = manifest
        self._threads = threads
        self._prepack_text = prepack_text
        self.precision = "int8" if int8 and manifest.image_int8 else "fp32"  # of the image tower
        self._lock = threading.Lock()
        self._sessions: dict[str, Any] = {}
        self._tokenizer: Any = None
        self.image_calls = 0
        self.text_calls = 0

    def load(self) -> None:
        """Nothing to do: the identity is in the manifest and each tower opens when it is used."""

    @property
    def record(self) -> ModelRecord:
        return self.manifest.record

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def preprocess(self) -> PreprocessSpec:
        p = self.manifest.preprocess
        return PreprocessSpec(**{**p, "mean": tuple(p["mean"]), "std": tuple(p["std"])})

    @property
    def logit_scale(self) -> float:
        return self.manifest.logit_scale

    @property
    def has_text(self) -> bool:
        return self.manifest.text is not None

    def _session(self, tower: str) -> Any:
        with self._lock:
            session = self._sessions.get(tower)
            if session is None:
                import onnxruntime as ort

                started = time.perf_counter()
                options = ort.SessionOptions()
                options.log_severity_level = 3
                if self._threads:
                    options.intra_op_num_threads = self._threads
                if tower == "text" and not self._prepack_text:
                    options.add_session_config_entry("session.disable_prepacking", "1")
                if tower == "text":
                    file = self.manifest.text
                else:
                    file = self.manifest.image_int8 if self.precision == "int8" else self.manifest.image
                assert file is not None
                session = ort.InferenceSession(
                    str(self.folder / file), sess_options=options, providers=["CPUExecutionProvider"]
                )
                self._sessions[tower] = session
                log.info(
                    "opened the %s tower of %s in %.2f s", tower, self.manifest.name, time.perf_counter() - started
                )
            return session

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) model-size pixels -> (N, dim) unit vectors."""
        if len(pixels) == 0:
            return np.empty((0, self.dim), np.float32)
        session = self._session("image")
        self.image_calls += 1
        (out,) = session.run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.uint8)})
        return np.asarray(out, np.float32)

    def tokenize(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            if self._tokenizer is None:
                from indexer.models.tokenizer import ClipTokenizer

                self._tokenizer = ClipTokenizer.load(
                    self.folder / TOKENIZER, self.manifest.context_length, self.manifest.text_clean
                )
        tokens: np.ndarray = self._tokenizer(texts)
        return tokens

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), np.float32)
        session = self._session("text")
        self.text_calls += 1
        tokens = self.tokenize(list(texts))
        if self.manifest.text_trim:  # up to the batch's last end-of-text token (see onnx_export._trimmable)
            eot = self._tokenizer.eot
            tokens = tokens[:, : int((tokens == eot).argmax(axis=1).max()) + 1]
        (out,) = session.run(None, {"tokens": np.ascontiguousarray(tokens)})
        return np.asarray(out, np.float32)
