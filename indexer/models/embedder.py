"""Image and text embeddings from open_clip models.

``OpenClipEmbedder`` loads lazily under a lock (the GUI shows its window first and
loads on a worker), picks the device (cuda > mps > cpu unless told), and picks the
precision: fp16/bf16 on GPUs; on CPUs bf16 only where the CPU has bf16 matrix
units *and* a short timed matmul confirms it (elsewhere bf16 is ~1000x slower).
The model is cast, not autocast: autocast was slower than fp32 on these CPUs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from indexer.errors import ModelUnavailableError, SettingsError
from indexer.models.preprocess import PreprocessSpec
from indexer.models.presets import (
    HF_WEIGHT_FILES,
    MODEL_ENV,
    ModelSpec,
    cached_hf_weights,
    fetch_hf_weights,
    fingerprint_file,
    hf_cache_dir,
    hub_reachable,
)
from store.records import ModelRecord

log = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    """What the pipeline, search and tagging need from a model. Outputs are L2-normalised float32."""

    def load(self) -> None: ...

    @property
    def record(self) -> ModelRecord: ...

    @property
    def dim(self) -> int: ...

    @property
    def preprocess(self) -> PreprocessSpec: ...

    def embed_images(self, pixels: np.ndarray) -> np.ndarray: ...

    def embed_texts(self, texts: list[str]) -> np.ndarray: ...


DEVICES = ("auto", "cpu", "cuda", "mps")


def available_devices() -> list[str]:
    """The devices this machine can run a model on ("auto" first), for settings and validation."""
    import torch

    found = ["auto", "cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def check_device(preference: str) -> None:
    """A device that is not here is a settings error (exit 2), not a traceback from deep in torch.

    ``auto`` and ``cpu`` are always fine and cost nothing to check; only an explicit
    GPU choice imports torch to look.
    """
    if preference not in DEVICES and not preference.startswith("cuda:"):
        raise SettingsError(f'device is "{preference}"; allowed values: {", ".join(DEVICES)}.')
    if preference in ("auto", "cpu"):
        return
    if preference.split(":")[0] not in available_devices():
        raise SettingsError(
            f'device is "{preference}", but this machine has no {preference.upper()} device that PyTorch can use. '
            'Use "auto" (falls back to the CPU) or "cpu".',
            title="Device not available",
        )


def pick_device(preference: str = "auto") -> str:
    import torch

    if preference != "auto":
        check_device(preference)
        return preference
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux; empty elsewhere): what bf16 and the benchmarks' reports go by."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_bf16_is_fast() -> bool:
    """True where bf16 matmul units exist and measurably beat fp32 (checked, not assumed)."""
    if not ({"amx_bf16", "avx512_bf16"} & cpu_flags()):
        return False
    import torch

    def timed(dtype: torch.dtype) -> float:
        a = torch.randn(384, 384).to(dtype)
        torch.mm(a, a)
        start = time.perf_counter()
        for _ in range(8):
            torch.mm(a, a)
        return time.perf_counter() - start

    fp32, bf16 = timed(torch.float32), timed(torch.bfloat16)
    log.debug("cpu matmul fp32 %.4fs bf16 %.4fs", fp32, bf16)
    return bf16 < fp32 * 0.8


def pick_precision(device: str, preference: str = "auto") -> str:
    if preference != "auto":
        return preference
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device == "mps":
        return "fp16"
    return "bf16" if cpu_bf16_is_fast() else "fp32"


def local_weights(folder: Path) -> Path | None:
    """The weights file of a model folder in the Hugging Face open_clip layout."""
    return next((folder / f for f in HF_WEIGHT_FILES if (folder / f).is_file()), None)


def spec_weights_id(spec: ModelSpec) -> str | None:
    """The fingerprint that pins a model's weights, found without loading them (None: a published tag)."""
    if spec.local_dir is not None:
        weights = local_weights(spec.local_dir)
        return fingerprint_file(weights) if weights is not None else None
    if spec.weights_file is not None:
        return fingerprint_file(spec.weights_file)
    return None


def space_key(spec: ModelSpec, weights_id: str | None) -> str:
    """The embedding space's identity: architecture (or bundled model name) and exact weights."""
    if weights_id:
        return f"{spec.name if spec.local_dir else spec.arch}@{weights_id}"
    return f"{spec.arch}/{spec.pretrained}"


