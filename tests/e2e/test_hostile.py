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
    found = subprocess.run([*glimpse_cmd(), "search", "something red", "-k", "500", "--json"], env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert found.returncode == 0, found.stderr
    paths = {os.fsencode(r["path"]) for r in json.loads(found.stdout)}
    assert os.fsencode(corpus.good["latin-1 file name"]) in paths
    listed = subprocess.run([*glimpse_cmd(), "search", "something red", "-k", "500"], env=env,
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
