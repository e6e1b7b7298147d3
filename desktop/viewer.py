"""The photo viewer: a large preview with keyboard navigation and the photo's details."""

from __future__ import annotations

import html
from collections.abc import Callable
from functools import partial
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication, QImage, QKeyEvent, QPixmap, QResizeEvent
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from desktop.images import PREVIEW_MAX, load_image
from desktop.workers import TaskRunner
from indexer.search import SearchResult


def chips_html(tags: tuple[str, ...]) -> str:
    """Tags as chips in a QLabel (rich text: padded, shaded spans)."""
    chip = '<span style="background-color:#3d5a80; color:white;">&nbsp;{}&nbsp;</span>'
    return "&nbsp;".join(chip.format(html.escape(t)) for t in tags) if tags else "<i>no tags</i>"


def describe(result: SearchResult) -> str:
    parts = [result.path]
    if result.width and result.height:
        parts.append(f"{result.width} × {result.height}")
    if result.taken_at:
        parts.append(result.taken_at.strftime("taken %Y-%m-%d %H:%M"))
    if result.camera:
        parts.append(result.camera)
    parts.append(f"score {result.score:.3f}")
    return "   ·   ".join(parts)


class Viewer(QDialog):
    """Arrows or Space move through the results, Esc closes."""

    find_similar = Signal(object)  # SearchResult

    def __init__(
        self,
        results: list[SearchResult],
        start: int,
        runner: TaskRunner,
        open_file: Callable[[str], None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Glimpse")
        self.resize(1100, 800)
        self.results = results
        self.current = start
        self._runner = runner
        self._pixmap: QPixmap | None = None
        self.image = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.image.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.image.setMinimumSize(200, 150)
        self.info = QLabel(textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        self.info.setWordWrap(True)
        self.tags = QLabel(textFormat=Qt.TextFormat.RichText)
        self.tags.setToolTip("Tags on this photo (edit them from the grid's menu)")
        similar = QPushButton("Find similar")
        similar.clicked.connect(lambda: self.find_similar.emit(self.current_result))
        opener = QPushButton("Open")
        opener.clicked.connect(lambda: open_file(self.current_result.path))
        folder = QPushButton("Show folder")
        folder.clicked.connect(lambda: open_file(str(Path(self.current_result.path).parent)))
        copy = QPushButton("Copy path")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.current_result.path))
        prev_btn = QPushButton("◀")
        prev_btn.clicked.connect(lambda: self.step(-1))
        next_btn = QPushButton("▶")
        next_btn.clicked.connect(lambda: self.step(1))
        for b in (similar, opener, folder, copy, prev_btn, next_btn):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        bar = QHBoxLayout()
        bar.addWidget(prev_btn)
        bar.addWidget(next_btn)
        bar.addWidget(self.info, 1)
        bar.addWidget(copy)
        bar.addWidget(folder)
        bar.addWidget(opener)
        bar.addWidget(similar)
        layout = QVBoxLayout(self)
        layout.addWidget(self.image, 1)
        layout.addWidget(self.tags)
        layout.addLayout(bar)
        self.show_current()

    @property
    def current_result(self) -> SearchResult:
        return self.results[self.current]

    def step(self, delta: int) -> None:
        new = max(0, min(len(self.results) - 1, self.current + delta))
        if new != self.current:
            self.current = new
            self.show_current()

    def show_current(self) -> None:
        result = self.current_result
        self.info.setText(describe(result))
        self.tags.setText(chips_html(result.tags))
        self.setWindowTitle(f"{result.path} — Glimpse")
        self._pixmap = None
        self.image.setText("Loading…")
        self._runner.submit(
            partial(load_image, result.path, PREVIEW_MAX),
            on_result=self._loaded,
            on_error=lambda exc: self.image.setText(f"Cannot show this photo: {exc}"),
            latest_key="viewer",
        )

    def _loaded(self, image: QImage) -> None:
        self._pixmap = QPixmap.fromImage(image)
        self._pixmap.setDevicePixelRatio(self.devicePixelRatioF())
        self._fit()

    def _fit(self) -> None:
        if self._pixmap is not None:
            ratio = self.devicePixelRatioF()
            target = self.image.size() * ratio
            scaled = self._pixmap.scaled(
                target, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
            scaled.setDevicePixelRatio(ratio)
            self.image.setPixmap(scaled)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._fit()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        key = event.key()
        if key in (Qt.Key.Key_Right, Qt.Key.Key_Space, Qt.Key.Key_Down):
            self.step(1)
        elif key in (Qt.Key.Key_Left, Qt.Key.Key_Backspace, Qt.Key.Key_Up):
            self.step(-1)
        elif key == Qt.Key.Key_Escape:
            self.close()
        else:
            super().keyPressEvent(event)
