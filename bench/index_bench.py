"""Indexing throughput on large JPEGs: the pipeline against model-only and the decode+model floor.

    python bench/index_bench.py [--photos 96] [--megapixels 12] [--model ViT-B-32-256] [--precision fp32 bf16]

Prints, for each precision, measured in the same run:
  * decode core-time per photo (one process, draft decode + EXIF + preprocess + thumbnail),
  * model-only throughput on pre-decoded pixels, and the model's core-time per photo,
  * the floor: cores / (decode core-time + model core-time), the best any schedule can do,
  * the pipeline's end-to-end rate (`glimpse index` without the scan and model load),
    as a fraction of model-only (issue target >= 80%) and of the floor (target >= 85%).

Real CLIP weights cannot be downloaded on the build machines, so the model is the real
architecture with random weights saved to a file and loaded through ``--weights``: speed
does not depend on weight values. Photos are synthetic 12 MP JPEGs with sensor-like noise,
so they carry realistic entropy (about 3 MB each) for the JPEG decoder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from indexer.ingest.decode import decode_photo
from indexer.ingest.pipeline import IndexingPipeline, PipelineConfig
from indexer.ingest.thumbnails import ThumbnailCache
from indexer.models.embedder import OpenClipEmbedder
from indexer.models.presets import resolve_model
from indexer.models.space import single_space
from indexer.toyworld.world import all_specs, render
from store.library import LibraryStore
from store.paths import AppPaths

log = logging.getLogger("bench")
OUT = Path(__file__).resolve().parent / "out"


def make_photos(folder: Path, count: int, megapixels: float) -> list[Path]:
    """Photo-sized JPEGs: a shape scene upscaled, with per-pixel noise as a camera sensor leaves."""
    folder.mkdir(parents=True, exist_ok=True)
    w = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    h = int(w * 3 / 4)
    paths = sorted(folder.glob("*.jpg"))
    if len(paths) >= count:
        return paths[:count]
    rng = random.Random(0)
    nrng = np.random.default_rng(0)
    specs = all_specs()
    for i in range(len(paths), count):
        base = render(specs[i % len(specs)], rng, (w // 8, h // 8)).resize((w, h), Image.Resampling.BICUBIC)
        arr = np.asarray(base, dtype=np.int16) + nrng.normal(0, 7, (h, w, 1)).astype(np.int16)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(folder / f"photo-{i:04d}.jpg", quality=90)
    return sorted(folder.glob("*.jpg"))[:count]


def random_weights(arch: str) -> Path:
    import open_clip
    import torch

    path = OUT / f"random-{arch}.pt"
    if not path.exists():
        torch.manual_seed(0)
        model = open_clip.create_model(arch)
        OUT.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return path


def measure(
    arch: str,
    weights: Path,
    precision: str,
    photos: list[Path],
    cores: int,
    batch: int,
    workers: int,
    regions: bool = False,
) -> dict[str, float | str]:
    embedder = OpenClipEmbedder(resolve_model(arch, str(weights)), device="cpu", precision=precision, threads=cores)
    embedder.load()
    spec = embedder.preprocess

    # Decode core-time: one process, exactly the work a decode worker does per photo.
    times, pixels = [], []
    for path in photos[: min(24, len(photos))]:
        start = time.perf_counter()
        photo = decode_photo(path, spec, thumbnail_size=256)
        times.append(time.perf_counter() - start)
        pixels.append(photo.pixels)
    decode_ms = statistics.median(times) * 1000

    # Model only: pre-decoded pixels, full batches, after a warm-up batch.
    batch_px = np.stack([pixels[i % len(pixels)] for i in range(batch)])
    embedder.embed_images(batch_px)
    start = time.perf_counter()
    reps = 3
    for _ in range(reps):
        embedder.embed_images(batch_px)
    model_rate = reps * batch / (time.perf_counter() - start)
    model_core_ms = cores * 1000 / model_rate
    floor = cores * 1000 / (decode_ms + model_core_ms)

    # The pipeline, end to end, on a fresh library.
    with tempfile.TemporaryDirectory() as home:
        paths = AppPaths.from_env({"GLIMPSE_HOME": home}).ensure()
        store = LibraryStore.open(paths.database)
        pipeline = IndexingPipeline(
            store,
            single_space(store, embedder, paths.index_dir),
            ThumbnailCache(paths.thumbnails_dir),
            PipelineConfig(batch_size=batch, decode_workers=workers, regions=regions),
        )
        rate = 0.0
        for progress in pipeline.run([photos[0].parent]):
            if progress.phase == "indexing":
                rate = progress.rate
        store.close()
    return {
        "precision": embedder.precision,
        "regions": regions,
        "decode_ms_per_photo_one_core": round(decode_ms, 1),
        "model_only_photos_per_s": round(model_rate, 1),
        "model_ms_per_photo_one_core": round(model_core_ms, 1),
        "floor_photos_per_s": round(floor, 1),
        "pipeline_photos_per_s": round(rate, 1),
        "pipeline_vs_model_only": round(rate / model_rate, 3),
        "pipeline_vs_floor": round(rate / floor, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=96)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--model", default="ViT-B-32-256")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--regions", action="store_true", help="index with the region index on (its cost)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    photos = make_photos(OUT / f"photos-{args.megapixels:g}mp", args.photos, args.megapixels)
    size_mb = statistics.mean(p.stat().st_size for p in photos) / 1e6
    with Image.open(photos[0]) as im:
        dims = im.size
    log.info(
        "%d photos of %dx%d, %.1f MB each; model %s; %d cores", len(photos), *dims, size_mb, args.model, args.cores
    )
    weights = random_weights(args.model)
    rows = [
        measure(args.model, weights, p, photos, args.cores, args.batch, args.workers, args.regions)
        for p in args.precision
    ]
    print(
        json.dumps(
            {
                "photos": len(photos),
                "size": dims,
                "mb_per_photo": round(size_mb, 2),
                "model": args.model,
                "cores": args.cores,
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
