"""Kill `glimpse watch` at random moments (seeded) and show that every run ends consistent after a restart."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from indexer.ingest.scanner import walk_photos
from indexer.toyworld.world import all_specs
from tests.e2e.test_cli import glimpse_cmd, run
from tests.photos import write_photo

SPECS = all_specs()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(GLIMPSE_MODEL="toyworld", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    return e


def _library(root: Path, count: int) -> None:
    for n in range(count):
        write_photo(root / f"album{n % 3}" / f"img{n:03d}.jpg", SPECS[n % len(SPECS)], seed=n, size=(640, 480))


def _start_watch(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*glimpse_cmd(), "watch", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for_line(proc: subprocess.Popen[str], wanted: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            raise AssertionError(f"glimpse watch exited with {proc.returncode}")
        if line.strip() == wanted:
            return
    raise AssertionError(f"no {wanted!r} line within {timeout} s")


def _kill(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _ids_by_name(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {Path(p).name: i for i, p in conn.execute("SELECT id, path FROM images")}


def _assert_consistent(home: Path, root: Path, env: dict[str, str]) -> dict[str, int]:
    """Restart, let it catch up, then check the store against the disk and ask the doctor."""
    again = run(["watch", "--once"], env)
    assert again.returncode == 0, again.stderr
    db = home / "library.sqlite3"
    disk = {f.path for f in walk_photos(root)}
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = dict(conn.execute("SELECT path, status FROM images"))
        assert set(rows) == disk
        assert set(rows.values()) == {"indexed"}
        assert conn.execute("SELECT count(*), count(DISTINCT image_id) FROM embeddings").fetchone() == (
            len(disk),
            len(disk),
        )
    doctor = run(["doctor", "--json"], env)
    report = json.loads(doctor.stdout)
    assert doctor.returncode == 0 and report["healthy"], report
    assert report["repairs"] == [], f"restart should leave nothing to repair: {report['repairs']}"
    return _ids_by_name(db)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10))
def test_killed_while_indexing(tmp_path: Path, env: dict[str, str], seed: int) -> None:
    rng = random.Random(seed)
    root = tmp_path / "Photos"
    _library(root, 90)
    env["GLIMPSE_HOME"] = str(tmp_path / "home")
    proc = _start_watch([str(root)], env)
    time.sleep(rng.uniform(0.5, 9.0))  # anywhere from start-up to the middle of indexing
    _kill(proc)
    _assert_consistent(tmp_path / "home", root, env)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10))
def test_killed_while_applying_a_folder_move(tmp_path: Path, env: dict[str, str], seed: int) -> None:
    rng = random.Random(100 + seed)
    root = tmp_path / "Photos"
    _library(root, 60)
    env["GLIMPSE_HOME"] = str(tmp_path / "home")
    assert run(["index", str(root)], env).returncode == 0
    before = _ids_by_name(tmp_path / "home" / "library.sqlite3")
    proc = _start_watch([], env)
    _wait_for_line(proc, "idle")
    (root / "album1").rename(root / "Holidays 2024")
    time.sleep(rng.uniform(0.0, 2.0))  # before, during or after the service applies the move
    _kill(proc)
    after = _assert_consistent(tmp_path / "home", root, env)
    assert after == before, "a moved photo keeps its id (and so its vector), whenever the kill came"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, waiting to be reaped
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_kill_9_of_index_leaves_no_decode_worker_behind(tmp_path: Path, env: dict[str, str]) -> None:
    """Workers and multiprocessing's resource tracker used to outlive a killed `glimpse index`."""
    _library(tmp_path / "photos", 300)
    env["GLIMPSE_HOME"] = str(tmp_path / "glimpse-home")
    proc = subprocess.Popen(
        [*glimpse_cmd(), "index", str(tmp_path / "photos")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(kids := _children(proc.pid)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None and len(kids) >= 2, "the decode workers never started"
    proc.kill()  # the process itself, not its group: what an OOM killer or `kill -9 PID` does
    proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [k for k in kids if _alive(k)]


@pytest.mark.parametrize("command", ["index", "watch"])
def test_ctrl_c_stops_index_and_watch_while_they_work(tmp_path: Path, env: dict[str, str], command: str) -> None:
    _library(tmp_path / "photos", 300)
    env["GLIMPSE_HOME"] = str(tmp_path / "glimpse-home")
    proc = subprocess.Popen(
        [*glimpse_cmd(), command, str(tmp_path / "photos")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while len(_children(proc.pid)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    kids = _children(proc.pid)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err
    assert not [k for k in kids if _alive(k)]
    check = run(["doctor"], env)  # what was committed is consistent
    assert "The library is consistent." in check.stdout, check.stdout + check.stderr
