"""Shared fixtures: an isolated library home per test and the real toy-world model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer.models.embedder import OpenClipEmbedder
from indexer.models.presets import resolve_model
from store.paths import AppPaths


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may touch the user's real library or model settings."""
    monkeypatch.setenv("GLIMPSE_HOME", str(tmp_path / "glimpse-home"))
    monkeypatch.delenv("GLIMPSE_MODEL", raising=False)
    monkeypatch.delenv("GLIMPSE_WEIGHTS", raising=False)


@pytest.fixture
def paths(tmp_path: Path) -> AppPaths:
    return AppPaths.from_env({"GLIMPSE_HOME": str(tmp_path / "glimpse-home")}).ensure()


@pytest.fixture(scope="session")
def toy_embedder() -> Iterator[OpenClipEmbedder]:
    """The real open_clip code path over the committed toy-world weights (loaded once)."""
    embedder = OpenClipEmbedder(resolve_model("toyworld"), precision="fp32", threads=2)
    embedder.load()
    yield embedder
