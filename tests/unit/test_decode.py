"""Decoder edge cases: orientation, odd modes, broken and hostile files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer.errors import DecodeError
from indexer.ingest.decode import decode_photo, open_photo, register_heif, to_model_input
from indexer.models.preprocess import PreprocessSpec
from tests.photos import save_oriented

SPEC = PreprocessSpec(size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _marker_image() -> Image.Image:
    """Wide image, red block top-left, blue block bottom-right: every flip and turn is visible."""
    img = Image.new("RGB", (120, 60), (255, 255, 255))
    img.paste((255, 0, 0), (0, 0, 30, 20))
    img.paste((0, 0, 255), (90, 40, 120, 60))
    return img


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    save_oriented(_marker_image(), path, orientation, quality=95)
    img, meta = open_photo(path, min_side=100)  # no DCT scaling: pixel positions below are exact
    assert (meta.width, meta.height) == (120, 60)
    assert meta.orientation == orientation
    arr = np.asarray(img).astype(int)
    top_left = arr[2:18, 2:28].mean(axis=(0, 1))
    bottom_right = arr[42:58, 92:118].mean(axis=(0, 1))
    assert top_left[0] > 200 and top_left[2] < 60, top_left
    assert bottom_right[2] > 200 and bottom_right[0] < 60, bottom_right


def test_exif_metadata_is_read(tmp_path: Path) -> None:
    path = tmp_path / "meta.jpg"
    save_oriented(_marker_image(), path, 1)
    _, meta = open_photo(path, 16)
    assert meta.camera_make == "Glimpse Test" and meta.camera_model == "Toy Camera"
    assert meta.taken_at is not None and meta.taken_at.isoformat() == "2024-07-14T18:30:05"


def test_large_jpeg_is_draft_decoded_but_model_input_is_full_size(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(path, quality=80)
    img, meta = open_photo(path, min_side=256)
    assert (meta.width, meta.height) == (4000, 3000)  # the photo's size, not the decode's
    assert img.size == (500, 375)  # DCT-scaled by 1/8, still >= 256 on both sides
    photo = decode_photo(path, SPEC)
    assert photo.pixels.shape == (64, 64, 3) and photo.pixels.dtype == np.uint8
    assert abs(int(photo.pixels[..., 1].mean()) - 200) < 4


def test_preprocessing_matches_open_clip_transform() -> None:
    """Our worker-side resize/crop + batched normalisation equals open_clip's own transform."""
    import torch
    from open_clip.transform import PreprocessCfg, image_transform_v2

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (137, 203, 3), dtype=np.uint8))
    for mode in ("shortest", "squash"):
        spec = PreprocessSpec(size=64, mean=(0.48, 0.45, 0.40), std=(0.26, 0.26, 0.27), resize_mode=mode)
        ref = image_transform_v2(
            PreprocessCfg(size=(64, 64), mean=spec.mean, std=spec.std, interpolation="bicubic", resize_mode=mode),
            is_train=False,
        )(img)
        ours = torch.from_numpy(to_model_input(img, spec)).permute(2, 0, 1).float() / 255.0
        ours = (ours - torch.tensor(spec.mean)[:, None, None]) / torch.tensor(spec.std)[:, None, None]
        assert torch.allclose(ours, ref, atol=1e-5), mode


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    img = Image.new("RGBA", (80, 80), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (20, 20, 60, 60))
    img.save(path)
    out, _ = open_photo(path, 16)
    arr = np.asarray(out)
    assert out.mode == "RGB"
    assert tuple(arr[2, 2]) == (255, 255, 255)
    assert tuple(arr[arr.shape[0] // 2, arr.shape[1] // 2]) == (255, 0, 0)


def test_palette_with_transparency(tmp_path: Path) -> None:
    path = tmp_path / "pal.gif"
    img = Image.new("P", (40, 40), 0)
    img.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    img.paste(1, (10, 10, 30, 30))
    img.info["transparency"] = 0
    img.save(path, transparency=0)
    out, _ = open_photo(path, 16)
    arr = np.asarray(out)
    assert tuple(arr[1, 1]) == (255, 255, 255)
    assert tuple(arr[20, 20]) == (0, 200, 0)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("RGB", (64, 64), (30, 60, 220)).convert("CMYK").save(path, quality=95)
    out, _ = open_photo(path, 16)
    r, _g, b = np.asarray(out).reshape(-1, 3).mean(0)
    assert out.mode == "RGB" and b > 180 and r < 80


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "g16.png"
    arr = np.full((32, 32), 32768, dtype=np.uint16)  # mid grey in 16 bits
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    out, _ = open_photo(path, 16)
    assert abs(int(np.asarray(out)[..., 0].mean()) - 128) <= 1


def test_gif_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (32, 32), c) for c in ((250, 0, 0), (0, 0, 250))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    out, _ = open_photo(path, 16)
    r, _, b = np.asarray(out).reshape(-1, 3).mean(0)
    assert r > 200 and b < 50


def test_heic_and_webp(tmp_path: Path) -> None:
    register_heif()
    for name in ("x.heic", "x.webp"):
        Image.new("RGB", (96, 64), (0, 180, 0)).save(tmp_path / name, quality=90)
        out, meta = open_photo(tmp_path / name, 16)
        assert (meta.width, meta.height) == (96, 64)
        assert np.asarray(out)[..., 1].mean() > 150


def test_png_with_jpg_extension_is_read_by_content(tmp_path: Path) -> None:
    path = tmp_path / "actually-png.jpg"
    Image.new("RGB", (40, 30), (1, 2, 3)).save(path, format="PNG")
    _, meta = open_photo(path, 16)
    assert (meta.width, meta.height) == (40, 30)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"hello, I am a text file", "not an image"),
    ],
)
def test_not_images(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(DecodeError) as info:
        decode_photo(path, SPEC)
    assert reason in info.value.message and "bad.jpg" in info.value.message


def test_truncated_jpeg(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    with pytest.raises(DecodeError) as info:
        decode_photo(path, SPEC)
    assert "truncated" in info.value.message


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_huge_declared_size_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(100_000, 100_000))  # 10 gigapixels declared in 100 bytes
    with pytest.raises(DecodeError) as info:
        decode_photo(path, SPEC)
    assert "safety limit" in info.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DecodeError) as info:
        decode_photo(tmp_path / "gone.jpg", SPEC)
    assert "disappeared" in info.value.message


