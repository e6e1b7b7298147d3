"""A corpus of odd and hostile files, as old drives, archives, cameras and attackers leave them.

``make_corpus(root)`` writes every kind into ``root`` and returns what a correct indexer
must do with each: ``good`` photos must be indexed (and found by their path), ``bad``
files must be reported with a reason (an unreadable photo, or a scan problem), and
``ignored`` files are not photos at all. ``tests/e2e/test_hostile.py`` indexes it.
"""

from __future__ import annotations

import io
import os
import random
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from indexer.toyworld.world import all_specs, render


@dataclass
class Corpus:
    good: dict[str, Path] = field(default_factory=dict)  # kind -> a photo that must be indexed
    bad: dict[str, Path] = field(default_factory=dict)  # kind -> a file that must be reported
    ignored: dict[str, Path] = field(default_factory=dict)  # kind -> not a photo; silently skipped
    sockets: list[socket.socket] = field(default_factory=list)

    @property
    def kinds(self) -> int:
        return len(self.good) + len(self.bad) + len(self.ignored)

    def close(self) -> None:
        for s in self.sockets:
            s.close()


def _photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    specs = all_specs()
    return render(specs[seed % len(specs)], random.Random(seed), size)


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _exif(orientation: int | None = None, date: str | None = None, garbage: bool = False) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if date is not None:
        exif[0x0132] = date
    data = exif.tobytes()
    return data[:10] + os.urandom(40) if garbage else data


def write_dng(path: Path, preview: Image.Image, orientation: int = 1) -> Path:
    """A minimal DNG: a CFA raw image in a sub-IFD and an RGB preview in IFD0, as cameras write."""
    import tifffile

    raw = np.random.default_rng(0).integers(0, 4000, (480, 640)).astype(np.uint16)
    with tifffile.TiffWriter(path) as tw:
        tw.write(
            np.asarray(preview.convert("RGB")),
            photometric="rgb",
            subfiletype=1,
            subifds=1,
            extratags=[(50706, "B", 4, (1, 4, 0, 0), True), (50708, "s", 0, "Glimpse Test", True),
                       (274, "H", 1, orientation, True)],
        )  # fmt: skip
        tw.write(
            raw,
            photometric=32803,
            subfiletype=0,
            extratags=[(33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True), (50717, "I", 1, 4095, True)],
        )
    return path


