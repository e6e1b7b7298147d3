"""Photo decoding: from a file on disk to a model-ready pixel array and a thumbnail.

Decoding, not the model, bounds indexing on a CPU (docs/performance.md), so:

* JPEGs are decoded with ``Image.draft()``, which lets libjpeg scale by 1/2, 1/4
  or 1/8 during the DCT: a 12 MP photo costs a fifth of a full decode. The draft
  size is never below what the model or the thumbnail needs.
* EXIF orientation is applied after the reduced decode (cheap on small images).
* The thumbnail comes from the same decode; a photo is never decoded twice.

Everything here is plain Pillow and NumPy so it runs in worker processes without
importing torch. Every failure becomes a :class:`DecodeError` with a reason a
person can read; the pipeline records it and moves on.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import struct
import warnings
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from indexer.errors import DecodeError, PhotoVanishedError
from indexer.ingest.walk import RAW_EXTENSIONS
from indexer.models.preprocess import PreprocessSpec
from store.filenames import shown

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 250_000_000  # 250 MP: above any camera, below a decompression bomb
THUMBNAIL_SIZE = 256

_TAG_ORIENTATION = 0x0112
_TAG_MAKE = 0x010F
_TAG_MODEL = 0x0110
_TAG_DATETIME = 0x0132
_IFD_EXIF = 0x8769
_TAG_DATETIME_ORIGINAL = 0x9003

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class PhotoMetadata:
    width: int  # as displayed, after EXIF orientation
    height: int
    orientation: int | None
    taken_at: datetime | None
    camera_make: str | None
    camera_model: str | None
    # A perceptual hash of the upright picture (``fingerprint``): photos whose vectors agree
    # and whose fingerprints are close are near-duplicates (``indexer.search.groups``).
    fingerprint: int | None = None


@dataclass(frozen=True)
class DecodedPhoto:
    pixels: np.ndarray  # uint8, (size, size, 3), model-ready before normalisation
    metadata: PhotoMetadata
    thumbnail: bytes | None  # JPEG
    regions: np.ndarray | None = None  # uint8 (len(REGION_BOXES), size, size, 3) when asked for


# Object proposals for the region index, in fractions of the upright photo: four
# overlapping quarters and the centre. Fixed boxes cost no model of their own (SAM's
# automatic masks would cost seconds per photo on a CPU) and catch an object that
# fills a fraction of the frame, which the whole-photo vector tends to drown.
REGION_BOXES: tuple[tuple[float, float, float, float], ...] = (
    (0.0, 0.0, 0.6, 0.6),
    (0.4, 0.0, 1.0, 0.6),
    (0.0, 0.4, 0.6, 1.0),
    (0.4, 0.4, 1.0, 1.0),
    (0.2, 0.2, 0.8, 0.8),
)


def region_inputs(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Model inputs for each of ``REGION_BOXES`` (each crop squashed to the model's size).

    Squashed, not centre-cropped: a crop is already a proposal, and cropping it again
    would cut off the edges of the object it holds.
    """
    w, h = img.size
    out = np.empty((len(REGION_BOXES), spec.size, spec.size, 3), np.uint8)
    for n, (x0, y0, x1, y1) in enumerate(REGION_BOXES):
        crop = img.crop((round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)))
        out[n] = np.asarray(crop.resize((spec.size, spec.size), _RESAMPLE[spec.interpolation]), np.uint8)
    return out


def register_heif() -> None:
    """Teach Pillow HEIC/HEIF; called by whoever decodes (never at import time)."""
    try:
        import pillow_heif
    except ImportError:  # pragma: no cover - optional at runtime, declared as a dependency
        log.warning("pillow-heif is not installed; HEIC photos will be reported as unreadable")
        return
    pillow_heif.register_heif_opener()


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).replace("\x00", "").strip()
    return text or None


def _parse_exif_date(value: Any) -> datetime | None:
    text = _clean(value)
    if not text:
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M"):
        try:
            return datetime.strptime(text[:19], fmt)
        except ValueError:
            continue
    return None


def read_exif(img: Image.Image) -> tuple[int | None, datetime | None, str | None, str | None]:
    try:
        exif = img.getexif()
    except Exception:  # a damaged EXIF block must not cost us the photo
        return None, None, None, None
    orientation = exif.get(_TAG_ORIENTATION)
    try:
        sub = exif.get_ifd(_IFD_EXIF)
    except Exception:
        sub = {}
    taken = _parse_exif_date(sub.get(_TAG_DATETIME_ORIGINAL)) or _parse_exif_date(exif.get(_TAG_DATETIME))
    orient = int(orientation) if isinstance(orientation, int) and 1 <= orientation <= 8 else None
    return orient, taken, _clean(exif.get(_TAG_MAKE)), _clean(exif.get(_TAG_MODEL))


# Pillow's modes of more than 8 bits a channel, scaled to 8 bits by the photo's brightest value.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# A panorama wider than this many times its height keeps its centre: the model crops to a
# square anyway, and a 100,000 × 1 strip scaled to the model's height would need gigabytes.
MAX_ASPECT = 16
# Rows converted and reduced at a time: bounds the working copies of a huge photo.
_STRIP_PIXELS = 4_000_000


