"""Index a corpus of odd and hostile files (tests/hostile.py) as a user would, and check the
library afterwards: no crash, no hang, bounded memory, every good photo indexed, every bad
file reported with a reason, nothing else touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from store.library import LibraryStore
from store.records import ImageStatus
from tests.e2e.test_cli import glimpse_cmd
from tests.hostile import make_corpus
from tests.steps import drain

# The target for `glimpse index` on any hostile file: a peak under 1.5 GB per process.
PEAK_RSS_LIMIT_MB = 1536

_MEASURED = (
    "import json, resource, subprocess, sys\n"
    "proc = subprocess.run(sys.argv[1:], capture_output=True, text=True, errors='backslashreplace', timeout=600)\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"  # the largest process, in MB
    "print(json.dumps({'rc': proc.returncode, 'out': proc.stdout, 'err': proc.stderr, 'peak_mb': peak}))\n"
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(GLIMPSE_MODEL="toyworld", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    return e


def _measured(args: list[str], env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _MEASURED, *glimpse_cmd(), *args], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_the_hostile_corpus_is_indexed_and_reported(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "hostile"
    corpus = make_corpus(root)
    try:
        run = _measured(["index", str(root), "--json"], env)
    finally:
        corpus.close()
    err = str(run["err"])
    assert "Traceback" not in err, err
    assert run["rc"] == 3, err  # partial: some files could not be read, and the run said so
    assert float(run["peak_mb"]) < PEAK_RSS_LIMIT_MB, run["peak_mb"]  # type: ignore[arg-type]
    summary = json.loads(str(run["out"]))

    store = LibraryStore.open(Path(env["GLIMPSE_HOME"]) / "library.sqlite3")
    try:
        records = {r.path: r for r in store.images(list(range(1, 10_000))).values()}
        problems = dict(store.scan_problems())
    finally:
        store.close()
    for kind, path in corpus.good.items():
        record = records.get(str(path))
        assert record is not None and record.status == ImageStatus.INDEXED, (kind, record)
    for kind, path in corpus.bad.items():
        record = records.get(str(path))
        reason = record.error if record is not None else problems.get(str(path))
        assert reason, f"{kind} ({path}) was not reported"
        assert record is None or record.status == ImageStatus.FAILED, (kind, record)
        reason.encode("utf-8")  # printable, storable
    for kind, path in corpus.ignored.items():
        assert str(path) not in records, kind
    assert summary["indexed"] == len(corpus.good)
    assert summary["failed"] + len(summary["unreadable"]) >= len(corpus.bad)

    # The library answers afterwards, non-UTF-8 names included (exactly, through --json).
    found = subprocess.run([*glimpse_cmd(), "search", "something red", "-k", "500", "--all", "--json"], env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert found.returncode == 0, found.stderr
    paths = {os.fsencode(r["path"]) for r in json.loads(found.stdout)}
    assert os.fsencode(corpus.good["latin-1 file name"]) in paths
    listed = subprocess.run([*glimpse_cmd(), "search", "something red", "-k", "500", "--all"], env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert listed.returncode == 0 and "/caf\\xe9.jpg\n" in listed.stdout  # shown escaped, never a crash
    status = subprocess.run([*glimpse_cmd(), "status"], env=env, capture_output=True, text=True)
    assert status.returncode == 0 and "Traceback" not in status.stderr
    assert "pipe.jpg: not a regular file" in status.stdout and "dangling.jpg: a link" in status.stdout
    again = _measured(["index", str(root), "--json"], env)  # a rescan repeats nothing and fails alike
    assert json.loads(str(again["out"]))["indexed"] == 0 and again["rc"] == 3


def test_files_that_vanish_or_change_during_a_run(tmp_path: Path, paths, toy_embedder) -> None:  # type: ignore[no-untyped-def]
    """Between the scan and the decode, one photo is deleted, one replaced by a pipe, one
    rewritten and one truncated: the run goes on, and the next scan settles each of them."""
    from indexer.ingest.pipeline import IndexingPipeline, PipelineConfig
    from indexer.models.space import single_space
    from tests.hostile import _encode, _photo

    root = tmp_path / "photos"
    root.mkdir()
    names = ["gone", "piped", "rewritten", "truncated", "steady"]
    for n, name in enumerate(names):
        (root / f"{name}.jpg").write_bytes(_encode(_photo(n), "JPEG"))
    store = LibraryStore.open(paths.database)
    pipeline = IndexingPipeline(store, single_space(store, toy_embedder, paths.index_dir), None, PipelineConfig(2, 2))
    try:
        pipeline.scanner.scan([root])
        (root / "gone.jpg").unlink()
        (root / "piped.jpg").unlink()
        os.mkfifo(root / "piped.jpg")
        (root / "rewritten.jpg").write_bytes(_encode(_photo(9), "PNG"))
        data = (root / "truncated.jpg").read_bytes()
        (root / "truncated.jpg").write_bytes(data[:200])
        report = drain(pipeline.index_pending())
        status = {Path(r.path).stem: r.status for r in store.images(list(range(1, 100))).values()}
        assert status["steady"] == status["rewritten"] == ImageStatus.INDEXED
        assert status["gone"] == ImageStatus.PENDING  # left for the next scan, not called unreadable
        assert status["piped"] == status["truncated"] == ImageStatus.FAILED
        assert report.failed == 2
        (root / "piped.jpg").unlink()
        drain(pipeline.run([root]))
        after = {Path(r.path).stem: r.status for r in store.images(list(range(1, 100))).values()}
        assert "gone" not in after and "piped" not in after
    finally:
        store.close()


def _glimpse(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*glimpse_cmd(), *args], env=env, capture_output=True, text=True, timeout=300)


def _small_library(tmp_path: Path, env: dict[str, str]) -> Path:
    from tests.hostile import _encode, _photo

    root = tmp_path / "photos"
    root.mkdir()
    for n in range(12):
        (root / f"p{n:02d}.jpg").write_bytes(_encode(_photo(n), "JPEG"))
    assert _glimpse(["index", str(root)], env).returncode == 0
    return Path(env["GLIMPSE_HOME"])


def test_swapped_vectors_and_a_scribbled_index_are_found_not_trusted(tmp_path: Path, env: dict[str, str]) -> None:
    """Two vectors swapped inside the index file (its structure intact) gave wrong answers and
    `doctor` said consistent; random bytes in its place showed 'index ok' in `status`."""
    from store.flat import read_flat_index

    home = _small_library(tmp_path, env)
    index = next((home / "vectors").glob("*.faiss"))
    before = _glimpse(["search", "something red", "-k", "3", "--json"], env).stdout
    flat = read_flat_index(index, 64)
    at, row = flat._vectors_at, flat.dim * 4
    flat.close()
    data = bytearray(index.read_bytes())
    data[at : at + row], data[at + row : at + 2 * row] = data[at + row : at + 2 * row], data[at : at + row]
    index.write_bytes(bytes(data))
    check = _glimpse(["doctor"], env)
    assert "digest differs" in check.stdout and "rebuilt the vector index" in check.stdout, check.stdout
    assert _glimpse(["search", "something red", "-k", "3", "--json"], env).stdout == before
    index.write_bytes(os.urandom(index.stat().st_size))
    assert "index damaged" in _glimpse(["status"], env).stdout
    assert _glimpse(["search", "something red", "-k", "3", "--json"], env).stdout == before  # rebuilt, same answer


def test_an_emptied_database_is_reported_with_its_backup_and_restored(tmp_path: Path, env: dict[str, str]) -> None:
    home = _small_library(tmp_path, env)
    assert _glimpse(["tags", "add", "mine", "--prompt", "something of mine"], env).returncode == 0
    assert _glimpse(["index"], env).returncode == 0  # takes the backup (the tag is in it)
    database = home / "library.sqlite3"
    database.write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    refused = _glimpse(["status"], env)
    assert refused.returncode != 0 and "damaged" in refused.stderr and "library.sqlite3.backup" in refused.stderr
    assert "move it aside" not in refused.stderr and database.stat().st_size == 0  # nothing written over it
    restored = _glimpse(["doctor", "--restore-backup"], env)
    assert restored.returncode == 0, restored.stderr
    assert "mine" in _glimpse(["tags", "list"], env).stdout
    assert len(json.loads(_glimpse(["search", "something red", "--json"], env).stdout)) > 0


@pytest.fixture
def tiny_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 24 MB file system for the library (tmpfs; needs root and mount rights, else skipped)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("cannot mount a small file system here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_indexing_with_one_message_and_search_goes_on(
    tmp_path: Path, env: dict[str, str], tiny_disk: Path
) -> None:
    import shutil

    from tests.hostile import _encode, _photo

    home = tiny_disk / "home"
    shutil.copytree(Path(env["GLIMPSE_HOME"]) / "models", home / "models")  # the seeded toy export
    env["GLIMPSE_HOME"] = str(home)
    root = tmp_path / "photos"
    root.mkdir()
    for n in range(600):
        (root / f"p{n:03d}.jpg").write_bytes(_encode(_photo(n, (640, 480)), "JPEG", quality=95))
    filler = tiny_disk / "filler"
    free = shutil.disk_usage(tiny_disk).free
    filler.write_bytes(b"\0" * max(0, free - 3_000_000))  # leave 3 MB: a few batches fit, then ENOSPC
    run = _glimpse(["index", str(root)], env)
    assert run.returncode == 74, run.stdout + run.stderr
    assert "Library disk full" in run.stderr and "Nothing in the library was lost" in run.stderr
    assert "Traceback" not in run.stderr and "OperationalError" not in run.stderr
    found = _glimpse(["search", "something red", "--json"], env)
    assert found.returncode == 0, found.stderr
    filler.unlink()  # space freed: the next run finishes the job
    assert _glimpse(["index", str(root)], env).returncode == 0
    assert "600 indexed" in _glimpse(["status"], env).stdout


def test_a_read_only_disk_refuses_writes_plainly_and_still_searches(
    tmp_path: Path, env: dict[str, str], tiny_disk: Path
) -> None:
    import shutil

    home = tiny_disk / "home"
    shutil.copytree(Path(env["GLIMPSE_HOME"]) / "models", home / "models")
    env["GLIMPSE_HOME"] = str(home)
    _small_library(tmp_path, env)
    before = _glimpse(["search", "something red", "--json"], env).stdout
    if subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], capture_output=True).returncode != 0:
        pytest.skip("cannot remount read-only here")
    found = _glimpse(["search", "something red", "--json"], env)
    assert found.returncode == 0 and found.stdout == before, found.stderr
    assert _glimpse(["status"], env).returncode == 0
    refused = _glimpse(["tags", "add", "new", "--prompt", "a new thing"], env)
    assert refused.returncode == 74 and "read-only disk" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
