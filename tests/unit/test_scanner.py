"""Scanning: which files count as photos, and how a rescan diffs against the library."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from indexer.ingest.scanner import Scanner, content_hash, walk_photos
from store.library import LibraryStore
from store.records import EmbeddedImage, FailedImage, ImageStatus, ModelRecord


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def store(tmp_path: Path) -> LibraryStore:
    s = LibraryStore.open(tmp_path / "lib.sqlite3")
    yield s
    s.close()


def test_walk_finds_photos_skips_hidden_system_and_other_files(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for rel in ("a.jpg", "b.JPEG", "sub/c.png", "sub/deeper/d.heic", "e.webp", "f.gif", "g.tif", "h.bmp"):
        _touch(root / rel)
    for rel in (
        ".hidden/x.jpg",
        "@eaDir/thumb.jpg",
        "$RECYCLE.BIN/y.jpg",
        ".dotfile.jpg",
        "notes.txt",
        "movie.mp4",
        ".Trash-1000/z.jpg",
    ):
        _touch(root / rel)
    found = sorted(Path(f.path).relative_to(root).as_posix() for f in walk_photos(root))
    assert found == ["a.jpg", "b.JPEG", "e.webp", "f.gif", "g.tif", "h.bmp", "sub/c.png", "sub/deeper/d.heic"]


def test_walk_survives_symlink_loops_and_broken_links(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    _touch(root / "sub" / "a.jpg")
    (root / "sub" / "loop").symlink_to(root)
    (root / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    found = [Path(f.path).name for f in walk_photos(root)]
    assert found == ["a.jpg"]


def test_walk_reports_unreadable_root(tmp_path: Path) -> None:
    problems: list[str] = []
    assert list(walk_photos(tmp_path / "missing", problems)) == []
    assert problems and "missing" in problems[0]


def test_content_hash_depends_on_content_not_name(tmp_path: Path) -> None:
    big = os.urandom(300_000)
    a = _touch(tmp_path / "a.jpg", big)
    b = _touch(tmp_path / "b.jpg", big)
    c = _touch(tmp_path / "c.jpg", big[:-1] + bytes([big[-1] ^ 1]))  # differs in the tail only
    assert content_hash(a) == content_hash(b) != content_hash(c)


def test_rescan_diffs_new_changed_moved_removed(tmp_path: Path, store: LibraryStore) -> None:
    root = tmp_path / "photos"
    keep = _touch(root / "keep.jpg", b"k" * 1000)
    edit = _touch(root / "edit.jpg", b"e" * 1000)
    move = _touch(root / "move.jpg", os.urandom(5000))
    gone = _touch(root / "gone.jpg", b"g" * 1000)
    scanner = Scanner(store)
    first = scanner.scan([root])
    assert (first.found, first.new) == (4, 4)
    ids = {Path(p).name: s.id for p, s in store.files_under(str(root)).items()}
    model = store.register_model(ModelRecord(key="m", name="m", dim=2, preprocess="{}"))
    store.save_batch(
        model, [EmbeddedImage(i, b"\0\0\0\0", 1, 1, None, None, None, None, None) for i in ids.values()], []
    )

    edit.write_bytes(b"E" * 2000)
    (root / "album").mkdir()
    move.rename(root / "album" / "moved.jpg")
    gone.unlink()
    _touch(root / "fresh.jpg", b"f" * 10)
    second = scanner.scan([root])
    assert (second.new, second.changed, second.moved, second.removed, second.unchanged) == (1, 1, 1, 1, 1)
    assert sorted(second.stale_ids) == sorted([ids["edit.jpg"], ids["gone.jpg"]])
    moved = store.image_by_path(str(root / "album" / "moved.jpg"))
    assert moved is not None and moved.id == ids["move.jpg"]
    assert store.embedding(moved.id, model, 2) is not None, "a moved photo keeps its vector"
    assert store.image_by_path(str(gone)) is None
    assert store.image_by_path(str(edit)).status == ImageStatus.PENDING
    assert store.image_by_path(str(keep)).status == ImageStatus.INDEXED
    pending = [Path(p).name for _, p in store.pending_images(model)]
    assert sorted(pending) == ["edit.jpg", "fresh.jpg"]


def test_failed_file_is_retried_only_when_it_changes(tmp_path: Path, store: LibraryStore) -> None:
    root = tmp_path / "photos"
    bad = _touch(root / "bad.jpg", b"not a photo")
    scanner = Scanner(store)
    scanner.scan([root])
    model = store.register_model(ModelRecord(key="m", name="m", dim=2, preprocess="{}"))
    image_id = store.image_by_path(str(bad)).id
    store.save_batch(model, [], [FailedImage(image_id, "not an image")])
    scanner.scan([root])
    assert store.pending_images(model) == []
    bad.write_bytes(b"still not a photo, but different")
    scanner.scan([root])
    assert store.pending_images(model) == [(image_id, str(bad))]


def test_move_between_roots_is_recognised(tmp_path: Path, store: LibraryStore) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    photo = _touch(a / "p.jpg", os.urandom(4000))
    b.mkdir()
    scanner = Scanner(store)
    scanner.scan([a, b])
    original = store.image_by_path(str(photo)).id
    photo.rename(b / "p.jpg")
    report = scanner.scan([b])  # only the destination is rescanned
    assert report.moved == 1 and report.new == 0
    assert store.image_by_path(str(b / "p.jpg")).id == original


def test_missing_root_keeps_its_photos(tmp_path: Path, store: LibraryStore) -> None:
    """An unplugged drive is not a deletion."""
    root = tmp_path / "usb"
    _touch(root / "a.jpg", b"a" * 100)
    scanner = Scanner(store)
    scanner.scan([root])
    (root / "a.jpg").rename(tmp_path / "elsewhere.jpg")
    root.rmdir()
    report = scanner.scan([root])
    assert report.offline_roots == [str(root)] and report.removed == 0
    assert store.image_by_path(str(root / "a.jpg")) is not None
    assert store.folders()[0].online is False
    root.mkdir()  # the drive is back
    (tmp_path / "elsewhere.jpg").rename(root / "a.jpg")
    assert scanner.scan([root]).unchanged == 1
    assert store.folders()[0].online is True


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their permissions")
def test_unreadable_subfolder_keeps_its_photos(tmp_path: Path, store: LibraryStore) -> None:
    root = tmp_path / "photos"
    _touch(root / "locked" / "a.jpg")
    scanner = Scanner(store)
    scanner.scan([root])
    (root / "locked").chmod(0)
    try:
        report = scanner.scan([root])
    finally:
        (root / "locked").chmod(0o755)
    assert report.removed == 0 and report.unreadable_dirs


def test_scan_paths_reconciles_only_the_named_files(tmp_path: Path, store: LibraryStore) -> None:
    root = tmp_path / "photos"
    a = _touch(root / "a.jpg", os.urandom(3000))
    b = _touch(root / "b.jpg", b"b" * 100)
    untouched = _touch(root / "c.jpg", b"c" * 100)
    scanner = Scanner(store)
    scanner.scan([root])
    ids = {Path(p).name: s.id for p, s in store.files_under(str(root)).items()}
    a.rename(root / "a-renamed.jpg")
    b.write_bytes(b"B" * 200)
    untouched.unlink()  # not named below: a targeted scan must not notice it
    new = _touch(root / "sub" / "new.png", b"n" * 10)
    _touch(root / "notes.txt")
    report = scanner.scan_paths([str(a), str(root / "a-renamed.jpg"), str(b), str(new), str(root / "notes.txt")])
    assert (report.moved, report.changed, report.new, report.removed) == (1, 1, 1, 0)
    assert store.image_by_path(str(root / "a-renamed.jpg")).id == ids["a.jpg"]
    assert store.image_by_path(str(untouched)) is not None
    assert scanner.scan_paths([str(untouched)]).removed == 1
