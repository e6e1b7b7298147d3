"""The main window: search field, results grid, library panel, status bar.

The window shows at once; the model loads on the model runner and the search field
says so until it is ready. Nothing here calls the model, FAISS or SQL on the GUI
thread: searches and tag edits run on the model runner (the GUI's one thread for
interactive model work, latest wins), library reads and file operations on the I/O
runner, and indexing on the library service's thread (which has its own model
thread), whose status arrives through a queued signal. Every write, from any of
them, is a command on the library's writer thread. docs/architecture.md has the
whole table.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PySide6.QtCore import (
    QMimeData,
    QModelIndex,
    QObject,
    QPoint,
    QSize,
    QStringListModel,
    Qt,
    QTimer,
    QUrl,
    Signal,
)
from PySide6.QtGui import QAction, QDesktopServices, QDragEnterEvent, QDropEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QCompleter,
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QStackedWidget,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from desktop.images import PREVIEW_MAX, load_image
from desktop.results import ResultRole, ResultsModel, ThumbnailDelegate, ThumbnailProvider
from desktop.tag_actions import TagActions
from desktop.tags_panel import TagsPanel
from desktop.viewer import Viewer
from desktop.workers import TaskRunner
from indexer.cli.warm import WarmServer
from indexer.composition import Services
from indexer.errors import GlimpseError
from indexer.ingest.scanner import is_photo
from indexer.live.service import ServiceStatus, tagging_message
from indexer.models.presets import default_model, language_note
from indexer.search.service import SearchResult
from indexer.segment.objects import Segmentation
from store.filenames import shown

log = logging.getLogger(__name__)

SEARCH_DELAY_MS = 300
RESULTS = 500


class _StatusBridge(QObject):
    """Carries the library service's status from its thread to the GUI thread."""

    status = Signal(object)


