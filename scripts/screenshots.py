"""Take the README's screenshots of the real app: run under a display (Xvfb on a server).

    xvfb-run -s "-screen 0 1400x900x24" .venv/bin/python scripts/screenshots.py

Indexes a generated toy-world library with the bundled model in a temporary home (with a few
edited copies of its photos), searches it, and saves docs/main-window.png, docs/weaker.png
(weaker matches shown below the matches) and docs/viewer.png grabbed from the screen, and
the Settings and Duplicates windows as docs/settings.png and docs/duplicates.png.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="glimpse-shots-"))
    os.environ["GLIMPSE_HOME"] = str(home / "home")
    from PIL import Image, ImageEnhance

    from desktop.main_window import MainWindow
    from indexer.composition import build_services
    from indexer.models.choice import ModelChoice
    from indexer.settings import Settings
    from indexer.toyworld.world import write_sample_folder
    from store.paths import AppPaths

    photos = home / "Photos"
    written = write_sample_folder(photos, per_spec=3, size=(480, 360))
    copies = photos / "copies"
    copies.mkdir()
    for path, _spec in written[:3]:  # a resized and a brightened copy of three photos
        img = Image.open(path)
        img.resize((240, 180)).save(copies / f"{path.stem}-small.jpg", quality=80)
        ImageEnhance.Brightness(img).enhance(1.2).save(copies / f"{path.stem} (2).jpg", quality=90)
    total = len(written) + 6
    app = QApplication(sys.argv)
    app.setStyle("Fusion")  # as desktop.app.run_app does
    services = build_services(AppPaths.from_env(), Settings(), ModelChoice("toyworld"))
    win = MainWindow(services)
    win.resize(1360, 860)
    win.move(20, 20)
    win.show()
    win.start()
    win.add_folder(str(photos))
    DOCS.mkdir(exist_ok=True)

    def grab(name: str) -> None:
        app.processEvents()  # paint what changed just before (a cleared status message)
        app.primaryScreen().grabWindow(0).save(str(DOCS / name))
        print("saved", DOCS / name)

    def wait_indexed() -> None:
        if services.store.status_counts()["indexed"] < total or not services.library.wait_idle(0.01):
            QTimer.singleShot(300, wait_indexed)
            return
        win.refresh_folders()
        win.tag_actions.refresh()
        win.search_field.setText("a star tag:blue")
        win.run_search()
        QTimer.singleShot(2500, shot_main)

    def shot_main() -> None:
        win.statusBar().clearMessage()  # "Added /tmp/…" from setting up: show the state instead
        grab("main-window.png")
        win.show_weak.setChecked(True)
        win.search_field.setText("a red circle")
        win.run_search()
        QTimer.singleShot(2500, shot_weaker)

    def shot_weaker() -> None:
        grab("weaker.png")
        win.show_weak.setChecked(False)
        win.search_field.setText("a star tag:blue")
        win.run_search()
        QTimer.singleShot(1500, open_viewer)

    def open_viewer() -> None:
        win.open_viewer(0)
        if win._viewer is not None:
            win._viewer.move(120, 60)
        QTimer.singleShot(2000, shot_viewer)

    def shot_viewer() -> None:
        grab("viewer.png")
        if win._viewer is not None:
            win._viewer.close()
        win.open_settings()  # opens once its data is read off the GUI thread
        QTimer.singleShot(2000, shot_settings)

    def shot_settings() -> None:
        app.processEvents()
        win.settings_dialog.grab().save(str(DOCS / "settings.png"))
        print("saved", DOCS / "settings.png")
        win.settings_dialog.reject()
        win.open_duplicates()
        QTimer.singleShot(3000, shot_duplicates)

    def shot_duplicates() -> None:
        app.processEvents()
        win.duplicates_dialog.grab().save(str(DOCS / "duplicates.png"))
        print("saved", DOCS / "duplicates.png")
        win.duplicates_dialog.reject()
        win.close()
        app.quit()

    QTimer.singleShot(500, wait_indexed)
    rc = app.exec()
    services.close()
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())
