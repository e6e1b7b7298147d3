"""On-disk thumbnail cache, keyed by content so a moved photo keeps its thumbnail."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def thumbnail_key(content_hash: str | None, path: str, size: int, mtime_ns: int) -> str:
    """The content hash when known; otherwise a digest of the file's identity."""
    if content_hash:
        return content_hash
    return hashlib.blake2b(f"{path}\0{size}\0{mtime_ns}".encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


class ThumbnailCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.jpg"

    def get(self, key: str) -> bytes | None:
        try:
            return self.path_for(key).read_bytes()
        except OSError:
            return None

    def put(self, key: str, data: bytes) -> None:
        """Write atomically, so a reader never sees half a JPEG."""
        target = self.path_for(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
