"""Export an open_clip model's towers to ONNX, once per model, and prove the export right.

Runs through torch (the only place besides GPUs and the fallback that needs it).
An export is written into a temporary folder and renamed into place, so a crash
or a second process exporting the same model at once never leaves a half export
that looks complete; the manifest is the last file written. Before the rename,
the export must reproduce torch: the same token ids from the torch-free
tokenizer on probe strings, and cosine >= 0.999 on probe texts and images.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from indexer.errors import GlimpseError
from indexer.models.embedder import OpenClipEmbedder
from indexer.models.onnx_runtime import FORMAT, TOKENIZER, ExportManifest, OnnxEmbedder

log = logging.getLogger(__name__)

MIN_COSINE = 0.999
OPSET = 17
# Strings that exercise the tokenizer's edge cases: case, punctuation, contractions, digits,
# HTML entities, mojibake, non-Latin scripts, emoji, and a query longer than the context.
PROBE_TEXTS = [
    "a photo of a dog",
    "Dog on a BEACH at sunset!!",
    "it's the kids' 3rd birthday, 2019",
    "caf\u00e9 &amp; cr\u00e8me br\u00fbl\u00e9e",
    "\u00c3\u00a9t\u00c3\u00a9 mojibake",
    "\u6771\u4eac\u306e\u591c\u666f",
    "snow \U0001f3d4 mountains",
    "under_score  and   spaces\tand\nnew lines",
    " ".join(["a very long query about many red and blue things"] * 12),
    "",
]


class ExportError(GlimpseError):
    """An export could not be made or did not reproduce torch; the model runs on torch instead."""

    title = "Model export failed"


def _tokenizer_kind(tokenizer: Any) -> str | None:
    """The torch-free tokenizer's cleaning mode that matches open_clip's tokenizer, or None."""
    from open_clip import tokenizer as oc

    if not isinstance(tokenizer, oc.SimpleTokenizer) or tokenizer.reduction_fn is not None:
        return None
    if len(tokenizer.all_special_ids) != 2:
        return None
    cleaners = {oc._clean_lower: "lower", oc._clean_whitespace: "whitespace", oc._clean_canonicalize: "canonicalize"}
    return cleaners.get(tokenizer.clean_fn)


def _trimmable(model: Any) -> bool:
    """CLIP text towers with a causal mask, pooled at the end-of-text token: positions after the last
    token of the batch cannot change the result, so the tower may run on the batch's real length
    (~10 tokens for a tag prompt instead of 77: ~9x less work, the same vectors)."""
    from open_clip.model import CLIP

    return (
        isinstance(model, CLIP)
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", None) in ("argmax", "eos")
    )


def _towers(model: Any, mean: tuple[float, ...], std: tuple[float, ...], trim: bool) -> tuple[Any, Any]:
    import torch
    import torch.nn.functional as F
    from open_clip.transformer import text_global_pool

    class ImageTower(torch.nn.Module):
        """uint8 NHWC pixels in, unit vectors out: the normalisation runs inside the graph."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.mean: torch.Tensor
            self.std: torch.Tensor
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            x = (pixels.permute(0, 3, 1, 2).float() - self.mean) / self.std
            return F.normalize(self.model.encode_image(x), dim=-1)

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return F.normalize(self.model.encode_text(tokens), dim=-1)

    class TrimmedTextTower(torch.nn.Module):
        """open_clip's ``CLIP.encode_text`` on tokens of any length up to the context (see _trimmable)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            m = self.model
            length = tokens.shape[1]
            x = m.token_embedding(tokens) + m.positional_embedding[:length]
            x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask[:length, :length]))
            x = text_global_pool(x, tokens, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
            if isinstance(m.text_projection, torch.nn.Linear):
                x = m.text_projection(x)
            elif m.text_projection is not None:
                x = x @ m.text_projection
            return F.normalize(x, dim=-1)

    return ImageTower().eval(), (TrimmedTextTower() if trim else TextTower()).eval()


def _export_one(module: Any, example: Any, path: Path, input_name: str, dynamic_length: bool = False) -> None:
    """Export with the dynamo exporter (symbolic shapes: a dynamic batch, and a dynamic token count
    for a trimmed text tower); the TorchScript one (fixed token count) where dynamo fails."""
    import torch
    from torch.export import Dim

    common: dict[str, Any] = {"input_names": [input_name], "output_names": ["unit_vectors"]}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        shapes = {0: Dim("batch", min=1, max=4096)}
        if dynamic_length:
            shapes[1] = Dim("length", min=2, max=int(example.shape[1]))
        try:
            torch.onnx.export(
                module, (example,), str(path), dynamo=True, dynamic_shapes=(shapes,), opset_version=18, **common
            )
            return
        except Exception as exc:  # an architecture torch.export cannot trace
            if dynamic_length:
                raise ExportError(f"the trimmed text tower does not export ({exc})") from exc
            log.info("dynamo ONNX export failed (%s); using the TorchScript exporter", exc)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            dynamic_axes={input_name: {0: "batch"}, "unit_vectors": {0: "batch"}},
            **common,
        )


def _quantise(image: Path) -> str | None:
    """The image tower with int8 weights (2-4x faster on a CPU; checked like the rest in _verify)."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        return None
    out = image.with_name("image-int8.onnx")
    # The quantiser logs a warning per tensor it leaves in float; none of it is the user's business.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(image), str(out), weight_type=QuantType.QInt8)
    except Exception as exc:  # an operator the quantiser does not know: fp32 it is
        log.info("no int8 image tower: %s", exc)
        return None
    finally:
        logging.disable(logging.NOTSET)
    return out.name


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12))


