"""Click-to-segment: Segment Anything (MobileSAM by default) behind a small protocol.

SAM splits into a heavy image encoder (run once per photo) and a light prompt
encoder + mask decoder (run per click). :class:`SamSegmenter` caches the image
encoding per photo (a memory LRU, keyed by the photo's content and the model), so
every click after the first costs only the decoder.

Weights are never bundled. They are looked up in the app's model folder, or taken
from a file the user gives; :func:`download_weights` fetches them on first use with
progress and a size check, and offline the error names the file, its size and
where to put it. Checkpoints are read with ``torch.load(map_location="cpu",
weights_only=True)``: a checkpoint is data, never code to run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from indexer.errors import GlimpseError

log = logging.getLogger(__name__)


class SegmenterUnavailableError(GlimpseError):
    """The segmentation model's weights are not on disk and could not be fetched."""

    title = "Segmentation model not available"
    exit_code = 4


@dataclass(frozen=True)
class SegmenterSpec:
    name: str
    arch: str  # "vit_t" (MobileSAM) or "vit_b" / "vit_l" / "vit_h" (SAM)
    filename: str
    url: str
    size_bytes: int
    licence: str

    @property
    def package(self) -> str:
        return "mobile_sam" if self.arch == "vit_t" else "segment_anything"


SEGMENTERS: dict[str, SegmenterSpec] = {
    s.name: s
    for s in (
        SegmenterSpec(
            "mobile_sam",
            "vit_t",
            "mobile_sam.pt",
            "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            40_728_226,
            "Apache-2.0",
        ),
        SegmenterSpec(
            "sam_vit_b",
            "vit_b",
            "sam_vit_b_01ec64.pth",
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
            375_042_383,
            "Apache-2.0",
        ),
        SegmenterSpec(
            "sam_vit_l",
            "vit_l",
            "sam_vit_l_0b3195.pth",
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
            1_249_524_607,
            "Apache-2.0",
        ),
        SegmenterSpec(
            "sam_vit_h",
            "vit_h",
            "sam_vit_h_4b8939.pth",
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
            2_564_550_879,
            "Apache-2.0",
        ),
    )
}
DEFAULT_SEGMENTER = "mobile_sam"


@dataclass(frozen=True)
class Prediction:
    """Candidate masks for the prompts so far, best first."""

    masks: np.ndarray  # (n, H, W) bool, in the photo's own pixel grid
    scores: np.ndarray  # (n,) float32, SAM's predicted IoU

    @property
    def best(self) -> np.ndarray:
        return self.masks[0]


class Segmenter(Protocol):
    def set_image(self, image: np.ndarray, key: str | None = None) -> None:
        """Encode an RGB uint8 (H, W, 3) photo (or reuse its cached encoding under ``key``)."""
        ...

    def predict(
        self, points: np.ndarray | None, labels: np.ndarray | None, box: np.ndarray | None = None
    ) -> Prediction:
        """Masks for points (x, y in photo pixels; label 1 = object, 0 = not) and/or a box."""
        ...


def _offline_message(spec: SegmenterSpec, models_dir: Path, reason: str) -> str:
    return (
        f"The {spec.name} weights ({spec.filename}, {spec.size_bytes / 1e6:.0f} MB) are not on this machine "
        f"and could not be downloaded ({reason}). Download {spec.url} on a connected machine and put it at "
        f"{models_dir / spec.filename}, or pass the file with --sam-weights FILE."
    )


