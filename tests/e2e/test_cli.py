"""Whole flows through the ``glimpse`` command, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from indexer.toyworld.world import ShapeSpec, all_specs
from tests.photos import write_photo


def glimpse_cmd() -> list[str]:
    script = Path(sys.executable).parent / "glimpse"
    return [str(script)] if script.exists() else [sys.executable, "-m", "indexer.cli.main"]


def run(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(glimpse_cmd() + args, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        GLIMPSE_HOME=str(tmp_path / "home"), GLIMPSE_MODEL="toyworld", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf")
    )
    e.pop("GLIMPSE_WEIGHTS", None)
    return e


RED_CIRCLE = ShapeSpec("circle", "red")
BLUE_STAR = ShapeSpec("star", "blue")


def _library(root: Path) -> dict[str, ShapeSpec]:
    """Every format and orientation, nested folders and non-ASCII names; two of each target."""
    files = {
        "Ürlaub 2024/straße/rote Kreis 写真.jpg": (RED_CIRCLE, 6),
        "Ürlaub 2024/circle-upside-down.jpg": (RED_CIRCLE, 3),
        "phone/IMG_0001.HEIC": (BLUE_STAR, 1),
        "scans/star.png": (BLUE_STAR, 1),
        "web/green-heart.webp": (ShapeSpec("heart", "green"), 1),
        "web/yellow-square.gif": (ShapeSpec("square", "yellow"), 1),
        "old/orange-cross.bmp": (ShapeSpec("cross", "orange"), 1),
        "old/purple-triangle.tiff": (ShapeSpec("triangle", "purple"), 1),
    }
    truth = {}
    for n, (rel, (spec, orientation)) in enumerate(files.items()):
        write_photo(root / rel, spec, seed=500 + n, orientation=orientation)
        truth[str((root / rel).resolve())] = spec
    # Distractors: every other shape/colour pair once.
    for n, spec in enumerate(s for s in all_specs() if s not in (RED_CIRCLE, BLUE_STAR)):
        path = write_photo(root / "misc" / f"{spec.colour}-{spec.shape}.jpg", spec, seed=900 + n)
        truth[str(path.resolve())] = spec
    return truth


def test_index_and_search_a_real_folder(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "Photos"
    truth = _library(root)
    done = run(["index", str(root), "--json"], env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["found"] == len(truth) and summary["indexed"] == len(truth) and summary["failed"] == 0

    found = run(["search", "a red circle", "--json", "-k", "5"], env)
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)
    assert [truth[r["path"]] for r in results[:2]] == [RED_CIRCLE, RED_CIRCLE]
    assert results[0]["match"] >= results[1]["match"] >= results[-1]["match"] >= 0.5
    rotated = next(r for r in results if r["path"].endswith("写真.jpg"))
    assert (rotated["width"], rotated["height"]) == (320, 240), "EXIF rotation applied to the real size"

    similar = run(["similar", str(root / "scans" / "star.png"), "--json", "--all", "-k", "1"], env)
    assert similar.returncode == 0, similar.stderr
    assert json.loads(similar.stdout)[0]["path"].endswith("IMG_0001.HEIC")

    # Combined and negative queries, and the folder filter.
    combo = json.loads(run(["search", '"a star" - "blue"', "--json", "-k", "3"], env).stdout)
    assert all(truth[r["path"]].colour != "blue" for r in combo[:2])
    assert truth[combo[0]["path"]].shape == "star"
    # No red circle lives in old/: nothing matches there, and --all lists what is there, weaker.
    assert json.loads(run(["search", "a red circle", "--json", "--folder", str(root / "old")], env).stdout) == []
    only_old = json.loads(run(["search", "a red circle", "--json", "--all", "--folder", str(root / "old")], env).stdout)
    assert {Path(r["path"]).parent.name for r in only_old} == {"old"} and all(r["weak"] for r in only_old)

    human = run(["search", "a red circle", "-k", "2"], env)
    assert "rote Kreis 写真.jpg" in human.stdout or "circle-upside-down.jpg" in human.stdout

    status = json.loads(run(["status", "--json"], env).stdout)
    assert status["images"]["indexed"] == len(truth)
    assert status["models"][0]["index"] == "ok" and status["models"][0]["vectors"] == len(truth)

    again = json.loads(run(["index", "--json"], env).stdout)  # no folder: rescan the library's folders
    assert again["found"] == len(truth) and again["indexed"] == 0 and again["new"] == 0


def test_failures_are_reported_with_exit_code_3(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "mixed"
    write_photo(root / "ok.jpg", RED_CIRCLE, seed=1)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg")
    res = run(["index", str(root)], env)
    assert res.returncode == 3, res.stderr
    assert "broken.jpg" in res.stderr and "Indexed 1" in res.stdout
    status = json.loads(run(["status", "--json"], env).stdout)
    assert status["failures"][0]["path"].endswith("broken.jpg")


def test_errors_have_messages_and_exit_codes(tmp_path: Path, env: dict[str, str]) -> None:
    no_folders = run(["index"], env)
    assert no_folders.returncode == 5 and "no folders yet" in no_folders.stderr
    missing = run(["index", str(tmp_path / "nope")], env)
    assert missing.returncode == 5 and "not a folder" in missing.stderr
    bad_query = run(["search", "a + "], env)
    assert bad_query.returncode == 2 and "operator" in bad_query.stderr
    offline = dict(env)
    offline.pop("GLIMPSE_MODEL")
    no_model = run(["search", "a dog"], offline, timeout=120)
    assert no_model.returncode == 4
    assert "Model weights not available" in no_model.stderr and "GLIMPSE_MODEL=toyworld" in no_model.stderr
    assert "Traceback" not in no_model.stderr
    models = run(["models", "--json"], env)
    listed = json.loads(models.stdout)
    names = {m["name"]: m for m in listed["embedding"]}
    assert names["toyworld"]["on_disk"] and names["toyworld"]["active"]
    segmenters = {m["name"]: m for m in listed["segmentation"]}
    assert segmenters["mobile_sam"]["active"] and not segmenters["mobile_sam"]["on_disk"]
    assert names["ViT-B-32-256"]["default"] and any(m["multilingual"] for m in names.values())


def test_index_remembers_the_model_for_later_commands(tmp_path: Path, env: dict[str, str]) -> None:
    plain = dict(env)
    plain.pop("GLIMPSE_MODEL")
    write_photo(tmp_path / "p" / "star.jpg", BLUE_STAR, seed=3)
    assert run(["--model", "toyworld", "index", str(tmp_path / "p")], plain).returncode == 0
    found = run(["search", "a blue star", "--json"], plain)  # no --model: the library's model
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["path"].endswith("star.jpg")


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_indexes_everything_exactly_once(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "many"
    specs = all_specs()
    total = 360
    for i in range(total):
        write_photo(root / f"d{i % 7}" / f"p{i:04d}.jpg", specs[i % len(specs)], seed=i, size=(640, 480))
    db = Path(env["GLIMPSE_HOME"]) / "library.sqlite3"
    proc = subprocess.Popen(
        [*glimpse_cmd(), "index", str(root), "--batch-size", "8"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    committed = 0
    while time.monotonic() < deadline and committed < 40:
        time.sleep(0.2)
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
                    committed = conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
            except sqlite3.Error:
                continue
    assert proc.poll() is None, "the indexer finished before it could be killed; use more photos"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        after_kill = conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    assert 40 <= after_kill < total

    second = run(["index", str(root), "--json"], env)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["indexed"] == total - after_kill, "nothing embedded twice, nothing lost"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM images").fetchone()[0] == total
        assert conn.execute("SELECT count(DISTINCT image_id), count(*) FROM embeddings").fetchone() == (total, total)
        assert conn.execute("SELECT count(*) FROM images WHERE status != 'indexed'").fetchone()[0] == 0
    status = json.loads(run(["status", "--json"], env).stdout)
    assert status["models"][0]["vectors"] == total and status["models"][0]["index"] == "ok"
    hits = json.loads(run(["search", "a red circle", "--json", "-k", "3"], env).stdout)
    assert len({h["id"] for h in hits}) == 3


def test_folders_and_doctor(tmp_path: Path, env: dict[str, str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_photo(a / "one.jpg", RED_CIRCLE, seed=1)
    write_photo(b / "two.jpg", BLUE_STAR, seed=2)
    assert run(["folders", "add", str(a)], env).returncode == 0
    assert run(["index", str(b)], env).returncode == 0
    assert run(["watch", "--once"], env).returncode == 0  # indexes the added folder
    listed = {f["path"]: f for f in json.loads(run(["folders", "list", "--json"], env).stdout)}
    assert listed[str(a)]["photos"]["indexed"] == 1 and listed[str(b)]["online"]

    # A kill between a thumbnail's temporary write and its rename leaves debris, not damage.
    debris = Path(env["GLIMPSE_HOME"]) / "cache" / "thumbnails" / "ab" / "tmp1234.tmp"
    debris.parent.mkdir(parents=True, exist_ok=True)
    debris.write_bytes(b"half a jpeg")
    healthy = json.loads(run(["doctor", "--json"], env).stdout)
    assert healthy["healthy"] and healthy["repairs"] == []
    assert not debris.exists() and any("unfinished write" in c for c in healthy["checks"])
    # Damage the library the ways a crash or a person can: the index file goes, a photo is deleted.
    for index_file in (Path(env["GLIMPSE_HOME"]) / "vectors").glob("*.faiss"):
        index_file.unlink()
    (b / "two.jpg").unlink()
    repaired = run(["doctor"], env)
    assert repaired.returncode == 0, repaired.stdout
    assert "removed 1 photo(s) whose files are gone" in repaired.stdout
    assert "rebuilt the vector index" in repaired.stdout and "index file is missing" in repaired.stdout
    assert "deleted 1 thumbnail(s)" in repaired.stdout
    assert json.loads(run(["doctor", "--json"], env).stdout)["repairs"] == []

    assert run(["folders", "remove", str(a)], env).returncode == 0
    assert [f["path"] for f in json.loads(run(["folders", "list", "--json"], env).stdout)] == [str(b)]
    assert a.joinpath("one.jpg").exists(), "removing a folder never touches the files"
    assert json.loads(run(["search", "a red circle", "--json"], env).stdout) == []


def test_no_arguments_without_a_screen_explains_instead_of_crashing(env: dict[str, str]) -> None:
    headless = {k: v for k, v in env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    res = run([], headless)
    assert res.returncode == 2 and "no screen" in res.stderr and "glimpse --help" in res.stderr
