"""The real MobileSAM predictor code with weights the test creates: shapes, caching, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from indexer.segment.sam import SEGMENTERS, SamSegmenter, SegmenterUnavailableError, build_sam


@pytest.fixture(scope="module")
def mobile_sam_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MobileSAM checkpoint with seeded random weights, saved the way upstream ships it."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's deprecation notices from upstream code
        model = build_sam("vit_t")
    path = tmp_path_factory.mktemp("sam") / "mobile_sam.pt"
    torch.save(model.state_dict(), path)
    return path


def _image(h: int = 200, w: int = 300) -> np.ndarray:
    img = np.full((h, w, 3), 230, np.uint8)
    img[60:140, 100:200] = (35, 75, 220)  # a blue block
    return img


def test_predicts_masks_in_photo_pixels_and_encodes_each_photo_once(mobile_sam_weights: Path, tmp_path: Path) -> None:
    seg = SamSegmenter(SEGMENTERS["mobile_sam"], tmp_path, weights=mobile_sam_weights, cache_size=1)
    seg.set_image(_image(), key="photo-a")
    first = seg.predict(np.array([[150, 100]]), np.array([1]))
    assert first.masks.shape == (3, 200, 300) and first.masks.dtype == bool
    assert first.scores.shape == (3,) and first.scores.dtype == np.float32
    assert list(first.scores) == sorted(first.scores, reverse=True)
    # More clicks and a box on the same photo: the encoder does not run again.
    seg.predict(np.array([[150, 100], [20, 20]]), np.array([1, 0]))
    seg.predict(None, None, box=np.array([100, 60, 200, 140]))
    seg.set_image(_image(), key="photo-a")
    again = seg.predict(np.array([[150, 100]]), np.array([1]))
    np.testing.assert_array_equal(again.masks, first.masks)
    assert seg.encoder_calls == 1
    # A second photo evicts the first from a one-entry cache.
    seg.set_image(_image(120, 90), key="photo-b")
    assert seg.predict(np.array([[45, 60]]), np.array([1])).masks.shape == (3, 120, 90)
    seg.set_image(_image(), key="photo-a")
    assert seg.encoder_calls == 3


def test_missing_weights_offline_name_the_file_size_and_place(tmp_path: Path) -> None:
    seg = SamSegmenter(SEGMENTERS["mobile_sam"], tmp_path / "models", allow_download=False)
    with pytest.raises(SegmenterUnavailableError) as err:
        seg.load()
    message = err.value.message
    assert "mobile_sam.pt" in message and "41 MB" in message and str(tmp_path / "models") in message


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "mobile_sam.pt"
    bad.write_bytes(b"not a checkpoint")
    seg = SamSegmenter(SEGMENTERS["mobile_sam"], tmp_path, weights=bad)
    with pytest.raises(SegmenterUnavailableError, match="is not a mobile_sam checkpoint"):
        seg.load()


def test_disk_cache_serves_a_new_session_without_the_encoder(mobile_sam_weights: Path, tmp_path: Path) -> None:
    spec = SEGMENTERS["mobile_sam"]
    first = SamSegmenter(spec, tmp_path, weights=mobile_sam_weights, cache_dir=tmp_path / "cache")
    first.set_image(_image(), key="content-hash-1")
    want = first.predict(np.array([[150, 100]]), np.array([1]))
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    second = SamSegmenter(spec, tmp_path, weights=mobile_sam_weights, cache_dir=tmp_path / "cache")
    second.set_image(_image(), key="content-hash-1")
    got = second.predict(np.array([[150, 100]]), np.array([1]))
    assert second.encoder_calls == 0
    # float16 on disk: the masks agree on all but a sliver of boundary pixels
    agree = (got.masks == want.masks).mean()
    assert agree > 0.99, agree


def test_points_reach_the_prompt_encoder_in_sams_1024_input_space(mobile_sam_weights: Path, tmp_path: Path) -> None:
    """Points are given in photo pixels; SAM resizes the photo (longest side 1024) and must move
    the points with it. Checked where they enter the network, for two photo sizes."""
    seg = SamSegmenter(SEGMENTERS["mobile_sam"], tmp_path, weights=mobile_sam_weights)
    seg.load()
    encoder = seg._predictor.model.prompt_encoder
    seen: list[torch.Tensor] = []
    original = encoder.forward

    def spy(points, boxes, masks):  # type: ignore[no-untyped-def]
        seen.append(points[0].clone() if points is not None else boxes.clone())
        return original(points, boxes, masks)

    encoder.forward = spy
    for (h, w), (x, y) in (((200, 300), (150, 100)), ((600, 240), (60, 450))):
        seg.set_image(_image(h, w), key=f"{h}x{w}")
        seg.predict(np.array([[x, y]]), np.array([1]))
        scale = 1024 / max(h, w)
        np.testing.assert_allclose(seen[-1][0, 0].numpy(), [x * scale, y * scale], atol=0.6)
    seg.predict(None, None, box=np.array([30, 60, 90, 300]))
    np.testing.assert_allclose(seen[-1].numpy().reshape(-1), np.array([30, 60, 90, 300]) * 1024 / 600, atol=0.6)


@pytest.mark.slow
def test_original_sam_vit_b_predictor_with_test_made_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_sam("vit_b")
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(model.state_dict(), path)
    del model
    seg = SamSegmenter(SEGMENTERS["sam_vit_b"], tmp_path, weights=path)
    seg.set_image(_image(), key="a")
    out = seg.predict(np.array([[150, 100], [10, 10]]), np.array([1, 0]), box=np.array([90, 50, 210, 150]))
    assert out.masks.shape == (3, 200, 300) and out.masks.dtype == bool and out.scores.shape == (3,)
    seg.set_image(_image(), key="a")
    seg.predict(np.array([[150, 100]]), np.array([1]))
    assert seg.encoder_calls == 1


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A local HTTP server for the download code (no internet on the build machines)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_reports_progress_checks_size_and_records_the_digest(served, tmp_path: Path) -> None:
    import dataclasses
    import hashlib

    from indexer.segment.sam import download_weights

    root, base = served
    payload = bytes(range(256)) * 8192  # 2 MiB
    (root / "mobile_sam.pt").write_bytes(payload)
    spec = dataclasses.replace(SEGMENTERS["mobile_sam"], url=f"{base}/mobile_sam.pt", size_bytes=len(payload))
    seen: list[tuple[int, int]] = []
    path = download_weights(spec, tmp_path / "models", lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == payload
    assert seen[-1] == (len(payload), len(payload)) and len(seen) >= 2
    assert (tmp_path / "models" / "mobile_sam.pt.sha256").read_text() == hashlib.sha256(payload).hexdigest()
    # A download of the wrong size is discarded, leaving nothing half-written behind.
    wrong = dataclasses.replace(spec, size_bytes=len(payload) + 1)
    with pytest.raises(SegmenterUnavailableError, match="expected"):
        download_weights(wrong, tmp_path / "other")
    assert list((tmp_path / "other").iterdir()) == []
    # Unreachable: the offline message, naming the file and where it goes.
    gone = dataclasses.replace(spec, url=f"{base}/missing.pt")
    with pytest.raises(SegmenterUnavailableError, match="put it at"):
        download_weights(gone, tmp_path / "third")
