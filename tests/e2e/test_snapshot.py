"""One-shot search and similar on a read-only snapshot: same answers as the full command, less machinery."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer.cli.main import main as full_main
from indexer.cli.snapshot import run_snapshot_query
from indexer.toyworld.world import all_specs
from store.errors import StoreError
from store.flat import FlatIndexFile, index_path, read_flat_index
from store.library import LibraryStore
from store.paths import AppPaths
from store.snapshot import LibrarySnapshot
from store.tags import TagStore
from store.vectors import VectorIndex
from tests.e2e.test_cli import run
from tests.photos import write_photo


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], Path]:
    """A toy-world library in two folders, indexed and tagged by the real command."""
    env = dict(os.environ, GLIMPSE_HOME=str(tmp_path / "home"), GLIMPSE_MODEL="toyworld", HF_HUB_OFFLINE="1")
    photos = tmp_path / "photos"
    for n, spec in enumerate(all_specs()):
        folder = "warm" if spec.colour in ("red", "orange", "yellow") else "cool"
        write_photo(photos / folder / f"{spec.colour}-{spec.shape}.jpg", spec, seed=n)
    done = run(["index", str(photos)], env)
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("GLIMPSE_HOME", env["GLIMPSE_HOME"])
    monkeypatch.setenv("GLIMPSE_MODEL", "toyworld")
    monkeypatch.chdir(photos)
    return env, photos


def _both(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[tuple[int | None, str, str], tuple[int, str, str]]:
    """(exit, stdout, stderr) of the snapshot path and of the full command for one command line."""
    code = run_snapshot_query(argv)
    snap = (code, *capsys.readouterr())
    full = (full_main(argv), *capsys.readouterr())
    return snap, full


QUERIES = [
    ["search", "a red circle", "-k", "5"],
    ["search", "a red circle", "-k", "5", "--json"],
    ["search", "a blue star + a green heart - red", "-k", "8"],
    ["search", "something round", "--tag", "red", "-k", "50"],
    ["search", "something round", "--without-tag", "red", "--json"],
    ["search", "a shape", "--folder", "warm", "-k", "100"],
    ["search", "#3 + a yellow square"],
    ["similar", "#5", "-k", "6", "--json"],
    ["similar", "cool/blue-star.jpg", "-k", "4"],
    ["search", "a purple triangle", "--tag", "no such tag"],
    ["search", "red - red"],
    ["similar", "#99999"],
]


@pytest.mark.parametrize("argv", QUERIES, ids=[" ".join(q) for q in QUERIES])
def test_the_snapshot_answers_exactly_as_the_full_command(
    library: tuple[dict[str, str], Path], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    snap, full = _both(argv, capsys)
    assert snap[0] is not None, "the snapshot path should answer this itself"
    assert snap == full


def test_results_are_real_answers(library: tuple[dict[str, str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Not just equal to the full command: right (the toy model knows its world)."""
    assert run_snapshot_query(["search", "a red circle", "-k", "2", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)
    assert Path(top[0]["path"]).name == "red-circle.jpg"
    assert "red" in top[0]["tags"]
    assert run_snapshot_query(["search", "a shape", "--folder", "warm", "-k", "200", "--json"]) == 0
    warm = json.loads(capsys.readouterr().out)
    assert warm and all("/warm/" in r["path"] for r in warm)


def test_a_search_imports_neither_sqlalchemy_faiss_nor_torch(library: tuple[dict[str, str], Path]) -> None:
    env, photos = library
    probe = (
        "import sys\n"
        "from desktop.launcher import main\n"
        "code = main(['search', 'a red circle', '-k', '3', '--all'])\n"
        "heavy = ('sqlalchemy', 'faiss', 'torch', 'open_clip', 'indexer.cli.main')\n"
        "print('HEAVY', code, sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300, cwd=photos
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY 0 []"
    assert out.stdout.count(".jpg") == 3


def test_what_it_cannot_vouch_for_goes_to_the_full_command(
    library: tuple[dict[str, str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env, _photos = library
    home = Path(env["GLIMPSE_HOME"])
    # Usage errors, help, object queries and other commands: the full command reports or runs them.
    for argv in (["search", "x", "-k", "0"], ["search", "--help"], ["status"], ["search"],
                 ["search", "--object", "a.jpg", "--point", "1,1"]):  # fmt: skip
        assert run_snapshot_query(argv) is None, argv
    # A vector index the database does not vouch for (a kill between a commit and a save): the
    # full command rebuilds it; the snapshot never reads it.
    with sqlite3.connect(home / "library.sqlite3") as conn:
        conn.execute("UPDATE index_state SET clean = 0")
    assert run_snapshot_query(["search", "a red circle"]) is None
    with sqlite3.connect(home / "library.sqlite3") as conn:
        conn.execute("UPDATE index_state SET clean = 1")
    assert run_snapshot_query(["search", "a red circle"]) == 0
    # A damaged file with the database's blessing: still not read.
    index_file = next(AppPaths.from_env({"GLIMPSE_HOME": str(home)}).index_dir.glob("model-*.faiss"))
    index_file.write_bytes(index_file.read_bytes()[:-100])
    assert run_snapshot_query(["search", "a red circle"]) is None
    # No library at all, or a library another schema: the full command says what to do.
    monkeypatch.setenv("GLIMPSE_HOME", str(tmp_path / "nowhere"))
    assert run_snapshot_query(["search", "a red circle"]) is None
    assert not (tmp_path / "nowhere").exists(), "a read never creates a library"
    capsys.readouterr()


def test_another_model_is_refused_as_by_the_full_command(
    library: tuple[dict[str, str], Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GLIMPSE_MODEL", "ViT-B-32")
    snap, full = _both(["search", "a red circle"], capsys)
    assert snap == full and snap[0] == 2 and "glimpse model use ViT-B-32" in snap[2]


def test_the_snapshot_reads_what_the_store_reads_at_one_moment(library: tuple[dict[str, str], Path]) -> None:
    """The shared queries give the store's answers, and a snapshot keeps seeing the moment it opened."""
    home = Path(library[0]["GLIMPSE_HOME"])
    store = LibraryStore.open(home / "library.sqlite3")
    tags = TagStore(store.db)
    snap = LibrarySnapshot.open(home / "library.sqlite3")
    assert snap is not None
    try:
        ids = list(range(1, 40))
        assert snap.images(ids) == store.images(ids)
        assert snap.tags_of(ids) == tags.tags_of(ids)
        red, circle = tags.tag("red").id, tags.tag("Circle").id
        assert snap.tag("RED") == tags.tag("red")
        assert np.array_equal(snap.image_ids([red], [circle]), tags.image_ids([red], [circle]))
        assert snap.images_with_tag(red) == tags.images_with_tag(red)
        roots = [str(library[1] / "warm")]
        assert np.array_equal(np.sort(snap.ids_under(roots)), np.sort(store.ids_under(roots)))
        (model,) = snap.models()
        assert [model] == store.models() and model.id is not None
        assert snap.index_state(model.id) == store.index_state(model.id)
        vec, stored = snap.embedding(3, model.id, model.dim), store.embedding(3, model.id, model.dim)
        assert vec is not None and stored is not None and np.array_equal(vec, stored)
        path = store.images([3])[3].path
        assert snap.image_by_path(path) == store.image_by_path(path)
        # A write after the snapshot opened is not seen by it (one read transaction).
        before = snap.get_meta("revision")
        store.set_meta("test.marker", "written")
        assert store.get_meta("test.marker") == "written"
        assert snap.get_meta("test.marker") is None and snap.get_meta("revision") == before
    finally:
        snap.close()
        store.close()


def test_the_vector_file_reads_the_same_without_faiss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamed from the file in chunks (tiny ones here, so results merge across many) and
    ranked as FAISS's copy in memory ranks them."""
    monkeypatch.setattr(FlatIndexFile, "CHUNK_ROWS", 37)
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((500, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = rng.permutation(10_000)[:500].astype(np.int64)
    index = VectorIndex(32)
    index.add(ids, vectors)
    index.remove(ids[:20])  # storage order after a removal is what both readers must agree on
    file = index_path(tmp_path, 1)
    index.save(file, generation=5)
    flat = read_flat_index(file, 32)
    assert flat.generation == 5 and len(flat) == 480 and np.array_equal(flat.ids, index.ids())
    for query in vectors[[25, 300, 499]]:
        a, b = index.search(query, 10), flat.search(query, 10)
        assert np.array_equal(a.ids, b.ids) and np.allclose(a.scores, b.scores)
        allowed = ids[100:200]
        a, b = index.search(query, 10, allowed), flat.search(query, 10, allowed)
        assert np.array_equal(a.ids, b.ids) and set(b.ids.tolist()) <= set(allowed.tolist())
    flat.close()
    with pytest.raises(StoreError, match="unreadable"):
        read_flat_index(file, 64)  # another dimension
    file.write_bytes(file.read_bytes() + b"x")
    with pytest.raises(StoreError, match="unreadable"):
        read_flat_index(file, 32)  # more than an index