def _sweep_interrupted(folder: Path) -> None:
    """Remove what exports killed mid-way left beside ``folder`` (hundreds of MB each); an export
    another live process is writing right now is left alone."""
    for stale in folder.parent.glob(f"{folder.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        log.info("removing an interrupted export: %s", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def export_model(embedder: OpenClipEmbedder, folder: Path) -> ExportManifest:
    """Export ``embedder``'s towers into ``folder`` (fp32, CPU) and return the checked manifest."""
    import open_clip
    import torch

    embedder.load()
    if embedder.device != "cpu" or embedder.precision != "fp32":
        raise ExportError("exports are made from the fp32 model on the CPU")
    started = time.perf_counter()
    record, spec = embedder.record, embedder.preprocess
    model, tokenizer = embedder.torch_model, embedder.tokenizer
    _sweep_interrupted(folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        clean = _tokenizer_kind(tokenizer)
        context = int(getattr(tokenizer, "context_length", None) or 77)
        text_file: str | None = None
        if clean is not None:
            from indexer.models.tokenizer import ClipTokenizer

            ours = ClipTokenizer.from_bpe(Path(open_clip.tokenizer.default_bpe()), context, clean)
            if np.array_equal(ours(PROBE_TEXTS), tokenizer(PROBE_TEXTS).numpy()):
                ours.save(tmp / TOKENIZER)
                text_file = "text.onnx"
            else:
                log.warning(
                    "the torch-free tokenizer differs from open_clip's for %s; text stays on torch", record.name
                )
        size = spec.size
        trim = text_file is not None and _trimmable(model)
        image_tower, text_tower = _towers(model, spec.mean, spec.std, trim)
        with torch.inference_mode(False), torch.no_grad():
            _export_one(image_tower, torch.zeros(2, size, size, 3, dtype=torch.uint8), tmp / "image.onnx", "pixels")
            if text_file is not None:
                tokens = tokenizer(["a photo", "two words"])
                try:
                    _export_one(text_tower, tokens, tmp / text_file, "tokens", dynamic_length=trim)
                except ExportError as exc:
                    log.info("%s; exporting the text tower at full length", exc.message)
                    trim = False
                    _export_one(_towers(model, spec.mean, spec.std, False)[1], tokens, tmp / text_file, "tokens")
        manifest = ExportManifest(
            format=FORMAT,
            key=record.key,
            name=record.name,
            dim=record.dim,
            preprocess=asdict(spec),
            pretrained=record.pretrained,
            weights_id=record.weights_id,
            logit_scale=float(embedder.logit_scale),
            context_length=context,
            text_clean=clean or "",
            text=text_file,
            text_trim=trim,
            image="image.onnx",
            image_int8=_quantise(tmp / "image.onnx"),
            exported_with={"torch": torch.__version__, "open_clip": open_clip.__version__},
        )
        _verify(embedder, OnnxEmbedder(tmp, manifest, threads=None))
        if manifest.image_int8 is not None and not _int8_agrees(embedder, OnnxEmbedder(tmp, manifest, int8=True)):
            (tmp / manifest.image_int8).unlink()
            manifest = replace(manifest, image_int8=None)
        manifest.save(tmp)
        try:
            tmp.rename(folder)
        except OSError:
            if ExportManifest.read(folder) is None:  # not another process's complete export: ours goes in
                shutil.rmtree(folder, ignore_errors=True)
                tmp.rename(folder)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s to ONNX in %.1f s (%s)", record.name, time.perf_counter() - started, folder)
    return ExportManifest.read(folder) or manifest


def _worst_image_cosine(torch_embedder: OpenClipEmbedder, onnx: OnnxEmbedder, count: int, seed: int) -> float:
    """The lowest cosine between torch's and the export's vectors of ``count`` random images."""
    size = onnx.preprocess.size
    pixels = np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    return float(_cosines(torch_embedder.embed_images(pixels), onnx.embed_images(pixels)).min())


def _int8_agrees(torch_embedder: OpenClipEmbedder, int8: OnnxEmbedder) -> bool:
    """The int8 image tower is kept only where it gives torch's vectors too (cosine >= 0.999)."""
    worst = _worst_image_cosine(torch_embedder, int8, count=4, seed=1)
    if worst < MIN_COSINE:
        log.info("int8 image tower dropped: cosine %.5f to torch < %s", worst, MIN_COSINE)
    return worst >= MIN_COSINE


def _verify(torch_embedder: OpenClipEmbedder, onnx: OnnxEmbedder) -> None:
    """The export must give torch's answers; a mismatch is an error, never a silently worse search."""
    worst = _worst_image_cosine(torch_embedder, onnx, count=3, seed=0)
    if onnx.has_text:
        texts = [t for t in PROBE_TEXTS if t]
        worst = min(worst, float(_cosines(torch_embedder.embed_texts(texts), onnx.embed_texts(texts)).min()))
    if worst < MIN_COSINE:
        raise ExportError(f"the ONNX export differs from torch (cosine {worst:.5f} < {MIN_COSINE})")
    log.debug("ONNX export verified: worst cosine %.6f", worst)