def make_corpus(root: Path, *, as_root: bool | None = None) -> Corpus:
    """Write the corpus under ``root``; permission traps only where they bite (not as root)."""
    as_root = (os.geteuid() == 0) if as_root is None and hasattr(os, "geteuid") else bool(as_root)
    c = Corpus()
    root.mkdir(parents=True, exist_ok=True)
    seed = iter(range(1000))

    def good(kind: str, name: str, data: bytes | Callable[[Path], object]) -> None:
        c.good[kind] = _write(root / name, data)

    def bad(kind: str, name: str, data: bytes | Callable[[Path], object]) -> None:
        c.bad[kind] = _write(root / name, data)

    jpeg = _encode(_photo(next(seed)), "JPEG", quality=90)
    # -- good photos, in every format and shape a library holds
    good("jpeg", "plain.jpg", jpeg)
    good("progressive jpeg", "progressive.jpg", _encode(_photo(next(seed)), "JPEG", progressive=True))
    good("uppercase extension", "SHOUT.JPG", _encode(_photo(next(seed)), "JPEG"))
    good("jfif extension", "old.jfif", _encode(_photo(next(seed)), "JPEG"))
    good("greyscale jpeg", "grey.jpg", _encode(_photo(next(seed)).convert("L"), "JPEG"))
    good("cmyk jpeg", "cmyk.jpg", _encode(_photo(next(seed)).convert("CMYK"), "JPEG"))
    for o in (3, 6, 8):
        good(f"exif orientation {o}", f"turned{o}.jpg", _encode(_photo(next(seed)), "JPEG", exif=_exif(o)))
    good("exif orientation out of range", "orient99.jpg", _encode(_photo(next(seed)), "JPEG", exif=_exif(99)))
    good("exif date nonsense", "baddate.jpg", _encode(_photo(next(seed)), "JPEG", exif=_exif(date="9999:99:99 99:99")))
    good("exif block damaged", "badexif.jpg", _encode(_photo(next(seed)), "JPEG", exif=_exif(6, garbage=True)))
    good("jpeg with trailing garbage", "trailing.jpg", _encode(_photo(next(seed)), "JPEG") + os.urandom(4096))
    good("png rgb", "plain.png", _encode(_photo(next(seed)), "PNG"))
    good("png rgba", "alpha.png", _encode(_photo(next(seed)).convert("RGBA"), "PNG"))
    good("png la", "greyalpha.png", _encode(_photo(next(seed)).convert("LA"), "PNG"))
    pal = _photo(next(seed)).convert("P", palette=Image.Palette.ADAPTIVE)
    good("png palette with transparency", "palette.png", _encode(pal, "PNG", transparency=0))
    grey16 = Image.fromarray((np.asarray(_photo(next(seed)).convert("L"), np.uint16) * 257).astype(np.uint16))
    good("png 16-bit grey", "grey16.png", _encode(grey16, "PNG"))
    good("png named .jpg", "really-a-png.jpg", _encode(_photo(next(seed)), "PNG"))
    good("jpeg named .png", "really-a-jpeg.png", _encode(_photo(next(seed)), "JPEG"))
    good("gif", "still.gif", _encode(_photo(next(seed)).convert("P"), "GIF"))
    frames = [_photo(next(seed)).convert("P") for _ in range(3)]
    good("animated gif", "animated.gif", lambda p: frames[0].save(p, save_all=True, append_images=frames[1:]))
    good("bmp", "bitmap.bmp", _encode(_photo(next(seed)), "BMP"))
    good("tiff", "plain.tif", _encode(_photo(next(seed)), "TIFF"))
    good("tiff compressed", "deflate.tiff", _encode(_photo(next(seed)), "TIFF", compression="tiff_adobe_deflate"))
    floats = Image.fromarray(np.asarray(_photo(next(seed)).convert("L"), np.float32) / 255.0)
    good("tiff float", "float.tif", _encode(floats, "TIFF"))
    good("webp", "lossy.webp", _encode(_photo(next(seed)), "WEBP"))
    good(
        "webp lossless with alpha", "lossless.webp", _encode(_photo(next(seed)).convert("RGBA"), "WEBP", lossless=True)
    )
    good("avif", "modern.avif", _encode(_photo(next(seed)), "AVIF"))
    from indexer.ingest.decode import register_heif

    register_heif()
    good("heic", "phone.heic", _encode(_photo(next(seed)), "HEIF"))
    good("camera raw (dng)", "camera.dng", lambda p: write_dng(p, _photo(next(seed), (640, 480)), orientation=6))
    good("1x1 pixel", "dot.png", _encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"))
    good("1x100000 strip", "tall.png", _encode(Image.new("RGB", (1, 100_000), (0, 90, 0)), "PNG"))
    good("100000x1 strip", "wide.png", _encode(Image.new("RGB", (100_000, 1), (0, 0, 90)), "PNG"))
    good("100 MP png", "huge.png", _encode(Image.new("L", (10_000, 10_000), 128), "PNG"))
    good("large jpeg", "large.jpg", _encode(_photo(next(seed), (6000, 4000)), "JPEG"))
    # -- good photos under names and places that break naive code
    good("latin-1 file name", os.fsdecode(b"caf\xe9.jpg"), _encode(_photo(next(seed)), "JPEG"))
    good("latin-1 folder name", os.fsdecode(b"\xe9t\xe9/beach.jpg"), _encode(_photo(next(seed)), "JPEG"))
    good("cjk file name", "写真_사진_しゃしん.jpg", _encode(_photo(next(seed)), "JPEG"))
    good("emoji file name", "🌅 sunset.jpg", _encode(_photo(next(seed)), "JPEG"))
    good("newline in file name", "two\nlines.jpg", _encode(_photo(next(seed)), "JPEG"))
    good("quotes and spaces", 'it\'s "quoted" & spaced.jpg', _encode(_photo(next(seed)), "JPEG"))
    good("leading dash", "-rf.jpg", _encode(_photo(next(seed)), "JPEG"))
    good("255-byte file name", ("n" * 251) + ".jpg", _encode(_photo(next(seed)), "JPEG"))
    good("deep folder", "/".join(f"d{i}" for i in range(40)) + "/deep.jpg", _encode(_photo(next(seed)), "JPEG"))
    good("folder named like a photo", "album.jpg/inside.jpg", _encode(_photo(next(seed)), "JPEG"))
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir(exist_ok=True)
    (outside / "target.jpg").write_bytes(_encode(_photo(next(seed)), "JPEG"))
    good("symlink to a photo elsewhere", "linked.jpg", lambda p: p.symlink_to(outside / "target.jpg"))
    (root / "loop").mkdir()
    (root / "loop" / "again").symlink_to(root / "loop", target_is_directory=True)
    good("photo in a symlink loop", "loop/inloop.jpg", _encode(_photo(next(seed)), "JPEG"))

    # -- bad files: each must be reported with a reason, and indexing must go on
    bad("empty file", "empty.jpg", b"")
    bad("truncated jpeg", "truncated.jpg", jpeg[: len(jpeg) // 3])
    bad("jpeg start marker only", "soi.jpg", b"\xff\xd8")
    png = _encode(_photo(next(seed)), "PNG")
    bad("truncated png", "truncated.png", png[: len(png) // 2])
    broken = bytearray(png)
    idat = broken.find(b"IDAT")
    broken[idat + 4 : idat + 6] = b"\x00\x00"  # the zlib stream's header: no decoder can start
    bad("png with corrupt data", "corrupt.png", bytes(broken))
    bad("random bytes", "noise.jpg", os.urandom(20_000))
    bad("text named .png", "notes.png", b"shopping list: milk, eggs\n" * 50)
    bad("html named .jpg", "download.jpg", b"<!doctype html><html><body>404 Not Found</body></html>")
    bad("decompression bomb png", "bomb.png", _png_header(100_000, 100_000))
    bad("over the pixel limit", "toolarge.png", _png_header(20_000, 20_000))
    webp = _encode(_photo(next(seed)), "WEBP")
    bad("truncated webp", "truncated.webp", webp[: len(webp) // 3])
    gif = _encode(_photo(next(seed)).convert("P"), "GIF")
    bad("truncated gif", "truncated.gif", gif[:40])
    tif = _encode(_photo(next(seed)), "TIFF")
    bad("truncated tiff", "truncated.tif", tif[: len(tif) // 3])
    bad("garbage heic", "broken.heic", b"\x00\x00\x00\x18ftypheic" + os.urandom(500))
    bad("garbage avif", "broken.avif", b"\x00\x00\x00\x1cftypavif" + os.urandom(500))
    bad("garbage raw", "broken.nef", os.urandom(5000))
    bad("zip named .jpg", "archive.jpg", _zip_bytes())
    bad("fifo named .jpg", "pipe.jpg", lambda p: os.mkfifo(p))
    bad("broken symlink", "dangling.jpg", lambda p: p.symlink_to(root / "no-such-file.jpg"))
    sock_path = root / "socket.jpg"
    if len(os.fsencode(sock_path)) < 100:  # AF_UNIX paths are short
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(sock_path))
        c.sockets.append(s)
        c.bad["unix socket named .jpg"] = sock_path
    if not as_root:  # root reads everything: these traps do not exist for it
        bad("unreadable photo", "secret.jpg", jpeg)
        c.bad["unreadable photo"].chmod(0)
        locked = root / "locked"
        locked.mkdir()
        (locked / "inside.jpg").write_bytes(jpeg)
        locked.chmod(0)
        c.bad["unreadable folder"] = locked

    # -- not photos at all: skipped without a word
    for kind, name in (("text file", "readme.txt"), ("hidden photo", ".hidden.jpg"), ("sidecar", "plain.jpg.xmp")):
        c.ignored[kind] = _write(root / name, b"not a photo")
    (root / ".thumbnails").mkdir()
    c.ignored["hidden folder"] = _write(root / ".thumbnails" / "cached.jpg", jpeg)
    return c


def _zip_bytes() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("photo.jpg", b"not really")
    return buf.getvalue()


def _write(path: Path, data: bytes | Callable[[Path], object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        data(path)
    return path
