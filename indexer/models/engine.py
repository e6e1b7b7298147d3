"""Which runtime runs a model: ONNX Runtime on the CPU, torch on GPUs and as the fallback.

:class:`ModelEngine` is the Embedder the product uses. Its choice, per tower:

* **text**: ONNX Runtime whenever it is installed and the model's tokenizer has a
  torch-free twin (CLIP's BPE), on any machine: one query costs ~40 ms and no torch
  import (~6 s), even where a GPU embeds the photos;
* **images**: ONNX Runtime on the CPU, with the export's int8 image tower (dynamic int8
  weights: 2-4x the fp32 speed here, cosine >= 0.999 to torch, no loss of toy-world
  accuracy; ``precision: fp32`` keeps fp32); torch on a GPU (``device`` cuda/mps, or
  ``auto`` on a machine with one). Where an export has no int8 tower, a large indexing
  job on a CPU whose bf16 units measurably beat fp32 (:func:`cpu_bf16_is_fast`) runs on
  torch in bf16, about twice ONNX Runtime's fp32 speed once its ~6 s start is paid.

The first use of a model on the ONNX path exports it through torch once
(``indexer.models.onnx_export``); a failed export is remembered (per torch and
open_clip version) and the model runs on torch, with the reason in ``glimpse status``.
``runtime`` forces one runtime: ``onnx`` or ``torch``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from indexer.errors import SettingsError
from indexer.models.embedder import Embedder, OpenClipEmbedder, cpu_bf16_is_fast, space_key, spec_weights_id
from indexer.models.measured import SpeedMeter
from indexer.models.onnx_runtime import ExportManifest, OnnxEmbedder, export_dir, failed_marker, onnxruntime_available
from indexer.models.preprocess import PreprocessSpec
from indexer.models.presets import ModelSpec
from store.records import ModelRecord

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "onnx", "torch")
PROMPT_CACHE = "prompt-vectors.npz"
# Photos from which a bf16-capable CPU embeds faster on torch than on ONNX Runtime, its ~6 s
# start included (measured on a 2-core avx512_bf16 CPU: torch bf16 43 img/s, ONNX fp32 22-27 img/s).
TORCH_BF16_FROM = 400


def gpu_present() -> bool:
    """A cheap look for a GPU that torch could use, without importing torch."""
    if sys.platform == "darwin":
        import platform

        return platform.machine() == "arm64"
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def expected_key(spec: ModelSpec) -> str:
    """The embedding-space key the model will report once loaded, computed without loading it."""
    return space_key(spec, spec_weights_id(spec))


class ModelEngine:
    """The Embedder the product uses: picks ONNX Runtime or torch per tower (see the module doc)."""

    def __init__(
        self,
        spec: ModelSpec,
        models_dir: Path,
        device: str = "auto",
        precision: str = "auto",
        threads: int | None = None,
        runtime: str = "auto",
        short_lived: bool = False,
    ) -> None:
        if runtime not in RUNTIMES:
            raise SettingsError(f"runtime is {runtime!r}; allowed values: {', '.join(RUNTIMES)}.")
        self.spec = spec
        self.models_dir = models_dir
        self._device = device
        self._precision = precision
        self._threads = threads
        self._runtime = runtime
        self._short_lived = short_lived  # a one-shot command: open towers fast rather than run them fastest
        self._lock = threading.Lock()
        self._onnx: OnnxEmbedder | None = None
        self._torch: OpenClipEmbedder | None = None
        self._opened = False
        self._images_on_torch = False
        self.fallback_reason: str | None = None
        self._meter = SpeedMeter(models_dir, spec.name)
        self._prompts: dict[str, np.ndarray] | None = None

    # ---- choosing ---------------------------------------------------------------------

    def _wants_onnx(self) -> bool:
        if self._runtime == "torch":
            return False
        if not onnxruntime_available():
            if self._runtime == "onnx":
                raise SettingsError(
                    'runtime is "onnx", but ONNX Runtime is not installed: pip install onnxruntime', title="No runtime"
                )
            self.fallback_reason = "ONNX Runtime is not installed"
            return False
        return self._runtime == "onnx" or self._precision in ("auto", "fp32")

    def _gpu_images(self) -> bool:
        if self._runtime == "onnx":
            return False
        return self._device not in ("auto", "cpu") or (self._device == "auto" and gpu_present())

    @property
    def export_folder(self) -> Path:
        return export_dir(self.models_dir, expected_key(self.spec), self.spec.name)

    def _open(self) -> None:
        if self._opened:
            return
        if not self._wants_onnx():
            self._opened = True
            return
        folder = self.export_folder
        manifest = ExportManifest.read(folder)
        if manifest is None:
            manifest = self._export(folder)  # raises only where runtime is "onnx": nothing is decided then
        self._opened = True
        if manifest is not None:
            # precision "auto": the int8 image tower where the export has one (measured: 2-4x the
            # fp32 speed on a CPU, the same toy-world accuracy; docs/performance.md); "fp32" forces fp32.
            self._onnx = OnnxEmbedder(
                folder, manifest, self._threads, int8=self._precision == "auto", prepack_text=not self._short_lived
            )
            self._images_on_torch = self._gpu_images()

    def _export(self, folder: Path) -> ExportManifest | None:
        """Export once; a failure is remembered per torch/open_clip version, and torch runs instead."""
        from indexer.models.onnx_export import export_model

        failed = failed_marker(folder)
        versions = _versions()
        try:
            previous = json.loads(failed.read_text())
        except (OSError, ValueError):
            previous = None
        if isinstance(previous, dict) and previous.get("versions") == versions and self._runtime != "onnx":
            self.fallback_reason = f"the ONNX export failed before: {previous.get('reason')}"
            return None
        exporter = OpenClipEmbedder(self.spec, device="cpu", precision="fp32", threads=self._threads)
        # The model itself must load first: weights that are not on this machine (offline) or do
        # not fit are the user's error to see as it is, never an export failure to remember.
        exporter.load()
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            return export_model(exporter, folder)
        except Exception as exc:  # whatever breaks an export (torch.export, ONNX Runtime), torch still works
            if self._runtime == "onnx":
                raise
            self.fallback_reason = f"the ONNX export failed: {exc}"
            log.warning("%s; %s runs on torch", self.fallback_reason, self.spec.display)
            with contextlib.suppress(OSError):
                failed.write_text(json.dumps({"reason": str(exc), "versions": versions}))
            self._torch = exporter if self._precision in ("auto", "fp32") and not self._gpu_images() else None
            return None

    def _torch_embedder(self) -> OpenClipEmbedder:
        with self._lock:
            if self._torch is None:
                self._torch = OpenClipEmbedder(self.spec, self._device, self._precision, self._threads)
            return self._torch

    def plan_images(self, count: int) -> None:
        """A hint before an indexing job of ``count`` photos: a large one may run faster on torch bf16."""
        if self._runtime != "auto" or self._precision != "auto" or count < TORCH_BF16_FROM:
            return
        self.load()
        fp32_onnx = self._onnx is not None and not self._images_on_torch and self._onnx.precision != "int8"
        # cpu_bf16_is_fast reads the CPU's flags first: torch is imported only where bf16 units exist.
        if fp32_onnx and cpu_bf16_is_fast():
            log.info("%d photos to embed: images run on torch in bf16 (faster here for a job this size)", count)
            self._images_on_torch = True

    # ---- the Embedder protocol -------------------------------------------------------------

    def load(self) -> None:
        with self._lock:
            self._open()
        if self._onnx is None:
            self._torch_embedder().load()

    @property
    def runtime(self) -> str:
        """What runs each tower now, for status lines and logs."""
        self.load()
        if self._onnx is None:
            return "torch"
        text = "onnxruntime" if self._onnx.has_text else "torch"
        image = "torch" if self._images_on_torch else "onnxruntime"
        return text if text == image else f"text {text}, images {image}"

    @property
    def record(self) -> ModelRecord:
        self.load()
        return self._onnx.record if self._onnx is not None else self._torch_embedder().record

    @property
    def dim(self) -> int:
        return self.record.dim

    @property
    def preprocess(self) -> PreprocessSpec:
        self.load()
        return self._onnx.preprocess if self._onnx is not None else self._torch_embedder().preprocess

    @property
    def logit_scale(self) -> float:
        self.load()
        return self._onnx.logit_scale if self._onnx is not None else self._torch_embedder().logit_scale

    def _image_model(self) -> Embedder:
        self.load()
        if self._onnx is not None and not self._images_on_torch:
            return self._onnx
        return self._torch_embedder()

    def _text_model(self) -> Embedder:
        self.load()
        if self._onnx is not None and self._onnx.has_text:
            return self._onnx
        return self._torch_embedder()

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        model = self._image_model()
        started = time.perf_counter()
        out = model.embed_images(pixels)
        runtime = "torch" if model is self._torch else "onnxruntime"
        self._meter.add(runtime, str(getattr(model, "precision", "fp32")), len(pixels), time.perf_counter() - started)
        return out

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self._text_model().embed_texts(texts)

    def embed_prompts(self, texts: list[str]) -> np.ndarray:
        """Tag prompts, cached on disk beside the export (``prompt-vectors.npz``).

        A vocabulary's ~2,000 prompts are the same for every library and every run of a
        model, so they are embedded once per model on this machine; only their vectors
        are kept, keyed by a digest of each prompt. Search queries never go through here:
        what a user searches for is not written anywhere.
        """
        self.load()
        if self._onnx is None or not self._onnx.has_text:
            return self.embed_texts(texts)
        cache = self._prompt_cache()
        keys = [_digest(t) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in cache}.items())
        if missing:
            vectors = self.embed_texts([t for _, t in missing])
            with self._lock:
                cache.update({k: v for (k, _), v in zip(missing, vectors, strict=True)})
                self._save_prompt_cache(cache)
        return np.stack([cache[k] for k in keys]).astype(np.float32, copy=False)

    def _prompt_cache(self) -> dict[str, np.ndarray]:
        with self._lock:
            if self._prompts is None:
                self._prompts = {}
                assert self._onnx is not None
                try:
                    with np.load(self._onnx.folder / PROMPT_CACHE) as data:
                        self._prompts = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
                except (OSError, ValueError, KeyError) as exc:
                    log.debug("no prompt cache yet (%s)", exc)
            return self._prompts

    def _save_prompt_cache(self, cache: dict[str, np.ndarray]) -> None:
        """Atomically (temp file + rename): another process may read it at the same moment."""
        assert self._onnx is not None
        path = self._onnx.folder / PROMPT_CACHE
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        try:
            np.savez(tmp, keys=np.asarray(list(cache)), vectors=np.stack(list(cache.values())))
            tmp.replace(path)
        except OSError as exc:  # a cache: never worth failing over
            log.debug("prompt cache not saved: %s", exc)
            tmp.unlink(missing_ok=True)

    @property
    def device(self) -> str:
        model = self._image_model()
        return str(getattr(model, "device", "cpu"))

    @property
    def precision(self) -> str:
        model = self._image_model()
        return str(getattr(model, "precision", "fp32"))

    @property
    def image_calls(self) -> int:
        return sum(m.image_calls for m in (self._onnx, self._torch) if m is not None)

    @property
    def text_calls(self) -> int:
        return sum(m.text_calls for m in (self._onnx, self._torch) if m is not None)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "open_clip_torch", "onnxruntime"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "none"
    return found


def describe_runtime(
    models_dir: Path, spec: ModelSpec, key: str | None, runtime: str = "auto", precision: str = "auto"
) -> str:
    """What will run the model, said without loading anything (for ``glimpse status``)."""
    if runtime == "torch":
        return "PyTorch (runtime setting)"
    if not onnxruntime_available():
        return "PyTorch (ONNX Runtime is not installed)"
    folder = export_dir(models_dir, key or expected_key(spec), spec.name)
    manifest = ExportManifest.read(folder)
    if manifest is not None:
        text = "text on ONNX Runtime" if manifest.text else "text on PyTorch (tokenizer)"
        int8 = " (int8)" if manifest.image_int8 and precision == "auto" else ""
        images = "images on PyTorch (GPU)" if gpu_present() and runtime != "onnx" else f"images on ONNX Runtime{int8}"
        return f"{text}, {images} (export {folder})"
    failed = failed_marker(folder)
    if failed.exists():
        try:
            reason = json.loads(failed.read_text()).get("reason")
        except (OSError, ValueError, AttributeError):
            reason = "unknown"
        return f"PyTorch (the ONNX export failed: {reason})"
    return "ONNX Runtime, once the model is exported on its first use (PyTorch until then)"
