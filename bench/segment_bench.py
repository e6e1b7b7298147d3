"""Click-to-segment speed: SAM encoder per photo, decoder per click, and click-to-mask in the viewer.

    QT_QPA_PLATFORM=offscreen python bench/segment_bench.py [--segmenter mobile_sam] [--device cpu]

Weights are random (real ones cannot be downloaded on the build machines); speed does
not depend on their values. The GUI part runs the real viewer offscreen with the real
segmenter: the first click pays for the image encoder, later clicks only for the
decoder, which is what the "second click to drawn mask" figure measures (target:
under 100 ms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent / "out"


def random_checkpoint(arch: str) -> Path:
    import torch

    from indexer.segment.sam import build_sam

    path = OUT / f"random-sam-{arch}.pt"
    if not path.exists():
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_sam(arch)
        OUT.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return path


def photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(base).resize((4000, 3000), Image.Resampling.BICUBIC).save(path, quality=90)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segmenter", default="mobile_sam")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--precision", default="auto", help="auto, fp32, bf16, fp16")
    args = ap.parse_args()

    import torch

    from indexer.segment.sam import SEGMENTERS, SamSegmenter

    spec = SEGMENTERS[args.segmenter]
    weights = random_checkpoint(spec.arch)
    result: dict[str, object] = {"segmenter": spec.name, "device": args.device, "threads": torch.get_num_threads()}
    seg = SamSegmenter(spec, OUT, weights=weights, device=args.device, precision=args.precision, cache_size=8)
    t0 = time.perf_counter()
    seg.load()
    result["load_s"] = round(time.perf_counter() - t0, 2)
    result["precision"] = seg.precision

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8) for _ in range(4)]
    seg.set_image(images[0], key="warm-up")
    seg.predict(np.array([[500, 400]]), np.array([1]))
    enc = []
    for n, img in enumerate(images[1:]):
        t0 = time.perf_counter()
        seg.set_image(img, key=f"img{n}")
        if args.device == "cuda":
            torch.cuda.synchronize()
        enc.append(time.perf_counter() - t0)
    dec = []
    for n in range(args.clicks):
        pts = rng.uniform(0, 768, (1 + n % 3, 2))
        t0 = time.perf_counter()
        seg.predict(pts, np.ones(len(pts), np.int64))
        dec.append(time.perf_counter() - t0)
    result["encoder_ms_per_photo"] = round(1000 * statistics.median(enc), 1)
    result["decoder_ms_per_click"] = round(1000 * statistics.median(dec), 1)
    t0 = time.perf_counter()
    seg.set_image(images[1], key="img0")
    result["cached_set_image_ms"] = round(1000 * (time.perf_counter() - t0), 2)
    if args.device == "cpu":
        result.update(gui_clicks(seg, args.clicks))
    print(json.dumps(result, indent=2))


def gui_clicks(seg: object, clicks: int) -> dict[str, float]:
    """Click in the real viewer; time each click to the moment its mask is on screen."""
    from PySide6.QtCore import QEventLoop, Qt, QTimer
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from desktop.viewer import Viewer
    from desktop.workers import TaskRunner
    from indexer.composition import build_services
    from indexer.models.choice import ModelChoice
    from indexer.search.service import SearchResult
    from indexer.settings import Settings
    from store.paths import AppPaths

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        paths = AppPaths.from_env({"GLIMPSE_HOME": tmp}).ensure()
        services = build_services(paths, Settings(), ModelChoice("toyworld"), segmenter=lambda: seg)  # type: ignore[arg-type, return-value]
        path = photo(Path(tmp) / "photo.jpg", 1)
        io, model = TaskRunner(1), TaskRunner(1)
        viewer = Viewer([SearchResult(0, str(path), 1.0, 4000, 3000)], 0, io, lambda _p: None, None,
                        services.objects, model)  # fmt: skip
        viewer.resize(1200, 800)
        viewer.show()
        while viewer._image is None:
            app.processEvents()
        viewer.set_segment_mode(True)
        canvas = viewer.canvas
        times = []
        for n in range(clicks + 1):
            loop = QEventLoop()
            viewer.mask_shown.connect(loop.quit)
            QTimer.singleShot(60_000, loop.quit)
            x, y = 800 + 150 * (n % 5), 600 + 100 * (n % 4)
            t0 = time.perf_counter()
            QTest.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=canvas.photo_to_widget(x, y).toPoint())
            loop.exec()
            app.processEvents()  # the repaint with the mask
            times.append(time.perf_counter() - t0)
            viewer.mask_shown.disconnect(loop.quit)
        viewer.close()
        io.wait()
        model.wait()
        services.close()
        del viewer
        app.processEvents()
    return {
        "gui_first_click_to_mask_ms": round(1000 * times[0], 1),
        "gui_next_click_to_mask_ms_median": round(1000 * statistics.median(times[1:]), 1),
        "gui_next_click_to_mask_ms_worst": round(1000 * max(times[1:]), 1),
    }


if __name__ == "__main__":
    main()
