"""`glimpse index` with nothing to do answers from the settled stamp, and only then."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from indexer.toyworld.world import all_specs
from tests.e2e.test_cli import run
from tests.photos import write_photo

# The real entry point in-process; reports whether the full command (SQLAlchemy) was needed.
_INDEX = """
import sys
from desktop.launcher import main
code = main(["index"])
sys.stdout.flush()
print("\\nFULL" if "sqlalchemy" in sys.modules else "\\nQUICK", code, file=sys.stderr)
"""


def _index(env: dict[str, str]) -> tuple[str, str, int]:
    out = subprocess.run([sys.executable, "-c", _INDEX], env=env, capture_output=True, text=True, timeout=300)
    where, code = out.stderr.strip().splitlines()[-1].split()
    return out.stdout, where, int(code)


@pytest.fixture
def settled(tmp_path: Path) -> tuple[dict[str, str], Path]:
    env = dict(os.environ, GLIMPSE_HOME=str(tmp_path / "home"), GLIMPSE_MODEL="toyworld", HF_HUB_OFFLINE="1")
    photos = tmp_path / "photos"
    for n, spec in enumerate(all_specs()[:6]):
        write_photo(photos / f"{spec.colour}-{spec.shape}.jpg", spec, seed=n)
    assert run(["index", str(photos)], env).returncode == 0
    out, where, code = _index(env)  # a full rescan that leaves the library settled records so
    assert (where, code) == ("FULL", 0) and "6 photos found: 0 new" in out
    return env, photos


def test_an_unchanged_library_is_answered_without_the_engine(settled: tuple[dict[str, str], Path]) -> None:
    env, _ = settled
    out, where, code = _index(env)
    assert (where, code) == ("QUICK", 0)
    assert out.splitlines()[0] == "6 photos found: 0 new, 0 changed, 0 moved, 0 removed."
    assert _index(env)[1] == "QUICK"


@pytest.mark.parametrize(
    "change",
    ["touch a photo", "add a photo", "delete a photo", "edit the tags", "change settings", "another model"],
)
def test_any_change_runs_the_full_command(settled: tuple[dict[str, str], Path], change: str) -> None:
    env, photos = settled
    first = sorted(photos.glob("*.jpg"))[0]
    expect = "6 photos found: 0 new"
    if change == "touch a photo":
        os.utime(first, ns=(time.time_ns(), time.time_ns() + 10**9))
        expect = "1 changed"
    elif change == "add a photo":
        write_photo(photos / "sub" / "late.jpg", all_specs()[7], seed=99)
        expect = "1 new"
    elif change == "delete a photo":
        first.unlink()
        expect = "1 removed"
    elif change == "edit the tags":
        assert run(["tags", "add", "kite", "--prompt", "a kite in the sky"], env).returncode == 0
    elif change == "change settings":
        (Path(env["GLIMPSE_HOME"]) / "settings.json").write_text('{"threads": 1}')
    else:
        env = dict(env, GLIMPSE_MODEL="ViT-B-32")
    out, where, code = _index(env)
    assert where == "FULL", (change, out)
    if change == "another model":
        assert code == 2  # the full command's refusal, not a quick "nothing to do"
        return
    assert code == 0 and expect in out, (change, out)
    assert _index(env)[1] == "QUICK", "the full run settled the library again"
