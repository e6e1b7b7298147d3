"""Where Glimpse keeps its files.

One :class:`AppPaths` decides every location, so tests and power users can move
the whole library with one variable (``GLIMPSE_HOME``), as rclip does with
``RCLIP_DATADIR``. Nothing is created until a caller asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "Glimpse"
HOME_ENV = "GLIMPSE_HOME"


@dataclass(frozen=True)
class AppPaths:
    """The data folder (library database, vector indexes) and the cache folder (thumbnails)."""

    data_dir: Path
    cache_dir: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AppPaths:
        """``GLIMPSE_HOME`` if set (data and cache under it), else the platform's user folders."""
        env = os.environ if environ is None else environ
        home = env.get(HOME_ENV)
        if home:
            root = Path(home).expanduser().resolve()
            return cls(data_dir=root, cache_dir=root / "cache")
        return cls(
            data_dir=Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
            cache_dir=Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
        )

    @property
    def database(self) -> Path:
        return self.data_dir / "library.sqlite3"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "vectors"

    @property
    def thumbnails_dir(self) -> Path:
        return self.cache_dir / "thumbnails"

    @property
    def models_dir(self) -> Path:
        """Weight files Glimpse downloads itself (open_clip weights go to the Hugging Face cache)."""
        return self.data_dir / "models"

    @property
    def settings_file(self) -> Path:
        return self.data_dir / "settings.json"

    def ensure(self) -> AppPaths:
        """Create the folders; called once by the composition root, never at import."""
        for path in (self.data_dir, self.cache_dir, self.index_dir, self.thumbnails_dir):
            path.mkdir(parents=True, exist_ok=True)
        return self
