"""Query latency: text encoder + vector search at 10k, 100k and 1M photos.

    python bench/query_bench.py [--sizes 10000 100000 1000000] [--model ViT-B-32-256]

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
import time

import numpy as np
from index_bench import random_weights  # bench/ is on sys.path when run as a script

from indexer.models.embedder import OpenClipEmbedder
from indexer.models.presets import resolve_model
from store.vectors import VectorIndex

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
    parser.add_argument("--precision", default="auto")
    parser.add_argument("-k", type=int, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    embedder = OpenClipEmbedder(
        resolve_model(args.model, str(random_weights(args.model))), device="cpu", precision=args.precision
    )
    embedder.load()
    text_ms = median_ms(lambda: embedder.embed_texts(["a dog on a beach at sunset"]), 20)
    dim = embedder.dim
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
        rows.append(
            {
                "vectors": n,
                "search_ms": round(search_ms, 2),
                "search_in_folder_10pct_ms": round(filtered_ms, 2),
                "text_plus_search_ms": round(text_ms + search_ms, 1),
            }
        )
        log.info("%s", rows[-1])
    print(
        json.dumps(
            {
                "model": args.model,
                "precision": embedder.precision,
                "text_encoder_ms": round(text_ms, 1),
                "k": args.k,
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
