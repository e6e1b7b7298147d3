"""The photo viewer: a large preview with keyboard navigation and the photo's details."""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QImage, QKeyEvent, QPainter, QPen, QPixmap, QResizeEvent
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.images import PREVIEW_MAX, load_image
from desktop.segment_view import SegmentCanvas
from desktop.workers import TaskRunner
from indexer.errors import GlimpseError
from indexer.search.service import SearchResult
from indexer.segment.objects import ObjectSearch, Segmentation, cutout
from store.filenames import shown


def _save_png(image: Image.Image, path: str) -> None:
    """Write atomically: a reader (or a crash) never sees half a file."""
    tmp = f"{path}.part"
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def chips_html(tags: tuple[str, ...]) -> str:
    """Tags as chips in a QLabel (rich text: padded, shaded spans)."""
    chip = '<span style="background-color:#3d5a80; color:white;">&nbsp;{}&nbsp;</span>'
    return "&nbsp;".join(chip.format(html.escape(t)) for t in tags) if tags else "<i>no tags</i>"


def describe(result: SearchResult) -> str:
    parts = [shown(result.path)]
    if result.width and result.height:
        parts.append(f"{result.width} × {result.height}")
    if result.taken_at:
        parts.append(result.taken_at.strftime("taken %Y-%m-%d %H:%M"))
    if result.camera:
        parts.append(result.camera)
    parts.append(f"{'weaker match' if result.weak else 'match'} {result.strength:.0%}")
    return "   ·   ".join(parts)


