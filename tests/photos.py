"""Writing test photos: toy-world pictures in every format and orientation Glimpse must read."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from indexer.toyworld.world import ShapeSpec, render

# Pillow's exif_transpose applies these to the stored pixels to show the photo upright;
# a test photo stores the inverse so that it *displays* as the rendered picture.
_INVERSE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def save_oriented(img: Image.Image, path: Path, orientation: int, **kwargs: object) -> None:
    """Save ``img`` so that a viewer honouring EXIF ``orientation`` shows exactly ``img``."""
    op = _INVERSE[orientation]
    stored = img.transpose(op) if op is not None else img
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Glimpse Test"
    exif[0x0110] = "Toy Camera"
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd[0x9003] = "2024:07:14 18:30:05"
    stored.save(path, exif=exif, **kwargs)  # type: ignore[arg-type]


def toy_photo(spec: ShapeSpec, seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    return render(spec, random.Random(seed), size)


def write_photo(
    path: Path, spec: ShapeSpec, seed: int, orientation: int = 1, size: tuple[int, int] = (320, 240)
) -> Path:
    """Write a toy photo in the format its suffix names (JPEG with EXIF orientation, PNG, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = toy_photo(spec, seed, size)
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        save_oriented(img, path, orientation, quality=92)
    elif suffix == ".png":
        img.save(path)
    elif suffix == ".webp":
        img.save(path, quality=90)
    elif suffix in (".heic", ".heif"):
        import pillow_heif

        pillow_heif.register_heif_opener()
        img.save(path, quality=90)
    elif suffix == ".gif":
        img.convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    elif suffix in (".tif", ".tiff") or suffix == ".bmp":
        img.save(path)
    else:
        raise ValueError(suffix)
    return path
