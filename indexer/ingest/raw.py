"""Camera RAW files (DNG, CR2, NEF, ARW, RAF, ORF, …), read from their embedded preview.

Developing a RAW file (demosaicing, white balance, a tone curve) takes seconds and
decides how the photo looks, which is the photographer's business, not an index's.
Every camera embeds a full-size or large JPEG preview of the photo as shot; LibRaw
(through rawpy) extracts it in milliseconds, and that is what Glimpse embeds and
thumbnails. The camera's orientation is applied: from the preview's own EXIF when it
has one, else from the RAW's (LibRaw's ``flip``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from indexer.errors import DecodeError
from indexer.ingest.decode import PhotoMetadata, read_exif
from store.filenames import shown

# LibRaw's flip codes as EXIF orientations (0: none, 3: 180°, 5: 90° counter-clockwise, 6: 90° clockwise).
_FLIP_TO_ORIENTATION = {0: 1, 3: 3, 5: 8, 6: 6}


def open_raw_preview(path: Path) -> tuple[Image.Image, PhotoMetadata]:
    """The embedded preview, upright, and the photo's metadata (the sensor's size as displayed);
    :class:`DecodeError` for a RAW file without a usable preview."""
    try:
        import rawpy
    except ImportError as exc:  # declared as a dependency; absent only in a broken install
        raise DecodeError(f"{shown(path.name)}: RAW files need the rawpy package (pip install rawpy).") from exc
    name = shown(path.name)
    try:
        with rawpy.imread(str(path)) as raw:
            flip = int(raw.sizes.flip)
            width, height = int(raw.sizes.width), int(raw.sizes.height)
            thumb = raw.extract_thumb()
    except rawpy.LibRawNoThumbnailError as exc:
        raise DecodeError(f"{name}: a RAW file without an embedded preview (Glimpse reads the preview).") from exc
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        raise DecodeError(f"{name}: not a RAW file LibRaw can read ({exc}).") from exc
    orientation = _FLIP_TO_ORIENTATION.get(flip, 1)
    taken = make = model = None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        try:
            img: Image.Image = Image.open(io.BytesIO(bytes(thumb.data)))
            img.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise DecodeError(f"{name}: the RAW file's preview is damaged ({exc}).") from exc
        own, taken, make, model = read_exif(img)
        if own is not None and own != 1:  # the preview says how it is turned: trust it over the sensor's flag
            orientation = own
            img = ImageOps.exif_transpose(img) or img
        else:
            img = _orient(img, orientation)
    else:
        img = _orient(Image.fromarray(np.ascontiguousarray(thumb.data, dtype=np.uint8)), orientation)
    shown_w, shown_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return img.convert("RGB"), PhotoMetadata(shown_w, shown_h, orientation, taken, make, model)


def _orient(img: Image.Image, orientation: int) -> Image.Image:
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return img.transpose(method) if method is not None else img
