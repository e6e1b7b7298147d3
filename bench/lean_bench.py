"""What a run costs around the model: an unchanged rescan, a new library's first searchable photo, idle watching.

    python bench/lean_bench.py [--files 5000] [--rounds 5] [--idle-seconds 60]

* ``rescan``: ``glimpse index`` of an unchanged tree of N photos, whole process, against a
  bare walk of the same tree (``os.scandir`` + ``stat`` in a fresh Python process);
  interleaved rounds, medians. Target: <= 3x the walk.
* ``first_photo``: a new library of 60 synthetic 12 MP photos with ViT-B-32-256 (random
  weights, already exported, as after a model's first use): seconds from ``glimpse index``
  starting until the first photo's vector is committed (then a search finds it). Target: <= 10 s.
* ``idle_watch``: CPU time of an idle ``glimpse watch`` over a window. Target: < 1% of a core.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

from index_bench import OUT, make_photos, random_weights  # bench/ is on sys.path when run as a script
from peer_bench import cpu_flags, glimpse_cmd

log = logging.getLogger("bench")

WALK = """
import os, sys
def walk(p):
    n = 0
    with os.scandir(p) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                n += walk(e.path)
            else:
                e.stat(); n += 1
    return n
print(walk(sys.argv[1]))
"""


def wall(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def toy_tree(root: Path, files: int) -> None:
    if root.exists() and sum(1 for _ in root.rglob("*.jpg")) == files:
        return
    import random

    from indexer.toyworld.world import all_specs, render

    shutil.rmtree(root, ignore_errors=True)
    specs = all_specs()
    for i in range(files):
        folder = root / f"album-{i // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        render(specs[i % len(specs)], random.Random(i), (96, 72)).save(folder / f"{i:05d}.jpg", quality=85)


def rescan(files: int, rounds: int) -> dict[str, float]:
    tree = OUT / f"rescan-{files}"
    toy_tree(tree, files)
    env = dict(os.environ, GLIMPSE_HOME=str(OUT / "rescan-home"), GLIMPSE_MODEL="toyworld")
    if not (OUT / "rescan-home" / "library.sqlite3").exists():
        subprocess.run([*glimpse_cmd(), "index", str(tree)], env=env, check=True, stderr=subprocess.DEVNULL)
    walks, scans = [], []
    for r in range(rounds):
        pair = [("walk", [sys.executable, "-c", WALK, str(tree)]), ("index", [*glimpse_cmd(), "index"])]
        for name, cmd in pair if r % 2 == 0 else reversed(pair):
            (walks if name == "walk" else scans).append(wall(cmd, env))
    walk_s, scan_s = statistics.median(walks), statistics.median(scans)
    return {"files": files, "bare_walk_s": round(walk_s, 3), "glimpse_index_s": round(scan_s, 3),
            "ratio": round(scan_s / walk_s, 2)}  # fmt: skip


def first_photo() -> dict[str, float]:
    weights = random_weights("ViT-B-32-256")
    photos = OUT / "first-photos"
    if not photos.exists():
        photos.mkdir(parents=True)
        for i, src in enumerate(make_photos(OUT / "photos-12mp", 60, 12.0)):
            shutil.copyfile(src, photos / f"{i:04d}.jpg")
    seed = OUT / "peer" / "glimpse-seed"  # made by peer_bench.py: the model's one-time export
    home = OUT / "first-home"
    shutil.rmtree(home, ignore_errors=True)
    env = dict(os.environ, GLIMPSE_HOME=str(home), GLIMPSE_MODEL="ViT-B-32-256", GLIMPSE_WEIGHTS=str(weights))
    if (seed / "models").exists():
        shutil.copytree(seed / "models", home / "models")
    else:  # export now, outside the timed run
        subprocess.run([*glimpse_cmd(), "index", str(OUT / "peer" / "empty")], env=env, check=False)
        (home / "library.sqlite3").unlink(missing_ok=True)
    started = time.perf_counter()
    proc = subprocess.Popen([*glimpse_cmd(), "index", str(photos)], env=env, stderr=subprocess.DEVNULL)
    first = None
    while proc.poll() is None:
        try:
            con = sqlite3.connect(f"file:{home / 'library.sqlite3'}?mode=ro", uri=True, timeout=0.1)
            if con.execute("SELECT count(*) FROM embeddings").fetchone()[0] > 0 and first is None:
                first = time.perf_counter() - started
            con.close()
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    total = time.perf_counter() - started
    return {"first_searchable_s": round(first or total, 2), "whole_index_s": round(total, 2)}


def idle_watch(seconds: float) -> dict[str, float]:
    env = dict(os.environ, GLIMPSE_HOME=str(OUT / "rescan-home"), GLIMPSE_MODEL="toyworld")
    proc = subprocess.Popen([*glimpse_cmd(), "watch"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        while not (OUT / "rescan-home" / "glimpse.sock").exists():
            time.sleep(0.2)
        time.sleep(10)  # the start-up reconcile

        def cpu() -> float:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before = cpu()
        time.sleep(seconds)
        used = cpu() - before
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    return {"window_s": seconds, "cpu_s": round(used, 3), "percent_of_a_core": round(100 * used / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = {
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "rescan": rescan(args.files, args.rounds),
        "first_photo": first_photo(),
        "idle_watch": idle_watch(args.idle_seconds),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
