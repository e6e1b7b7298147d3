"""Live-library costs: reconciling an unchanged 100k-file tree, applying watcher events, idle CPU.

    python bench/watch_bench.py [--files 100000] [--photos 2000] [--idle 20]

1. Reconcile: a tree of ``--files`` files in 100 folders is scanned once (rows inserted,
   which hashes every file) and again unchanged: the second scan is what every start of
   the service costs (one ``stat`` per file, one range query per root).
2. Events: a library of ``--photos`` small photos is indexed by the service (toy-world
   model), then every photo is renamed; we time from the first rename until the store
   matches the disk again (events/s), then one rename of the folder holding them all.
3. Idle: CPU used by the service while watching that library with nothing happening, and
   by a bare watcher over the 100k-file tree.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from indexer.ingest.pipeline import IndexingPipeline, PipelineConfig
from indexer.ingest.scanner import Scanner
from indexer.live.service import LibraryService, ServiceConfig
from indexer.live.watcher import EventCoalescer, FolderWatcher
from indexer.models.embedder import OpenClipEmbedder
from indexer.models.presets import resolve_model
from indexer.models.space import single_space
from indexer.toyworld.world import write_sample_folder
from store.library import LibraryStore
from store.paths import AppPaths

log = logging.getLogger("bench")


def bench_reconcile(work: Path, files: int) -> dict[str, float]:
    tree = work / "tree"
    payload = b"\xff\xd8\xff\xe0" + b"x" * 2000
    for d in range(100):
        folder = tree / f"dir{d:03d}"
        folder.mkdir(parents=True)
        for f in range(files // 100):
            (folder / f"img{f:05d}.jpg").write_bytes(payload)
    store = LibraryStore.open(work / "reconcile.sqlite3")
    scanner = Scanner(store)
    start = time.perf_counter()
    first = scanner.scan([tree])
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    again = scanner.scan([tree])
    again_s = time.perf_counter() - start
    store.close()
    assert first.new == files and again.unchanged == files
    return {"files": files, "first_scan_s": round(first_s, 2), "unchanged_rescan_s": round(again_s, 2)}


def wait_until(predicate, timeout: float = 600) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise TimeoutError
        time.sleep(0.02)
    return time.perf_counter() - start


def bench_events(work: Path, photos: int, idle_s: float) -> dict[str, float]:
    paths = AppPaths.from_env({"GLIMPSE_HOME": str(work / "home")}).ensure()
    store = LibraryStore.open(paths.database)
    embedder = OpenClipEmbedder(resolve_model("toyworld"))
    pipeline = IndexingPipeline(
        store, single_space(store, embedder, paths.index_dir), None, PipelineConfig(batch_size=128)
    )
    root = work / "library"
    write_sample_folder(root / "all", per_spec=max(1, photos // 36), size=(64, 48))
    count = sum(1 for _ in (root / "all").rglob("*.jpg"))
    store.add_folder(str(root))
    service = LibraryService(store, pipeline, config=ServiceConfig(quiet=0.5))
    service.start()
    start = time.perf_counter()
    service.wait_idle(600)
    index_s = time.perf_counter() - start

    files = sorted((root / "all").rglob("*.jpg"))
    start = time.perf_counter()
    for f in files:
        f.rename(f.with_name("renamed-" + f.name))
    renamed = {str(f.with_name("renamed-" + f.name)) for f in files}
    wait_until(lambda: set(store.files_under(str(root))) == renamed)
    rename_s = time.perf_counter() - start

    start = time.perf_counter()
    (root / "all").rename(root / "moved")
    wait_until(lambda: all(p.startswith(str(root / "moved")) for p in store.files_under(str(root))))
    move_s = time.perf_counter() - start

    service.wait_idle(60)
    cpu0, t0 = time.process_time(), time.perf_counter()
    time.sleep(idle_s)
    idle_cpu = (time.process_time() - cpu0) / (time.perf_counter() - t0)
    service.stop()
    store.close()
    return {
        "photos": count,
        "initial_index_s": round(index_s, 1),
        "rename_events": count,
        "rename_all_s": round(rename_s, 2),
        "events_per_s": round(count / rename_s, 1),
        "folder_move_rows": count,
        "folder_move_s": round(move_s, 2),
        "service_idle_cpu_percent": round(100 * idle_cpu, 3),
    }


def bench_idle_watch(tree: Path, idle_s: float) -> dict[str, float]:
    watcher = FolderWatcher(EventCoalescer().push)
    start = time.perf_counter()
    mode = watcher.watch(str(tree))
    setup_s = time.perf_counter() - start
    cpu0, t0 = time.process_time(), time.perf_counter()
    time.sleep(idle_s)
    idle_cpu = (time.process_time() - cpu0) / (time.perf_counter() - t0)
    watcher.stop()
    return {
        "watch_mode": mode.mode,
        "watch_setup_s": round(setup_s, 2),
        "watcher_idle_cpu_percent": round(100 * idle_cpu, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--idle", type=float, default=20.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out = {"cores": os.cpu_count(), "reconcile": bench_reconcile(work, args.files)}
        out["idle_watch_100k_tree"] = bench_idle_watch(work / "tree", args.idle)
        out["events"] = bench_events(work, args.photos, args.idle)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
