"""How trustworthy the answers are: the relevance cutoff, zero-shot tags across formats, Korean queries.

    python bench/relevance_bench.py [--per-format 1] [--real DIR ...] [--no-real]

Writes held-out toy-world photos (seeds the tests and the training never use) in every
format Glimpse reads: an EXIF-rotated JPEG, a CMYK JPEG, a 4000×3000 JPEG, a PNG with
alpha, WebP and HEIC, each (colour, shape) in its own folder. With ``--real`` folders
(default: the desktop wallpapers Debian installs under /usr/share, when present) those
photos are mixed in as well: pictures of the real world that the toy model has never
seen. Everything is indexed with ``glimpse index`` (the real command, toy model) into a
new library, then asked through the search service:

* "a {colour} {shape}" and its Korean twin ("빨간 원"): recall of the exact matches,
  precision of what is returned, and how many results a query returns when its pair is
  absent (the folder filter leaves that pair's folder out), counted as listed: copies of
  one picture are one result, "+N similar";
* similar photos of each toy photo: the share of what is returned that shows the same
  pair;
* the automatic tags: the share of photos tagged exactly with their colour and shape,
  per format.

Prints the CPU's flags (figures compare only within one run) and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from indexer.composition import build_services
from indexer.models.choice import ModelChoice
from indexer.settings import Settings
from indexer.toyworld.world import COLOURS, SHAPES, ShapeSpec, all_specs, render
from store.paths import AppPaths

log = logging.getLogger("bench")

WALLPAPERS = ("/usr/share/backgrounds", "/usr/share/wallpapers", "/usr/share/desktop-base")
FORMATS = ("rotated.jpg", "cmyk.jpg", "large.jpg", "alpha.png", "photo.webp", "photo.heic")
SEED = 777_000  # held out: the tests and the training use other seeds


def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return " ".join(f for f in wanted if f in flags.split())


def write_format(img: Image.Image, path: Path, kind: str) -> None:
    """One picture in one of :data:`FORMATS`."""
    if kind == "rotated.jpg":  # stored turned, EXIF orientation 6 turns it upright
        exif = Image.Exif()
        exif[0x0112] = 6
        img.transpose(Image.Transpose.ROTATE_90).save(path, quality=90, exif=exif)
    elif kind == "cmyk.jpg":
        img.convert("CMYK").save(path, quality=90)
    elif kind == "large.jpg":
        img.resize((4000, 3000), Image.Resampling.BICUBIC).save(path, quality=90)
    elif kind == "alpha.png":
        rgba = img.convert("RGBA")
        rgba.putalpha(255)
        w, h = rgba.size
        for x in range(w // 10):  # a transparent border strip, as cut-outs have
            for y in range(h):
                rgba.putpixel((x, y), (0, 0, 0, 0))
        rgba.save(path)
    elif kind == "photo.webp":
        img.save(path, quality=90)
    elif kind == "photo.heic":
        import pillow_heif

        pillow_heif.register_heif_opener()
        img.save(path, quality=90)
    else:
        raise ValueError(kind)


def write_toy(root: Path, per_format: int) -> dict[str, ShapeSpec]:
    rng = random.Random(SEED)
    truth: dict[str, ShapeSpec] = {}
    for spec in all_specs():
        folder = root / f"{spec.colour}-{spec.shape}"
        folder.mkdir(parents=True, exist_ok=True)
        for kind in FORMATS:
            for n in range(per_format):
                path = folder / f"{n}-{kind}"
                write_format(render(spec, rng, (320, 240)), path, kind)
                truth[str(path.resolve())] = spec
    return truth


def copy_real(dirs: list[Path], root: Path) -> int:
    """Raster pictures under ``dirs`` copied into ``root`` (SVG wallpapers rendered when rsvg-convert exists)."""
    root.mkdir(parents=True, exist_ok=True)
    n = 0
    for d in dirs:
        for path in sorted(d.rglob("*")):
            suffix = path.suffix.lower()
            if not path.is_file() or path.stat().st_size < 30_000:
                continue
            target = root / f"{n:04d}{suffix if suffix != '.svg' else '.png'}"
            if suffix in (".jpg", ".jpeg", ".png", ".webp"):
                target.write_bytes(path.read_bytes())
            elif suffix == ".svg":
                done = subprocess.run(
                    ["rsvg-convert", "-w", "1280", str(path), "-o", str(target)], capture_output=True, check=False
                ) if _has("rsvg-convert") else None  # fmt: skip
                if done is None or done.returncode != 0:
                    continue
            else:
                continue
            n += 1
    return n


def _has(tool: str) -> bool:
    return any((Path(p) / tool).exists() for p in os.environ.get("PATH", "").split(os.pathsep))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-format", type=int, default=1, help="photos per (colour, shape) and format")
    ap.add_argument("--real", type=Path, action="append", help="folders of real photos to mix in")
    ap.add_argument("--no-real", action="store_true", help="toy photos only")
    ap.add_argument("-k", type=int, default=100)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"CPU flags: {cpu_flags()}")
    work = Path(tempfile.mkdtemp(prefix="glimpse-relevance-"))
    toy_root = work / "photos" / "toy"
    truth = write_toy(toy_root, args.per_format)
    real_dirs = [] if args.no_real else (args.real or [Path(p) for p in WALLPAPERS if Path(p).is_dir()])
    real = copy_real(real_dirs, work / "photos" / "real") if real_dirs else 0
    print(f"{len(truth)} toy photos ({len(FORMATS)} formats), {real} real photos")
    env = {**os.environ, "GLIMPSE_HOME": str(work / "home"), "GLIMPSE_MODEL": "toyworld"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "indexer.cli.main", "index", str(work / "photos")], env=env, capture_output=True
    )
    if done.returncode not in (0, 3):
        raise SystemExit(done.stderr.decode())
    print(f"indexed in {time.perf_counter() - started:.1f} s")
    paths = AppPaths.from_env(env)
    svc = build_services(paths, Settings.load(paths.settings_file), ModelChoice("toyworld"))
    try:
        report = measure(svc, truth, toy_root, work / "photos" / "real" if real else None, args.k)
    finally:
        svc.close()
    report.update({"toy_photos": len(truth), "real_photos": real, "cpu_flags": cpu_flags()})
    print(json.dumps(report, indent=2, ensure_ascii=False))


def measure(svc: object, truth: dict[str, ShapeSpec], toy_root: Path, real_root: Path | None, k: int) -> dict:
    search = svc.search  # type: ignore[attr-defined]
    by_path = {p: s for p, s in truth.items()}
    folders = {spec: str(toy_root / f"{spec.colour}-{spec.shape}") for spec in all_specs()}
    everywhere = list(folders.values()) + ([str(real_root)] if real_root else [])
    report: dict[str, object] = {}
    for lang in ("english", "korean"):
        tp = relevant = returned = 0
        absent: list[int] = []
        started = time.perf_counter()
        for spec in all_specs():
            text = spec.caption if lang == "english" else spec.korean_caption
            found = [r for r in search.search(text, k=k) if not r.weak]
            shown = [r for r in found if r.duplicate_of is None]  # as listed: copies are one "+N similar" result
            tp += sum(by_path.get(r.path) == spec for r in found)
            relevant += sum(s == spec for s in truth.values())
            returned += len(shown) + sum(by_path.get(r.path) == spec for r in found if r.duplicate_of is not None)
            others = [f for f in everywhere if f != folders[spec]]
            absent.append(sum(not r.weak and r.duplicate_of is None for r in search.search(text, k=k, folders=others)))
        report[f"{lang}_queries"] = {
            "recall": round(tp / relevant, 4),
            "precision": round(tp / max(returned, 1), 4),
            "absent_pair_returned_mean": round(sum(absent) / len(absent), 2),
            "absent_pair_returned_max": max(absent),
            "ms_per_query": round((time.perf_counter() - started) * 1000 / (2 * len(absent)), 1),
        }
    # Similar photos of each toy photo: what share of the answer shows the same pair.
    records = {r.path: r for r in (svc.store.image_by_path(p) for p in truth) if r is not None}  # type: ignore[attr-defined]
    same = total = 0
    for path, spec in list(truth.items())[:: max(1, len(truth) // 72)]:
        rec = records.get(path)
        if rec is None:
            continue
        found = [r for r in search.similar(rec.id, k=k) if not r.weak]
        same += sum(by_path.get(r.path) == spec for r in found)
        total += len(found)
    report["similar_photos"] = {"precision": round(same / max(total, 1), 4), "returned": total}
    # Automatic tags: exactly the photo's colour and shape, per format.
    tags = svc.tags  # type: ignore[attr-defined]
    ids = {rec.id: path for path, rec in records.items()}
    carried = tags.tags_of(list(ids))
    per_format: dict[str, list[bool]] = {}
    wrong: list[str] = []
    for image_id, path in ids.items():
        spec = truth[path]
        names = {t.name for t in carried.get(image_id, [])}
        exact = {spec.colour, spec.shape} == names & (set(COLOURS) | set(SHAPES))
        per_format.setdefault(Path(path).name.split("-", 1)[1], []).append(exact)
        if not exact:
            wrong.append(f"{Path(path).parent.name}/{Path(path).name}: {sorted(names)}")
    flat = [x for xs in per_format.values() for x in xs]
    report["tags_exact"] = {
        "all": round(sum(flat) / len(flat), 4),
        **{kind: round(sum(v) / len(v), 4) for kind, v in sorted(per_format.items())},
        "wrong": wrong[:20],
    }
    return report


if __name__ == "__main__":
    main()