class MainWindow(QMainWindow):
    model_ready = Signal()
    results_shown = Signal(list)  # list[SearchResult], after the grid was updated
    library_changed = Signal()  # folder list refreshed
    model_switch_started = Signal(str)  # "started", "switched", "current" or "failed"

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self.setWindowTitle("Glimpse")
        self.resize(1200, 800)
        self.setAcceptDrops(True)
        self.model_runner = TaskRunner(1, self)  # interactive model work: searches, tag edits (latest wins)
        self.io_runner = TaskRunner(2, self)
        self.thumbnails = ThumbnailProvider(services.thumbnails, parent=self)
        self.results = ResultsModel(self.thumbnails, self)
        self._ready = False
        self._warm: WarmServer | None = None
        self._query = ""
        self._viewer: Viewer | None = None
        self._bridge = _StatusBridge(self)
        self._bridge.status.connect(self._on_status)
        self._build()
        self._debounce = QTimer(self, singleShot=True, interval=SEARCH_DELAY_MS)
        self._debounce.timeout.connect(self.run_search)

    # ---- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        """The window's parts, each built by its own method; this only puts them together."""
        self.pages = QStackedWidget()
        self.pages.addWidget(self._build_welcome())
        self.pages.addWidget(self._build_results_page())
        self.setCentralWidget(self.pages)
        self._build_docks()
        self._build_status_bar()
        self._build_shortcuts()

    def _build_search_bar(self) -> QHBoxLayout:
        self.search_field = QLineEdit(placeholderText="Loading the model…", clearButtonEnabled=True)
        self.search_field.textEdited.connect(lambda _t: self._debounce.start())
        self.search_field.returnPressed.connect(self.run_search)
        self._history = QStringListModel(self._load_history(), self)
        completer = QCompleter(self._history, self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        self.search_field.setCompleter(completer)
        self.sort = QComboBox()
        self.sort.addItems(["Relevance", "Date"])
        self.sort.currentTextChanged.connect(lambda t: self.results.sort_by(t.lower()))
        self.show_weak = QCheckBox("Show weaker matches")
        self.show_weak.setToolTip("After the photos that match, list the ones that match less well")
        self.show_weak.toggled.connect(self._toggle_weak)
        self.group_copies = QCheckBox("Group near-duplicates")
        self.group_copies.setChecked(True)
        self.group_copies.setToolTip('Show copies and near-duplicates of a photo as one result, "+N"')
        self.group_copies.toggled.connect(self._toggle_grouping)
        self.zoom = QSlider(Qt.Orientation.Horizontal)
        self.zoom.setRange(64, 256)
        self.zoom.setValue(160)
        self.zoom.setFixedWidth(120)
        self.zoom.setToolTip("Thumbnail size")
        self.zoom.valueChanged.connect(self._set_zoom)
        top = QHBoxLayout()
        top.addWidget(self.search_field, 1)
        top.addWidget(self.show_weak)
        top.addWidget(self.group_copies)
        top.addWidget(self.sort)
        top.addWidget(self.zoom)
        return top

    def _build_grid(self) -> QListView:
        self.grid = QListView()
        self.grid.setViewMode(QListView.ViewMode.IconMode)
        self.grid.setResizeMode(QListView.ResizeMode.Adjust)
        self.grid.setMovement(QListView.Movement.Static)
        self.grid.setUniformItemSizes(True)
        self.grid.setLayoutMode(QListView.LayoutMode.Batched)
        self.grid.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.grid.setSpacing(4)
        self.delegate = ThumbnailDelegate(self.grid)
        self.grid.setItemDelegate(self.delegate)
        self.grid.setModel(self.results)
        self.grid.doubleClicked.connect(lambda idx: self.open_viewer(idx.row()))
        self.grid.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.grid.customContextMenuRequested.connect(self._context_menu)
        paste = QAction("Paste a photo to search by example", self.grid)
        paste.setShortcut(QKeySequence.StandardKey.Paste)
        paste.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        paste.triggered.connect(self.paste)
        self.grid.addAction(paste)
        return self.grid

    def _build_results_page(self) -> QWidget:
        top = self._build_search_bar()
        grid = self._build_grid()
        self._set_zoom(self.zoom.value())
        self.message = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.message.setWordWrap(True)
        self.message.hide()
        results_page = QWidget()
        layout = QVBoxLayout(results_page)
        layout.addLayout(top)
        layout.addWidget(self.message)
        layout.addWidget(grid, 1)
        return results_page

    def _build_welcome(self) -> QWidget:
        welcome = QWidget()
        wl = QVBoxLayout(welcome)
        wl.addStretch(1)
        title = QLabel(
            "<h2>Welcome to Glimpse</h2><p>Add a folder of photos, or drop one onto this window.<br>"
            "Glimpse indexes it on this computer; nothing leaves it.</p>",
            alignment=Qt.AlignmentFlag.AlignCenter,
        )
        add = QPushButton("Add folder…")
        add.clicked.connect(self.choose_folder)
        wl.addWidget(title)
        wl.addWidget(add, 0, Qt.AlignmentFlag.AlignHCenter)
        language = default_model()[1]
        if self.services.new_library and language is not None:
            # First run on a system in another language: the multilingual preset is the default; say so and its cost.
            note = QLabel(language_note(language) + " Settings… changes the model.", wordWrap=True)
            note.setAlignment(Qt.AlignmentFlag.AlignCenter)
            note.setMaximumWidth(640)
            wl.addWidget(note, 0, Qt.AlignmentFlag.AlignHCenter)
        wl.addStretch(2)
        return welcome

    def _build_docks(self) -> None:
        self.folder_list = QListWidget()
        add_btn = QPushButton("Add…")
        add_btn.clicked.connect(self.choose_folder)
        remove_btn = QPushButton("Remove")
        remove_btn.clicked.connect(self._remove_selected_folder)
        self.pause_btn = QPushButton("Pause")
        self.pause_btn.setCheckable(True)
        self.pause_btn.toggled.connect(self._toggle_pause)
        buttons = QHBoxLayout()
        for b in (add_btn, remove_btn, self.pause_btn):
            buttons.addWidget(b)
        panel = QWidget()
        pl = QVBoxLayout(panel)
        pl.addWidget(self.folder_list, 1)
        pl.addLayout(buttons)
        dock = QDockWidget("Library", self)
        dock.setObjectName("library")
        dock.setWidget(panel)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
        self.tags_panel = TagsPanel()
        self.tag_actions = TagActions(self.services, self, self.tags_panel, self)
        tags_dock = QDockWidget("Tags", self)
        tags_dock.setObjectName("tags")
        tags_dock.setWidget(self.tags_panel)
        tags_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, tags_dock)

    def _build_status_bar(self) -> None:
        self.state_label = QLabel("Starting…")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.hide()
        self.failures_btn = QPushButton(flat=True)
        self.failures_btn.clicked.connect(self.show_failures)
        self.failures_btn.hide()
        self.statusBar().addWidget(self.state_label, 1)
        self.statusBar().addPermanentWidget(self.failures_btn)
        self.statusBar().addPermanentWidget(self.progress)

        duplicates_btn = QPushButton("Duplicates…", flat=True)
        duplicates_btn.setToolTip("Find copies and near-duplicates, and clean them up")
        duplicates_btn.clicked.connect(self.open_duplicates)
        self.statusBar().addPermanentWidget(duplicates_btn)

        settings_btn = QPushButton("Settings…", flat=True)
        settings_btn.clicked.connect(self.open_settings)
        self.statusBar().addPermanentWidget(settings_btn)

    def _build_shortcuts(self) -> None:
        for text, keys, slot in (
            ("Search", QKeySequence.StandardKey.Find, self._focus_search),
            ("Add folder…", QKeySequence.StandardKey.Open, self.choose_folder),
            ("Quit", QKeySequence.StandardKey.Quit, self.close),
            ("Settings…", QKeySequence.StandardKey.Preferences, self.open_settings),
        ):
            action = QAction(text, self)
            action.setShortcut(keys)
            action.triggered.connect(slot)
            self.addAction(action)

    # ---- what tag actions need from the window (desktop.tag_actions.TagHost) -------------------

    def current_query(self) -> str:
        return self.search_field.text()

    def report(self, message: str) -> None:
        self.state_label.setText(message)

    def _focus_search(self) -> None:
        self.pages.setCurrentIndex(1)
        self.search_field.setFocus()
        self.search_field.selectAll()

    def _set_zoom(self, size: int) -> None:
        self.delegate.size = size
        self.grid.setIconSize(QSize(size, size))
        self.grid.setGridSize(self.delegate.sizeHint(QStyleOptionViewItem(), self.results.index(0)))

    # ---- start-up ----------------------------------------------------------------------------

    def start(self) -> None:
        """Load the model and start the library service, both off the GUI thread."""
        self.model_runner.submit(
            self._load_engine, on_result=lambda _r: self._engine_ready(), on_error=self._engine_failed
        )
        self.refresh_folders()

    def _load_engine(self) -> None:
        """Open the vector index and load the model now, so the first search does not wait for it."""
        self.services.pipeline.vectors()
        self.services.slot.embedder.load()

    def _engine_ready(self) -> None:
        self._ready = True
        self.search_field.setPlaceholderText('Search your photos: dog on a beach, "beach" - "people", ...')
        self.services.library.start(on_status=self._bridge.status.emit)
        # While the app runs, `glimpse search` in a shell is answered by it (indexer.cli.warm).
        self._warm = WarmServer(self.services)
        self._warm.start()
        self.tag_actions.refresh()
        self.model_ready.emit()
        if self.search_field.text().strip():
            self.run_search()

    def _engine_failed(self, exc: BaseException) -> None:
        self.search_field.setPlaceholderText("Search is unavailable")
        self.show_error(exc)

    # ---- search ------------------------------------------------------------------------------

    def run_search(self, text: str | None = None) -> None:
        self._debounce.stop()
        query = (text if text is not None else self.search_field.text()).strip()
        if text is not None:
            self.search_field.setText(text)
        self._query = query
        if not query or not self._ready:
            return
        self._remember(query)
        self.pages.setCurrentIndex(1)
        search = self.services.search
        self._search_by(lambda: search.search(query, k=RESULTS))

    def search_similar(self, target: SearchResult | str) -> None:
        self.pages.setCurrentIndex(1)
        search = self.services.search
        image: int | str = target.image_id if isinstance(target, SearchResult) else target
        label = shown(Path(target.path if isinstance(target, SearchResult) else target).name)
        self.search_field.setText(f"#{image}" if isinstance(image, int) else str(image))
        self._query = f"photos like {label}"
        self._search_by(lambda: search.similar(image, k=RESULTS))
        self.state_label.setText(f"Photos like {label}")

    def _search_by(self, work: Callable[[], list[SearchResult]]) -> None:
        """Run a search on the model thread (the newest one wins) and show its results."""
        self.model_runner.submit(work, on_result=self._show_results, on_error=self._search_failed, latest_key="search")

    def _show_results(self, results: list[SearchResult]) -> None:
        self.message.hide()
        self.results.sort_by(self.sort.currentText().lower())
        self.results.set_results(results)
        self._describe_answer()
        self.results_shown.emit(results)

    def _toggle_grouping(self, group: bool) -> None:
        self.results.set_collapse(group)
        self._describe_answer()

    def _toggle_weak(self, show: bool) -> None:
        self.results.set_show_weak(show)
        self._describe_answer()

    def _describe_answer(self) -> None:
        """Say what the grid shows: how many photos match, or that none does and these are the closest."""
        matches, weaker = self.results.matches, self.results.weaker
        if not matches and not weaker:
            self._show_message("No photos match yet. If indexing is still running, results will grow.")
            return
        if not matches:
            what = f" for “{self._query}”" if self._query else ""
            hint = "" if self.show_weak.isChecked() else " Show weaker matches to see more."
            self._show_message(f"No good match{what}. The closest photos are shown dimmed.{hint}")
        else:
            self.message.hide()
        count = f"{matches:,} match{'es' if matches != 1 else ''}"
        if weaker:
            count += f" · {weaker:,} weaker {'shown' if self.show_weak.isChecked() else 'hidden'}"
        self.state_label.setText(count)

    def _search_failed(self, exc: BaseException) -> None:
        if isinstance(exc, GlimpseError):
            self._show_message(f"{exc.title}: {exc.message}")
        else:
            self.show_error(exc)

    def _show_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.show()

    @property
    def _history_file(self) -> Path:
        return self.services.paths.data_dir / "search-history.json"

    def _load_history(self) -> list[str]:
        try:
            items = json.loads(self._history_file.read_text())
        except (OSError, ValueError):
            return []
        return [str(q) for q in items][:50] if isinstance(items, list) else []

    def _remember(self, query: str) -> None:
        """Search history, newest first, offered by the search field's completer; kept with the library."""
        items = [query] + [q for q in self._history.stringList() if q != query]
        self._history.setStringList(items[:50])
        with contextlib.suppress(OSError):
            self._history_file.write_text(json.dumps(items[:50], ensure_ascii=False))

    def paste(self) -> None:
        """Ctrl+V outside the search field: a copied photo or image file searches by example."""
        mime = QGuiApplication.clipboard().mimeData()
        if mime.hasUrls():
            self.handle_drop(mime)
        elif mime.hasImage():
            image = QGuiApplication.clipboard().image()
            target = self.services.paths.cache_dir / "pasted-query.png"
            if image.save(str(target)):
                self.search_similar(str(target))

    def open_duplicates(self) -> None:
        """The duplicates window; it finds groups on the I/O runner and trashes only what the user confirms."""
        from desktop.duplicates_view import DuplicatesDialog

        dialog = DuplicatesDialog(self.services.duplicates, self.io_runner, parent=self)
        dialog.trashed.connect(lambda _report: self.run_search() if self._query else None)
        self.duplicates_dialog = dialog
        dialog.open()
        dialog.refresh()

    def open_settings(self) -> None:
        """Read what the dialog shows off the GUI thread (counts, devices present, the model in use)."""
        from desktop.settings_dialog import SettingsDialog
        from indexer.models.embedder import available_devices

        services = self.services

        def read() -> tuple[int, Any, list[str]]:
            return sum(services.store.status_counts().values()), services.switch.state(), available_devices()

        def show(data: tuple[int, Any, list[str]]) -> None:
            dialog = SettingsDialog(services.settings, services.paths, *data, parent=self)
            dialog.accepted.connect(lambda: self._settings_saved(dialog))
            self.settings_dialog = dialog
            dialog.open()

        self.io_runner.submit(read, on_result=show, on_error=self.show_error)

    def _settings_saved(self, dialog: Any) -> None:
        choice = dialog.switch_to
        if choice is None:
            return
        switch, library = self.services.switch, self.services.library
        self.state_label.setText(f"Loading {choice.name} to switch the library to it…")

        def started(outcome: str) -> None:
            library.continue_switch()
            self.state_label.setText(
                f"Switching to {choice.name} in the background; search uses the current model until it is done."
                if outcome == "started"
                else f"The library uses {choice.name}."
            )
            self.model_switch_started.emit(outcome)

        def failed(exc: BaseException) -> None:
            self.state_label.setText("The model was not changed.")
            self.show_error(exc)
            self.model_switch_started.emit("failed")

        # Loading the new model happens on the model runner; a failure leaves the library as it was.
        self.model_runner.submit(lambda: switch.begin(choice), on_result=started, on_error=failed)

    # ---- viewer and actions ------------------------------------------------------------------

    def open_viewer(self, row: int) -> None:
        results = [self.results.result(i) for i in range(self.results.rowCount())]
        if not results:
            return
        self._viewer = Viewer(
            results, row, self.io_runner, self.open_file, self, self.services.objects, self.model_runner
        )
        self._viewer.find_similar.connect(self._similar_from_viewer)
        self._viewer.search_object.connect(self.search_object)
        self._viewer.search_region.connect(self.search_region)
        self._viewer.show()

    def search_object(self, segmentation: Segmentation, candidate: int = 0) -> None:
        """Photos showing the object segmented in the viewer (the viewer stays open)."""
        objects = self.services.objects
        self._search_from_viewer(f"Photos showing the object selected in {shown(Path(segmentation.photo.path).name)}")
        self._search_by(lambda: objects.search_object(segmentation, candidate, k=RESULTS))

    def search_region(self, path: str, box: tuple[float, float, float, float]) -> None:
        objects = self.services.objects
        self._search_from_viewer(f"Photos like the region selected in {shown(Path(path).name)}")
        self._search_by(lambda: objects.search_region(path, box, k=RESULTS))

    def _search_from_viewer(self, label: str) -> None:
        """A search with no query text: show the results page, clear the field, say what is shown."""
        self.pages.setCurrentIndex(1)
        self.search_field.setText("")
        self.state_label.setText(label)

    def _similar_from_viewer(self, result: SearchResult) -> None:
        if self._viewer is not None:
            self._viewer.close()
        self.search_similar(result)

    @staticmethod
    def open_file(path: str) -> None:
        # The file's own bytes, percent-encoded: a name that is not UTF-8 still opens.
        QDesktopServices.openUrl(QUrl.fromEncoded(b"file://" + quote(os.fsencode(path)).encode("ascii")))

    def _context_menu(self, pos: QPoint) -> None:
        index = self.grid.indexAt(pos)
        if not index.isValid():
            return
        result: SearchResult = index.data(ResultRole)
        menu = QMenu(self)
        menu.addAction("View", lambda: self.open_viewer(index.row()))
        menu.addAction("Open", lambda: self.open_file(result.path))
        menu.addAction("Open folder", lambda: self.open_file(str(Path(result.path).parent)))
        menu.addAction("Copy path", lambda: QGuiApplication.clipboard().setText(self._selected_paths(index)))
        menu.addAction("Copy image", lambda: self._copy_image(result.path))
        menu.addAction("Find similar", lambda: self.search_similar(result))
        menu.addSeparator()
        chosen = self._selected_results(index)
        ids = [r.image_id for r in chosen]
        on_photos = sorted({t for r in chosen for t in r.tags})
        menu.addAction("Add tag…", lambda: self.tag_actions.add_to(ids))
        menu.addAction("Remove tag…", lambda: self.tag_actions.remove_from(ids, on_photos))
        menu.addAction("Teach a tag from selection…", lambda: self.tag_actions.teach(ids))
        menu.addAction("Write tags to XMP sidecars…", lambda: self.tag_actions.export_xmp(ids))
        menu.exec(self.grid.viewport().mapToGlobal(pos))

    def _selected_results(self, fallback: QModelIndex) -> list[SearchResult]:
        rows = sorted({i.row() for i in self.grid.selectedIndexes()}) or [fallback.row()]
        return [self.results.result(r) for r in rows]

    def _selected_paths(self, fallback: QModelIndex) -> str:
        return "\n".join(shown(r.path) for r in self._selected_results(fallback))

    def _copy_image(self, path: str) -> None:
        self.io_runner.submit(
            partial(load_image, path, PREVIEW_MAX), on_result=lambda img: QGuiApplication.clipboard().setImage(img)
        )

    # ---- library ------------------------------------------------------------------------------

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of photos")
        if folder:
            self.add_folder(folder)

    def add_folder(self, folder: str) -> None:
        """Queued to the library service (or the I/O runner before it starts): the window never waits."""
        library = self.services.library
        self.pages.setCurrentIndex(1)
        self.io_runner.submit(
            lambda: library.add_folder(folder), on_result=lambda _r: self.refresh_folders(), on_error=self.show_error
        )

    def remove_folder(self, folder: str) -> None:
        self.io_runner.submit(
            lambda: self.services.library.remove_folder(folder),
            on_result=self._folder_removed,
            on_error=self.show_error,
        )

    def _folder_removed(self, _result: object) -> None:
        self.refresh_folders()
        self.run_search()

    def _remove_selected_folder(self) -> None:
        item = self.folder_list.currentItem()
        if item is not None:
            self.remove_folder(item.data(Qt.ItemDataRole.UserRole))

    def refresh_folders(self) -> None:
        store = self.services.store

        def read() -> tuple[list[Any], dict[str, dict[str, int]], int]:
            unreadable = store.status_counts()["failed"] + len(store.scan_problems(limit=1000))
            return store.folders(), store.folder_counts(), unreadable

        self.io_runner.submit(read, on_result=self._show_folders)

    def _show_folders(self, data: tuple[list[Any], dict[str, dict[str, int]], int]) -> None:
        folders, counts, failed = data
        self.folder_list.clear()
        for f in folders:
            c = counts.get(f.path, {})
            total = sum(c.values())
            text = f"{shown(Path(f.path).name or f.path)}\n{c.get('indexed', 0)} of {total} indexed"
            if not f.online:
                text += " (not available)"
            item = QListWidgetItem(text)
            item.setToolTip(shown(f.path))
            item.setData(Qt.ItemDataRole.UserRole, f.path)
            self.folder_list.addItem(item)
        if folders and self.pages.currentIndex() == 0:
            self.pages.setCurrentIndex(1)
        self.failures_btn.setVisible(failed > 0)
        self.failures_btn.setText(f"{failed} unreadable")
        self.library_changed.emit()

    def _toggle_pause(self, paused: bool) -> None:
        if paused:
            self.services.library.pause()
        else:
            self.services.library.resume()
        self.pause_btn.setText("Resume" if paused else "Pause")

    def _on_status(self, status: ServiceStatus) -> None:
        p = status.progress
        if status.state == "indexing" and p is not None and p.total:
            eta = f", about {p.eta_s:.0f} s left" if p.eta_s is not None else ""
            self.state_label.setText(f"Indexing {p.done} of {p.total} ({p.rate:.1f} photos/s{eta})")
            self.progress.setRange(0, p.total)
            self.progress.setValue(p.done)
            self.progress.show()
        elif status.state == "tagging" and p is not None and p.total:
            self.state_label.setText(tagging_message(p).capitalize() + " (photos are searchable meanwhile)")
            self.progress.setRange(0, p.total)
            self.progress.setValue(p.done)
            self.progress.show()
        elif status.state == "switching" and p is not None and p.total:
            self.state_label.setText(f"Switching model: {p.done} of {p.total} photos embedded (search works meanwhile)")
            self.progress.setRange(0, p.total)
            self.progress.setValue(p.done)
            self.progress.show()
        else:
            labels = {
                "idle": "Up to date",
                "scanning": "Looking for changes…",
                "starting": "Starting…",
                "paused": "Indexing paused",
                "stopped": "Stopped",
            }
            self.state_label.setText(labels.get(status.state, status.state))
            self.progress.hide()
        if status.message:
            self.statusBar().showMessage(status.message, 10000)
            self.refresh_folders()
        if status.state in ("idle", "paused") or (p is not None and p.done == p.total):
            self.refresh_folders()
            if self._ready:
                self.tag_actions.refresh()

    def show_failures(self) -> None:
        store = self.services.store
        self.io_runner.submit(
            lambda: (store.failures(limit=500), store.scan_problems(limit=500)), on_result=self._show_failure_list
        )

    def _show_failure_list(self, found: tuple[list[Any], list[tuple[str, str]]]) -> None:
        failures, problems = found
        box = QMessageBox(self)
        box.setWindowTitle("What Glimpse could not read")
        box.setText(
            f"{len(failures)} photo(s) could not be read; they are retried when the file changes. "
            f"{len(problems)} file(s) or folder(s) could not be read when the folders were last scanned."
        )
        lines = [f"{shown(f.path)}: {f.error}" for f in failures] + [f"{shown(p)}: {r}" for p, r in problems]
        box.setDetailedText("\n".join(lines))
        box.open()

    def show_error(self, exc: BaseException) -> None:
        title = getattr(exc, "title", "Something went wrong")
        message = getattr(exc, "message", str(exc))
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, parent=self)
        box.open()

    # ---- drag and drop ---------------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt's name
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt's name
        self.handle_drop(event.mimeData())
        event.acceptProposedAction()

    def handle_drop(self, mime: QMimeData) -> None:
        """Folders are added to the library; a photo searches by example."""
        for url in mime.urls():
            path = Path(url.toLocalFile())
            if path.is_dir():
                self.add_folder(str(path))
            elif path.is_file() and is_photo(path.name):
                self.search_similar(str(path))
                break

    # ---- shutdown ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the service and wait for every worker, so no thread outlives the window."""
        self._debounce.stop()
        if self._warm is not None:
            self._warm.close()
        self.services.library.stop()
        for runner in (self.model_runner, self.io_runner, self.thumbnails.runner):
            runner.close()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.shutdown()
        super().closeEvent(event)