def download_weights(
    spec: SegmenterSpec,
    models_dir: Path,
    progress: Callable[[int, int], None] | None = None,
    timeout: float = 20.0,
) -> Path:
    """Fetch the weights into ``models_dir`` (atomically; size and SHA-256 checked/recorded).

    The SHA-256 of the finished file is written beside it, and compared on later
    loads, so a file damaged on disk is noticed instead of loading garbage.
    """
    dest = models_dir / spec.filename
    if dest.exists():
        return dest
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        import urllib.request  # only when downloading: the import costs every command ~20 ms

        with urllib.request.urlopen(spec.url, timeout=timeout) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or spec.size_bytes)
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if done != spec.size_bytes:
            raise SegmenterUnavailableError(
                f"The download of {spec.filename} is {done} bytes, expected {spec.size_bytes}; it was discarded."
            )
        os.replace(tmp, dest)
        dest.with_name(dest.name + ".sha256").write_text(digest.hexdigest())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SegmenterUnavailableError(_offline_message(spec, models_dir, str(exc))) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _cast_wrapper(module: Any, dtype: Any) -> Any:
    """Run ``module`` in ``dtype`` behind float32 inputs and outputs.

    The upstream predictor feeds float32 tensors and reads float32 results; wrapping the
    heavy parts (image encoder, mask decoder) keeps its code path intact while they run
    in bf16 on CPUs with bf16 matrix units (about 1.8x faster here, see bench/segment_bench.py).
    """
    import torch

    class Cast(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module.to(dtype)
            self.img_size = getattr(module, "img_size", None)

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            def down(x: Any) -> Any:
                return x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x

            out = self.inner(*(down(a) for a in args), **{k: down(v) for k, v in kwargs.items()})
            if isinstance(out, tuple):
                return tuple(o.float() if isinstance(o, torch.Tensor) else o for o in out)
            return out.float()

    return Cast()


def build_sam(arch: str) -> Any:
    """An untrained SAM / MobileSAM network of ``arch`` from the upstream packages' own builders."""
    if arch == "vit_t":
        from mobile_sam import sam_model_registry
    else:
        from segment_anything import sam_model_registry
    return sam_model_registry[arch](checkpoint=None)


class SamSegmenter:
    """A SAM predictor with the image encoding cached per photo.

    Thread-safe: the GUI's model thread and a CLI may call it; one lock guards the
    predictor's "current image" state.
    """

    def __init__(
        self,
        spec: SegmenterSpec,
        models_dir: Path,
        weights: Path | None = None,
        device: str = "cpu",
        precision: str = "auto",
        cache_size: int = 8,
        allow_download: bool = True,
        cache_dir: Path | None = None,
    ) -> None:
        self.spec = spec
        self.models_dir = models_dir
        self.weights = weights
        self.device = device
        self._precision_pref = precision
        self.precision = "fp32"
        self.allow_download = allow_download
        self.encoder_calls = 0  # tests use it to prove the encoder runs once per photo
        self._predictor: Any = None
        self._cache: OrderedDict[str, tuple[Any, tuple[int, int], tuple[int, int]]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.RLock()
        self.cache_dir = cache_dir  # optional: encodings on disk, keyed by model and photo content

    # ---- loading ----------------------------------------------------------------------------

    def weights_path(self, progress: Callable[[int, int], None] | None = None) -> Path:
        if self.weights is not None:
            if not self.weights.is_file():
                raise SegmenterUnavailableError(f"The segmentation weights file {self.weights} does not exist.")
            return self.weights
        local = self.models_dir / self.spec.filename
        if local.is_file():
            return local
        if not self.allow_download:
            raise SegmenterUnavailableError(_offline_message(self.spec, self.models_dir, "downloads are off"))
        return download_weights(self.spec, self.models_dir, progress)

    def load(self, progress: Callable[[int, int], None] | None = None) -> None:
        with self._lock:
            if self._predictor is not None:
                return
            import torch

            path = self.weights_path(progress)
            started = time.perf_counter()
            model = build_sam(self.spec.arch)
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                model.load_state_dict(state)
            except Exception as exc:
                raise SegmenterUnavailableError(
                    f"{path} is not a {self.spec.name} checkpoint ({type(exc).__name__}: {exc}). "
                    f"Delete it to download it again, or give the right file."
                ) from exc
            model.to(self.device).eval()
            from indexer.models.embedder import pick_precision

            self.precision = pick_precision(self.device, self._precision_pref)
            if self.precision != "fp32":
                dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
                model.image_encoder = _cast_wrapper(model.image_encoder, dtype)
                model.mask_decoder = _cast_wrapper(model.mask_decoder, dtype)
            if self.spec.arch == "vit_t":
                from mobile_sam import SamPredictor
            else:
                from segment_anything import SamPredictor
            self._predictor = SamPredictor(model)
            log.info(
                "loaded %s from %s on %s (%s) in %.1f s",
                self.spec.name,
                path,
                self.device,
                self.precision,
                time.perf_counter() - started,
            )

    # ---- use ----------------------------------------------------------------------------------

    def set_image(self, image: np.ndarray, key: str | None = None) -> None:
        """Make ``image`` current; its encoding comes from the cache when ``key`` was seen."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        self.load()
        with self._lock:
            p = self._predictor
            cached = self._cache.get(key) if key is not None else None
            if cached is None and key is not None:
                cached = self._read_disk(key)
            if cached is not None and cached[1] == image.shape[:2]:
                self._cache.move_to_end(key)  # type: ignore[arg-type]
                p.features, p.original_size, p.input_size = cached
                p.is_image_set = True
                return
            p.set_image(image)
            self.encoder_calls += 1
            if key is not None:
                self._remember(key, (p.features, p.original_size, p.input_size))
                self._write_disk(key)

    def _remember(self, key: str, entry: tuple[Any, tuple[int, int], tuple[int, int]]) -> None:
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _disk_path(self, key: str) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha1(f"{self.spec.name}:{key}".encode()).hexdigest()
        return self.cache_dir / f"{digest}.npz"

    def _read_disk(self, key: str) -> tuple[Any, tuple[int, int], tuple[int, int]] | None:
        path = self._disk_path(key)
        if path is None or not path.exists():
            return None
        import torch

        try:
            with np.load(path) as data:
                features = torch.from_numpy(data["features"].astype(np.float32)).to(self._predictor.device)
                entry = (features, tuple(data["original"].tolist()), tuple(data["input"].tolist()))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring a damaged segmentation cache file %s: %s", path, exc)
            return None
        self._remember(key, entry)
        return entry

    def _write_disk(self, key: str) -> None:
        path = self._disk_path(key)
        if path is None:
            return
        p = self._predictor
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            features=p.features.detach().cpu().numpy().astype(np.float16),
            original=np.asarray(p.original_size),
            input=np.asarray(p.input_size),
        )
        os.replace(tmp, path)

    def predict(
        self, points: np.ndarray | None, labels: np.ndarray | None, box: np.ndarray | None = None
    ) -> Prediction:
        """Three candidate masks (SAM's multimask output), sorted by predicted quality."""
        if points is None and box is None:
            raise ValueError("give at least one point or a box")
        with self._lock:
            if self._predictor is None or not self._predictor.is_image_set:
                raise RuntimeError("set_image first")
            masks, scores, _ = self._predictor.predict(
                point_coords=None if points is None else np.asarray(points, np.float32).reshape(-1, 2),
                point_labels=None if labels is None else np.asarray(labels, np.int64).reshape(-1),
                box=None if box is None else np.asarray(box, np.float32).reshape(4),
                multimask_output=True,
            )
        order = np.argsort(-scores)
        return Prediction(masks[order].astype(bool), scores[order].astype(np.float32))
