"""Switching a library's model: search keeps answering, a stop in the middle resumes, the swap is atomic."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from indexer.composition import Services, build_services
from indexer.errors import ModelMismatchError
from indexer.ingest.pipeline import Control
from indexer.models.choice import ModelChoice
from indexer.models.presets import TOYWORLD_DIR
from indexer.settings import Settings
from indexer.toyworld.world import all_specs
from store.paths import AppPaths
from tests.photos import write_photo


def _open(paths: AppPaths, requested: ModelChoice | None = None) -> Services:
    return build_services(paths, Settings(precision="fp32", batch_size=4, decode_workers=1), requested)


@pytest.fixture
def library(paths: AppPaths, tmp_path: Path) -> tuple[AppPaths, Path]:
    root = tmp_path / "photos"
    for n, spec in enumerate(all_specs()):
        write_photo(root / f"{spec.colour}-{spec.shape}.jpg", spec, seed=300 + n)
    svc = _open(paths, ModelChoice("toyworld"))
    svc.tagger.seed_vocabulary()
    for _ in svc.pipeline.run([root]):
        pass
    svc.close()
    other = tmp_path / "toy-copy"
    shutil.copytree(TOYWORLD_DIR, other)
    return paths, other


def test_a_stopped_switch_resumes_and_search_answers_throughout(library: tuple[AppPaths, Path]) -> None:
    paths, other = library
    target = ModelChoice(f"local-dir:{other}")
    svc = _open(paths)
    assert svc.switch.begin(target) == "started"
    control = Control()
    first_pass = 0
    for progress in svc.switch.run(control):
        if progress.phase == "switching" and progress.done >= 8:
            first_pass = progress.done
            control.cancel()  # the user quits (or the process is killed) mid-switch
    assert first_pass >= 8
    hits = svc.search.search("a red circle", k=1)
    assert Path(hits[0].path).name == "red-circle.jpg", "the old model answers until the swap"
    state = svc.switch.state()
    assert state.target is not None and 0 < state.done < state.total == 36
    svc.close()

    svc = _open(paths)  # a new process: the switch is remembered and resumes
    assert svc.switch.state().done == state.done
    embedded = 0
    for progress in svc.switch.run(Control()):
        if progress.phase == "done":
            embedded = progress.done
    assert embedded == 36 - state.done, "photos embedded before the stop are not embedded again"
    assert svc.switch.target() is None
    assert svc.switch.state().active == ModelChoice(target.name, None, svc.slot.embedder.record.key)
    assert [m.name for m in svc.store.models()] == [target.name], "the old model's vectors are dropped"
    hits = svc.search.search("a red circle", k=1)
    assert Path(hits[0].path).name == "red-circle.jpg"
    assert svc.tagger.is_current() and sum(svc.tags.counts().values()) > 0
    svc.close()

    with pytest.raises(ModelMismatchError):
        _open(paths, ModelChoice("toyworld")).close()
    svc = _open(paths, ModelChoice(target.name))
    assert svc.choice.name == target.name
    svc.close()


def test_cancel_drops_the_partial_target(library: tuple[AppPaths, Path]) -> None:
    paths, other = library
    svc = _open(paths)
    svc.switch.begin(ModelChoice(f"local-dir:{other}"))
    control = Control()
    for progress in svc.switch.run(control):
        if progress.done >= 4:
            control.cancel()
    assert len(svc.store.models()) == 2
    svc.switch.cancel()
    assert svc.switch.target() is None
    assert [m.name for m in svc.store.models()] == ["toyworld"]
    assert svc.switch.begin(ModelChoice("toyworld")) == "current"
    svc.close()
