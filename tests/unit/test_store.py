"""The library database: schema, versioning, scan bookkeeping and batch commits."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from store.errors import NotFoundError, SchemaTooNewError, StoreError
from store.library import LibraryStore
from store.paths import AppPaths
from store.records import (
    SCHEMA_VERSION,
    ChangedFile,
    EmbeddedImage,
    FailedImage,
    ImageStatus,
    ModelRecord,
    MovedFile,
    NewFile,
    ScanChanges,
)
from store.tags import TagStore


@pytest.fixture
def store(tmp_path: Path) -> LibraryStore:
    s = LibraryStore.open(tmp_path / "lib.sqlite3")
    yield s
    s.close()


def _model(store: LibraryStore, dim: int = 4) -> int:
    return store.register_model(ModelRecord(key=f"test/{dim}", name="test", dim=dim, preprocess="{}"))


def _vec(values: list[float]) -> bytes:
    v = np.asarray(values, np.float32)
    return (v / np.linalg.norm(v)).astype("<f2").tobytes()


def _add(store: LibraryStore, root: str, names: list[str]) -> dict[str, int]:
    folder = store.add_folder(root)
    store.apply_scan(ScanChanges(new=[NewFile(f"{root}/{n}", folder.id, 10, 1, f"h-{i}") for i, n in enumerate(names)]))
    return {p[len(root) + 1 :]: s.id for p, s in store.files_under(root).items()}


def _done(image_id: int, vec: bytes) -> EmbeddedImage:
    return EmbeddedImage(image_id, vec, 10, 10, None, None, None, 1, None)


def test_new_database_has_current_schema_with_wal_and_foreign_keys(store: LibraryStore) -> None:
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT value FROM meta WHERE key='schema_version'")).scalar() == str(SCHEMA_VERSION)
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_database_from_newer_glimpse_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lib.sqlite3"
    LibraryStore.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    with pytest.raises(SchemaTooNewError) as info:
        LibraryStore.open(path)
    assert "newer Glimpse" in info.value.message


def test_damaged_database_gives_a_readable_error(tmp_path: Path) -> None:
    path = tmp_path / "lib.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as info:
        LibraryStore.open(path)
    assert "damaged" in info.value.message and "Nothing was changed" in info.value.message
    assert "move it aside" not in info.value.message  # that advice would lose the user's tags
    assert path.read_bytes() == b"this is not a database" * 100


def test_an_empty_database_where_a_library_was_is_damaged_not_new(tmp_path: Path) -> None:
    """A 0-byte file once became a new, empty library silently; with a backup beside it, it is
    reported with the backup's path, and the restore brings the library back."""
    from store.backup import backup_path, restore_backup

    path = tmp_path / "lib.sqlite3"
    store = LibraryStore.open(path)
    store.add_folder("/photos")
    store.db.backup()
    store.close()
    path.write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with pytest.raises(StoreError) as info:
        LibraryStore.open(path)
    assert "0 bytes" in info.value.message and str(backup_path(path)) in info.value.message
    aside = restore_backup(path)
    assert aside.exists() and aside.stat().st_size == 0
    store = LibraryStore.open(path)
    assert [f.path for f in store.folders()] == ["/photos"]
    store.close()


def test_a_new_library_in_an_empty_file_is_still_created(tmp_path: Path) -> None:
    path = tmp_path / "lib.sqlite3"
    path.write_bytes(b"")  # nothing beside it: a library being created, nothing to lose
    LibraryStore.open(path).close()


def test_paths_follow_glimpse_home(tmp_path: Path) -> None:
    paths = AppPaths.from_env({"GLIMPSE_HOME": str(tmp_path / "x")})
    assert paths.database == tmp_path / "x" / "library.sqlite3"
    assert not paths.data_dir.exists()  # nothing is created until asked
    paths.ensure()
    assert paths.index_dir.is_dir() and paths.thumbnails_dir.is_dir()


