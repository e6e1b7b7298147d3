"""The viewer's segment mode: click an object, see its mask, search for it.

Coordinates. Three grids meet here: the widget (logical pixels, what mouse events
and QPainter use; Qt maps them to device pixels on high-DPI screens by itself),
the photo (upright, full resolution: what the engine takes points in), and the two
images drawn on top (the preview, at most 2048 px, and the mask, in the
segmenter's working grid). One transform, photo -> widget, drives all of it:
zoom and pan change only that transform, and every image is drawn through it
scaled from its own size to the photo's, so the overlay lands on the object at
any zoom, pan, screen density and EXIF rotation (both the preview and the engine
work on the upright photo).

Interaction: left click = a point on the object, right click (or Alt+click) = a
point not on it, left drag = a box; wheel zooms around the cursor, middle drag (or
Shift+drag) pans; 1/2/3 pick a candidate mask, Backspace or Ctrl+Z undo the last
point, Esc clears. Every change of prompts emits ``prompts_changed``; the viewer
sends only the latest to the model thread.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QPixmap,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

OVERLAY = QColor(30, 144, 255, 110)
OUTLINE = QColor(255, 255, 255, 255)
DRAG_THRESHOLD = 4  # logical pixels a press must move to become a box


def _argb(c: QColor) -> int:
    return (c.alpha() << 24) | (c.red() << 16) | (c.green() << 8) | c.blue()


def mask_overlay(mask: np.ndarray) -> QImage:
    """A translucent fill of ``mask`` with a crisp outline (its edge pixels), as an ARGB image.

    Built as one uint32 array (a few ms for a 1024-px mask), since it is redrawn on every click.
    """
    h, w = mask.shape
    edge = mask.copy()
    if h > 2 and w > 2:
        inner = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
        edge[1:-1, 1:-1] &= ~inner
    pixels = np.zeros((h, w), np.uint32)
    pixels[mask] = _argb(OVERLAY)
    pixels[edge] = _argb(OUTLINE)
    return QImage(pixels.tobytes(), w, h, 4 * w, QImage.Format.Format_ARGB32).copy()


class SegmentCanvas(QWidget):
    prompts_changed = Signal()
    candidate_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(200, 150)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(False)
        self._pixmap: QPixmap | None = None
        self._scaled: QPixmap | None = None
        self._scaled_for: tuple[int, int] = (0, 0)
        self.photo_size: tuple[int, int] = (1, 1)  # upright, full resolution
        self.zoom = 1.0  # 1 = fit the window
        self.pan = QPointF(0, 0)  # widget pixels
        self.points: list[tuple[float, float]] = []  # photo pixels
        self.labels: list[int] = []
        self.box: tuple[float, float, float, float] | None = None
        self.candidate = 0
        self._masks: np.ndarray | None = None
        self.scores: np.ndarray | None = None
        self._overlay: QImage | None = None
        self._press: QPointF | None = None
        self._drag: QPointF | None = None
        self._panning: QPointF | None = None

    # ---- content -------------------------------------------------------------------------------

    def set_photo(self, image: QImage, photo_size: tuple[int, int]) -> None:
        """The preview to show and the size of the photo it represents (upright, full)."""
        self._pixmap = QPixmap.fromImage(image)
        self._scaled = None
        self.photo_size = photo_size
        self.zoom, self.pan = 1.0, QPointF(0, 0)
        self.clear()

    def clear(self) -> None:
        self.points, self.labels, self.box = [], [], None
        self.set_masks(None, None)

    def set_masks(self, masks: np.ndarray | None, scores: np.ndarray | None) -> None:
        self._masks, self.scores = masks, scores
        self.candidate = 0
        self._overlay = mask_overlay(masks[0]) if masks is not None and len(masks) else None
        self.update()

    @property
    def has_prompts(self) -> bool:
        return bool(self.points) or self.box is not None

    def choose(self, index: int) -> None:
        if self._masks is not None and 0 <= index < len(self._masks):
            self.candidate = index
            self._overlay = mask_overlay(self._masks[index])
            self.candidate_changed.emit(index)
            self.update()

    # ---- geometry ------------------------------------------------------------------------------

    def transform(self) -> QTransform:
        """Photo pixels -> widget pixels."""
        pw, ph = self.photo_size
        fit = min(self.width() / pw, self.height() / ph)
        scale = fit * self.zoom
        dx = (self.width() - pw * scale) / 2 + self.pan.x()
        dy = (self.height() - ph * scale) / 2 + self.pan.y()
        return QTransform(scale, 0, 0, scale, dx, dy)

    def photo_to_widget(self, x: float, y: float) -> QPointF:
        return self.transform().map(QPointF(x, y))

    def widget_to_photo(self, point: QPointF) -> tuple[float, float]:
        inverse, _ = self.transform().inverted()
        p = inverse.map(point)
        return p.x(), p.y()

    def _inside(self, x: float, y: float) -> bool:
        return 0 <= x < self.photo_size[0] and 0 <= y < self.photo_size[1]

    # ---- painting ------------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().window())
        if self._pixmap is None:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Loading…")
            return
        photo = QRectF(0, 0, *self.photo_size)
        target = self.transform().mapRect(photo)
        scaled = self._scaled_preview(target)
        if scaled is not None:  # drawn 1:1: a smooth rescale of the 2048-px preview on every paint costs ~20 ms
            painter.drawPixmap(target.topLeft(), scaled)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.setTransform(self.transform())
        if scaled is None:
            painter.drawPixmap(photo, self._pixmap, QRectF(self._pixmap.rect()))
        if self._overlay is not None:
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
            painter.drawImage(photo, self._overlay, QRectF(self._overlay.rect()))
        painter.resetTransform()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if self.box is not None:
            self._draw_box(painter, self.box, Qt.PenStyle.SolidLine)
        if self._press is not None and self._drag is not None:
            a, b = self.widget_to_photo(self._press), self.widget_to_photo(self._drag)
            self._draw_box(painter, (a[0], a[1], b[0], b[1]), Qt.PenStyle.DashLine)
        for (x, y), label in zip(self.points, self.labels, strict=True):
            centre = self.photo_to_widget(x, y)
            painter.setPen(QPen(QColor(255, 255, 255), 2))
            painter.setBrush(QColor(40, 200, 80) if label else QColor(230, 50, 50))
            painter.drawEllipse(centre, 6, 6)

    def _scaled_preview(self, target: QRectF) -> QPixmap | None:
        """The preview smoothly scaled to ``target`` once per size (None when zoomed past its pixels)."""
        assert self._pixmap is not None
        ratio = self.devicePixelRatioF()
        size = (round(target.width() * ratio), round(target.height() * ratio))
        if size[0] > self._pixmap.width() * 1.5 or size[0] < 1 or size[1] < 1:
            return None
        if self._scaled is None or self._scaled_for != size:
            self._scaled = self._pixmap.scaled(
                size[0], size[1], Qt.AspectRatioMode.IgnoreAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
            self._scaled.setDevicePixelRatio(ratio)
            self._scaled_for = size
        return self._scaled

    def _draw_box(self, painter: QPainter, box: tuple[float, float, float, float], style: Qt.PenStyle) -> None:
        a = self.photo_to_widget(box[0], box[1])
        b = self.photo_to_widget(box[2], box[3])
        painter.setPen(QPen(QColor(255, 200, 0), 2, style))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(QRectF(a, b).normalized())

    # ---- input ---------------------------------------------------------------------------------

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt's name
        pos = event.position()
        shift = event.modifiers() & Qt.KeyboardModifier.ShiftModifier
        if event.button() == Qt.MouseButton.MiddleButton or (event.button() == Qt.MouseButton.LeftButton and shift):
            self._panning = pos
        elif event.button() == Qt.MouseButton.LeftButton:
            self._press, self._drag = pos, None
        elif event.button() == Qt.MouseButton.RightButton:
            self._add_point(pos, 0)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt's name
        pos = event.position()
        if self._panning is not None:
            self.pan += pos - self._panning
            self._panning = pos
            self.update()
        elif self._press is not None and (pos - self._press).manhattanLength() >= DRAG_THRESHOLD:
            self._drag = pos
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt's name
        if self._panning is not None:
            self._panning = None
            return
        if self._press is None or event.button() != Qt.MouseButton.LeftButton:
            return
        press, drag = self._press, self._drag
        self._press = self._drag = None
        if drag is not None:
            (x0, y0), (x1, y1) = self.widget_to_photo(press), self.widget_to_photo(drag)
            w, h = self.photo_size
            x0, x1 = sorted((min(max(x0, 0), w), min(max(x1, 0), w)))
            y0, y1 = sorted((min(max(y0, 0), h), min(max(y1, 0), h)))
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                self.box = (x0, y0, x1, y1)
                self.prompts_changed.emit()
            self.update()
            return
        alt = event.modifiers() & Qt.KeyboardModifier.AltModifier
        self._add_point(press, 0 if alt else 1)

    def _add_point(self, pos: QPointF, label: int) -> None:
        x, y = self.widget_to_photo(pos)
        if not self._inside(x, y):
            return
        self.points.append((x, y))
        self.labels.append(label)
        self.update()
        self.prompts_changed.emit()

    def undo(self) -> None:
        if self.points:
            self.points.pop()
            self.labels.pop()
        elif self.box is not None:
            self.box = None
        else:
            return
        if self.has_prompts:
            self.prompts_changed.emit()
        else:
            self.set_masks(None, None)
        self.update()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt's name
        factor = 1.25 if event.angleDelta().y() > 0 else 0.8
        self.zoom_at(event.position(), factor)

    def zoom_at(self, anchor: QPointF, factor: float) -> None:
        """Zoom by ``factor`` keeping the photo point under ``anchor`` where it is."""
        before = self.widget_to_photo(anchor)
        self.zoom = min(max(self.zoom * factor, 0.2), 40.0)
        after = self.photo_to_widget(*before)
        self.pan += anchor - after
        self.update()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        key = event.key()
        ctrl = event.modifiers() & Qt.KeyboardModifier.ControlModifier
        if key in (Qt.Key.Key_1, Qt.Key.Key_2, Qt.Key.Key_3):
            self.choose(key - Qt.Key.Key_1)
        elif key == Qt.Key.Key_Backspace or (key == Qt.Key.Key_Z and ctrl):
            self.undo()
        elif key == Qt.Key.Key_Escape and self.has_prompts:
            self.clear()
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom_at(QPointF(self.width() / 2, self.height() / 2), 1.25)
        elif key == Qt.Key.Key_Minus:
            self.zoom_at(QPointF(self.width() / 2, self.height() / 2), 0.8)
        elif key == Qt.Key.Key_0:
            self.zoom, self.pan = 1.0, QPointF(0, 0)
            self.update()
        else:
            super().keyPressEvent(event)
