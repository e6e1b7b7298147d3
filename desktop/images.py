"""Decoding photos for display, on worker threads (Pillow releases the GIL while decoding)."""

from __future__ import annotations

from PySide6.QtGui import QImage

PREVIEW_MAX = 2048  # the viewer decodes at most this size: a screen's worth, not a 24 MP image


def load_image(path: str, max_side: int) -> QImage:
    """The photo upright (EXIF orientation applied), at most ``max_side`` pixels on its long side.

    JPEGs are reduced by the decoder itself (``draft``), so a large photo costs a fraction of
    a full decode.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as src:
        src.draft("RGB", (max_side, max_side))
        img = ImageOps.exif_transpose(src).convert("RGB")
    img.thumbnail((max_side, max_side))
    return QImage(img.tobytes(), img.width, img.height, img.width * 3, QImage.Format.Format_RGB888).copy()
