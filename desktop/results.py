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

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QPoint,
    QRect,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from desktop.images import load_image
from desktop.workers import TaskRunner
from indexer.ingest.thumbnails import ThumbnailCache
from indexer.search.service import SearchResult
from store.filenames import shown

ResultRole = Qt.ItemDataRole.UserRole + 1
CLOSEST = 3  # weaker photos shown when a query has no good match
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
    """A search's answer: its matches, then (when asked for) the weaker ones, marked ``weak``.

    Rows are always results, so the viewer and the selection need no special cases; the
    delegate draws the line between matches and weaker ones.
    """

    def __init__(self, thumbnails: ThumbnailProvider, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._answer: list[SearchResult] = []  # everything the search returned
        self._results: list[SearchResult] = []  # what the rows show
        self._rows: dict[str, int] = {}
        self._show_weak = False
        self._collapse = True
        self._order = "relevance"
        self.thumbnails = thumbnails
        thumbnails.ready.connect(self._thumbnail_ready)

    def set_results(self, results: list[SearchResult]) -> None:
        self._answer = list(results)
        self._refresh()

    def set_show_weak(self, show: bool) -> None:
        """Show the weaker matches after the matches, or only the matches."""
        self._show_weak = show
        self._refresh()

    def set_collapse(self, collapse: bool) -> None:
        """Show a group of near-duplicates as its best photo ("+N"), or every photo of it."""
        self._collapse = collapse
        self._refresh()

    def _listed(self) -> list[SearchResult]:
        return [r for r in self._answer if not (self._collapse and r.duplicate_of is not None)]

    @property
    def matches(self) -> int:
        return sum(not r.weak for r in self._listed())

    @property
    def weaker(self) -> int:
        return sum(r.weak for r in self._listed())

    def sort_by(self, key: str) -> None:
        """ "relevance" (match strength) or "date" (taken, newest first; undated last); the
        matches stay before the weaker ones either way."""
        self._order = key
        self._refresh()

    def _refresh(self) -> None:
        def when(r: SearchResult) -> tuple[bool, float]:
            return (r.taken_at is None, -(r.taken_at.timestamp() if r.taken_at else 0))

        listed = self._listed()
        shown_ = [r for r in listed if self._show_weak or not r.weak]
        if not shown_ and not self._show_weak:
            # No good match: the closest few, never a page of noise.
            shown_ = sorted(listed, key=lambda r: -r.strength)[:CLOSEST]
        if self._order == "date":
            shown_.sort(key=lambda r: (r.weak, *when(r)))
        else:
            shown_.sort(key=lambda r: (r.weak, -r.strength, -r.score))
        self.beginResetModel()
        self._results = shown_
        self._rows = {r.path: i for i, r in enumerate(self._results)}
        self.endResetModel()

    @property
    def collapsed(self) -> bool:
        return self._collapse

    def first_weak_row(self) -> int | None:
        return next((i for i, r in enumerate(self._results) if r.weak), None)

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
            verdict = "weaker match" if r.weak else "match"
            if r.similar and self._collapse:
                tags += f"\n+{len(r.similar)} near-duplicate{'s' if len(r.similar) != 1 else ''} of this photo"
            return f"{shown(r.path)}\n{verdict} {r.strength:.0%}   {size}   {date}".rstrip() + tags
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
        result = index.data(ResultRole)
        weak = isinstance(result, SearchResult) and result.weak
        if weak:
            painter.setOpacity(0.45)  # weaker matches: there, but clearly not the answer
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
        if isinstance(result, SearchResult) and result.tags and self.size >= 96:
            self._chips(painter, option, box, result.tags[: self.CHIPS])
        if isinstance(result, SearchResult):
            model = index.model()
            grouped = result.similar and isinstance(model, ResultsModel) and model.collapsed
            more = f"  +{len(result.similar)}" if grouped else ""
            self._strength(painter, option, box, f"{result.strength:.0%}{more}")
        painter.setOpacity(1.0)
        model = index.model()
        if weak and isinstance(model, ResultsModel) and model.first_weak_row() == index.row():
            self._divider(painter, option, rect)
        painter.restore()

    @staticmethod
    def _divider(painter: QPainter, option: QStyleOptionViewItem, rect: QRect) -> None:
        """Where the matches end: a bar before the first weaker match, and its caption."""
        painter.setPen(QPen(option.palette.color(QPalette.ColorRole.Highlight), 3))
        painter.drawLine(rect.left() - 1, rect.top(), rect.left() - 1, rect.bottom())
        font = QFont(option.font)
        font.setPointSizeF(max(font.pointSizeF() * 0.8, 6.0))
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(option.palette.color(QPalette.ColorRole.Text))
        painter.drawText(rect.adjusted(6, 2, 0, 0), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop, "Weaker ›")

    @staticmethod
    def _strength(painter: QPainter, option: QStyleOptionViewItem, box: QRect, text: str) -> None:
        """The calibrated match strength (and "+N" near-duplicates) as a badge in the top right corner."""
        font = QFont(option.font)
        font.setPointSizeF(max(font.pointSizeF() * 0.75, 6.0))
        painter.setFont(font)
        metrics = QFontMetrics(font)
        badge = QRect(0, 0, metrics.horizontalAdvance(text) + 8, metrics.height() + 2)
        badge.moveTopRight(box.topRight() + QPoint(-3, 3))
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(0, 0, 0, 150))
        painter.drawRoundedRect(badge, badge.height() / 2, badge.height() / 2)
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, text)

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
