"""Tagging throughput from stored vectors, and the time to re-tag a library after a vocabulary edit.

    python bench/tag_bench.py [--photos 100000] [--tags 500] [--model ViT-B-32-256]

A library of synthetic photos (d=512 vectors clustered like embeddings, see
query_bench.py) is written to a real SQLite file; the vocabulary is the default
one (333 tags) padded with extra tags to ``--tags``; the text encoder is the real
architecture with random weights (index_bench.py), so prompt embedding costs what it
will cost with real weights. Target (issue 5): at least 10,000 photos/s for 500 tags.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time

import numpy as np
from index_bench import random_weights  # bench/ is on sys.path when run as a script
from query_bench import synthetic_vectors

from indexer.ingest.pipeline import IndexingPipeline
from indexer.models.embedder import OpenClipEmbedder
from indexer.models.presets import resolve_model
from indexer.models.space import single_space
from indexer.tags.tagger import Tagger
from indexer.tags.vocabulary import DEFAULT_VOCABULARY
from store.library import LibraryStore
from store.paths import AppPaths
from store.records import EmbeddedImage, NewFile, ScanChanges
from store.tags import TagStore

log = logging.getLogger("bench")


def build_library(store: LibraryStore, model_id: int, vectors: np.ndarray) -> None:
    n = len(vectors)
    store.apply_scan(ScanChanges(new=[NewFile(f"/photos/{i:07d}.jpg", None, 1000, i, None) for i in range(n)]))
    ids = [i for i, _ in store.pending_images(model_id)]
    v16 = vectors.astype("<f2")
    for start in range(0, n, 5000):
        batch = [
            EmbeddedImage(image_id, v16[k].tobytes(), 4000, 3000, None, None, None, 1, None)
            for k, image_id in enumerate(ids[start : start + 5000], start=start)
        ]
        store.save_batch(model_id, batch, [])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=100_000)
    ap.add_argument("--tags", type=int, default=500)
    ap.add_argument("--model", default="ViT-B-32-256")
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    embedder = OpenClipEmbedder(
        resolve_model(args.model, str(random_weights(args.model))), device="cpu", precision=args.precision
    )
    embedder.load()
    with tempfile.TemporaryDirectory() as tmp:
        paths = AppPaths.from_env({"GLIMPSE_HOME": tmp}).ensure()
        store = LibraryStore.open(paths.database)
        pipeline = IndexingPipeline(store, single_space(store, embedder, paths.index_dir))
        model_id = pipeline.vectors().model_id
        t0 = time.perf_counter()
        vectors = synthetic_vectors(args.photos, embedder.dim, np.random.default_rng(0))
        build_library(store, model_id, vectors)
        vectors16 = vectors.astype("<f2").astype(np.float32)
        pipeline.vectors().add(np.arange(1, args.photos + 1, dtype=np.int64), vectors16)
        log.info("library of %d photos built in %.1f s", args.photos, time.perf_counter() - t0)

        tags = TagStore(store.db)
        tagger = Tagger(tags, store, pipeline.slot, DEFAULT_VOCABULARY)
        tagger.seed_vocabulary()
        for k in range(max(0, args.tags - len(tags.tags()))):
            tags.add_tag(f"extra concept {k}", prompts=[f"a photo of thing number {k}"])
        t0 = time.perf_counter()
        model = tagger.model()
        first_model = time.perf_counter() - t0

        # Throughput of the tagging itself: vectors in memory -> tag rows.
        ids = np.arange(1, args.photos + 1, dtype=np.int64)
        t0 = time.perf_counter()
        rows = model.assign(ids, vectors16)
        assign_s = time.perf_counter() - t0

        # A random-weight model tags (almost) nothing, so measure the write of a realistic
        # amount separately: five tags per photo, in one transaction, as a re-tag writes them.
        tag_ids = np.array([t.id for t in model.tags])
        rng = np.random.default_rng(1)
        synthetic = [(int(i), int(t), "zero-shot", 0.7) for i in ids for t in rng.choice(tag_ids, 5, replace=False)]
        t0 = time.perf_counter()
        tags.replace_automatic(synthetic)
        write_s = time.perf_counter() - t0

        full = tagger.retag()  # the first full re-tag
        tags.add_tag("our new tag", prompts=["a red kite over a beach"])
        after_edit = tagger.retag()  # what a vocabulary edit costs the user
        store.close()

    result = {
        "photos": args.photos,
        "tags": len(model.tags),
        "precision": embedder.precision,
        "prompt_embedding_first_time_s": round(first_model, 2),
        "assign_photos_per_s": round(args.photos / assign_s),
        "assign_s": round(assign_s, 3),
        "tag_rows": len(rows),
        "write_5_tags_per_photo_s": round(write_s, 2),
        "full_retag_s": round(full.seconds, 2),
        "retag_after_vocabulary_edit_s": round(after_edit.seconds, 2),
        "prompts_embedded_for_edit": after_edit.texts_embedded,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
