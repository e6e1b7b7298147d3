"""The library knows its model, switches without downtime, and the CLI has manners.

Every flow runs the real ``glimpse`` command on real files with the bundled toy model.
Offline failures are real: no weights other than the toy model's exist here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from indexer.models.choice import ACTIVE_KEY, ModelChoice
from indexer.models.presets import TOYWORLD_DIR
from indexer.toyworld.world import all_specs
from store.library import LibraryStore
from tests.e2e.test_cli import glimpse_cmd, run
from tests.photos import write_photo


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """A user's shell after the README quick start: no GLIMPSE_MODEL set any more."""
    env = dict(os.environ, GLIMPSE_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    env.pop("GLIMPSE_MODEL", None)
    env.pop("GLIMPSE_WEIGHTS", None)
    return env


@pytest.fixture
def indexed(home: dict[str, str], tmp_path: Path) -> tuple[dict[str, str], Path]:
    photos = tmp_path / "photos"
    for n, spec in enumerate(all_specs()):
        write_photo(photos / f"{spec.colour}-{spec.shape}.jpg", spec, seed=n)
    done = run(["index", str(photos)], dict(home, GLIMPSE_MODEL="toyworld"))
    assert done.returncode == 0, done.stderr
    return home, photos


def _status(env: dict[str, str]) -> dict:
    out = run(["status", "--json"], env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_library_remembers_its_model_and_vocabulary(indexed: tuple[dict[str, str], Path]) -> None:
    env, _ = indexed
    found = run(["search", "a red circle", "-k", "1", "--json"], env)  # no GLIMPSE_MODEL now
    assert found.returncode == 0, found.stderr
    assert Path(json.loads(found.stdout)[0]["path"]).name == "red-circle.jpg"
    tags = json.loads(run(["tags", "list", "--json"], env).stdout)
    assert len(tags) == 12, "a bare `tags list` must not merge the default vocabulary into a toy library"
    assert len(json.loads(run(["tags", "list", "--json"], env).stdout)) == 12
    status = _status(env)
    assert status["model"]["name"] == "toyworld" and status["model"]["key"]
    models = json.loads(run(["models", "--json"], env).stdout)["embedding"]
    assert [m["name"] for m in models if m["active"]] == ["toyworld"]
    flagged = json.loads(run(["--model", "ViT-B-32", "models", "--json"], dict(env, GLIMPSE_MODEL="toyworld")).stdout)
    assert [m["name"] for m in flagged["embedding"] if m["active"]] == ["ViT-B-32"], "the flag beats the variable"


def test_another_model_is_refused_with_the_way_to_switch(indexed: tuple[dict[str, str], Path]) -> None:
    env, photos = indexed
    for args, extra in (
        (["--model", "ViT-B-32", "search", "a red circle"], {}),
        (["search", "a red circle"], {"GLIMPSE_MODEL": "ViT-B-32"}),
        (["--model", "ViT-B-32", "index", str(photos)], {}),
    ):
        out = run(args, dict(env, **extra))
        assert out.returncode == 2, out.stderr
        assert "indexed with toyworld" in out.stderr and "glimpse model use ViT-B-32" in out.stderr
    assert _status(env)["model"]["name"] == "toyworld"


def test_a_failed_load_changes_nothing(indexed: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    env, _ = indexed
    started = time.monotonic()
    out = run(["model", "use", "ViT-B-16-SigLIP2"], env)
    assert out.returncode == 4, out.stderr
    assert time.monotonic() - started < 60, "offline must fail in seconds, not minutes"
    assert "not in the Hugging Face cache" in out.stderr or "not on this machine" in out.stderr
    status = _status(env)
    assert status["model"]["name"] == "toyworld" and status["switch"] is None
    assert run(["search", "a blue star", "-k", "1"], env).returncode == 0

    # The multilingual preset with the user's own weights file still needs its tokenizer: offline
    # that is a clear message in seconds (it used to spend ~90 s in download retries).
    weights = tmp_path / "siglip.bin"
    weights.write_bytes(b"not really weights")
    started = time.monotonic()
    siglip = run(["model", "use", "ViT-B-32-SigLIP2-256", "--weights", str(weights)], env)
    assert siglip.returncode == 4 and "tokenizer" in siglip.stderr, siglip.stderr
    assert time.monotonic() - started < 30
    assert _status(env)["model"]["name"] == "toyworld"

    fresh = dict(env, GLIMPSE_HOME=str(tmp_path / "fresh"))
    first = run(["index", str(tmp_path / "photos"), "--model", "ViT-B-16-SigLIP2"], fresh)
    assert first.returncode == 4
    retry = run(["index", str(tmp_path / "photos")], dict(fresh, GLIMPSE_MODEL="toyworld"))
    assert retry.returncode == 0, "a failed first index must not have recorded its model: " + retry.stderr


def test_switching_model_reembeds_in_the_background_and_swaps(
    indexed: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    """A copy of the toy model in another folder is another embedding space to the library."""
    env, _ = indexed
    other = tmp_path / "toy-copy"
    shutil.copytree(TOYWORLD_DIR, other)
    before = json.loads(run(["tags", "list", "--json"], env).stdout)
    started = run(["model", "use", f"local-dir:{other}", "--background", "--json"], env)
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["outcome"] == "started"
    status = _status(env)
    assert status["model"]["name"] == "toyworld"
    assert status["switch"]["to"] == f"local-dir:{other}" and status["switch"]["done"] == 0
    during = run(["search", "a red circle", "-k", "1", "--json"], env)
    assert during.returncode == 0 and json.loads(during.stdout), "search keeps answering during a switch"

    finish = run(["watch", "--once", "--json"], env)  # the service carries the switch through
    assert finish.returncode == 0, finish.stderr
    status = _status(env)
    assert status["model"]["name"] == f"local-dir:{other}" and status["switch"] is None
    assert len(status["models"]) == 1 and status["models"][0]["vectors"] == 36, "old vectors are dropped"
    assert len(list((Path(env["GLIMPSE_HOME"]) / "vectors").glob("model-*.faiss"))) == 1
    after = run(["search", "a red circle", "-k", "1", "--json"], env)
    assert Path(json.loads(after.stdout)[0]["path"]).name == "red-circle.jpg"
    tags_after = json.loads(run(["tags", "list", "--json"], env).stdout)
    assert {t["name"]: t["photos"] for t in tags_after} == {t["name"]: t["photos"] for t in before}
    back = run(["model", "use", "toyworld", "--json"], env)  # switching back, in the foreground
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["outcome"] == "switched"
    assert sum(t["photos"] for t in json.loads(run(["tags", "list", "--json"], env).stdout)) > 0


def test_bad_settings_are_clear_errors(home: dict[str, str], tmp_path: Path) -> None:
    library = Path(home["GLIMPSE_HOME"])
    library.mkdir(parents=True, exist_ok=True)
    (library / "settings.json").write_text('{"threads": "2"}')
    out = run(["index", str(tmp_path)], dict(home, GLIMPSE_MODEL="toyworld"))
    assert out.returncode == 2 and "threads" in out.stderr and "Traceback" not in out.stderr
    (library / "settings.json").write_text('{"device": "tpu"}')
    out = run(["status"], home)
    assert out.returncode == 2 and "auto, cpu, cuda, mps" in out.stderr
    (library / "settings.json").unlink()
    out = run(["--device", "cuda", "index", str(tmp_path)], dict(home, GLIMPSE_MODEL="toyworld"))
    assert out.returncode == 2 and "no CUDA device" in out.stderr and "Traceback" not in out.stderr


def test_read_only_commands_never_create_a_library(home: dict[str, str]) -> None:
    for args in (["status"], ["search", "a cat"], ["tags", "list"], ["folders", "list"], ["doctor"]):
        out = run(args, home)
        assert out.returncode == 5, (args, out.stderr)
        assert "glimpse index FOLDER" in out.stderr
    assert not (Path(home["GLIMPSE_HOME"]) / "library.sqlite3").exists()


def test_cli_manners(indexed: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    env, photos = indexed
    version = run(["--version"], env)
    assert version.returncode == 0 and version.stdout.startswith("glimpse ")
    for bad in (["search", "cat", "-k", "0"], ["search", "cat", "-k", "-1"], ["similar", "#1", "-k", "0"]):
        out = run(bad, env)
        assert out.returncode == 2 and "Traceback" not in out.stderr, bad
    missing = run(["search", "./holiday/IMG_1234.jpg"], env)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    quoted = run(["search", '"IMG_1234.jpg"'], env)
    assert quoted.returncode == 0
    both = run(["search", "a red circle", "--region", str(photos / "red-circle.jpg"), "--box", "0,0,10,10"], env)
    assert both.returncode == 2 and "not both" in both.stderr

    added = run(["tags", "add", "violet", "--prompt", "a purple star", "--json"], env)
    assert added.returncode == 0 and json.loads(added.stdout)["tag"]["name"] == "violet"
    edited = run(["tags", "edit", "violet", "--threshold", "0.6", "--json"], env)
    assert json.loads(edited.stdout)["tag"]["threshold"] == 0.6
    removed = run(["tags", "remove", "violet", "--json"], env)
    assert json.loads(removed.stdout) == {"deleted": "violet"}
    more = tmp_path / "more"
    write_photo(more / "late.jpg", next(iter(all_specs())), seed=99)
    folder = run(["folders", "add", str(more), "--json"], env)
    assert json.loads(folder.stdout) == {"added": str(more.resolve())}
    watched = run(["watch", "--once", "--json"], env)
    assert watched.returncode == 0 and json.loads(watched.stdout)["indexed"] == 37

    # A closed pipe (`glimpse tags list | head -1`) is no error and prints no traceback. The reader
    # is gone before the first line, so every write meets the closed pipe.
    for _ in range(2):
        proc = subprocess.Popen(
            [*glimpse_cmd(), "tags", "list"],
            env=dict(env, PYTHONUNBUFFERED="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(60) == 0 and "Traceback" not in err and "Exception" not in err, err


_NO_MODEL = """
import contextlib, io, sys
from indexer.cli.main import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "open_clip", "torchvision", "onnxruntime") if m in sys.modules)
print(code, ",".join(heavy) or "-")
"""


def test_commands_that_run_no_model_never_import_it(indexed: tuple[dict[str, str], Path]) -> None:
    """The library knows its model's id and size, so only commands that embed load torch."""
    env, photos = indexed
    for args in (
        ["status"],
        ["folders", "list"],
        ["doctor"],
        ["tags", "list"],
        ["tags", "show", str(photos / "red-circle.jpg")],
        ["similar", "#3", "-k", "3"],
        ["search", "#3 + #4", "-k", "3"],
        ["index"],  # a rescan with nothing new
        ["model"],
    ):
        out = subprocess.run(
            [sys.executable, "-c", _NO_MODEL, *args], env=env, capture_output=True, text=True, timeout=300
        )
        assert out.stdout.split() == ["0", "-"], (args, out.stdout, out.stderr)
    text = subprocess.run(
        [sys.executable, "-c", _NO_MODEL, "search", "a red circle"], env=env, capture_output=True, text=True
    )
    # A text query runs the exported text tower (the check above can fail), and still not torch.
    assert text.stdout.split() == ["0", "onnxruntime"], (text.stdout, text.stderr)


def test_a_library_of_an_open_clip_name_reads_without_importing_it(home: dict[str, str]) -> None:
    """A recorded ARCH/TAG model is trusted as recorded: checking it against open_clip costs an import."""
    library = Path(home["GLIMPSE_HOME"])
    store = LibraryStore.open(library / "library.sqlite3")
    store.set_meta(ACTIVE_KEY, ModelChoice("ViT-B-16/openai", key="ViT-B-16/openai").to_json())
    store.close()
    for args in (["status"], ["tags", "list"], ["model"]):
        out = subprocess.run([sys.executable, "-c", _NO_MODEL, *args], env=home, capture_output=True, text=True)
        assert out.stdout.split() == ["0", "-"], (args, out.stdout, out.stderr)
