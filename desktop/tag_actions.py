"""What the user can do with tags in the window: filter, edit the vocabulary, tag a selection, teach.

Every action runs on the model thread (a vocabulary edit may embed new prompts, and
re-tags the library from its stored vectors), then refreshes the Tags panel and the
current search, so the grid's chips and the panel's counts stay true.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QInputDialog, QLineEdit, QMessageBox, QWidget

from desktop.tags_panel import TagRow, TagsPanel
from indexer.search.query import QueryError, parse_query
from indexer.tags.export import export_sidecars

if TYPE_CHECKING:
    from desktop.workers import TaskRunner
    from indexer.composition import Services


class TagHost(Protocol):
    """What tag actions need from the window, and nothing more."""

    model_runner: TaskRunner  # vocabulary edits may embed prompts: the model thread
    io_runner: TaskRunner

    def current_query(self) -> str: ...

    def run_search(self, text: str | None = None) -> None: ...

    def show_error(self, exc: BaseException) -> None: ...

    def report(self, message: str) -> None: ...


log = logging.getLogger(__name__)


def toggle_tag_filter(query: str, tag: str) -> str:
    """Add ``tag:"name"`` to a query, or take it out if it is there (the query language is shared)."""
    token = f'tag:"{tag}"' if " " in tag else f"tag:{tag}"
    try:
        present = tag.lower() in (t.lower() for t in parse_query(query).tags)
    except QueryError:
        present = False
    if present:
        return " ".join(query.replace(token, " ").split())
    return f"{query} {token}".strip()


class TagActions(QObject):
    tags_refreshed = Signal(list)  # list[TagRow]
    action_done = Signal(str)  # a short report of what was done

    def __init__(self, services: Services, host: TagHost, panel: TagsPanel, parent: QWidget) -> None:
        super().__init__(parent)
        self.host = host
        self.parent_widget = parent
        self.panel = panel
        self.services = services
        panel.tag_activated.connect(self.filter_by)
        panel.new_tag_requested.connect(self.new_tag)
        panel.rename_requested.connect(self.rename)
        panel.prompts_requested.connect(self.edit_prompts)
        panel.enable_requested.connect(self.set_enabled)
        panel.delete_requested.connect(self.delete)
        panel.export_requested.connect(self.export_xmp)

    # ---- reading ------------------------------------------------------------------------------

    def refresh(self) -> None:
        tags = self.services.tags

        def read() -> list[TagRow]:
            counts = tags.counts()
            return [TagRow(t.name, t.group, t.kind, t.enabled, counts.get(t.id, 0), t.prompts) for t in tags.tags()]

        self.host.io_runner.submit(read, on_result=self._show, on_error=self.host.show_error)

    def _show(self, rows: list[TagRow]) -> None:
        self.panel.set_tags(rows)
        self.tags_refreshed.emit(rows)

    def filter_by(self, tag: str) -> None:
        self.host.run_search(toggle_tag_filter(self.host.current_query(), tag))

    # ---- changing -----------------------------------------------------------------------------

    def _run(self, work: Callable[[], Any], done: Callable[[Any], str]) -> None:
        """Run ``work`` on the model thread; then report, refresh the panel and the results."""

        def finished(value: Any) -> None:
            message = done(value)
            self.host.report(message)
            self.refresh()
            if self.host.current_query().strip():
                self.host.run_search()
            self.action_done.emit(message)

        self.host.model_runner.submit(work, on_result=finished, on_error=self.host.show_error)

    def new_tag(self) -> None:
        name, ok = QInputDialog.getText(self.parent_widget, "New tag", "Tag name:")
        if not ok or not name.strip():
            return
        prompts, ok = QInputDialog.getText(
            self.parent_widget,
            "New tag",
            f'Phrases that describe "{name.strip()}", separated by commas\n(leave empty to use the name):',
        )
        if ok:
            self.create(name.strip(), [p.strip() for p in prompts.split(",") if p.strip()])

    def create(self, name: str, prompts: list[str]) -> None:
        editor, tagger = self.services.tag_editor, self.services.tagger

        def work() -> int:
            editor.add_tag(name, prompts)
            return tagger.retag().assigned

        self._run(work, lambda _n: f'Added tag "{name}"; the library was re-tagged.')

    def rename(self, name: str) -> None:
        new, ok = QInputDialog.getText(
            self.parent_widget, "Rename tag", f'New name for "{name}":', QLineEdit.EchoMode.Normal, name
        )
        if ok and new.strip() and new.strip() != name:
            editor = self.services.tag_editor
            self._run(lambda: editor.rename(name, new.strip()), lambda _t: f'Renamed "{name}" to "{new.strip()}".')

    def edit_prompts(self, name: str) -> None:
        row = self.panel.row(name)
        current = ", ".join(row.prompts) if row is not None else ""
        text, ok = QInputDialog.getText(
            self.parent_widget, "Edit prompts", f'Phrases that describe "{name}" (commas between):', text=current
        )
        if not ok:
            return
        prompts = [p.strip() for p in text.split(",") if p.strip()]
        editor, tagger = self.services.tag_editor, self.services.tagger

        def work() -> None:
            editor.edit(name, prompts=prompts or [name])
            tagger.retag()

        self._run(work, lambda _r: f'Updated "{name}"; the library was re-tagged.')

    def set_enabled(self, name: str, enabled: bool) -> None:
        editor, tagger = self.services.tag_editor, self.services.tagger

        def work() -> None:
            editor.edit(name, enabled=enabled)
            tagger.retag()

        self._run(work, lambda _r: f'Turned "{name}" {"on" if enabled else "off"}.')

    def delete(self, name: str) -> None:
        answer = QMessageBox.question(
            self.parent_widget, "Delete tag", f'Delete "{name}" and take it off every photo? Photos are not touched.'
        )
        if answer == QMessageBox.StandardButton.Yes:
            editor = self.services.tag_editor
            self._run(lambda: editor.delete(name), lambda _r: f'Deleted tag "{name}".')

    # ---- the selection ------------------------------------------------------------------------

    def add_to(self, image_ids: list[int], name: str | None = None) -> None:
        if name is None:
            name, ok = QInputDialog.getItem(
                self.parent_widget, "Add tag", f"Tag for {len(image_ids)} photo(s):", self.panel.names(), 0, True
            )
            if not ok or not name.strip():
                return
        editor, tag = self.services.tag_editor, name.strip()
        self._run(lambda: editor.tag_photos(tag, image_ids, True), lambda _t: f'Tagged {len(image_ids)} "{tag}".')

    def remove_from(self, image_ids: list[int], on_photos: list[str], name: str | None = None) -> None:
        if name is None:
            if not on_photos:
                QMessageBox.information(self.parent_widget, "Remove tag", "The selected photos have no tags.")
                return
            name, ok = QInputDialog.getItem(
                self.parent_widget, "Remove tag", f"Take off {len(image_ids)} photo(s):", on_photos, 0, False
            )
            if not ok:
                return
        editor, tag = self.services.tag_editor, name
        self._run(
            lambda: editor.tag_photos(tag, image_ids, False), lambda _t: f'Took "{tag}" off {len(image_ids)} photos.'
        )

    def export_xmp(self, image_ids: list[int] | None = None) -> None:
        """Write tags to XMP sidecars beside the photos (the photos themselves are not touched)."""
        tags, store = self.services.tags, self.services.store
        scope = f"{len(image_ids)} selected photos" if image_ids is not None else "every photo in the library"
        answer = QMessageBox.question(
            self.parent_widget,
            "Write XMP sidecars",
            f"Write the tags of {scope} to XMP sidecar files beside them (photo.jpg.xmp), for digiKam, "
            "Lightroom and darktable? Photos are not modified; existing sidecars keep their other data.",
        )
        if answer != QMessageBox.StandardButton.Yes:
            return

        def work() -> Any:
            ids = image_ids if image_ids is not None else tags.image_ids().tolist()
            return export_sidecars(tags, store, ids)

        def done(report: Any) -> None:
            message = f"Wrote {len(report.written)} XMP sidecars."
            if report.failures:
                message += f" {len(report.failures)} could not be written (first: {report.failures[0][1]})."
            self.host.report(message)
            self.action_done.emit(message)

        self.host.io_runner.submit(work, on_result=done, on_error=self.host.show_error)

    def teach(self, image_ids: list[int], name: str | None = None) -> None:
        if name is None:
            name, ok = QInputDialog.getText(
                self.parent_widget,
                "Teach a tag",
                f"Name of what the {len(image_ids)} selected photos show\n"
                "(Glimpse learns it from them and finds it in the whole library):",
            )
            if not ok or not name.strip():
                return
        editor, tag = self.services.tag_editor, name.strip()

        def done(report: Any) -> str:
            if report.precision is not None:
                estimate = f"estimated precision {report.precision:.0%} on held-out labelled photos"
            elif report.recall is not None:
                estimate = "precision unknown until some photos are marked as not showing it"
            else:
                estimate = "mark three or more photos for an estimate"
            return f'Taught "{report.tag}" from {report.positives} photos: {report.tagged} tagged, {estimate}.'

        self._run(lambda: editor.teach(tag, image_ids), done)
