"""Should the CPU image encoder be int8? Speed, agreement with fp32, and toy-world accuracy.

    python bench/int8_bench.py [--per-spec 20]

Quantises the ONNX image tower the product exports (dynamic int8 weights, ONNX Runtime's
``quantize_dynamic``) and compares it with the fp32 tower:

* speed, images/s at batch 32, and cosine to fp32, on ``ViT-B-32-256`` (random weights);
* on the toy-world model (real, trained weights): zero-shot top-1 for the full caption,
  the colour and the shape (the toy vocabulary's tags are colours and shapes), and
  text-to-image retrieval precision@10, fp32 against int8.

The product keeps fp32 unless int8 loses nothing on the toy world (see docs/performance.md).
"""

from __future__ import annotations

import json
import logging
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np
from index_bench import OUT, random_weights  # bench/ is on sys.path when run as a script
from peer_bench import cpu_flags

from indexer.ingest.decode import to_model_input
from indexer.models.engine import ModelEngine
from indexer.models.presets import resolve_model
from indexer.toyworld.world import all_specs, render

log = logging.getLogger("bench")


def quantised(image_onnx: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = image_onnx.with_name("image-int8.onnx")
    if not out.exists():
        quantize_dynamic(str(image_onnx), str(out), weight_type=QuantType.QInt8)
    return out


def session(path: Path):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess, pixels: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = np.concatenate([sess.run(None, {"pixels": pixels[i : i + 32]})[0] for i in range(0, len(pixels), 32)])
    return np.asarray(out / np.linalg.norm(out, axis=1, keepdims=True), np.float32)


def speed(sess, pixels: np.ndarray, rounds: int = 5) -> float:  # type: ignore[no-untyped-def]
    sess.run(None, {"pixels": pixels})
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        sess.run(None, {"pixels": pixels})
        times.append(time.perf_counter() - start)
    return len(pixels) / statistics.median(times)


def vit(models: Path) -> dict[str, float]:
    engine = ModelEngine(resolve_model("ViT-B-32-256", str(random_weights("ViT-B-32-256"))), models)
    engine.load()
    fp32 = session(engine.export_folder / "image.onnx")
    int8 = session(quantised(engine.export_folder / "image.onnx"))
    pixels = np.random.default_rng(0).integers(0, 256, (32, 256, 256, 3), dtype=np.uint8)
    cos = (run(fp32, pixels) * run(int8, pixels)).sum(1)
    return {"fp32_img_per_s": round(speed(fp32, pixels), 1), "int8_img_per_s": round(speed(int8, pixels), 1),
            "cosine_min": round(float(cos.min()), 5), "cosine_mean": round(float(cos.mean()), 5)}  # fmt: skip


def toy(models: Path, per_spec: int) -> dict[str, dict[str, float]]:
    engine = ModelEngine(resolve_model("toyworld"), models)
    engine.load()
    spec = engine.preprocess
    specs = all_specs()
    images, truth = [], []
    for n, s in enumerate(specs):
        for i in range(per_spec):
            images.append(to_model_input(render(s, random.Random(10_000 + n * 100 + i), (320, 240)), spec))
            truth.append(n)
    pixels, labels = np.stack(images), np.asarray(truth)
    captions = engine.embed_texts([s.caption for s in specs])
    colours = sorted({s.colour for s in specs})
    shapes = sorted({s.shape for s in specs})
    colour_text = engine.embed_texts([f"a {c} shape" for c in colours])
    shape_text = engine.embed_texts([f"a {s}" for s in shapes])
    out: dict[str, dict[str, float]] = {}
    fp32_vecs = None
    for name, path in (("fp32", engine.export_folder / "image.onnx"),
                       ("int8", quantised(engine.export_folder / "image.onnx"))):  # fmt: skip
        vecs = run(session(path), pixels)
        fp32_vecs = vecs if fp32_vecs is None else fp32_vecs
        top1 = float(((vecs @ captions.T).argmax(1) == labels).mean())
        colour = float(
            np.mean(
                [colours[j] == specs[t].colour for j, t in zip((vecs @ colour_text.T).argmax(1), labels, strict=True)]
            )
        )
        shape = float(
            np.mean([shapes[j] == specs[t].shape for j, t in zip((vecs @ shape_text.T).argmax(1), labels, strict=True)])
        )
        precision = float(
            np.mean([np.mean(labels[np.argsort(-(vecs @ captions[q]))[:10]] == q) for q in range(len(specs))])
        )
        out[name] = {"caption_top1": round(top1, 4), "colour_top1": round(colour, 4), "shape_top1": round(shape, 4),
                     "retrieval_p_at_10": round(precision, 4),
                     "cosine_to_fp32_min": round(float((vecs * fp32_vecs).sum(1).min()), 5)}  # fmt: skip
    return out


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-spec", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    models = OUT / "int8-models"
    result = {"cpu_flags": cpu_flags(), "cores": os.cpu_count(), "vit_b_32_256": vit(models),
              "toyworld": toy(models, args.per_spec)}  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
