"""Hostile disks: memory per hostile file, Ctrl-C latency, processes left after kill -9.

    python bench/hostile_bench.py [--rounds 3]

* ``peak``: each kind of the hostile corpus (``tests/hostile.py``) plus the heaviest files
  the attack used (a 15,800 × 15,800 RGBA PNG just under the 250 MP limit, a 100,000 × 2,400
  panorama, a 1 × 100,000 strip) is indexed alone by ``glimpse index`` into a fresh
  library; the peak RSS of the largest process (the command or a decode worker, as
  ``getrusage(RUSAGE_CHILDREN)`` reports it). Target: < 1.5 GB on every file.
* ``ctrl_c``: SIGINT to ``glimpse index`` and ``glimpse watch`` at several moments of a run
  over 400 photos; seconds until the process has exited. Target: <= 2 s.
* ``kill_9``: ``kill -9`` of ``glimpse index`` mid-run; decode workers and multiprocessing's
  resource tracker still alive a second later. Target: 0.

The toy-world model (``GLIMPSE_MODEL=toyworld``): the figures are about the machinery
around the model, which is the same for every model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peer_bench import cpu_flags, glimpse_cmd

from indexer.toyworld.world import all_specs, render
from tests.hostile import make_corpus

log = logging.getLogger("bench")
OUT = Path(__file__).resolve().parent / "out" / "hostile"

MEASURED = (
    "import json, resource, subprocess, sys\n"
    "proc = subprocess.run(sys.argv[1:], capture_output=True, timeout=900)\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
    "print(json.dumps({'rc': proc.returncode, 'peak_mb': peak}))\n"
)


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ, GLIMPSE_MODEL="toyworld", GLIMPSE_HOME=str(home), HF_HUB_OFFLINE="1")
    return env


def _seed_home(home: Path, export_home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(export_home / "models", home / "models")


def peak_per_file(work: Path, export_home: Path) -> list[tuple[str, int, float]]:
    corpus_dir = work / "corpus"
    shutil.rmtree(corpus_dir, ignore_errors=True)
    corpus = make_corpus(corpus_dir)
    heavy = work / "heavy"
    shutil.rmtree(heavy, ignore_errors=True)
    heavy.mkdir(parents=True)
    Image.new("RGBA", (15_800, 15_800), (10, 200, 10, 128)).save(heavy / "rgba-250mp.png")
    Image.new("RGB", (100_000, 2_400), (200, 10, 10)).save(heavy / "panorama-240mp.png")
    Image.new("RGB", (1, 100_000), (0, 0, 200)).save(heavy / "strip-1x100000.png")
    kinds = {**{k: p for k, p in corpus.good.items()}, **{k: p for k, p in corpus.bad.items()}}
    kinds.update({p.name: p for p in heavy.iterdir()})
    rows = []
    for kind, path in kinds.items():
        folder = work / "one"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        target = folder / path.name
        if path.is_symlink() or not path.is_file():
            continue  # links, pipes, sockets and folders are scan-time kinds: nothing to decode
        os.link(path, target) if path.stat().st_dev == folder.stat().st_dev else shutil.copy(path, target)
        home = work / "home"
        _seed_home(home, export_home)
        out = subprocess.run(
            [sys.executable, "-c", MEASURED, *glimpse_cmd(), "index", str(folder)],
            env=_env(home),
            capture_output=True,
            text=True,
        )
        result = json.loads(out.stdout)
        rows.append((kind, int(result["rc"]), float(result["peak_mb"])))
        log.info("%-32s rc %d  peak %.0f MB", kind, result["rc"], result["peak_mb"])
    corpus.close()
    return rows


def _photos(folder: Path, count: int) -> None:
    if folder.is_dir() and len(list(folder.iterdir())) == count:
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    specs = all_specs()
    for n in range(count):
        render(specs[n % len(specs)], random.Random(n), (2000, 1500)).save(folder / f"p{n:04d}.jpg", quality=90)


def ctrl_c(work: Path, export_home: Path, rounds: int) -> dict[str, list[float]]:
    photos = work / "photos"
    _photos(photos, 400)
    out: dict[str, list[float]] = {"index": [], "watch": []}
    for command in out:
        for r in range(rounds):
            for delay in (0.5, 1.0, 1.5, 2.0, 3.0):
                home = work / "home"
                _seed_home(home, export_home)
                proc = subprocess.Popen(
                    [*glimpse_cmd(), command, str(photos)],
                    env=_env(home),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                )
                time.sleep(delay + 0.1 * r)
                t0 = time.monotonic()
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=120)
                out[command].append(time.monotonic() - t0)
    return out


def kill_9(work: Path, export_home: Path, rounds: int) -> tuple[int, int]:
    photos = work / "photos"
    _photos(photos, 400)
    kills = left = 0
    for r in range(rounds * 4):
        home = work / "home"
        _seed_home(home, export_home)
        proc = subprocess.Popen([*glimpse_cmd(), "index", str(photos)], env=_env(home),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        kids: list[str] = []
        while time.monotonic() < deadline and len(kids) < 2 and proc.poll() is None:
            kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            time.sleep(0.05)
        time.sleep(0.2 * (r % 4))
        proc.kill()
        proc.wait()
        kills += 1
        time.sleep(1.0)
        for pid in kids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            left += state != "Z"
    return kills, left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = OUT
    work.mkdir(parents=True, exist_ok=True)
    export_home = work / "export"
    if not (export_home / "models").is_dir():  # the toy model's export, made once by the product itself
        env = _env(export_home)
        seed = work / "seed"
        _photos(seed, 2)
        subprocess.run([*glimpse_cmd(), "index", str(seed)], env=env, check=True, capture_output=True)
    print(f"CPU flags: {cpu_flags()}")
    rows = peak_per_file(work, export_home)
    worst = max(rows, key=lambda r: r[2])
    print(f"peak RSS, {len(rows)} hostile files indexed one at a time: worst {worst[2]:.0f} MB ({worst[0]}), "
          f"median {statistics.median(r[2] for r in rows):.0f} MB; crashed (exit not 0/3): "
          f"{[r[0] for r in rows if r[1] not in (0, 3)]}")  # fmt: skip
    for kind, rc, peak in sorted(rows, key=lambda r: -r[2])[:8]:
        print(f"  {kind:<34} exit {rc}  {peak:6.0f} MB")
    latency = ctrl_c(work, export_home, args.rounds)
    for command, times in latency.items():
        print(f"Ctrl-C on {command}: max {max(times):.2f} s, median {statistics.median(times):.2f} s over {len(times)}")
    kills, left = kill_9(work, export_home, args.rounds)
    print(f"kill -9 of index mid-run: {kills} kills, {left} child processes alive 1 s later")


if __name__ == "__main__":
    main()
