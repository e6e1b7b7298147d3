"""Shared fixtures: an isolated library home per test and the real toy-world model."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer.models.embedder import OpenClipEmbedder
from indexer.models.engine import ModelEngine
from indexer.models.presets import resolve_model
from store.paths import AppPaths


@pytest.fixture(scope="session")
def toy_onnx_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy model exported to ONNX once per test session, by the product's own engine.

    A library exports its model on first use (~6 s for the toy model through torch.export);
    tests/unit/test_onnx.py covers that path. Every other test starts from a library folder
    that already holds the export, as a user's does after the first use.
    """
    models = tmp_path_factory.mktemp("toy-export")
    engine = ModelEngine(resolve_model("toyworld"), models)
    engine.load()
    assert engine.runtime == "onnxruntime", engine.fallback_reason
    return engine.export_folder


def seed_export(home: Path, export: Path) -> None:
    """Place the session's toy export where a library at ``home`` looks for it."""
    target = home / "models" / "onnx" / export.name
    if not target.exists():
        shutil.copytree(export, target)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toy_onnx_export: Path) -> None:
    """No test may touch the user's real library or model settings."""
    for name in ("glimpse-home", "home", "fresh"):  # the library folders the tests use
        seed_export(tmp_path / name, toy_onnx_export)
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
