"""Near-duplicates: how well `glimpse duplicates` groups copies, and what it costs at 100k photos.

    python bench/duplicates_bench.py [--photos 100000] [--originals 40]

Quality: distinct toy-world photos (three different pictures of every colour and
shape: the hard case, since the toy model sees only colour and shape), and for
``--originals`` of them four edited copies each: resized to half, re-encoded at JPEG
quality 40, cropped by 5%, brightened by 25%, plus one byte-identical copy. (Desktop
wallpapers are no distinct photos to test with: their packages ship one picture at
several sizes, which are near-duplicates.) All are indexed with ``glimpse index`` (toy model);
the grouping's pairwise precision and recall against the truth (same original or not)
are printed at several similarities.

Cost: ``--photos`` synthetic embedding-like vectors (clusters, as query_bench.py) with
1% planted near-duplicates, grouped from stored vectors alone; the time and the share
of planted pairs found are printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance
from query_bench import synthetic_vectors  # bench/ is on sys.path when run as a script
from relevance_bench import cpu_flags

from indexer.composition import build_services
from indexer.models.choice import ModelChoice
from indexer.search.duplicates import find_duplicates
from indexer.settings import Settings
from indexer.toyworld.world import all_specs, render
from store.paths import AppPaths
from store.records import ImageRecord

log = logging.getLogger("bench")
SIMILARITIES = (0.9, 0.93, 0.96, 0.98)


def edited_copies(src: Path, out: Path, stem: str) -> list[Path]:
    img = Image.open(src).convert("RGB")
    w, h = img.size
    made = []
    for name, copy in (
        ("half", img.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BICUBIC)),
        ("crop", img.crop((w // 40, h // 40, w - w // 40, h - h // 40))),
        ("bright", ImageEnhance.Brightness(img).enhance(1.25)),
    ):
        path = out / f"{stem}-{name}.jpg"
        copy.save(path, quality=92)
        made.append(path)
    low = out / f"{stem}-q40.jpg"
    img.save(low, quality=40)
    same = out / f"{stem}-copy{src.suffix}"
    shutil.copyfile(src, same)
    return [*made, low, same]


def quality(work: Path, originals: int) -> dict[str, object]:
    rng = random.Random(4242)
    photos = work / "photos"
    distinct = photos / "distinct"
    distinct.mkdir(parents=True)
    sources: list[Path] = []
    for spec in all_specs():
        for n in range(3):  # three different pictures of each pair: not duplicates of each other
            path = distinct / f"{spec.colour}-{spec.shape}-{n}.jpg"
            render(spec, rng, (640, 480)).save(path, quality=92)
            sources.append(path)
    chosen = rng.sample(sources, min(originals, len(sources)))
    copies = photos / "copies"
    copies.mkdir()
    family: dict[str, int] = {str(p.resolve()): i for i, p in enumerate(sources)}
    for i, src in enumerate(chosen):
        for c in edited_copies(src, copies, f"{i:03d}"):
            family[str(c.resolve())] = family[str(src.resolve())]
    env = {**os.environ, "GLIMPSE_HOME": str(work / "home"), "GLIMPSE_MODEL": "toyworld"}
    subprocess.run([sys.executable, "-m", "indexer.cli.main", "index", str(photos)], env=env, check=True)
    paths = AppPaths.from_env(env)
    svc = build_services(paths, Settings.load(paths.settings_file), ModelChoice("toyworld"))
    truth = {
        frozenset(p)
        for group in itertools.groupby(sorted(family, key=family.__getitem__), key=family.__getitem__)
        for p in itertools.combinations(list(group[1]), 2)
    }
    out: dict[str, object] = {"photos": len(family), "true_pairs": len(truth)}
    try:
        for similarity in SIMILARITIES:
            started = time.perf_counter()
            groups = svc.duplicates.find(similarity)
            seconds = time.perf_counter() - started
            found = {frozenset(p) for g in groups for p in itertools.combinations([m.path for m in g.members], 2)}
            hit = len(found & truth)
            out[f"similarity {similarity}"] = {
                "groups": len(groups),
                "precision": round(hit / max(len(found), 1), 4),
                "recall": round(hit / max(len(truth), 1), 4),
                "seconds": round(seconds, 3),
            }
    finally:
        svc.close()
    return out


def cost(n: int, similarity: float) -> dict[str, object]:
    rng = np.random.default_rng(0)
    vectors = synthetic_vectors(n, 512, rng)
    planted = rng.choice(n, size=n // 100, replace=False)
    partners = rng.choice(np.setdiff1d(np.arange(n), planted), size=len(planted), replace=False)
    noisy = vectors[planted] + 0.010 * rng.normal(size=(len(planted), 512)).astype(np.float32)
    vectors[partners] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)  # cosine about 0.96-0.97 to its twin
    ids = np.arange(1, n + 1, dtype=np.int64)
    records = {int(i): ImageRecord(int(i), f"/p/{i}.jpg", None, 1000, 0, "indexed", 100, 100) for i in ids}
    started = time.perf_counter()
    groups = find_duplicates(ids, vectors, records, similarity)
    seconds = time.perf_counter() - started
    found = {frozenset(m.image_id for m in g.members) for g in groups if len(g.members) == 2}
    want = {frozenset((int(ids[a]), int(ids[b]))) for a, b in zip(planted, partners, strict=True)}
    sims = np.einsum("ij,ij->i", vectors[planted], vectors[partners])
    return {
        "photos": n,
        "planted_pairs": len(want),
        "planted_similarity_min": round(float(sims.min()), 4),
        "found_of_planted": round(len(found & want) / len(want), 4),
        "groups": len(groups),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=100_000)
    ap.add_argument("--originals", type=int, default=40)
    ap.add_argument("--similarity", type=float, default=0.96)
    ap.add_argument("--skip-quality", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    print(f"CPU flags: {cpu_flags()}")
    report: dict[str, object] = {"cpu_flags": cpu_flags()}
    if not args.skip_quality:
        with tempfile.TemporaryDirectory(prefix="glimpse-dupes-") as tmp:
            report["quality"] = quality(Path(tmp), args.originals)
    report["cost"] = cost(args.photos, args.similarity)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
