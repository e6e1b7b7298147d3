"""The results grid: a list model over search results, with thumbnails loaded off the GUI thread.

Thumbnails come from the indexer's on-disk cache (written from the same decode as the
vector); a photo without one yet is thumbnailed from the file, on a worker. Decoded
thumbnails are kept in a bounded in-memory cache. The view asks only for visible rows,
so 100k results cost 100k small records, not 100k images.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QPersistentModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from desktop.images import load_image
from desktop.workers import TaskRunner
from indexer.ingest.thumbnails import ThumbnailCache
from indexer.search.service import SearchResult
from store.filenames import shown

ResultRole = Qt.ItemDataRole.UserRole + 1
Index = QModelIndex | QPersistentModelIndex


def _load_thumbnail(cache: ThumbnailCache, key: str | None, path: str, size: int) -> QImage:
    data = cache.get(key) if key else None
    image = QImage()
    if data is not None and image.loadFromData(data):
        return image
    # Not indexed yet (or the cache was cleared): thumbnail the file itself.
    return load_image(path, size)


class ThumbnailProvider(QObject):
    """Loads thumbnails on a worker pool; ``ready`` fires on the GUI thread."""

    ready = Signal(str)

    def __init__(
        self, cache: ThumbnailCache, size: int = 256, capacity: int = 2000, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.cache = cache
        self.size = size
        self.capacity = capacity
        self.runner = TaskRunner(2, self)
        self._images: OrderedDict[str, QPixmap] = OrderedDict()
        self._loading: set[str] = set()
        self.placeholder = QPixmap(size, size)
        self.placeholder.fill(QColor(128, 128, 128, 40))

    def get(self, result: SearchResult) -> QPixmap | None:
        key = result.path
        pix = self._images.get(key)
        if pix is not None:
            self._images.move_to_end(key)
            return pix
        if key not in self._loading:
            self._loading.add(key)
            self.runner.submit(
                partial(_load_thumbnail, self.cache, result.thumbnail_key, result.path, self.size),
                on_result=partial(self._store, key),
                on_error=partial(self._failed, key),
            )
        return None

    def _failed(self, key: str, _exc: BaseException) -> None:
        self._loading.discard(key)

    def _store(self, key: str, image: QImage) -> None:
        self._loading.discard(key)
        self._images[key] = QPixmap.fromImage(image)
        while len(self._images) > self.capacity:
            self._images.popitem(last=False)
        self.ready.emit(key)


class ResultsModel(QAbstractListModel):
    def __init__(self, thumbnails: ThumbnailProvider, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._results: list[SearchResult] = []
        self._rows: dict[str, int] = {}
        self.thumbnails = thumbnails
        thumbnails.ready.connect(self._thumbnail_ready)

    def set_results(self, results: list[SearchResult]) -> None:
        self.beginResetModel()
        self._results = list(results)
        self._rows = {r.path: i for i, r in enumerate(self._results)}
        self.endResetModel()

    def sort_by(self, key: str) -> None:
        """ "relevance" (score) or "date" (taken, newest first; undated last)."""
        if key == "date":
            ordered = sorted(
                self._results, key=lambda r: (r.taken_at is None, -(r.taken_at.timestamp() if r.taken_at else 0))
            )
        else:
            ordered = sorted(self._results, key=lambda r: -r.score)
        self.set_results(ordered)

    def result(self, row: int) -> SearchResult:
        return self._results[row]

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008, N802 - Qt's names
        return 0 if parent.isValid() else len(self._results)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r = self._results[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return shown(Path(r.path).name)
        if role == Qt.ItemDataRole.DecorationRole:
            return self.thumbnails.get(r) or self.thumbnails.placeholder
        if role == Qt.ItemDataRole.ToolTipRole:
            size = f"{r.width}×{r.height}" if r.width else ""
            date = r.taken_at.strftime("%Y-%m-%d %H:%M") if r.taken_at else ""
            tags = f"\ntags: {', '.join(r.tags)}" if r.tags else ""
            if r.region is not None:
                tags += "\nmatched in the outlined part of the photo"
            return f"{shown(r.path)}\nscore {r.score:.3f}   {size}   {date}".rstrip() + tags
        if role == ResultRole:
            return r
        return None

    def _thumbnail_ready(self, path: str) -> None:
        row = self._rows.get(path)
        if row is not None:
            idx = self.index(row)
            self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])


class ThumbnailDelegate(QStyledItemDelegate):
    """Draws a cell: the thumbnail fitted and centred in a square, the file name elided below."""

    PAD = 6
    TEXT = 18

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.size = 160

    def sizeHint(self, option: QStyleOptionViewItem, index: Index) -> QSize:  # noqa: N802 - Qt's name
        return QSize(self.size + 2 * self.PAD, self.size + 2 * self.PAD + self.TEXT)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        rect = option.rect.adjusted(2, 2, -2, -2)
        painter.save()
        if option.state & QStyle.StateFlag.State_Selected:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(option.palette.highlight())
            painter.drawRoundedRect(rect, 6, 6)
        box = QRect(rect.x() + self.PAD - 2, rect.y() + self.PAD - 2, self.size, self.size)
        pix = index.data(Qt.ItemDataRole.DecorationRole)
        if isinstance(pix, QPixmap) and not pix.isNull():
            scaled = pix.size().scaled(box.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRect(0, 0, scaled.width(), scaled.height())
            target.moveCenter(box.center())
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            painter.drawPixmap(target, pix)
            hit = index.data(ResultRole)
            if isinstance(hit, SearchResult) and hit.region is not None:
                self._region(painter, target, hit.region)
        text_rect = QRect(rect.x() + 4, box.bottom() + 4, rect.width() - 8, self.TEXT)
        name = option.fontMetrics.elidedText(
            str(index.data(Qt.ItemDataRole.DisplayRole)), Qt.TextElideMode.ElideMiddle, text_rect.width()
        )
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        painter.setPen(option.palette.color(role))
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter, name)
        result = index.data(ResultRole)
        if isinstance(result, SearchResult) and result.tags and self.size >= 96:
            self._chips(painter, option, box, result.tags[: self.CHIPS])
        painter.restore()

    CHIPS = 3

    @staticmethod
    def _region(painter: QPainter, target: QRect, region: tuple[float, float, float, float]) -> None:
        """Outline the part of the photo that matched (region index)."""
        x0, y0, x1, y1 = region
        w, h = target.width(), target.height()
        box = QRect(target.x() + round(x0 * w), target.y() + round(y0 * h), round((x1 - x0) * w), round((y1 - y0) * h))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QPen(QColor(0, 0, 0, 160), 4))
        painter.drawRect(box.adjusted(1, 1, -1, -1))
        painter.setPen(QPen(QColor(255, 210, 0), 2))
        painter.drawRect(box.adjusted(1, 1, -1, -1))

    def _chips(self, painter: QPainter, option: QStyleOptionViewItem, box: QRect, tags: tuple[str, ...]) -> None:
        """The photo's best tags as small chips over the bottom of the thumbnail."""
        font = QFont(option.font)
        font.setPointSizeF(max(font.pointSizeF() * 0.8, 6.0))
        painter.setFont(font)
        metrics = QFontMetrics(font)
        x, y = box.left() + 4, box.bottom() - metrics.height() - 6
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        for tag in tags:
            text = metrics.elidedText(tag, Qt.TextElideMode.ElideRight, 80)
            w = metrics.horizontalAdvance(text) + 10
            if x + w > box.right() - 2:
                break
            chip = QRect(x, y, w, metrics.height() + 2)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(0, 0, 0, 150))
            painter.drawRoundedRect(chip, chip.height() / 2, chip.height() / 2)
            painter.setPen(QColor(255, 255, 255))
            painter.drawText(chip, Qt.AlignmentFlag.AlignCenter, text)
            x += w + 3