def _to_rgb(img: Image.Image, peak: float | None = None) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: alpha on white, CMYK and palettes converted, 16-bit scaled.

    ``peak`` is the brightest value of the whole photo for 16-bit and float modes, so that
    strips of one photo are scaled alike.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _WIDE_MODES:
        arr = np.asarray(img, dtype=np.float32)
        if peak is None:
            peak = float(arr.max()) if arr.size else 0.0
        if mode == "F" and peak <= 1.0:
            arr = arr * 255.0
        elif peak > 255.0:
            arr = arr * (255.0 / 65535.0)
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _peak(img: Image.Image) -> float | None:
    """The brightest value of a 16-bit or float photo (no copy of its pixels)."""
    if img.mode not in _WIDE_MODES:
        return None
    extrema = img.getextrema()
    return float(extrema[1]) if isinstance(extrema[1], int | float) else None


def _centre_box(w: int, h: int, ratio: int) -> tuple[int, int, int, int]:
    """The part of a ``w`` × ``h`` photo kept: all of it, or its centre at ``ratio``:1."""
    if w > ratio * h:
        keep = ratio * h
        return (w - keep) // 2, 0, (w - keep) // 2 + keep, h
    if h > ratio * w:
        keep = ratio * w
        return 0, (h - keep) // 2, w, (h - keep) // 2 + keep
    return 0, 0, w, h


def working_image(img: Image.Image, need: int) -> Image.Image:
    """A loaded photo as the smallest RGB image whose shorter side is still at least ``need``.

    A huge PNG, TIFF or WebP is decoded whole (those formats cannot decode at a lower
    size, as JPEG's DCT scaling can), so this is where memory is bounded: the photo is
    converted and reduced by an integer factor a strip of rows at a time, so only the
    decoded original and the small result exist at once, never a full-size copy. When a
    new image is returned, the original is closed.
    """
    out = _working(img, need)
    if out is not img:
        img.close()
    return out


