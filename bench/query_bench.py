"""Query latency: text encoder + vector search at 10k, 100k and 1M photos; a search's memory at each size.

    python bench/query_bench.py [--sizes 10000 100000 1000000] [--model ViT-B-32-256]

The text encoder is timed on each runtime the product has on this CPU: ONNX Runtime
(fp32, what a CPU query runs on) and torch in fp32 and bf16, reported separately with
the CPU's flags. Memory: the index is saved as a library saves it, and a fresh process
loads it the way a long-lived search does (the app, ``glimpse watch``) and embeds one
query; its peak RSS is compared with the vectors' size plus the text tower's. A second
process searches it the way a one-shot ``glimpse search`` does (streamed from the file:
``store.flat``); its wall time and peak RSS are reported too.

Vectors are synthetic (d=512, normalised, clustered around a few hundred centres so they
look more like embeddings than uniform noise); the exact index's speed does not depend on
their values. The text encoder is the real architecture with random weights (see
index_bench.py). Targets (docs/performance.md): text query to ranked ids <= 60 ms at
100k and <= 120 ms at 1M on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from index_bench import OUT, random_weights  # bench/ is on sys.path when run as a script
from peer_bench import cpu_flags

from indexer.models.embedder import OpenClipEmbedder
from indexer.models.engine import ModelEngine
from indexer.models.presets import resolve_model
from store.vectors import VectorIndex

_LOAD_AND_QUERY = """
import sys
from pathlib import Path
from indexer.models.engine import ModelEngine
from indexer.models.presets import resolve_model
from store.vectors import VectorIndex
index = VectorIndex.load(Path(sys.argv[1]), int(sys.argv[2]))
engine = ModelEngine(resolve_model(sys.argv[3], sys.argv[4]), Path(sys.argv[5]))
index.search(engine.embed_texts(["a dog on a beach at sunset"])[0], 50)
"""

# What a one-shot `glimpse search` does (indexer.cli.snapshot): the file streamed, not loaded.
_ONE_SHOT = """
import sys
from pathlib import Path
from indexer.models.engine import ModelEngine
from indexer.models.presets import resolve_model
from store.flat import read_flat_index
index = read_flat_index(Path(sys.argv[1]), int(sys.argv[2]))
engine = ModelEngine(resolve_model(sys.argv[3], sys.argv[4]), Path(sys.argv[5]), short_lived=True)
index.search(engine.embed_texts(["a dog on a beach at sunset"])[0], 50)
"""

log = logging.getLogger("bench")


def synthetic_vectors(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.normal(size=(256, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for start in range(0, n, step):
        m = min(step, n - start)
        v = centres[rng.integers(0, 256, m)] + 0.6 * rng.normal(size=(m, dim)).astype(np.float32)
        out[start : start + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def median_ms(fn, reps: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--model", default="ViT-B-32-256")
    parser.add_argument("-k", type=int, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    weights = str(random_weights(args.model))
    models_dir = OUT / "query-models"
    engine = ModelEngine(resolve_model(args.model, weights), models_dir)  # exports once, then ONNX Runtime
    query = ["a dog on a beach at sunset"]
    text_ms = median_ms(lambda: engine.embed_texts(query), 30)
    torch_ms = {}
    for precision in ("fp32", "bf16"):
        embedder = OpenClipEmbedder(resolve_model(args.model, weights), device="cpu", precision=precision)
        torch_ms[precision] = round(median_ms(lambda e=embedder: e.embed_texts(query), 20), 1)
    dim = engine.dim
    text_tower_mb = sum(f.stat().st_size for f in engine.export_folder.glob("text.onnx*")) / 2**20
    rng = np.random.default_rng(0)
    rows = []
    for n in args.sizes:
        index = VectorIndex(dim)
        index.add(np.arange(n, dtype=np.int64), synthetic_vectors(n, dim, rng))
        queries = synthetic_vectors(20, dim, rng)
        it = iter(range(10**9))
        search_ms = median_ms(lambda q=queries, i=it, ix=index: ix.search(q[next(i) % 20], args.k), 20)
        allowed = np.arange(0, n, 10, dtype=np.int64)
        filtered_ms = median_ms(lambda q=queries, a=allowed, ix=index: ix.search(q[0], args.k, a), 5)
        file = OUT / f"query-index-{n}.faiss"
        index.save(file, 1)
        del index

        # GNU time: the process's own peak (a fork of this big process counts its pages until exec).
        def process(script: str, file: Path = file) -> tuple[float, float]:
            out = subprocess.run(
                ["/usr/bin/time", "-f", "%e %M", sys.executable, "-c", script, str(file), str(dim), args.model,
                 weights, str(models_dir)],
                capture_output=True, text=True, check=True,
            ).stderr.split()  # fmt: skip
            return float(out[-2]), float(out[-1]) / 1024

        _, peak = process(_LOAD_AND_QUERY)
        one_shot_s, one_shot_peak = process(_ONE_SHOT)
        vectors_mb = n * dim * 4 / 2**20
        file.unlink()
        rows.append(
            {
                "vectors": n,
                "search_ms": round(search_ms, 2),
                "search_in_folder_10pct_ms": round(filtered_ms, 2),
                "text_plus_search_ms": round(text_ms + search_ms, 1),
                "search_process_peak_rss_mb": round(peak),
                "vectors_plus_text_tower_mb": round(vectors_mb + text_tower_mb),
                "rss_ratio": round(peak / (vectors_mb + text_tower_mb), 2),
                "one_shot_process_s": one_shot_s,
                "one_shot_process_peak_rss_mb": round(one_shot_peak),
            }
        )
        log.info("%s", rows[-1])
    print(
        json.dumps(
            {
                "model": args.model,
                "cpu_flags": cpu_flags(),
                "text_encoder_ms": {"onnxruntime fp32": round(text_ms, 1)}
                | {f"torch {k}": v for k, v in torch_ms.items()},
                "k": args.k,
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