def test_files_under_does_not_match_sibling_prefix(store: LibraryStore) -> None:
    _add(store, "/photos/a", ["1.jpg"])
    _add(store, "/photos/ab", ["2.jpg"])
    assert list(store.files_under("/photos/a")) == ["/photos/a/1.jpg"]


def test_pending_excludes_failed_and_embedded(store: LibraryStore) -> None:
    ids = _add(store, "/p", ["a.jpg", "b.jpg", "c.jpg"])
    model = _model(store)
    store.save_batch(model, [_done(ids["a.jpg"], _vec([1, 0, 0, 0]))], [FailedImage(ids["b.jpg"], "broken")])
    assert [p for _, p in store.pending_images(model)] == ["/p/c.jpg"]
    assert store.status_counts()[ImageStatus.FAILED] == 1
    assert store.failures()[0].error == "broken"
    # Another model needs its own vector for the indexed photo, but not for the failed one.
    other = _model(store, dim=8)
    assert sorted(p for _, p in store.pending_images(other)) == ["/p/a.jpg", "/p/c.jpg"]


def test_save_batch_is_idempotent(store: LibraryStore) -> None:
    ids = _add(store, "/p", ["a.jpg"])
    model = _model(store)
    store.save_batch(model, [_done(ids["a.jpg"], _vec([1, 0, 0, 0]))], [])
    store.save_batch(model, [_done(ids["a.jpg"], _vec([0, 1, 0, 0]))], [])
    assert store.count_embeddings(model) == 1
    np.testing.assert_allclose(store.embedding(ids["a.jpg"], model, 4), [0, 1, 0, 0], atol=1e-3)


def test_changed_file_loses_vectors_and_returns_to_pending(store: LibraryStore) -> None:
    ids = _add(store, "/p", ["a.jpg"])
    model = _model(store)
    store.save_batch(model, [_done(ids["a.jpg"], _vec([1, 0, 0, 0]))], [])
    store.apply_scan(ScanChanges(changed=[ChangedFile(ids["a.jpg"], 99, 2, "h-new")]))
    assert store.count_embeddings(model) == 0
    assert store.pending_images(model) == [(ids["a.jpg"], "/p/a.jpg")]
    assert not store.index_state(model).clean


def test_moved_file_keeps_id_and_vector(store: LibraryStore) -> None:
    ids = _add(store, "/p", ["a.jpg"])
    model = _model(store)
    store.save_batch(model, [_done(ids["a.jpg"], _vec([1, 0, 0, 0]))], [])
    folder = store.add_folder("/q")
    store.apply_scan(ScanChanges(moved=[MovedFile(ids["a.jpg"], "/q/renamed.jpg", folder.id, 10, 1)]))
    rec = store.image_by_path("/q/renamed.jpg")
    assert rec is not None and rec.id == ids["a.jpg"] and rec.status == ImageStatus.INDEXED
    assert store.embedding(rec.id, model, 4) is not None


def test_remove_folder_removes_its_images_and_vectors(store: LibraryStore) -> None:
    ids = _add(store, "/p", ["a.jpg", "b.jpg"])
    _add(store, "/other", ["c.jpg"])
    model = _model(store)
    store.save_batch(model, [_done(i, _vec([1, 0, 0, 0])) for i in ids.values()], [])
    removed = store.remove_folder("/p")
    assert sorted(removed) == sorted(ids.values())
    assert store.count_embeddings(model) == 0
    assert [f.path for f in store.folders()] == ["/other"]
    with pytest.raises(NotFoundError):
        store.remove_folder("/nope")


def test_iter_embeddings_round_trips_vectors_in_chunks(store: LibraryStore) -> None:
    names = [f"{i}.jpg" for i in range(7)]
    ids = _add(store, "/p", names)
    model = _model(store)
    rng = np.random.default_rng(0)
    vecs = {i: rng.normal(size=4) for i in ids.values()}
    store.save_batch(model, [_done(i, _vec(list(v))) for i, v in vecs.items()], [])
    got = list(store.iter_embeddings(model, 4, chunk=3))
    assert [len(c[0]) for c in got] == [3, 3, 1]
    all_ids = np.concatenate([c[0] for c in got])
    assert sorted(all_ids.tolist()) == sorted(ids.values())
    for ids_chunk, vec_chunk in got:
        for i, v in zip(ids_chunk, vec_chunk, strict=True):
            expected = vecs[int(i)] / np.linalg.norm(vecs[int(i)])
            np.testing.assert_allclose(v, expected, atol=2e-3)


