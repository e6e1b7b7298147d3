"""The Tags dock: every tag with its photo count, grouped; click one to filter the grid.

The panel only shows data and emits what the user asked for; the main window does
the work on its worker threads (a vocabulary edit re-tags the library), then hands
the panel fresh rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLineEdit,
    QMenu,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

NameRole = Qt.ItemDataRole.UserRole + 1


@dataclass(frozen=True)
class TagRow:
    name: str
    group: str
    kind: str
    enabled: bool
    photos: int
    prompts: tuple[str, ...]


class TagsPanel(QWidget):
    tag_activated = Signal(str)  # filter the grid by this tag
    new_tag_requested = Signal()
    rename_requested = Signal(str)
    prompts_requested = Signal(str)
    enable_requested = Signal(str, bool)
    delete_requested = Signal(str)
    export_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.filter = QLineEdit(placeholderText="Filter tags", clearButtonEnabled=True)
        self.filter.textChanged.connect(self._apply_filter)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Tag", "Photos"])
        self.tree.setRootIsDecorated(True)
        self.tree.setUniformRowHeights(True)
        self.tree.itemActivated.connect(self._activated)
        self.tree.itemClicked.connect(self._activated)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._menu)
        self.hide_empty = QPushButton("Hide empty")
        self.hide_empty.setCheckable(True)
        self.hide_empty.setChecked(True)
        self.hide_empty.toggled.connect(lambda _on: self._apply_filter())
        new = QPushButton("New tag…")
        new.clicked.connect(self.new_tag_requested.emit)
        export = QPushButton("Export…")
        export.setToolTip("Write every photo's tags to XMP sidecars for digiKam, Lightroom, darktable")
        export.clicked.connect(self.export_requested.emit)
        buttons = QHBoxLayout()
        buttons.addWidget(new)
        buttons.addWidget(export)
        buttons.addWidget(self.hide_empty)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.filter)
        layout.addWidget(self.tree, 1)
        layout.addLayout(buttons)
        self._rows: list[TagRow] = []

    def set_tags(self, rows: list[TagRow]) -> None:
        """Replace the tree's content, keeping which groups were open."""
        expanded = {g.text(0) for g in self._groups() if g.isExpanded()}
        self._rows = rows
        self.tree.clear()
        groups: dict[str, QTreeWidgetItem] = {}
        for row in sorted(rows, key=lambda r: (r.group, -r.photos, r.name)):
            parent = groups.get(row.group)
            if parent is None:
                parent = groups[row.group] = QTreeWidgetItem(self.tree, [row.group, ""])
                parent.setFlags(Qt.ItemFlag.ItemIsEnabled)
            label = row.name if row.enabled else f"{row.name} (off)"
            item = QTreeWidgetItem(parent, [label, str(row.photos)])
            item.setData(0, NameRole, row.name)
            item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight)
            tip = "by hand only" if row.kind == "manual" else "taught by example" if row.kind == "example" else ""
            item.setToolTip(0, tip or "matches: " + ", ".join(row.prompts or (row.name,)))
        for group, item in groups.items():
            item.setText(1, str(sum(r.photos for r in rows if r.group == group)))
            item.setExpanded(group in expanded or not expanded)
        self.tree.resizeColumnToContents(1)
        self._apply_filter()

    def _apply_filter(self) -> None:
        needle = self.filter.text().strip().lower()
        for group in self._groups():
            visible = 0
            for j in range(group.childCount()):
                child = group.child(j)
                if child is None:
                    continue
                name = str(child.data(0, NameRole))
                show = needle in name.lower() and not (self.hide_empty.isChecked() and child.text(1) == "0")
                child.setHidden(not show)
                visible += show
            group.setHidden(visible == 0)

    def _groups(self) -> list[QTreeWidgetItem]:
        items = (self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount()))
        return [item for item in items if item is not None]

    def names(self) -> list[str]:
        return sorted(r.name for r in self._rows)

    def row(self, name: str) -> TagRow | None:
        return next((r for r in self._rows if r.name == name), None)

    def _activated(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        name = item.data(0, NameRole)
        if name:
            self.tag_activated.emit(str(name))

    def _menu(self, pos: QPoint) -> None:
        item = self.tree.itemAt(pos)
        name = item.data(0, NameRole) if item is not None else None
        if not name:
            return
        row = self.row(str(name))
        menu = QMenu(self)
        menu.addAction("Show photos", lambda: self.tag_activated.emit(name))
        menu.addAction("Rename…", lambda: self.rename_requested.emit(name))
        if row is not None and row.kind != "example":
            menu.addAction("Edit prompts…", lambda: self.prompts_requested.emit(name))
        enabled = row is None or row.enabled
        menu.addAction("Turn off" if enabled else "Turn on", lambda: self.enable_requested.emit(name, not enabled))
        menu.addAction("Delete", lambda: self.delete_requested.emit(name))
        menu.exec(self.tree.viewport().mapToGlobal(pos))
