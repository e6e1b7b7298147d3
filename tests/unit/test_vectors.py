"""The FAISS vector index: search, filtering, atomic persistence and rebuild from SQLite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from store.errors import StoreError
from store.library import LibraryStore
from store.records import EmbeddedImage, ModelRecord, NewFile, ScanChanges
from store.vectors import ModelVectors, VectorIndex, index_path, open_vector_index

DIM = 16


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_search_ranks_by_cosine_and_respects_allowed_ids() -> None:
    rng = np.random.default_rng(1)
    vecs = _unit(rng, 50)
    ids = np.arange(100, 150, dtype=np.int64)
    index = VectorIndex(DIM)
    index.add(ids, vecs)
    hits = index.search(vecs[7], k=5)
    assert hits.ids[0] == 107
    assert hits.scores[0] == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.diff(hits.scores) <= 1e-6)
    # Brute force agrees on the whole ranking.
    expected = ids[np.argsort(-(vecs @ vecs[7]))[:5]]
    assert hits.ids.tolist() == expected.tolist()
    allowed = np.array([120, 130, 140], dtype=np.int64)
    filtered = index.search(vecs[7], k=10, allowed=allowed)
    assert sorted(filtered.ids.tolist()) == [120, 130, 140]
    assert index.search(vecs[7], k=10, allowed=np.empty(0, np.int64)).ids.size == 0


def test_remove_and_contains() -> None:
    index = VectorIndex(DIM)
    index.add(np.array([1, 2, 3]), _unit(np.random.default_rng(2), 3))
    assert index.remove([2]) == 1
    assert len(index) == 2 and not index.contains(2) and index.contains(3)
    assert sorted(index.ids().tolist()) == [1, 3]


def test_save_load_round_trip_and_damaged_file(tmp_path: Path) -> None:
    index = VectorIndex(DIM)
    vecs = _unit(np.random.default_rng(3), 10)
    index.add(np.arange(10), vecs)
    path = tmp_path / "v.faiss"
    index.save(path, generation=7)
    loaded = VectorIndex.load(path, DIM)
    assert loaded.generation == 7 and len(loaded) == 10
    assert loaded.search(vecs[3], 1).ids.tolist() == [3]
    assert not list(tmp_path.glob("*.tmp")), "temporary file left behind"
    with pytest.raises(StoreError):
        VectorIndex.load(path, DIM * 2)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(StoreError):
        VectorIndex.load(path, DIM)


@pytest.fixture
def library(tmp_path: Path) -> tuple[LibraryStore, int, dict[int, np.ndarray]]:
    store = LibraryStore.open(tmp_path / "lib.sqlite3")
    folder = store.add_folder("/p")
    store.apply_scan(ScanChanges(new=[NewFile(f"/p/{i}.jpg", folder.id, 1, 1, None) for i in range(20)]))
    model = store.register_model(ModelRecord(key="m", name="m", dim=DIM, preprocess="{}"))
    vecs = _unit(np.random.default_rng(4), 20).astype("<f2")
    ids = sorted(s.id for s in store.files_under("/p").values())
    store.save_batch(
        model,
        [EmbeddedImage(i, v.tobytes(), 1, 1, None, None, None, None, None) for i, v in zip(ids, vecs, strict=True)],
        [],
    )
    yield store, model, {i: v.astype(np.float32) for i, v in zip(ids, vecs, strict=True)}
    store.close()


def test_missing_index_is_rebuilt_from_embeddings(library, tmp_path: Path) -> None:
    store, model, vecs = library
    index = open_vector_index(store, model, DIM, tmp_path / "idx")
    assert sorted(index.ids().tolist()) == sorted(vecs)
    state = store.index_state(model)
    assert state.clean and state.count == 20
    assert index_path(tmp_path / "idx", model).exists()


def test_clean_index_file_is_reused_not_rebuilt(library, tmp_path: Path, monkeypatch) -> None:
    store, model, _ = library
    open_vector_index(store, model, DIM, tmp_path / "idx")
    calls = []
    monkeypatch.setattr(LibraryStore, "iter_embeddings", lambda *a, **k: calls.append(1) or iter(()))
    again = open_vector_index(store, model, DIM, tmp_path / "idx")
    assert len(again) == 20 and not calls


def test_commit_after_save_marks_file_stale_and_next_open_catches_up(library, tmp_path: Path) -> None:
    """A kill between a database commit and the index save must not lose the commit."""
    store, model, _vecs = library
    mv = ModelVectors.open(store, model, DIM, tmp_path / "idx")
    folder = store.add_folder("/p")
    store.apply_scan(ScanChanges(new=[NewFile("/p/new.jpg", folder.id, 1, 1, None)]))
    new_id = store.image_by_path("/p/new.jpg").id
    v = _unit(np.random.default_rng(5), 1)[0].astype("<f2")
    store.save_batch(model, [EmbeddedImage(new_id, v.tobytes(), 1, 1, None, None, None, None, None)], [])
    mv.add(np.array([new_id]), v[None].astype(np.float32))
    # ... killed here: the in-memory index is lost, the file on disk is one generation old.
    assert not store.index_state(model).clean
    reopened = open_vector_index(store, model, DIM, tmp_path / "idx")
    assert reopened.contains(new_id) and len(reopened) == 21


def test_file_from_other_generation_is_not_trusted(library, tmp_path: Path) -> None:
    store, model, _ = library
    idx_dir = tmp_path / "idx"
    index = open_vector_index(store, model, DIM, idx_dir)
    # Simulate an old file restored from a backup: same count, older generation, wrong content.
    stale = VectorIndex(DIM)
    stale.add(np.arange(1000, 1020), _unit(np.random.default_rng(6), 20))
    stale.save(index_path(idx_dir, model), generation=index.generation - 1)
    reopened = open_vector_index(store, model, DIM, idx_dir)
    assert sorted(reopened.ids().tolist()) == sorted(index.ids().tolist())


def test_search_after_remove_and_add_matches_brute_force() -> None:
    rng = np.random.default_rng(9)
    vecs = _unit(rng, 40)
    index = VectorIndex(DIM)
    index.add(np.arange(40), vecs)
    index.search(vecs[0], 5)  # warm the position -> id cache, then change the index
    index.remove([0, 1, 2])
    extra = _unit(rng, 2)
    index.add(np.array([100, 101]), extra)
    live = {i: vecs[i] for i in range(3, 40)} | {100: extra[0], 101: extra[1]}
    q = vecs[0]
    expected = sorted(live, key=lambda i: -float(live[i] @ q))[:10]
    hits = index.search(q, 10)
    assert hits.ids.tolist() == expected
    np.testing.assert_allclose(hits.scores, [live[i] @ q for i in expected], atol=1e-5)
    assert index.search(q, 1000).ids.size == 39
