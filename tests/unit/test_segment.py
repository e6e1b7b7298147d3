"""The real MobileSAM predictor code with weights the test creates: shapes, caching, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from indexer.segment import SEGMENTERS, SamSegmenter, SegmenterUnavailableError, build_sam


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
