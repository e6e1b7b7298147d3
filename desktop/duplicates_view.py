"""The duplicates window: groups of copies and near-duplicates, the one to keep suggested.

Finding runs on the window's I/O runner (it reads every stored vector); the similarity
slider asks again, latest wins. Each group lists its photos with a thumbnail; every
photo but the suggested one is ticked, and the user can change the ticks. Nothing is
touched until "Move ticked to trash…" and a yes in the confirmation that follows; the
files go to the system's trash, where they can be restored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSlider,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.images import load_image
from desktop.workers import TaskRunner
from indexer.search.duplicates import DuplicateFinder, DuplicateGroup, Member, TrashReport
from store.filenames import shown

MemberRole = Qt.ItemDataRole.UserRole + 1
ICON = 64


def _thumbnail(m: Member) -> QImage | None:
    try:
        return load_image(m.path, ICON)
    except (OSError, ValueError):  # gone or unreadable since it was indexed: listed without a picture
        return None


def _describe(m: Member) -> str:
    dims = f"{m.width}×{m.height}" if m.width and m.height else ""
    date = m.when.strftime("%Y-%m-%d") if m.when else ""
    return "   ".join(p for p in (dims, f"{m.size / 1e6:.1f} MB", date) if p)


class DuplicatesDialog(QDialog):
    groups_shown = Signal(list)  # list[DuplicateGroup], after the tree was filled
    trashed = Signal(object)  # TrashReport

    def __init__(
        self,
        finder: DuplicateFinder,
        runner: TaskRunner,
        thumbnail: Callable[[Member], QImage | None] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Duplicates")
        self.resize(1000, 640)
        self.finder = finder
        self.runner = runner
        self.thumbnail = thumbnail or _thumbnail  # runs on the runner's thread
        self.groups: list[DuplicateGroup] = []
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(80, 100)  # percent
        self.slider.setValue(round(finder.similarity * 100))
        self.slider.setToolTip("How alike two photos must be. Lower finds looser near-duplicates.")
        self.slider_label = QLabel()
        self._debounce = QTimer(self, singleShot=True, interval=250)
        self._debounce.timeout.connect(self.refresh)
        self.slider.valueChanged.connect(self._similarity_moved)
        self.summary = QLabel("Looking for duplicates…")
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Photo", "Folder", "Size and date", ""])
        self.tree.setIconSize(self.tree.iconSize().expandedTo(QPixmap(ICON, ICON).size()))
        self.tree.setColumnWidth(0, 330)
        self.tree.setColumnWidth(1, 300)
        self.tree.setColumnWidth(2, 190)
        self.trash_btn = QPushButton("Move ticked to trash…")
        self.trash_btn.setEnabled(False)
        self.trash_btn.clicked.connect(self.confirm_trash)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.addButton(self.trash_btn, QDialogButtonBox.ButtonRole.ActionRole)
        top = QHBoxLayout()
        top.addWidget(QLabel("Similarity"))
        top.addWidget(self.slider, 1)
        top.addWidget(self.slider_label)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addWidget(self.tree, 1)
        layout.addWidget(buttons)
        self._similarity_moved(self.slider.value(), refresh=False)

    @property
    def similarity(self) -> float:
        return self.slider.value() / 100

    def _similarity_moved(self, value: int, refresh: bool = True) -> None:
        self.slider_label.setText(f"{value}%")
        if refresh:
            self._debounce.start()

    def refresh(self) -> None:
        similarity, finder, thumbnail = self.similarity, self.finder, self.thumbnail

        def find() -> tuple[list[DuplicateGroup], dict[int, QImage | None]]:
            groups = finder.find(similarity)  # off the GUI thread, with the thumbnails it shows
            return groups, {m.image_id: thumbnail(m) for g in groups for m in g.members}

        self.summary.setText("Looking for duplicates…")
        self.runner.submit(find, on_result=self._show, on_error=self._failed, latest_key="duplicates")

    def _failed(self, exc: BaseException) -> None:
        self.summary.setText(f"Could not look for duplicates: {getattr(exc, 'message', exc)}")

    def _show(self, found: tuple[list[DuplicateGroup], dict[int, QImage | None]]) -> None:
        groups, images = found
        self.groups = groups
        self.tree.clear()
        for n, group in enumerate(groups, 1):
            kind = "exact copies" if group.exact else f"near-duplicates, {group.similarity:.1%} alike"
            head = QTreeWidgetItem([f"Group {n}: {len(group.members)} photos, {kind}"])
            self.tree.addTopLevelItem(head)
            head.setFirstColumnSpanned(True)
            for i, m in enumerate(group.members):
                path = Path(m.path)
                keep = f"keep: {m.why_keep}" if i == 0 else ""
                item = QTreeWidgetItem([shown(path.name), shown(str(path.parent)), _describe(m), keep])
                item.setToolTip(0, shown(m.path))
                item.setToolTip(1, shown(m.path))
                item.setData(0, MemberRole, m)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(0, Qt.CheckState.Unchecked if i == 0 else Qt.CheckState.Checked)
                image = images.get(m.image_id)
                if image is not None and not image.isNull():
                    item.setIcon(0, QIcon(QPixmap.fromImage(image)))
                head.addChild(item)
            head.setExpanded(True)
        extra = sum(len(g.extra) for g in groups)
        if groups:
            self.summary.setText(
                f"{len(groups)} group{'s' if len(groups) != 1 else ''}, {extra} photo{'s' if extra != 1 else ''} "
                "beside the suggested ones (ticked). Nothing is moved until you confirm."
            )
        else:
            self.summary.setText(f"No duplicates at {self.similarity:.0%} similarity.")
        self.trash_btn.setEnabled(bool(groups))
        self.groups_shown.emit(groups)

    def ticked(self) -> list[Member]:
        out = []
        for g in range(self.tree.topLevelItemCount()):
            head = self.tree.topLevelItem(g)
            if head is None:
                continue
            for c in range(head.childCount()):
                item = head.child(c)
                if item is not None and item.checkState(0) == Qt.CheckState.Checked:
                    out.append(item.data(0, MemberRole))
        return out

    def confirm_trash(self) -> None:
        members = self.ticked()
        if not members:
            return
        answer = QMessageBox.question(
            self,
            "Move to trash",
            f"Move {len(members)} photo{'s' if len(members) != 1 else ''} to the trash? "
            "They can be restored from there.",
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.move_to_trash(members)

    def move_to_trash(self, members: list[Member]) -> None:
        """Move ``members`` to the trash (the user confirmed), then look again."""
        finder = self.finder
        self.trash_btn.setEnabled(False)

        def done(report: TrashReport) -> None:
            failed = "".join(f"\n{shown(p)}: {r}" for p, r in report.failed)
            self.summary.setText(f"Moved {len(report.moved)} to the trash.{' Not moved:' + failed if failed else ''}")
            self.trashed.emit(report)
            self.refresh()

        self.runner.submit(lambda: finder.trash(members), on_result=done, on_error=self._failed)
