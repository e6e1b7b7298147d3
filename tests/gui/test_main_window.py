"""The real main window, offscreen: add a folder, index through the service, search, view, find similar."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from PySide6.QtCore import QMimeData, Qt, QUrl

from desktop.main_window import MainWindow
from indexer.composition import build_services
from indexer.models.choice import ModelChoice
from indexer.models.presets import TOYWORLD_DIR
from indexer.settings import Settings
from indexer.toyworld.world import ShapeSpec, all_specs
from store.paths import AppPaths
from tests.photos import write_photo


@pytest.fixture
def window(qtbot, paths: AppPaths):  # type: ignore[no-untyped-def]
    threads_before = set(threading.enumerate())
    services = build_services(paths, Settings(precision="fp32"), ModelChoice("toyworld"))
    win = MainWindow(services)
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.model_ready, timeout=60_000):
        win.start()
    yield win
    win.shutdown()
    services.close()
    leftover = [t for t in threading.enumerate() if t not in threads_before and t.is_alive() and not t.daemon]
    assert not leftover, f"threads left running: {leftover}"


def _photos(root: Path) -> None:
    for n, spec in enumerate(all_specs()):
        write_photo(root / spec.shape / f"{spec.colour}-{spec.shape}.jpg", spec, seed=n)
    write_photo(root / "extra" / "blue-star-2.jpg", ShapeSpec("star", "blue"), seed=77)


def _wait_indexed(qtbot, win: MainWindow, count: int) -> None:  # type: ignore[no-untyped-def]
    store = win.services.store
    qtbot.waitUntil(
        lambda: store.status_counts()["indexed"] == count and win.services.library.wait_idle(0.01), timeout=120_000
    )


def _search(qtbot, win: MainWindow, text: str) -> list:  # type: ignore[no-untyped-def]
    win.search_field.clear()
    with qtbot.waitSignal(win.results_shown, timeout=30_000) as blocker:
        qtbot.keyClicks(win.search_field, text)
        qtbot.keyClick(win.search_field, Qt.Key.Key_Return)
    return blocker.args[0]


def test_add_folder_search_view_similar_remove(qtbot, window: MainWindow, tmp_path: Path) -> None:
    win = window
    assert win.pages.currentIndex() == 0, "first run shows the welcome view"
    root = tmp_path / "Photos"
    _photos(root)
    win.add_folder(str(root))
    _wait_indexed(qtbot, win, 37)
    qtbot.waitUntil(
        lambda: win.folder_list.count() == 1 and "37 of 37" in win.folder_list.item(0).text(), timeout=30_000
    )

    results = _search(qtbot, win, "a blue star")
    assert [Path(r.path).name for r in results[:2]] == ["blue-star.jpg", "blue-star-2.jpg"] or {
        Path(r.path).name for r in results[:2]
    } == {"blue-star.jpg", "blue-star-2.jpg"}
    assert win.results.rowCount() == len([r for r in results if not r.weak and r.duplicate_of is None])
    first = win.results.index(0)
    assert "blue-star" in first.data(Qt.ItemDataRole.DisplayRole)
    qtbot.waitUntil(lambda: first.data(Qt.ItemDataRole.DecorationRole).width() > 0, timeout=10_000)

    # Open the viewer on the first result; arrows move, Esc closes.
    win.open_viewer(0)
    viewer = win._viewer
    assert viewer is not None
    qtbot.waitUntil(lambda: viewer.image.pixmap() is not None and not viewer.image.pixmap().isNull(), timeout=10_000)
    assert "blue-star" in viewer.info.text()
    qtbot.keyClick(viewer, Qt.Key.Key_Right)
    assert viewer.current == 1
    # Find similar from the viewer: the other blue star comes first.
    with qtbot.waitSignal(win.results_shown, timeout=30_000) as blocker:
        viewer.find_similar.emit(viewer.results[0])
    similar = blocker.args[0]
    assert Path(similar[0].path).name in ("blue-star-2.jpg", "blue-star.jpg")
    assert all(r.path != viewer.results[0].path for r in similar)

    # Remove the folder: the library empties and a search finds nothing.
    with qtbot.waitSignal(win.library_changed, timeout=30_000):
        win.remove_folder(str(root))
    qtbot.waitUntil(lambda: win.folder_list.count() == 0, timeout=30_000)
    assert _search(qtbot, win, "a red circle") == []


def test_dropping_a_photo_searches_by_example(qtbot, window: MainWindow, tmp_path: Path) -> None:
    win = window
    root = tmp_path / "Photos"
    _photos(root)
    win.add_folder(str(root))
    _wait_indexed(qtbot, win, 37)
    outside = write_photo(tmp_path / "query.png", ShapeSpec("heart", "green"), seed=999)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(outside))])
    with qtbot.waitSignal(win.results_shown, timeout=30_000) as blocker:
        win.handle_drop(mime)
    assert Path(blocker.args[0][0].path).name == "green-heart.jpg"


def test_query_errors_are_shown_not_raised(qtbot, window: MainWindow) -> None:
    win = window
    qtbot.keyClicks(win.search_field, '"unclosed')
    qtbot.keyClick(win.search_field, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: win.message.isVisible() and "quote" in win.message.text(), timeout=10_000)


def test_history_paste_and_settings(qtbot, window: MainWindow, tmp_path: Path, paths: AppPaths) -> None:
    from PySide6.QtGui import QGuiApplication, QImage

    from desktop.settings_dialog import SettingsDialog
    from indexer.settings import Settings

    win = window
    root = tmp_path / "Photos"
    _photos(root)
    win.add_folder(str(root))
    _wait_indexed(qtbot, win, 37)
    _search(qtbot, win, "a red circle")
    _search(qtbot, win, "a blue star")
    assert win._history.stringList()[:2] == ["a blue star", "a red circle"]
    assert (paths.data_dir / "search-history.json").is_file()

    # A copied picture pasted onto the grid searches by example.
    QGuiApplication.clipboard().setImage(QImage(str(root / "heart" / "green-heart.jpg")))
    with qtbot.waitSignal(win.results_shown, timeout=30_000) as blocker:
        win.paste()
    assert Path(blocker.args[0][0].path).name == "green-heart.jpg"

    # The dialog shows the model in use (not a saved preference), and only devices this machine has.
    state = win.services.switch.state()
    dialog = SettingsDialog(win.services.settings, paths, 37, state, ["auto", "cpu"], win)
    qtbot.addWidget(dialog)
    assert "In use: <b>toyworld</b>" in dialog.in_use.text()
    assert dialog.model.currentData() == "toyworld"
    assert [dialog.device.itemText(i) for i in range(dialog.device.count())] == ["auto", "cpu"]
    dialog.model.setCurrentIndex(dialog.model.findData("ViT-B-32"))
    assert "embeds all 37 photos again" in dialog.cost.text()
    dialog.device.setCurrentText("cpu")
    dialog.threads.setValue(2)
    dialog.segmenter.setCurrentIndex(dialog.segmenter.findData("sam_vit_b"))
    assert "downloads 375 MB" in dialog.segmenter.currentText()
    dialog.accepted.connect(lambda: win._settings_saved(dialog))
    # ViT-B-32's weights cannot be downloaded here: the switch fails and changes nothing.
    with qtbot.waitSignal(win.model_switch_started, timeout=60_000) as switched:
        dialog.accept()
    assert switched.args == ["failed"]
    saved = Settings.load(paths.settings_file)
    assert (saved.device, saved.threads, saved.segmenter) == ("cpu", 2, "sam_vit_b")
    assert "model" not in json.loads(paths.settings_file.read_text())
    assert win.services.switch.state().active.name == "toyworld"
    assert win.services.switch.target() is None
    assert _search(qtbot, win, "a red circle"), "search still answers with the library's model"

    # A model that loads: the switch runs in the service's background, shown in the status bar,
    # while search keeps answering; then the library uses the new model.
    copy = tmp_path / "toy-copy"
    shutil.copytree(TOYWORLD_DIR, copy)
    shown: list[str] = []
    win.services.library.on_status = lambda status: shown.append(status.state) or win._bridge.status.emit(status)
    with qtbot.waitSignal(win.model_switch_started, timeout=60_000) as switched:
        win._settings_saved(SimpleNamespace(switch_to=ModelChoice(f"local-dir:{copy}")))
    assert switched.args == ["started"]
    assert _search(qtbot, win, "a red circle")
    qtbot.waitUntil(lambda: win.services.switch.target() is None, timeout=120_000)
    assert "switching" in shown
    assert win.services.switch.state().active.name == f"local-dir:{copy}"
    assert Path(_search(qtbot, win, "a green heart")[0].path).name == "green-heart.jpg"


def test_tags_panel_filter_edit_and_teach(qtbot, window: MainWindow, tmp_path: Path, monkeypatch) -> None:
    win = window
    root = tmp_path / "Photos"
    _photos(root)
    win.add_folder(str(root))
    _wait_indexed(qtbot, win, 37)
    win.tag_actions.refresh()
    qtbot.waitUntil(lambda: (win.tags_panel.row("star") or None) is not None and win.tags_panel.row("star").photos >= 6,
                    timeout=30_000)  # fmt: skip
    # Clicking a tag in the panel filters the grid through the query language.
    group = next(g for g in win.tags_panel._groups() if g.text(0) == "shape")
    item = next(group.child(j) for j in range(group.childCount()) if group.child(j).text(0) == "star")
    with qtbot.waitSignal(win.results_shown, timeout=30_000) as blocker:
        win.tags_panel.tree.itemClicked.emit(item, 0)
    assert win.search_field.text() == "tag:star"
    stars = blocker.args[0]
    assert len(stars) >= 6 and all("star" in r.tags for r in stars)
    assert sum("star" in Path(r.path).name for r in stars) >= 6

    # Tag a selection by hand; the chip shows up on the next search and survives a re-tag.
    circle = next(r for r in _search(qtbot, win, "a red circle") if "red-circle" in r.path)
    with qtbot.waitSignal(win.tag_actions.action_done, timeout=30_000):
        win.tag_actions.add_to([circle.image_id], "favourite")
    results = _search(qtbot, win, "tag:favourite")
    assert [r.path for r in results] == [circle.path] and "favourite" in results[0].tags
    win.open_viewer(0)
    assert win._viewer is not None and "favourite" in win._viewer.tags.text()
    win._viewer.close()

    # Write the selection's tags to an XMP sidecar (after the confirmation the user would give).
    from PySide6.QtWidgets import QMessageBox

    from indexer.tags.xmp import read_keywords

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    with qtbot.waitSignal(win.tag_actions.action_done, timeout=30_000) as wrote:
        win.tag_actions.export_xmp([circle.image_id])
    assert "Wrote 1 XMP sidecars" in wrote.args[0]
    assert "favourite" in read_keywords(Path(circle.path + ".xmp"))

    # Teach from the two blue stars; the report carries the tagged count.
    blues = [r.image_id for r in _search(qtbot, win, "a blue star")[:2]]
    with qtbot.waitSignal(win.tag_actions.action_done, timeout=30_000) as done:
        win.tag_actions.teach(blues, "sky stars")
    assert 'Taught "sky stars" from 2 photos' in done.args[0]
    qtbot.waitUntil(lambda: win.tags_panel.row("sky stars") is not None, timeout=30_000)


def test_the_tagging_phase_is_shown_while_photos_are_searchable(qtbot, window: MainWindow) -> None:
    from indexer.ingest.pipeline import Progress
    from indexer.live.service import ServiceStatus

    window._on_status(ServiceStatus("tagging", Progress("tagging", 800, 2010)))
    assert window.state_label.text() == "Preparing tags: 800 of 2,010 prompts (photos are searchable meanwhile)"
    assert window.progress.isVisible() and (window.progress.value(), window.progress.maximum()) == (800, 2010)
    window._on_status(ServiceStatus("idle"))
    assert window.state_label.text() == "Up to date" and not window.progress.isVisible()


def test_weaker_matches_near_duplicates_and_the_duplicates_window(
    qtbot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    win = window
    root = tmp_path / "Photos"
    _photos(root)
    original = root / "star" / "blue-star.jpg"
    copy = root / "copies" / "blue-star copy.jpg"
    copy.parent.mkdir()
    shutil.copyfile(original, copy)
    win.add_folder(str(root))
    _wait_indexed(qtbot, win, 38)

    results = _search(qtbot, win, "a blue star")
    matches = [r for r in results if not r.weak and r.duplicate_of is None]
    assert win.results.rowCount() == len(matches) >= 2, "only the matches, a group of copies as one"
    assert win.results.first_weak_row() is None
    assert "match" in win.state_label.text()
    grouped = next(r for r in matches if r.similar)
    assert "+1 near-duplicate" in win.results.index(matches.index(grouped)).data(Qt.ItemDataRole.ToolTipRole)
    win.group_copies.setChecked(False)
    assert win.results.rowCount() == len(matches) + 1
    win.group_copies.setChecked(True)
    win.show_weak.setChecked(True)
    assert win.results.rowCount() > len(matches)
    assert win.results.first_weak_row() == len(matches)
    assert win.results.result(len(matches)).weak and "weaker" in win.state_label.text()
    win.show_weak.setChecked(False)

    # Nothing relevant: it says so and shows only the closest few.
    _search(qtbot, win, "a photo of a dog")
    if win.results.matches == 0:
        assert win.message.isVisible() and "No good match" in win.message.text()
        assert win.results.rowCount() <= 3

    # The duplicates window: the copy is ticked, the original kept; trashing needs the user's yes.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    win.open_duplicates()
    dialog = win.duplicates_dialog
    qtbot.waitUntil(lambda: bool(dialog.groups), timeout=30_000)
    group = next(g for g in dialog.groups if {m.path for m in g.members} == {str(original), str(copy)})
    assert group.exact and group.keep.path == str(original)
    ticked = dialog.ticked()
    assert str(copy) in {m.path for m in ticked} and str(original) not in {m.path for m in ticked}
    with qtbot.waitSignal(dialog.trashed, timeout=30_000) as moved:
        dialog.move_to_trash([m for m in ticked if m.path == str(copy)])
    assert moved.args[0].moved == [str(copy)] and not copy.exists() and original.exists()
    assert (tmp_path / "xdg" / "Trash" / "files" / copy.name).exists()
    dialog.close()
