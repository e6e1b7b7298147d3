"""GUI responsiveness: the longest event-loop stall while indexing and typing, and Enter-to-painted-results.

    QT_QPA_PLATFORM=offscreen python bench/gui_bench.py [--photos 1000] [--library 100000]

0. Launch: from process start to the window on screen (target < 2 s); the model loads after.
1. Stall: the real main window indexes ``--photos`` toy-world photos through the library
   service while queries are typed into the search field every 250 ms; a 5 ms timer on the
   GUI thread records the longest gap between its ticks (target < 100 ms).
2. First paint: a library of ``--library`` photos (rows and vectors written straight into
   the store; vectors random, which does not change search cost) is searched by pressing
   Enter; we time until the results grid has painted its first frame of results
   (target < 200 ms).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication

from desktop.main_window import MainWindow
from indexer.composition import build_services
from indexer.models.choice import ModelChoice
from indexer.settings import Settings
from indexer.toyworld.world import write_sample_folder
from store.paths import AppPaths
from store.records import EmbeddedImage, NewFile, ScanChanges


class StallMeter(QObject):
    def __init__(self, interval_ms: int = 5) -> None:
        super().__init__()
        self.interval = interval_ms / 1000
        self.worst = 0.0
        self._last = time.perf_counter()
        self.timer = QTimer(self, interval=interval_ms)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.worst = max(self.worst, now - self._last - self.interval)
        self._last = now


class PaintWatcher(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.painted_at: float | None = None
        self.armed = False

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if self.armed and event.type() == QEvent.Type.Paint and self.painted_at is None:
            self.painted_at = time.perf_counter()
        return False


def run_until(app: QApplication, done, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError
        app.processEvents()
        time.sleep(0.001)


def bench_stall(app: QApplication, work: Path, photos: int) -> dict[str, float]:
    paths = AppPaths.from_env({"GLIMPSE_HOME": str(work / "stall")})
    services = build_services(paths, Settings(), ModelChoice("toyworld"))
    win = MainWindow(services)
    win.show()
    win.start()
    run_until(app, lambda: win._ready, 120)
    folder = work / "stall-photos"
    total = len(write_sample_folder(folder, per_spec=max(1, photos // 36), size=(640, 480)))
    meter = StallMeter()
    queries = iter(["a red circle", "a blue star", '"a heart" - "green"', "something yellow"] * 1000)
    typing = QTimer(interval=250)
    typing.timeout.connect(lambda: (win.search_field.setText(next(queries)), win.search_field.textEdited.emit("")))
    typing.start()
    started = time.perf_counter()
    win.add_folder(str(folder))
    run_until(app, lambda: services.store.status_counts()["indexed"] >= total, 600)
    elapsed = time.perf_counter() - started
    typing.stop()
    meter.timer.stop()
    win.shutdown()
    services.close()
    return {"photos": total, "indexing_s": round(elapsed, 1), "longest_stall_ms": round(meter.worst * 1000, 1)}


def bench_first_paint(app: QApplication, work: Path, library: int) -> dict[str, float]:
    paths = AppPaths.from_env({"GLIMPSE_HOME": str(work / "paint")})
    services = build_services(paths, Settings(), ModelChoice("toyworld"))
    store = services.store
    services.pipeline.vectors()  # load the model, register it
    record = services.embedder.record
    model_id = store.register_model(record)
    sample = write_sample_folder(work / "paint-photos", per_spec=1, size=(320, 240))
    folder = store.add_folder(str(work / "paint-photos"))
    store.apply_scan(
        ScanChanges(
            new=[
                NewFile(str(sample[i % len(sample)][0]).replace(".jpg", f"-{i}.jpg"), folder.id, 1, 1, None)
                for i in range(library)
            ]
        )
    )
    rng = np.random.default_rng(0)
    ids = [s.id for s in store.files_under(str(work / "paint-photos")).values()]
    for start in range(0, len(ids), 20000):
        chunk = ids[start : start + 20000]
        vecs = rng.normal(size=(len(chunk), record.dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        store.save_batch(
            model_id,
            [
                EmbeddedImage(i, v.astype("<f2").tobytes(), 320, 240, None, None, None, None, None)
                for i, v in zip(chunk, vecs, strict=True)
            ],
            [],
        )
    win = MainWindow(services)
    win.show()
    win.start()
    run_until(app, lambda: win._ready, 300)
    watcher = PaintWatcher()
    win.grid.viewport().installEventFilter(watcher)
    times = []
    for query in ("a red circle", "a blue star", "something green", "a heart", "a yellow cross"):
        shown: list[float] = []
        win.results_shown.connect(lambda _r, s=shown: s.append(time.perf_counter()))
        watcher.painted_at = None
        watcher.armed = False
        win.search_field.setText(query)
        start = time.perf_counter()
        win.run_search()
        run_until(app, lambda s=shown: bool(s), 30)
        watcher.armed = True
        run_until(app, lambda: watcher.painted_at is not None, 30)
        times.append((watcher.painted_at or start) - start)
        win.results_shown.disconnect()
    win.shutdown()
    services.close()
    return {
        "library": library,
        "enter_to_painted_ms_median": round(float(np.median(times)) * 1000, 1),
        "enter_to_painted_ms_worst": round(max(times) * 1000, 1),
    }


LAUNCH = """
import sys, time
t0 = time.perf_counter()
from PySide6.QtWidgets import QApplication
from desktop.main_window import MainWindow
from indexer.composition import build_services
from indexer.settings import Settings
from indexer.models.choice import ModelChoice
from store.paths import AppPaths
app = QApplication(sys.argv[:1])
win = MainWindow(build_services(AppPaths.from_env(), Settings(), ModelChoice("toyworld")))
win.show()
app.processEvents()
print(time.perf_counter() - t0)
win.services.close()
"""


def bench_launch(work: Path) -> dict[str, float]:
    """Process start to a shown window (the model loads afterwards, in the background)."""
    import os
    import subprocess

    env = dict(os.environ, GLIMPSE_HOME=str(work / "launch"))
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", LAUNCH], env=env, capture_output=True, text=True, check=True)
        runs.append((time.perf_counter() - start, float(out.stdout.strip().splitlines()[-1])))
    best = min(runs)
    return {"process_start_to_window_s": round(best[0], 2), "of_which_imports_and_window_s": round(best[1], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--library", type=int, default=100_000)
    args = parser.parse_args()
    app = QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out = {
            "launch": bench_launch(work),
            "stall": bench_stall(app, work, args.photos),
            "first_paint": bench_first_paint(app, work, args.library),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
