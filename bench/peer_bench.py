"""Glimpse against rclip 4.0.x, side by side, with the same weights, whole processes.

    python bench/peer_bench.py [--rounds 5] [--photos 60] [--rclip PATH/TO/rclip]

Both tools run ViT-B-32-256 with the same random weights (no real weights can be
downloaded here): Glimpse from a checkpoint file (``--weights``), rclip from the
same model exported to its own layout (``$RCLIP_DATADIR/ViT-B-32-256-datacomp_s34b_b86k/
visual.onnx`` + ``textual.onnx``, its tokenizer file and the legal files its loader
checks), so it never downloads. rclip lives in its own virtualenv (it needs Python
>= 3.12: pyenv's 3.12.1 here); without ``--rclip`` one is made in bench/out.

Rows, each measured in interleaved rounds (Glimpse and rclip alternate, the order
flips every round) and reported as medians, from process start to exit:

* ``search``: one text query on a library of the photos, printed results; peak RSS too.
* ``search_100000``: the same on a large library: the photos plus synthetic ones (random unit
  vectors written into each tool's own storage; Glimpse rebuilds its vector index from them).
  Glimpse cold (nothing running) and warm (``glimpse watch`` running: the query is
  answered over its socket); rclip with ``-n`` (no re-indexing).
* ``index_empty``: a new library of an empty folder (the fixed cost).
* ``index_photos``: a new library of N synthetic 12 MP JPEGs, tags included (rclip has
  none). Both start with the model on disk: Glimpse's first use of a model (its ONNX
  export and its tag prompts' vectors, kept per model) is made once, as rclip's download is.
* ``text_encoder``: one query through each tool's own text encoder, in-process, median.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from index_bench import OUT, random_weights  # bench/ is on sys.path when run as a script

log = logging.getLogger("bench")

ARCH = "ViT-B-32-256"
RCLIP_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"
QUERY = "a dog on a beach at sunset"
PYENV_312 = Path.home() / ".pyenv" / "versions" / "3.12.1" / "bin" / "python"


def cpu_flags() -> str:
    """The flags that decide matmul speed here (the product's own reading of the CPU)."""
    from indexer.models.embedder import cpu_flags as all_flags

    keep = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")
    return " ".join(f for f in keep if f in all_flags()) or "unknown"


def ensure_rclip(path: str | None) -> Path:
    if path:
        return Path(path)
    venv = OUT / "rclip-venv"
    exe = venv / "bin" / "rclip"
    if not exe.exists():
        subprocess.run([str(PYENV_312), "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "rclip>=4.0,<4.1"], check=True)
    return exe


def rclip_datadir(weights: Path) -> Path:
    """The random weights in rclip's model layout, exported once (input "input", output "output")."""
    import open_clip
    import torch

    data = OUT / "rclip-data"
    model_dir = data / RCLIP_SUBDIR
    if (model_dir / "textual.onnx").exists() and (model_dir / "visual.onnx").exists():
        return data
    model_dir.mkdir(parents=True, exist_ok=True)
    model = open_clip.create_model(ARCH, pretrained=str(weights)).eval()

    class Visual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model.encode_image(x)

    class Textual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.model.encode_text(t)

    tok = open_clip.get_tokenizer(ARCH)(["a photo", "two"])  # a batch of 2: torch.export specialises 1
    with torch.no_grad():
        for module, example, name in ((Visual(), torch.zeros(2, 3, 256, 256), "visual"), (Textual(), tok, "textual")):
            torch.onnx.export(module, (example,), str(model_dir / f"{name}.onnx"), dynamo=True, opset_version=18,
                              input_names=["input"], output_names=["output"],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))  # fmt: skip
    (data / "tokenizer").mkdir(exist_ok=True)
    shutil.copyfile(open_clip.tokenizer.default_bpe(), data / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz")
    for name in ("LICENSE", "OPENAI-CLIP-MIT.txt", "README.md", "THIRD_PARTY_NOTICES.md"):
        (data / name).write_text("Random weights exported for Glimpse's peer benchmark; not a real model.\n")
    return data


def timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one whole process; it must succeed."""
    # GNU time reports the command's own peak RSS (a child forked from this big process would
    # count this process's pages until it execs); it adds ~1 ms to the wall time.
    started = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {out.stderr[-2000:]}")
    return seconds, int(out.stderr.strip().splitlines()[-1]) / 1024


def glimpse_env(home: Path, weights: Path) -> dict[str, str]:
    return dict(os.environ, GLIMPSE_HOME=str(home), GLIMPSE_MODEL=ARCH, GLIMPSE_WEIGHTS=str(weights),
                HF_HUB_OFFLINE="1")  # fmt: skip


def glimpse_cmd() -> list[str]:
    return [str(Path(sys.executable).parent / "glimpse")]


def fresh_glimpse(work: Path, name: str, seed: Path) -> Path:
    """A new library that has the model exported already (as a user's has after its first use)."""
    home = work / name
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(seed / "models", home / "models")
    return home


def fresh_rclip(data: Path) -> None:
    for f in data.glob("db.sqlite3*"):
        f.unlink()


def text_encoder_ms(rclip: Path, rclip_env: dict[str, str], seed_home: Path, weights: Path) -> dict[str, float]:
    glimpse_script = (
        "import statistics, time\nfrom pathlib import Path\nfrom indexer.models.engine import ModelEngine\n"
        f"from indexer.models.presets import resolve_model\ne = ModelEngine(resolve_model({ARCH!r}, {str(weights)!r}), "
        f"Path({str(seed_home / 'models')!r}))\ne.embed_texts(['warm up'])\nts = []\n"
        f"for _ in range(30):\n    t = time.perf_counter(); e.embed_texts([{QUERY!r}])\n"
        "    ts.append(time.perf_counter() - t)\n"
        "print(statistics.median(ts) * 1000)\n"
    )
    rclip_script = (
        "import statistics, time\nfrom rclip.model import Model\nm = Model()\nm.compute_text_features(['warm up'])\n"
        f"ts = []\nfor _ in range(30):\n    t = time.perf_counter(); m.compute_text_features([{QUERY!r}]); "
        "ts.append(time.perf_counter() - t)\nprint(statistics.median(ts) * 1000)\n"
    )
    ours = subprocess.run([sys.executable, "-c", glimpse_script], capture_output=True, text=True, check=True)
    theirs = subprocess.run([str(rclip.parent / "python"), "-c", rclip_script], env=rclip_env, capture_output=True,
                            text=True, check=True)  # fmt: skip
    return {"glimpse": round(float(ours.stdout.split()[-1]), 1), "rclip": round(float(theirs.stdout.split()[-1]), 1)}


_RCLIP_FILL = """
import sys, numpy as np
from rclip import db
path, folder, n, dim = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
d = db.DB(path)
for i in range(n):
    d.upsert_image(db.NewImage(filepath=f"{folder}/synthetic/{i:07d}.jpg", modified_at=0.0, size=1,
                               vector=vectors[i].tobytes(), hash=None), commit=False)
d.commit()
d.close()
"""


def grow_glimpse(home: Path, photos: Path, n: int) -> None:
    """Add ``n`` synthetic photos (random unit vectors) to an indexed library, then let the
    product rebuild and save its vector index from them (its own repair path)."""
    import sqlite3

    import numpy as np

    from store.library import LibraryStore
    from store.paths import AppPaths
    from store.vectors import rebuild_vector_index

    paths = AppPaths.from_env({"GLIMPSE_HOME": str(home)})
    (model_id, dim) = sqlite3.connect(paths.database).execute("SELECT id, dim FROM models").fetchone()
    vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with sqlite3.connect(paths.database) as conn:
        folder_id = conn.execute("SELECT id FROM folders").fetchone()[0]
        conn.executemany(
            "INSERT INTO images (path, folder_id, size, mtime_ns, status) VALUES (?, ?, 1, 0, 'indexed')",
            ((f"{photos}/synthetic/{i:07d}.jpg", folder_id) for i in range(n)),
        )
        first = conn.execute("SELECT min(id) FROM images WHERE path LIKE ?", (f"{photos}/synthetic/%",)).fetchone()[0]
        conn.executemany(
            "INSERT INTO embeddings (model_id, image_id, vector) VALUES (?, ?, ?)",
            ((model_id, first + i, vectors[i].astype("<f2").tobytes()) for i in range(n)),
        )
    store = LibraryStore.open(paths.database)
    try:
        rebuild_vector_index(store, model_id, dim, paths.index_dir)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--rclip", help="an rclip 4.0.x executable (default: a virtualenv made in bench/out)")
    parser.add_argument("--large", type=int, default=100_000, help="photos in the large-library search row")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from index_bench import make_photos

    work = OUT / "peer"
    work.mkdir(parents=True, exist_ok=True)
    weights = random_weights(ARCH)
    rclip = ensure_rclip(args.rclip)
    data = rclip_datadir(weights)
    rclip_env = dict(os.environ, RCLIP_DATADIR=str(data), HF_HUB_OFFLINE="1")
    photos = work / f"photos-{args.photos}"
    if not photos.exists():
        photos.mkdir()
        for i, src in enumerate(make_photos(OUT / "photos-12mp", args.photos, 12.0)):
            shutil.copyfile(src, photos / f"{i:04d}.jpg")
    empty = work / "empty"
    empty.mkdir(exist_ok=True)

    # Once: the model's first use on this machine (rclip's equivalent is its download): Glimpse
    # exports it to ONNX and, indexing one photo, embeds its tag vocabulary's prompts, which it
    # keeps per model. Every library made afterwards starts from that models folder.
    seed = work / "glimpse-seed"
    if not list((seed / "models" / "onnx").glob("*/prompt-vectors.npz")):
        shutil.rmtree(seed, ignore_errors=True)
        one = work / "one-photo"
        one.mkdir(exist_ok=True)
        shutil.copyfile(next(photos.glob("*.jpg")), one / "first.jpg")
        started = time.perf_counter()
        subprocess.run([*glimpse_cmd(), "index", str(one)], env=glimpse_env(seed, weights), check=True)
        log.info("first use of %s (export + tag prompts): %.1f s", ARCH, time.perf_counter() - started)
    # The search libraries: both tools index the photos once.
    search_home = fresh_glimpse(work, "glimpse-search", seed)
    subprocess.run([*glimpse_cmd(), "index", str(photos)], env=glimpse_env(search_home, weights), check=True)
    rclip_search_data = work / "rclip-search"
    shutil.rmtree(rclip_search_data, ignore_errors=True)
    shutil.copytree(data, rclip_search_data)
    rclip_search_env = dict(rclip_env, RCLIP_DATADIR=str(rclip_search_data))
    subprocess.run([str(rclip), "-t", "1", QUERY], env=rclip_search_env, cwd=photos, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip

    # The large library: the same photos plus --large synthetic ones (random unit vectors), in
    # each tool's own storage (indexing that many real photos would take rclip hours here).
    big_home = fresh_glimpse(work, "glimpse-large", seed)
    shutil.copytree(search_home, big_home, dirs_exist_ok=True)
    grow_glimpse(big_home, photos, args.large)
    rclip_big_data = work / "rclip-large"
    shutil.rmtree(rclip_big_data, ignore_errors=True)
    shutil.copytree(rclip_search_data, rclip_big_data)
    rclip_python = rclip.parent / "python"
    subprocess.run([str(rclip_python), "-c", _RCLIP_FILL, str(rclip_big_data / "db.sqlite3"), str(photos),
                    str(args.large), "512"], check=True)  # fmt: skip
    rclip_big_env = dict(rclip_env, RCLIP_DATADIR=str(rclip_big_data))

    samples: dict[str, list[tuple[float, float]]] = {}

    def add(row: str, value: tuple[float, float]) -> None:
        samples.setdefault(row, []).append(value)

    for r in range(args.rounds):
        order = ("glimpse", "rclip") if r % 2 == 0 else ("rclip", "glimpse")
        for tool in order:
            if tool == "glimpse":
                env = glimpse_env(search_home, weights)
                add("search/glimpse cold", timed([*glimpse_cmd(), "search", QUERY, "-k", "10"], env))
                big = glimpse_env(big_home, weights)
                add(f"search_{args.large}/glimpse cold", timed([*glimpse_cmd(), "search", QUERY, "-k", "10"], big))
                home = fresh_glimpse(work, "glimpse-empty", seed)
                add("index_empty/glimpse", timed([*glimpse_cmd(), "index", str(empty)], glimpse_env(home, weights)))
                home = fresh_glimpse(work, "glimpse-photos", seed)
                add("index_photos/glimpse", timed([*glimpse_cmd(), "index", str(photos)], glimpse_env(home, weights)))
            else:
                add("search/rclip", timed([str(rclip), "-n", "-t", "10", QUERY], rclip_search_env, cwd=photos))
                add(f"search_{args.large}/rclip", timed([str(rclip), "-n", "-t", "10", QUERY], rclip_big_env,
                                                        cwd=photos))  # fmt: skip
                fresh_rclip(data)
                add("index_empty/rclip", timed([str(rclip), "-t", "1", QUERY], rclip_env, cwd=empty))
                fresh_rclip(data)
                add("index_photos/rclip", timed([str(rclip), "-t", "1", QUERY], rclip_env, cwd=photos))

    # Warm: a `glimpse watch` owns the library and answers over its socket.
    env = glimpse_env(search_home, weights)
    watch = subprocess.Popen([*glimpse_cmd(), "watch"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        while not (search_home / "glimpse.sock").exists():
            time.sleep(0.2)
        timed([*glimpse_cmd(), "search", QUERY, "-k", "10"], env)  # the owner loads its text tower once
        for _ in range(args.rounds * 2):
            add("search/glimpse warm", timed([*glimpse_cmd(), "search", QUERY, "-k", "10"], env))
    finally:
        watch.send_signal(signal.SIGINT)
        watch.wait(60)

    rows = {
        row: {"seconds": round(statistics.median(s for s, _ in v), 3), "peak_rss_mb": round(max(m for _, m in v))}
        for row, v in sorted(samples.items())
    }
    result = {
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "rounds": args.rounds,
        "photos": args.photos,
        "rows": rows,
        "text_encoder_ms": text_encoder_ms(rclip, rclip_env, seed, weights),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
