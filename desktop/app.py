"""Starting the desktop app: one QApplication, the services from the composition root, the window."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from PySide6.QtWidgets import QApplication, QMessageBox

from desktop.main_window import MainWindow
from indexer.composition import build_services
from indexer.errors import GlimpseError
from indexer.models.choice import requested_model_from_env
from indexer.settings import Settings
from store.paths import AppPaths

log = logging.getLogger(__name__)


def run_app(args: Sequence[str] = ()) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    app = QApplication.instance() or QApplication([sys.argv[0], *args])
    app.setApplicationName("Glimpse")
    # Fusion follows the system's light or dark colour scheme on every platform, and scales
    # with the screen's device pixel ratio (Qt 6 is high-DPI aware by default).
    QApplication.setStyle("Fusion")
    app.setOrganizationName("Glimpse")
    paths = AppPaths.from_env()
    try:
        requested, requested_by = requested_model_from_env()
        services = build_services(paths, Settings.load(paths.settings_file), requested, requested_by)
    except GlimpseError as exc:
        QMessageBox.critical(None, exc.title, exc.message)
        return exc.exit_code
    window = MainWindow(services)
    window.show()  # before any model work: the window appears at once
    window.start()
    try:
        return int(app.exec())
    finally:
        window.shutdown()
        services.close()