class Viewer(QDialog):
    """Arrows or Space move through the results, Esc closes; S toggles segment mode."""

    find_similar = Signal(object)  # SearchResult
    search_object = Signal(object, int)  # Segmentation, candidate index
    search_region = Signal(str, tuple)  # photo path, box in photo pixels
    mask_shown = Signal()  # a computed mask is on screen (tests, benchmarks)

    def __init__(
        self,
        results: list[SearchResult],
        start: int,
        runner: TaskRunner,
        open_file: Callable[[str], None],
        parent: QWidget | None = None,
        objects: ObjectSearch | None = None,
        model_runner: TaskRunner | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Glimpse")
        self.resize(1100, 800)
        self.results = results
        self.current = start
        self._runner = runner
        self._objects = objects
        self._model_runner = model_runner
        self._image: QImage | None = None
        self._segmentation: Segmentation | None = None
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
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(shown(self.current_result.path)))
        prev_btn = QPushButton("◀")
        prev_btn.clicked.connect(lambda: self.step(-1))
        next_btn = QPushButton("▶")
        next_btn.clicked.connect(lambda: self.step(1))
        self.segment_btn = QPushButton("Select object")
        self.segment_btn.setCheckable(True)
        self.segment_btn.setToolTip("Click an object to segment it and search for it (S)")
        self.segment_btn.toggled.connect(self.set_segment_mode)
        self.segment_btn.setEnabled(objects is not None and model_runner is not None)
        for b in (similar, opener, folder, copy, prev_btn, next_btn, self.segment_btn):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        bar = QHBoxLayout()
        bar.addWidget(prev_btn)
        bar.addWidget(next_btn)
        bar.addWidget(self.info, 1)
        bar.addWidget(copy)
        bar.addWidget(folder)
        bar.addWidget(opener)
        bar.addWidget(similar)
        bar.addWidget(self.segment_btn)
        self.canvas = SegmentCanvas()
        self.canvas.prompts_changed.connect(self._segment)
        self.canvas.candidate_changed.connect(lambda _i: self._show_candidates())
        self.stack = QStackedWidget()
        self.stack.addWidget(self.image)
        self.stack.addWidget(self.canvas)
        self.segment_bar = self._build_segment_bar()
        layout = QVBoxLayout(self)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.segment_bar)
        layout.addWidget(self.tags)
        layout.addLayout(bar)
        self.show_current()

    def _build_segment_bar(self) -> QWidget:
        bar = QWidget()
        row = QHBoxLayout(bar)
        row.setContentsMargins(0, 0, 0, 0)
        self.hint = QLabel("Click the object · right-click: not this · drag: a box · 1/2/3: other masks · ⌫ undo")
        self.candidate_btns = []
        for n in range(3):
            b = QPushButton(f"Mask {n + 1}")
            b.setCheckable(True)
            b.setEnabled(False)
            b.clicked.connect(partial(self.canvas.choose, n))
            self.candidate_btns.append(b)
        undo = QPushButton("Undo")
        undo.clicked.connect(self.canvas.undo)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.canvas.clear)
        self.object_btn = QPushButton("Search for this object")
        self.object_btn.clicked.connect(self._emit_search_object)
        self.region_btn = QPushButton("Search for this region")
        self.region_btn.clicked.connect(self._emit_search_region)
        self.export_btn = QPushButton("Export…")
        menu = QMenu(self.export_btn)
        menu.addAction("Save cut-out as PNG…", self.save_cutout)
        menu.addAction("Copy cut-out", self.copy_cutout)
        menu.addAction("Save mask as PNG…", self.save_mask)
        self.export_btn.setMenu(menu)
        for b in (*self.candidate_btns, undo, clear, self.object_btn, self.region_btn, self.export_btn):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        row.addWidget(self.hint, 1)
        for b in (*self.candidate_btns, undo, clear, self.object_btn, self.region_btn, self.export_btn):
            row.addWidget(b)
        bar.hide()
        self._show_candidates()
        return bar

    # ---- segment mode ----------------------------------------------------------------------------

    @property
    def segment_mode(self) -> bool:
        return self.stack.currentIndex() == 1

    def set_segment_mode(self, on: bool) -> None:
        if on and (self._objects is None or self._model_runner is None):
            return
        self.segment_btn.setChecked(on)
        self.stack.setCurrentIndex(1 if on else 0)
        self.segment_bar.setVisible(on)
        if on:
            self._load_canvas()
            self.canvas.setFocus()
        else:
            self._fit()

    def _load_canvas(self) -> None:
        result = self.current_result
        if self._image is None:
            return
        size = (result.width, result.height) if result.width and result.height else (
            self._image.width(), self._image.height())  # fmt: skip
        self.canvas.set_photo(self._image, size)
        self._segmentation = None
        self._show_candidates()

    def _segment(self) -> None:
        """Send the canvas's prompts to the model thread; only the newest request is computed."""
        objects, runner = self._objects, self._model_runner
        if objects is None or runner is None:
            return
        if not self.canvas.has_prompts:
            self._segmentation = None
            self._show_candidates()
            return
        path = self.current_result.path
        points, labels, box = list(self.canvas.points), list(self.canvas.labels), self.canvas.box
        self.hint.setText(
            "Finding the object…"
            if self._segmentation is not None
            else "Reading the photo for segmentation (a second or so on a CPU; the first time, the model loads)…"
        )
        runner.submit(
            lambda: objects.segment(path, points, labels, box),
            on_result=partial(self._masks_ready, path, len(points), box),
            on_error=self._segment_failed,
            latest_key="segment",
        )

    def _masks_ready(self, path: str, n_points: int, box: object, seg: Segmentation) -> None:
        # A result for prompts the user has since changed (or another photo) is not shown.
        if path != self.current_result.path or n_points != len(self.canvas.points) or box != self.canvas.box:
            return
        self._segmentation = seg
        self.canvas.set_masks(seg.masks, seg.scores)
        self.hint.setText("Search for it, pick another mask (1/2/3), or refine: click more points")
        self._show_candidates()
        self.mask_shown.emit()

    def _segment_failed(self, exc: BaseException) -> None:
        self.hint.setText(f"Cannot segment: {getattr(exc, 'message', exc)}")
        if isinstance(exc, GlimpseError):
            QMessageBox.warning(self, exc.title, exc.message)

    def _show_candidates(self) -> None:
        seg = self._segmentation
        for n, b in enumerate(self.candidate_btns):
            ok = seg is not None and n < len(seg.scores)
            b.setEnabled(ok)
            b.setChecked(ok and n == self.canvas.candidate)
            b.setText(f"Mask {n + 1}" + (f" ({seg.scores[n]:.2f})" if ok and seg is not None else ""))
        self.object_btn.setEnabled(seg is not None)
        self.export_btn.setEnabled(seg is not None)
        self.region_btn.setEnabled(self.canvas.box is not None)

    def _emit_search_object(self) -> None:
        if self._segmentation is not None:
            self.search_object.emit(self._segmentation, self.canvas.candidate)

    def _emit_search_region(self) -> None:
        if self.canvas.box is not None:
            self.search_region.emit(self.current_result.path, self.canvas.box)

    def _cutout(self) -> Image.Image:
        assert self._objects is not None and self._segmentation is not None
        seg, index = self._segmentation, self.canvas.candidate
        return cutout(self._objects.full_pixels(seg.photo), seg.full_mask(index))

    def save_cutout(self, path: str | None = None) -> None:
        if self._segmentation is None:
            return
        if path is None:
            stem = Path(self.current_result.path).stem
            path, _ = QFileDialog.getSaveFileName(self, "Save cut-out", f"{stem}-cutout.png", "PNG (*.png)")
        if path:
            target = path
            self._runner.submit(lambda: _save_png(self._cutout(), target), on_error=self._segment_failed)

    def copy_cutout(self) -> None:
        if self._segmentation is None:
            return

        def image() -> QImage:
            cut = self._cutout()
            return QImage(cut.tobytes(), cut.width, cut.height, 4 * cut.width, QImage.Format.Format_RGBA8888).copy()

        self._runner.submit(image, on_result=lambda img: QGuiApplication.clipboard().setImage(img))

    def save_mask(self, path: str | None = None) -> None:
        seg = self._segmentation
        if seg is None:
            return
        if path is None:
            stem = Path(self.current_result.path).stem
            path, _ = QFileDialog.getSaveFileName(self, "Save mask", f"{stem}-mask.png", "PNG (*.png)")
        if path:
            index, target = self.canvas.candidate, path
            self._runner.submit(
                lambda: _save_png(Image.fromarray(seg.full_mask(index).astype("uint8") * 255, "L"), target),
                on_error=self._segment_failed,
            )

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
        self.setWindowTitle(f"{shown(result.path)} — Glimpse")
        self._pixmap = None
        self._image = None
        self._segmentation = None
        self.image.setText("Loading…")
        self._runner.submit(
            partial(load_image, result.path, PREVIEW_MAX),
            on_result=self._loaded,
            on_error=lambda exc: self.image.setText(f"Cannot show this photo: {exc}"),
            latest_key="viewer",
        )

    def _loaded(self, image: QImage) -> None:
        self._image = image
        if self.segment_mode:
            self._load_canvas()
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
            region = self.current_result.region
            if region is not None:  # where the match is (region index): outlined on the photo
                painter = QPainter(scaled)
                x0, y0, x1, y1 = region
                w, h = scaled.width(), scaled.height()
                box = QRectF(x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h).adjusted(2, 2, -2, -2)
                painter.setPen(QPen(QColor(0, 0, 0, 160), 6 * ratio))
                painter.drawRect(box)
                painter.setPen(QPen(QColor(255, 210, 0), 3 * ratio))
                painter.drawRect(box)
                painter.end()
            scaled.setDevicePixelRatio(ratio)
            self.image.setPixmap(scaled)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._fit()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        key = event.key()
        if key == Qt.Key.Key_S and self.segment_btn.isEnabled():
            self.set_segment_mode(not self.segment_mode)
        elif key == Qt.Key.Key_Escape and self.segment_mode:
            self.set_segment_mode(False)
        elif key in (Qt.Key.Key_Right, Qt.Key.Key_Space, Qt.Key.Key_Down):
            self.step(1)
        elif key in (Qt.Key.Key_Left, Qt.Key.Key_Backspace, Qt.Key.Key_Up):
            self.step(-1)
        elif key == Qt.Key.Key_Escape:
            self.close()
        else:
            super().keyPressEvent(event)