def test_v1_library_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "lib.sqlite3"
    store = LibraryStore.open(path)
    store.add_folder("/photos")
    store.close()
    with sqlite3.connect(path) as conn:  # make it look like a library written by schema v1
        conn.execute("ALTER TABLE folders DROP COLUMN online")
        for table in ("image_tags", "tag_overrides", "tag_vectors", "tags", "regions"):  # added in v3 and v4
            conn.execute(f"DROP TABLE {table}")
        conn.execute("ALTER TABLE index_state DROP COLUMN digest")  # added in v5
        conn.execute("DROP TABLE scan_problems")
        conn.execute("DROP TABLE descriptions")  # added in v6
        conn.execute("ALTER TABLE images DROP COLUMN fingerprint")
        conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    store = LibraryStore.open(path)
    try:
        assert [(f.path, f.online) for f in store.folders()] == [("/photos", True)]
        tags = TagStore(store.db)
        assert tags.add_tag("beach", prompts=["a beach"]).prompts == ("a beach",)  # v3 tables exist
        assert tags.descriptions(1) is None  # the v6 table exists, empty until a tagger fills it
        store.set_folder_online("/photos", False)
        assert store.folders()[0].online is False
    finally:
        store.close()


def test_move_tree_rewrites_paths_and_keeps_ids(store: LibraryStore) -> None:
    ids = _add(store, "/p", ["album/a.jpg", "album/sub/b.jpg", "albumx/c.jpg"])
    moved = store.move_tree("/p/album", "/p/Holidays 2024", None)
    assert sorted(moved) == sorted([ids["album/a.jpg"], ids["album/sub/b.jpg"]])
    assert store.image_by_path("/p/Holidays 2024/sub/b.jpg").id == ids["album/sub/b.jpg"]
    assert store.image_by_path("/p/albumx/c.jpg") is not None
    assert sorted(store.remove_under("/p/Holidays 2024")) == sorted(moved)
    assert list(store.files_under("/p")) == ["/p/albumx/c.jpg"]


def test_file_names_that_are_not_utf8_are_stored_losslessly(store: LibraryStore) -> None:
    """Latin-1 names from old drives arrive as surrogate escapes; SQLite text must be UTF-8."""
    import os

    root = os.fsdecode(b"/photos/\xe9t\xe9")  # the folder's name is not UTF-8 either
    names = [os.fsdecode(b"caf\xe9.jpg"), "caf\u00e9.jpg", "odd \ufffd00 name.jpg", "\ufffd.jpg"]
    ids = _add(store, root, names)
    assert sorted(ids) == sorted(names)  # four distinct rows, each name back exactly
    assert [f.path for f in store.folders()] == [root]
    for name, image_id in ids.items():
        record = store.image_by_path(f"{root}/{name}")
        assert (
            record is not None and record.id == image_id and os.fsencode(record.path) == os.fsencode(f"{root}/{name}")
        )
    assert sorted(store.ids_under([root]).tolist()) == sorted(ids.values())
    moved = store.move_tree(root, os.fsdecode(b"/photos/n\xf6"), None)
    assert sorted(moved) == sorted(ids.values())
    assert store.image_by_path(os.fsdecode(b"/photos/n\xf6/caf\xe9.jpg")).id == ids[names[0]]
    raw = sqlite3.connect(store.db.path).execute("SELECT path FROM images ORDER BY id").fetchall()
    assert all(isinstance(p, str) for (p,) in raw)  # valid UTF-8 text on disk, readable by any tool
