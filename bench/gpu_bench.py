"""The GPU path, measured on a lent accelerator: model-only embedding, text queries, SAM.

    python bench/gpu_bench.py [--model ViT-B-32-256] [--batch 256]

Runs the product's own classes (``OpenClipEmbedder`` choosing device and precision by
itself, ``SamSegmenter`` with its cast wrappers) with random weights, and times JPEG
decoding on the CPU (Pillow, the pipeline's decoder) against nvJPEG
(``torchvision.io.decode_jpeg(device="cuda")``), the decoder the GPU pipeline would need.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    import torch

    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    import open_clip
    import torch
    from PIL import Image

    from indexer.models.embedder import OpenClipEmbedder
    from indexer.models.presets import resolve_model
    from indexer.segment.sam import SEGMENTERS, SamSegmenter, build_sam

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ViT-B-32-256")
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    out: dict[str, object] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "random.pt"
        torch.manual_seed(0)
        torch.save(open_clip.create_model(args.model).state_dict(), weights)
        for precision in ("auto", "fp32"):
            emb = OpenClipEmbedder(resolve_model(args.model, str(weights)), device="auto", precision=precision)
            emb.load()
            size = emb.preprocess.size
            pixels = np.random.default_rng(0).integers(0, 255, (args.batch, size, size, 3), dtype=np.uint8)
            seconds = timed(lambda e=emb, p=pixels: e.embed_images(p))
            text = timed(lambda e=emb: e.embed_texts(["a dog on a beach at sunset"]), repeat=20)
            out[f"embed_{emb.precision}"] = {
                "device": emb.device,
                "images_per_s_model_only": round(args.batch / seconds),
                "text_query_ms": round(1000 * text, 2),
            }
        # JPEG decode: Pillow with draft (the pipeline's CPU decoder) vs nvJPEG.
        import torchvision
        from torchvision.io import decode_jpeg

        rng = np.random.default_rng(1)
        img = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).resize((4000, 3000))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        data = buf.getvalue()
        t0 = time.perf_counter()
        for _ in range(10):
            with Image.open(io.BytesIO(data)) as im:
                im.draft("RGB", (256, 256))
                im.load()
        pil_ms = 100 * (time.perf_counter() - t0)
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        batch = [raw] * 32
        gpu = timed(lambda: decode_jpeg(batch, device="cuda"))
        out["jpeg_12mp"] = {
            "pillow_draft_ms_per_photo_1_core": round(pil_ms, 1),
            "nvjpeg_photos_per_s_batch_32": round(32 / gpu),
            "torchvision": torchvision.__version__,
        }
        # SAM on the GPU: encoder per photo, decoder per click.
        for name in ("mobile_sam", "sam_vit_b"):
            spec = SEGMENTERS[name]
            ckpt = Path(tmp) / f"{name}.pt"
            torch.manual_seed(0)
            torch.save(build_sam(spec.arch).state_dict(), ckpt)
            seg = SamSegmenter(spec, Path(tmp), weights=ckpt, device="cuda")
            seg.load()
            image = rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8)
            n = [0]

            def encode(s=seg, im=image, c=n) -> None:  # type: ignore[no-untyped-def]
                c[0] += 1
                s.set_image(im, key=f"k{c[0]}")

            enc = timed(encode)
            click = timed(lambda s=seg: s.predict(np.array([[500.0, 400.0]]), np.array([1])), repeat=20)
            out[name] = {
                "precision": seg.precision,
                "encoder_ms": round(1000 * enc, 1),
                "decoder_ms_per_click": round(1000 * click, 2),
            }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