def _working(img: Image.Image, need: int) -> Image.Image:
    """:func:`working_image` without the closing: the original itself when it is already small RGB."""
    peak = _peak(img)
    left, top, right, bottom = _centre_box(*img.size, MAX_ASPECT)
    w, h = right - left, bottom - top
    # Twice the size needed survives the integer reduction, so the final resample (bicubic,
    # as open_clip's) still does the last step and the result matches a full-size resize.
    factor = max(1, min(w, h) // max(2 * need, 1))
    if factor == 1:  # then at most MAX_ASPECT × (2 × need)² pixels: small
        part = img if (w, h) == img.size else img.crop((left, top, right, bottom))
        return _to_rgb(part, peak)
    out = Image.new("RGB", (w // factor, h // factor))
    rows = max(factor, (_STRIP_PIXELS // max(w, 1)) // factor * factor)
    for y in range(0, out.height * factor, rows):
        y1 = min(y + rows, out.height * factor)
        strip = _to_rgb(img.crop((left, top + y, left + out.width * factor, top + y1)), peak)
        out.paste(strip.reduce(factor), (0, y // factor))
    return out


def _open_regular(path: Path) -> io.BufferedReader:
    """The file at ``path`` opened for reading, if it is a regular file.

    ``O_NONBLOCK`` makes opening a FIFO or a device return at once instead of waiting for
    a writer forever (a photo replaced by a pipe between scan and decode); ``fstat`` on
    the open descriptor then refuses anything that is not a plain file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a pipe, socket or device"
            raise DecodeError(f"{shown(path.name)}: not a regular file ({kind}); only files are read.")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_photo(
    path: Path | str, min_side: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[Image.Image, PhotoMetadata]:
    """Decode ``path`` to an oriented RGB image whose shorter side is at least ``min_side``
    (when the file is that large) and not much more, using DCT scaling for JPEGs."""
    path = Path(path)
    name = shown(path.name)
    if ".heic" not in Image.registered_extensions():  # HEIC/HEIF: once per process, when first decoding
        register_heif()
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels  # ours is checked below; Pillow's own must not be lower
    try:
        if path.suffix.lower() in RAW_EXTENSIONS:  # camera RAW: its embedded preview (indexer.ingest.raw)
            from indexer.ingest.raw import open_raw_preview

            _open_regular(path).close()  # a FIFO or a folder named .dng is refused like any other
            preview, meta = open_raw_preview(path)
            return working_image(preview, min_side), meta
        with warnings.catch_warnings(), _open_regular(path) as fh:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit decides, below
            img: Image.Image = Image.open(fh)
            try:
                w, h = img.size
                if w <= 0 or h <= 0:
                    raise DecodeError(f"{name}: the image has no pixels ({w}×{h}).")
                if w * h > max_pixels:
                    raise DecodeError(over_limit(name, w, h, max_pixels))
                if img.format == "JPEG":
                    # draft() keeps both sides >= the request, so the short side stays >= min_side.
                    img.draft(None, (min_side, min_side))
                img.load()
                # After load(): reading a PNG's EXIF first made Pillow swallow a broken data
                # stream, and the damaged photo was indexed from a half-decoded image.
                orientation, taken, make, model = read_exif(img)
                img = working_image(img, min_side)
                if orientation not in (None, 1):
                    img = ImageOps.exif_transpose(img) or img
            except BaseException:
                img.close()
                raise
    except DecodeError:
        raise
    except FileNotFoundError as exc:
        raise PhotoVanishedError(f"{name}: the file disappeared before it could be read.") from exc
    except PermissionError as exc:
        raise DecodeError(f"{name}: permission denied.") from exc
    except UnidentifiedImageError as exc:
        size = path.stat().st_size if path.exists() else 0
        why = "the file is empty" if size == 0 else "not an image, or a format Glimpse cannot read"
        raise DecodeError(f"{name}: {why}.") from exc
    except Image.DecompressionBombError as exc:
        # Pillow refuses past twice its limit and quotes that figure; ours is the one limit people see.
        raise DecodeError(
            f"{name}: over the {max_pixels / 1e6:.0f} MP safety limit (possible decompression bomb)."
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, struct.error) as exc:
        text = str(exc) or type(exc).__name__
        if "truncated" in text.lower():
            text = "the file is truncated (incomplete download or copy?)"
        raise DecodeError(f"{name}: {text}") from exc
    # The photo's real size as displayed, not the size of the reduced decode.
    shown_size = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    meta = PhotoMetadata(shown_size[0], shown_size[1], orientation, taken, make, model)
    return img, meta


def over_limit(name: str, w: int, h: int, max_pixels: int) -> str:
    """The one message for a photo over the pixel limit (quoted the same everywhere)."""
    return (
        f"{name}: {w}×{h} pixels ({w * h / 1e6:.0f} MP) is over the {max_pixels / 1e6:.0f} MP safety limit "
        "(possible decompression bomb)."
    )


def to_model_input(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Resize and crop exactly as open_clip's inference transform does, as uint8 HWC."""
    s = spec.size
    w, h = img.size
    resample = _RESAMPLE[spec.interpolation]
    if spec.resize_mode == "squash":
        out = img.resize((s, s), resample)
    elif spec.resize_mode == "longest":
        scale = s / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = img.resize((nw, nh), resample)
        out = Image.new("RGB", (s, s), (spec.fill_color,) * 3)
        out.paste(resized, ((s - nw) // 2, (s - nh) // 2))
    else:  # shortest side to s, then centre crop (torchvision Resize(int) + CenterCrop)
        if max(w, h) > 4 * min(w, h):
            # Only the centre survives the crop: cut it first, so a 1 × 100,000 strip is not
            # scaled up to s × 25,600,000 pixels on the way.
            # (kept 2:1 wide, so the final crop is the same as from the whole photo)
            img = img.crop(_centre_box(w, h, 2))
            w, h = img.size
        if w <= h:
            nw, nh = s, int(s * h / w)
        else:
            nw, nh = int(s * w / h), s
        resized = img.resize((nw, nh), resample) if (nw, nh) != (w, h) else img
        left = round((nw - s) / 2.0)
        top = round((nh - s) / 2.0)
        out = resized.crop((left, top, left + s, top + s))
    return np.asarray(out, dtype=np.uint8)


_DCT = np.cos(np.pi / 32 * (np.arange(32)[:, None] * (np.arange(32)[None, :] + 0.5)))


def fingerprint(img: Image.Image) -> int:
    """A 64-bit perceptual hash (pHash) of ``img``: the signs, against their median, of the
    lowest 8×8 frequencies of its 32×32 grey image (the constant term left out).

    A resized, re-encoded, brightened or slightly cropped copy keeps almost every bit; a
    different picture of the same thing (another red circle elsewhere in the frame) does
    not, which a model that sees only what a picture shows cannot tell apart.
    """
    grey = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BOX), np.float64)
    low = (_DCT @ grey @ _DCT.T)[:8, :8].reshape(-1)[1:]
    bits = low > np.median(low)
    return int(sum(1 << i for i, bit in enumerate(bits.tolist()) if bit))


def make_thumbnail(img: Image.Image, size: int = THUMBNAIL_SIZE) -> bytes:
    thumb = img.copy()
    thumb.thumbnail((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=85, optimize=False)
    return buf.getvalue()


def decode_photo(
    path: Path | str,
    spec: PreprocessSpec,
    thumbnail_size: int | None = THUMBNAIL_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    regions: bool = False,
) -> DecodedPhoto:
    """Decode once; produce the model input, (optionally) the thumbnail and region crops from it."""
    # Regions are 60% of the photo: decode at twice the model's size so they keep their detail.
    need = max(spec.size * (2 if regions else 1), thumbnail_size or 0)
    img, meta = open_photo(path, need, max_pixels)
    meta = replace(meta, fingerprint=fingerprint(img))
    try:
        pixels = to_model_input(img, spec)
        thumb = make_thumbnail(img, thumbnail_size) if thumbnail_size else None
        crops = region_inputs(img, spec) if regions else None
    finally:
        img.close()
    return DecodedPhoto(pixels=pixels, metadata=meta, thumbnail=thumb, regions=crops)
