"""Segment mode in the viewer, offscreen: clicks at known photo points, with zoom, pan and EXIF rotation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QImage

from desktop.viewer import Viewer
from desktop.workers import TaskRunner
from indexer.composition import build_services
from indexer.models.choice import ModelChoice
from indexer.search.service import SearchResult
from indexer.settings import Settings
from indexer.toyworld.world import ShapeSpec
from store.paths import AppPaths
from tests.fakes import FloodFillSegmenter
from tests.unit.test_objects import two_shape_scene


@pytest.fixture
def viewer(qtbot, paths: AppPaths, tmp_path: Path):  # type: ignore[no-untyped-def]
    fake = FloodFillSegmenter()
    services = build_services(paths, Settings(precision="fp32"), ModelChoice("toyworld"), segmenter=lambda: fake)
    scene = two_shape_scene(tmp_path / "scene.jpg", ShapeSpec("star", "blue"), ShapeSpec("circle", "red"), 4, 6)
    result = SearchResult(0, str(scene.resolve()), 1.0, 480, 240)
    io, model = TaskRunner(1), TaskRunner(1)
    v = Viewer([result], 0, io, lambda _p: None, None, services.objects, model)
    qtbot.addWidget(v)
    v.resize(1000, 700)
    v.show()
    qtbot.waitUntil(lambda: v._image is not None, timeout=10_000)
    yield v, fake
    v.close()
    io.wait()
    model.wait()
    services.close()


def _drawn_box(canvas) -> tuple[float, float, float, float]:  # type: ignore[no-untyped-def]
    """Photo-pixel box of what the overlay changed on screen (render with and without it)."""
    with_mask = canvas.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    masks, scores = canvas._masks, canvas.scores
    canvas.set_masks(None, None)
    without = canvas.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    canvas.set_masks(masks, scores)

    def array(img: QImage) -> np.ndarray:
        w, h = img.width(), img.height()
        return np.frombuffer(img.constBits(), np.uint8, img.bytesPerLine() * h).reshape(h, -1)[:, : 3 * w]

    diff = np.abs(array(with_mask).astype(int) - array(without).astype(int)).reshape(without.height(), -1, 3)
    ys, xs = np.nonzero(diff.sum(axis=2) > 30)
    x0, y0 = canvas.widget_to_photo(QPointF(xs.min(), ys.min()))
    x1, y1 = canvas.widget_to_photo(QPointF(xs.max() + 1, ys.max() + 1))
    return x0, y0, x1, y1


@pytest.mark.parametrize("zoom", [1.0, 1.5])
def test_click_lands_on_the_object_under_zoom_pan_and_rotation(qtbot, viewer, zoom: float) -> None:
    v, fake = viewer
    v.set_segment_mode(True)
    canvas = v.canvas
    assert canvas.photo_size == (480, 240)  # upright size of a photo stored rotated (EXIF 6)
    canvas.zoom_at(canvas.photo_to_widget(360, 120), zoom)  # zoom in around the circle
    canvas.pan += QPointF(-60, 15)  # and pan a little; the circle stays wholly in view
    target = canvas.photo_to_widget(360, 120)  # the red circle's centre
    with qtbot.waitSignal(v.mask_shown, timeout=10_000):
        qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=target.toPoint())
    sent = fake.calls[-1][0]
    np.testing.assert_allclose(sent, [[360, 120]], atol=1.0 / zoom + 0.5)
    x0, y0, x1, y1 = _drawn_box(canvas)
    # The circle has radius 70 around (360, 120); the drawn overlay covers it and only it.
    for got, want in zip((x0, y0, x1, y1), (290, 50, 430, 190), strict=True):
        assert abs(got - want) <= 4, (x0, y0, x1, y1)
    assert v.object_btn.isEnabled() and "0.95" in v.candidate_btns[0].text()


def test_refine_undo_choose_and_latest_click_wins(qtbot, viewer) -> None:
    v, fake = viewer
    v.set_segment_mode(True)
    canvas = v.canvas
    star, circle = canvas.photo_to_widget(120, 120).toPoint(), canvas.photo_to_widget(360, 120).toPoint()
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=circle)
    with qtbot.waitSignal(v.mask_shown, timeout=10_000):
        qtbot.mouseClick(canvas, Qt.MouseButton.RightButton, pos=star)  # a second click before the first is done
    qtbot.waitUntil(lambda: v._segmentation is not None and len(fake.calls[-1][1]) == 2, timeout=10_000)
    assert list(fake.calls[-1][1]) == [1, 0] and canvas.labels == [1, 0]
    qtbot.keyClick(canvas, Qt.Key.Key_3)  # the third candidate: the whole photo in the double
    assert canvas.candidate == 2 and v.candidate_btns[2].isChecked()
    with qtbot.waitSignal(v.mask_shown, timeout=10_000):
        qtbot.keyClick(canvas, Qt.Key.Key_Backspace)  # undo the negative point
    assert canvas.labels == [1]
    # A drag draws a box and enables region search.
    a, b = canvas.photo_to_widget(280, 40).toPoint(), canvas.photo_to_widget(440, 200).toPoint()
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=a)
    qtbot.mouseMove(canvas, pos=QPoint((a.x() + b.x()) // 2, (a.y() + b.y()) // 2))
    qtbot.mouseMove(canvas, pos=b)
    with qtbot.waitSignal(v.mask_shown, timeout=10_000):
        qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=b)
    assert canvas.box is not None and abs(canvas.box[0] - 280) < 2 and abs(canvas.box[3] - 200) < 2
    assert v.region_btn.isEnabled()
    with qtbot.waitSignal(v.search_region, timeout=5_000) as emitted:
        v.region_btn.click()
    assert emitted.args[0] == v.current_result.path


def test_exports_cutout_and_mask_at_full_size(qtbot, viewer, tmp_path: Path) -> None:
    from PIL import Image

    v, _ = viewer
    v.set_segment_mode(True)
    with qtbot.waitSignal(v.mask_shown, timeout=10_000):
        qtbot.mouseClick(v.canvas, Qt.MouseButton.LeftButton, pos=v.canvas.photo_to_widget(120, 120).toPoint())
    v.save_cutout(str(tmp_path / "cut.png"))
    v.save_mask(str(tmp_path / "mask.png"))
    qtbot.waitUntil(lambda: (tmp_path / "cut.png").exists() and (tmp_path / "mask.png").exists(), timeout=10_000)
    with Image.open(tmp_path / "mask.png") as mask:
        assert mask.size == (480, 240)
        assert mask.getpixel((120, 120)) == 255 and mask.getpixel((360, 120)) == 0
    with Image.open(tmp_path / "cut.png") as cut:
        assert cut.mode == "RGBA" and 100 <= cut.width <= 150 and cut.getpixel((0, 0))[3] in (0, 255)


def test_viewer_outlines_the_region_that_matched(qtbot, paths: AppPaths, tmp_path: Path) -> None:
    scene = two_shape_scene(tmp_path / "s.jpg", ShapeSpec("star", "blue"), ShapeSpec("circle", "red"), 4)
    io = TaskRunner(1)
    v = Viewer([SearchResult(0, str(scene), 0.5, 480, 240, region=(0.5, 0.0, 1.0, 1.0))], 0, io, lambda _p: None)
    qtbot.addWidget(v)
    v.resize(900, 600)
    v.show()
    qtbot.waitUntil(lambda: v.image.pixmap() is not None and not v.image.pixmap().isNull(), timeout=10_000)
    img = v.image.pixmap().toImage()
    w, h = img.width(), img.height()
    yellow = [(x, h // 2) for x in range(w) if img.pixelColor(x, h // 2).red() > 230 and
              img.pixelColor(x, h // 2).green() > 190 and img.pixelColor(x, h // 2).blue() < 60]  # fmt: skip
    assert yellow and abs(min(x for x, _ in yellow) - w / 2) <= 6  # the outline starts halfway across
    v.close()
    io.wait()