@contextlib.contextmanager
def _no_random_init() -> Iterator[None]:
    """Build modules without drawing random initial weights: the checkpoint replaces them anyway.

    open_clip builds a randomly initialised model before it reads the weights (2.1 s for
    ViT-B-32 on 2 cores). ``torch.nn.init``'s functions and the layers' own
    ``reset_parameters`` are made no-ops while the model is built; every parameter is
    then overwritten by the checkpoint, which open_clip loads strictly (a missing key is
    an error, so no parameter can stay uninitialised).
    """
    import torch

    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    layers: list[Any] = [torch.nn.Linear, torch.nn.Conv2d, torch.nn.Embedding, torch.nn.LayerNorm]
    with _INIT_LOCK:
        saved_init = {n: getattr(torch.nn.init, n) for n in names}
        saved_reset = {cls: cls.reset_parameters for cls in layers}
        try:
            for n in names:
                setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
            for cls in layers:
                cls.reset_parameters = lambda self: None
            yield
        finally:
            for n, fn in saved_init.items():
                setattr(torch.nn.init, n, fn)
            for cls, reset in saved_reset.items():
                cls.reset_parameters = reset


_INIT_LOCK = threading.Lock()  # the patch above is process-wide: one model build at a time


class OpenClipEmbedder:
    """Any open_clip model (CLIP, SigLIP, MobileCLIP, the toy world) behind the Embedder protocol."""

    def __init__(
        self, spec: ModelSpec, device: str = "auto", precision: str = "auto", threads: int | None = None
    ) -> None:
        self.spec = spec
        self._device_pref = device
        self._precision_pref = precision
        self._threads = threads
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._record: ModelRecord | None = None
        self._preprocess: PreprocessSpec | None = None
        self._mean: Any = None
        self._std: Any = None
        self.device = "cpu"
        self.precision = "fp32"
        self.image_calls = 0  # batches embedded; tests use it to prove work is not repeated
        self.text_calls = 0  # text batches embedded; tests use it to prove vocabulary edits stay cheap

    # ---- loading ------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        with self._lock:
            if self._model is None:
                self._load()

    def _load(self) -> None:
        import open_clip
        import torch

        if self._threads:
            torch.set_num_threads(self._threads)
        started = time.perf_counter()
        self._check_tokenizer(open_clip)  # before the weights: offline must fail in seconds
        model, weights_id = self._create(open_clip)
        model.eval()
        self.device = pick_device(self._device_pref)
        self.precision = pick_precision(self.device, self._precision_pref)
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        model = model.to(device=self.device, dtype=dtype)
        cfg = open_clip.get_model_preprocess_cfg(model)
        self._preprocess = PreprocessSpec.from_open_clip(cfg)
        self._mean = torch.tensor(self._preprocess.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self._preprocess.std, device=self.device).view(1, 3, 1, 1)
        try:
            self._tokenizer = open_clip.get_tokenizer(self.spec.arch)
        except ImportError as exc:
            raise ModelUnavailableError(
                f"{self.spec.display} needs an extra package for its tokenizer ({exc}). "
                "Install it with: pip install 'glimpse[siglip]'"
            ) from exc
        except Exception as exc:
            raise ModelUnavailableError(
                f"The tokenizer of {self.spec.display} is not on this machine and could not be "
                f"downloaded ({exc}). It is fetched once into the Hugging Face cache {hf_cache_dir()}."
            ) from exc
        with torch.inference_mode():
            dim = int(model.encode_text(self._tokenizer(["a photo"]).to(self.device)).shape[-1])
        self._model = model
        self._record = ModelRecord(
            key=self._key(weights_id),
            name=self.spec.name,
            dim=dim,
            preprocess=json.dumps(asdict(self._preprocess), sort_keys=True),
            pretrained=self.spec.pretrained,
            weights_id=weights_id,
        )
        log.info(
            "loaded %s on %s (%s) in %.1f s",
            self.spec.display,
            self.device,
            self.precision,
            time.perf_counter() - started,
        )

    def _check_tokenizer(self, open_clip: Any) -> None:
        """Models whose tokenizer comes from the Hugging Face Hub (SigLIP) need it in the cache or the Hub.

        Without this, an offline machine spent ~90 s in the tokenizer's download retries
        even when the user passed the weights with --weights.
        """
        if self.spec.local_dir is not None or self.spec.arch.startswith(("hf-hub:", "local-dir:")):
            return
        cfg = open_clip.get_model_config(self.spec.arch) or {}
        repo = (cfg.get("text_cfg") or {}).get("hf_tokenizer_name")
        if not repo:
            return
        try:
            import transformers  # noqa: F401 - only checking that the extra is installed
        except ImportError as exc:
            raise ModelUnavailableError(
                f"{self.spec.display} tokenizes text with Hugging Face transformers, which is not installed "
                "(it comes with the app: pip install 'glimpse[gui]', or pip install 'glimpse[siglip]')."
            ) from exc
        if cached_hf_weights(repo, ("tokenizer.json", "tokenizer_config.json", "spiece.model")) is not None:
            return
        if not hub_reachable():
            raise ModelUnavailableError(
                f"The tokenizer of {self.spec.display} ({repo}) is not in the Hugging Face cache "
                f"{hf_cache_dir()}, and the Hub cannot be reached to fetch it (a few MB, once). Connect to the "
                f"internet once and run the command again, or try the bundled test model: {MODEL_ENV}=toyworld."
            )

    def _key(self, weights_id: str | None) -> str:
        return space_key(self.spec, weights_id)

    def _create(self, open_clip: Any) -> tuple[Any, str | None]:
        """Build the model with its weights; returns (model, weights fingerprint or None)."""
        with _no_random_init():
            return self._create_model(open_clip)

    def _create_model(self, open_clip: Any) -> tuple[Any, str | None]:
        spec = self.spec
        if spec.local_dir is not None:
            weights = local_weights(spec.local_dir)
            if weights is None:
                raise ModelUnavailableError(
                    f"{spec.local_dir} holds no open_clip_model.safetensors or open_clip_pytorch_model.bin."
                )
            return open_clip.create_model(spec.arch, require_pretrained=True), fingerprint_file(weights)
        if spec.arch.startswith("hf-hub:"):
            repo = spec.arch[len("hf-hub:") :]
            fetch_hf_weights(repo, spec)  # fails fast and clearly when offline; later loads hit the cache
            return open_clip.create_model(spec.arch, require_pretrained=True), None

        from open_clip.pretrained import get_pretrained_cfg

        tag_cfg = get_pretrained_cfg(spec.arch, spec.pretrained) if spec.pretrained else {}
        preprocess = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
        if spec.weights_file is not None:
            path, weights_id = spec.weights_file, fingerprint_file(spec.weights_file)
        else:
            # open_clip writes "org/name/" (default file names) or "org/name/file.bin".
            repo, filename = os.path.split(tag_cfg.get("hf_hub") or "")
            if not repo:
                raise ModelUnavailableError(
                    f"{spec.display} has no Hugging Face download; pass its checkpoint with --weights FILE."
                )
            path, weights_id = fetch_hf_weights(repo, spec, (filename,) if filename else None), None
        try:
            model = open_clip.create_model(
                spec.arch, pretrained=str(path), force_preprocess_cfg=preprocess, weights_only=True
            )
        except (RuntimeError, ValueError, OSError, KeyError, pickle.UnpicklingError) as exc:
            raise ModelUnavailableError(
                f"Could not load the weights of {spec.display} from {path}: {exc}. The file may be damaged "
                f"or belong to another architecture.",
                title="Cannot load model weights",
            ) from exc
        return model, weights_id

    # ---- embedding ----------------------------------------------------------------------

    @property
    def torch_model(self) -> Any:
        """The loaded open_clip model (for the ONNX exporter)."""
        self.load()
        return self._model

    @property
    def tokenizer(self) -> Any:
        """open_clip's tokenizer for this model (for the ONNX exporter's check of its own)."""
        self.load()
        return self._tokenizer

    @property
    def record(self) -> ModelRecord:
        self.load()
        assert self._record is not None
        return self._record

    @property
    def dim(self) -> int:
        return self.record.dim

    @property
    def preprocess(self) -> PreprocessSpec:
        self.load()
        assert self._preprocess is not None
        return self._preprocess

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) model-size pixels -> (N, dim) unit vectors."""
        import torch
        import torch.nn.functional as F

        self.load()
        if len(pixels) == 0:
            return np.empty((0, self.dim), np.float32)
        self.image_calls += 1
        with torch.inference_mode():
            x = torch.from_numpy(np.require(pixels, requirements=["C", "W"])).to(self.device)
            x = x.permute(0, 3, 1, 2).float().div_(255.0).sub_(self._mean).div_(self._std)
            x = x.to(next(self._model.parameters()).dtype)
            feats = self._model.encode_image(x)
            return F.normalize(feats.float(), dim=-1).cpu().numpy()

    @property
    def logit_scale(self) -> float:
        """The model's learned softmax temperature (CLIP: 100), used to calibrate tag scores."""
        self.load()
        scale = getattr(self._model, "logit_scale", None)
        return float(scale.exp().item()) if scale is not None else 100.0

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        self.load()
        self.text_calls += 1
        with torch.inference_mode():
            tokens = self._tokenizer(list(texts)).to(self.device)
            feats = self._model.encode_text(tokens)
            return F.normalize(feats.float(), dim=-1).cpu().numpy()
