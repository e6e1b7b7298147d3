"""Settings: the library's model, device, threads, segmentation model, and where the library lives.

Saved to the library's settings file, except the model: the library records its own,
and choosing another one here starts a switch in the background (the window does
that after the dialog closes, loading the new model first so that a failure changes
nothing). The dialog shows the model actually in use, and only devices that exist.
"""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QWidget,
)

from indexer.live.switch import SwitchState
from indexer.models.choice import ModelChoice
from indexer.models.measured import measured_rate
from indexer.models.presets import PRESETS
from indexer.segment.sam import SEGMENTERS
from indexer.settings import Settings
from store.paths import HOME_ENV, AppPaths

DEVICES = ("auto", "cpu", "cuda", "mps")


class SettingsDialog(QDialog):
    def __init__(
        self,
        settings: Settings,
        paths: AppPaths,
        photos: int,
        switch: SwitchState,
        devices: list[str],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Glimpse settings")
        self.settings = settings
        self.paths = paths
        self.current = switch.active or ModelChoice("?")
        self.switch_to: ModelChoice | None = None  # set on Save when another model was chosen
        self.model = QComboBox()
        for preset in PRESETS.values():
            self.model.addItem(f"{preset.name} — {preset.summary}", preset.name)
        if self.current.name not in PRESETS:
            self.model.addItem(self.current.display, self.current.name)
        self.model.setCurrentIndex(max(0, self.model.findData(self.current.name)))
        self.in_use = QLabel(wordWrap=True)
        note = f"In use: <b>{self.current.display}</b>."
        if switch.target is not None:
            note += (
                f" Switching to <b>{switch.target.display}</b>: {switch.done} of {switch.total} photos "
                "embedded; search uses the current model until it is done."
            )
        self.in_use.setText(note)
        self.cost = QLabel(wordWrap=True)
        self._photos = photos
        self.model.currentIndexChanged.connect(self._explain_cost)
        self.device = QComboBox()
        self.device.addItems(devices)  # only devices this machine has
        self.device.setCurrentText(settings.device if settings.device in devices else "auto")
        self.threads = QSpinBox()
        self.threads.setRange(0, 256)
        self.threads.setSpecialValueText("automatic")
        self.threads.setValue(settings.threads or 0)
        self.segmenter = QComboBox()
        for spec in SEGMENTERS.values():
            on_disk = (paths.models_dir / spec.filename).is_file()
            note = "on this machine" if on_disk else f"downloads {spec.size_bytes / 1e6:.0f} MB on first use"
            self.segmenter.addItem(f"{spec.name} ({note})", spec.name)
        self.segmenter.setCurrentIndex(max(0, self.segmenter.findData(settings.segmenter)))
        self.segment_cache = QCheckBox("Keep image encodings on disk (about 2 MB per segmented photo)")
        self.segment_cache.setChecked(settings.segment_disk_cache)
        self.regions = QCheckBox("Index regions of photos so small objects are found (indexing takes ~4× as long)")
        self.regions.setChecked(settings.regions)
        where = QLabel(
            f"{paths.data_dir}<br><small>Thumbnails: {paths.cache_dir}. "
            f"Set {HOME_ENV} before starting Glimpse to keep the library elsewhere.</small>",
            wordWrap=True,
        )
        form = QFormLayout(self)
        form.addRow("Model", self.model)
        form.addRow("", self.in_use)
        form.addRow("", self.cost)
        form.addRow("Device", self.device)
        form.addRow("CPU threads", self.threads)
        form.addRow("Object selection", self.segmenter)
        form.addRow("", self.segment_cache)
        form.addRow("Region index", self.regions)
        form.addRow("Library", where)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self._explain_cost()

    def _explain_cost(self) -> None:
        chosen = self.model.currentData()
        if chosen == self.current.name:
            self.cost.setText("")
            self.adjustSize()
            return
        # A new embedding space: every photo is embedded again, in the background. The time is
        # only estimated from a speed measured on this machine; never from a figure taken elsewhere.
        measured = measured_rate(self.paths.models_dir, chosen)
        if measured is not None:
            minutes = self._photos / measured[0] / 60
            how_long = f"about {max(1, round(minutes))} min here at the {measured[0]:.0f} photos/s measured before"
        else:
            how_long = "its speed on this machine is not measured yet"
        self.cost.setText(
            f"Switching embeds all {self._photos} photos again with {chosen} ({how_long}; the first use "
            "downloads its weights). It runs in the background and search keeps working with the current "
            "model until it is done."
        )
        self.adjustSize()  # the explanation wraps onto several lines: make room for it

    def accept(self) -> None:
        chosen = self.model.currentData()
        self.switch_to = None if chosen == self.current.name else ModelChoice(chosen)
        self.settings.device = self.device.currentText()
        self.settings.threads = self.threads.value() or None
        self.settings.segmenter = self.segmenter.currentData()
        self.settings.segment_disk_cache = self.segment_cache.isChecked()
        self.settings.regions = self.regions.isChecked()
        self.settings.save(self.paths.settings_file)
        super().accept()