def test_thumbnail_comes_from_the_same_decode(tmp_path: Path) -> None:
    path = tmp_path / "t.jpg"
    Image.new("RGB", (1600, 1200), (200, 100, 0)).save(path)
    photo = decode_photo(path, SPEC, thumbnail_size=256)
    assert photo.thumbnail is not None
    thumb = Image.open(io.BytesIO(photo.thumbnail))
    assert thumb.format == "JPEG" and max(thumb.size) == 256 and thumb.size == (256, 192)


def test_only_regular_files_are_opened(tmp_path: Path) -> None:
    """A FIFO put where a photo was would block a plain open() forever; it is refused at once."""
    import os

    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    with pytest.raises(DecodeError, match="not a regular file"):
        open_photo(fifo, 64)
    with pytest.raises(DecodeError, match="not a regular file"):
        open_photo(tmp_path, 64)


@pytest.mark.parametrize("size", [(1, 100_000), (100_000, 1), (60_000, 3)])
def test_extreme_aspect_ratios_are_cut_to_their_centre_before_scaling(tmp_path: Path, size: tuple[int, int]) -> None:
    """A 470-byte 1 × 100,000 PNG once needed gigabytes: its short side was scaled up to the model's."""
    path = tmp_path / "strip.png"
    Image.new("RGB", size, (0, 200, 0)).save(path)
    photo = decode_photo(path, SPEC, thumbnail_size=32)
    assert photo.pixels.shape == (64, 64, 3)
    assert tuple(photo.pixels[32, 32]) == (0, 200, 0)
    assert (photo.metadata.width, photo.metadata.height) == size  # the real size is still reported
    img, _ = open_photo(path, 64)
    assert max(img.size) <= 16 * max(1, min(img.size)), img.size  # only the centre is kept


def test_a_large_png_is_reduced_strip_by_strip_to_near_the_size_needed(tmp_path: Path) -> None:
    """PNG has no reduced decode; the working image is made from strips, not a full-size copy,
    and keeps its colours, alpha on white and a 16-bit photo's scale across strips."""
    path = tmp_path / "big.png"
    img = Image.new("RGBA", (4100, 3000), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (0, 0, 2050, 3000))
    img.save(path)
    out, meta = open_photo(path, 100)
    assert (meta.width, meta.height) == (4100, 3000)
    assert 200 <= min(out.size) < 400 and out.mode == "RGB"
    arr = np.asarray(out)
    assert tuple(arr[arr.shape[0] // 2, 5]) == (255, 0, 0)
    assert tuple(arr[arr.shape[0] // 2, -5]) == (255, 255, 255)
    grey = np.zeros((3000, 2000), np.uint16)
    grey[:] = 30000
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    out16, _ = open_photo(tmp_path / "grey16.png", 100)
    values = np.asarray(out16)[..., 0]
    assert values.min() == values.max() == round(30000 * 255 / 65535)


def test_the_pixel_limit_is_one_figure_in_every_message(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("L", (5000, 3000)).save(path)
    with pytest.raises(DecodeError, match=r"15 MP\) is over the 10 MP safety limit"):
        open_photo(path, 64, max_pixels=10_000_000)
    from PIL import Image as PILImage

    saved = PILImage.MAX_IMAGE_PIXELS
    PILImage.MAX_IMAGE_PIXELS = 1_000_000  # Pillow refuses past twice its own limit, before ours is read
    try:
        with pytest.raises(DecodeError, match=r"over the 1 MP safety limit") as err:
            open_photo(path, 64, max_pixels=1_000_000)
        assert "2000000" not in str(err.value) and "2 MP" not in str(err.value)
    finally:
        PILImage.MAX_IMAGE_PIXELS = saved


def test_a_name_that_is_not_utf8_is_decoded_and_shown_escaped(tmp_path: Path) -> None:
    import os

    path = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.png"))
    path.write_bytes(b"not a png")
    with pytest.raises(DecodeError) as err:
        open_photo(path, 64)
    assert "caf\\xe9.png" in err.value.message
    err.value.message.encode("utf-8")  # storable and printable
    Image.new("RGB", (80, 80), (1, 2, 3)).save(path, format="PNG")
    assert decode_photo(path, SPEC).pixels.shape == (64, 64, 3)


def test_camera_raw_is_read_from_its_embedded_preview_upright(tmp_path: Path) -> None:
    from tests.hostile import write_dng

    preview = _marker_image()  # 120 x 60, red top-left, blue bottom-right
    path = write_dng(tmp_path / "camera.dng", preview, orientation=6)
    img, meta = open_photo(path, 16)
    assert meta.orientation == 6 and (meta.width, meta.height) == (480, 640)  # the sensor's size, turned
    assert img.size == (60, 120)  # the preview turned 90° clockwise
    arr = np.asarray(img)
    assert tuple(arr[5, -5]) == (255, 0, 0)  # red was top-left, is now top-right
    (tmp_path / "noise.cr2").write_bytes(b"\0" * 4096)
    with pytest.raises(DecodeError, match=r"noise\.cr2: not a RAW file"):
        open_photo(tmp_path / "noise.cr2", 16)
