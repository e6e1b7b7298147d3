"""Answers you can trust, through the ``glimpse`` command: the relevance cutoff, queries in
Korean, near-duplicates and their clean-up to the trash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance

from indexer.toyworld.world import ShapeSpec, all_specs
from tests.e2e.test_cli import env, run  # noqa: F401 (env is a fixture)
from tests.photos import write_photo

RED_CIRCLE = ShapeSpec("circle", "red")
ABSENT = ShapeSpec("star", "green")


@pytest.fixture
def library(tmp_path: Path, env: dict[str, str]) -> dict[str, ShapeSpec]:  # noqa: F811
    """Two pictures of every (colour, shape) but one, each pair in its own folder; indexed."""
    root = tmp_path / "Photos"
    truth = {}
    for n, spec in enumerate(s for s in all_specs() if s != ABSENT):
        for i in range(2):
            path = write_photo(root / f"{spec.colour}-{spec.shape}" / f"{i}.jpg", spec, seed=3000 + 2 * n + i)
            truth[str(path.resolve())] = spec
    done = run(["index", str(root)], env)
    assert done.returncode == 0, done.stderr
    return truth


def test_a_query_returns_its_matches_not_a_fixed_count(library: dict[str, ShapeSpec], env: dict[str, str]) -> None:  # noqa: F811
    found = json.loads(run(["search", "a red circle", "--json", "-k", "100"], env).stdout)
    assert [library[r["path"]] for r in found] == [RED_CIRCLE, RED_CIRCLE], "only the two red circles match"
    assert all(r["match"] >= 0.5 and not r["weak"] for r in found)
    assert all(0 <= r["match"] <= 1 and -1 <= r["cosine"] <= 1 for r in found)
    # -k is still an upper bound, and --all lists the weaker ones below the matches.
    assert len(json.loads(run(["search", "a red circle", "--json", "-k", "1"], env).stdout)) == 1
    everything = json.loads(run(["search", "a red circle", "--json", "--all", "-k", "30"], env).stdout)
    assert len(everything) == 30 and [r["weak"] for r in everything[:3]] == [False, False, True]
    assert all(r["match"] < 0.5 for r in everything[2:])
    text = run(["search", "a red circle", "--all", "-k", "5"], env).stdout.splitlines()
    assert text[2] == "── weaker matches ──" and text[0].split()[0].endswith("%")


def test_a_query_with_nothing_relevant_says_so(library: dict[str, ShapeSpec], env: dict[str, str]) -> None:  # noqa: F811
    shown = json.loads(run(["search", "a green star", "--json", "-k", "100"], env).stdout)
    assert len(shown) <= 2, "an absent pair returns at most a near miss or two"
    out = run(["search", "a green star", "-k", "100"], env).stdout
    if not shown:
        lines = out.splitlines()
        assert lines[0] == "No good match for “a green star”; closest:" and len(lines) == 4


def test_combined_filtered_and_similar_queries_use_the_same_cutoff(
    library: dict[str, ShapeSpec],
    env: dict[str, str],  # noqa: F811
) -> None:
    by_tag = json.loads(run(["search", "a circle", "--tag", "red", "--json", "-k", "100"], env).stdout)
    assert by_tag and all(library[r["path"]] == RED_CIRCLE for r in by_tag)
    combo = json.loads(run(["search", '"a circle" - "red"', "--json", "-k", "100"], env).stdout)
    assert combo and all(library[r["path"]].shape == "circle" for r in combo)
    assert all(library[r["path"]].colour != "red" for r in combo)
    target = next(p for p, s in library.items() if s == RED_CIRCLE)
    similar = json.loads(run(["similar", target, "--json", "-k", "100"], env).stdout)
    assert similar, "the other red circle at least"
    assert library[similar[0]["path"]] == RED_CIRCLE
    assert all(library[r["path"]].colour == "red" or library[r["path"]].shape == "circle" for r in similar)


def test_a_korean_query_reaches_the_photos_of_its_english_twin(
    library: dict[str, ShapeSpec],
    env: dict[str, str],  # noqa: F811
) -> None:
    for english, korean in (("a red circle", "빨간 원"), ("something blue", "파란색 무언가")):
        en = {r["path"] for r in json.loads(run(["search", english, "--json", "-k", "100"], env).stdout)}
        ko = {r["path"] for r in json.loads(run(["search", korean, "--json", "-k", "100"], env).stdout)}
        assert en and ko, (english, korean)
        assert len(en & ko) >= 0.9 * len(en | ko), (english, korean, en ^ ko)
    blue = {p for p, s in library.items() if s.colour == "blue"}
    ko_blue = {r["path"] for r in json.loads(run(["search", "파란색 무언가", "--json", "-k", "100"], env).stdout)}
    assert ko_blue <= blue and len(ko_blue) >= 0.9 * len(blue)
    # Tags in Korean, through the real tokenizer path: a tag whose phrase is Korean.
    added = run(["tags", "add", "빨간색", "--prompt", "빨간색 무언가"], env)
    assert added.returncode == 0, added.stderr
    tagged = {r["path"] for r in json.loads(run(["search", "tag:빨간색", "--json", "-k", "100"], env).stdout)}
    red = {p for p, s in library.items() if s.colour == "red"}
    assert len(tagged & red) >= 0.9 * len(red) and len(tagged - red) <= 1


def test_models_say_which_languages_each_preset_understands(env: dict[str, str]) -> None:  # noqa: F811
    rows = {m["name"]: m for m in json.loads(run(["models", "--json"], env).stdout)["embedding"]}
    assert rows["ViT-B-32-256"]["languages"] == "English"
    assert "Korean" in rows["ViT-B-32-SigLIP2-256"]["languages"] and "Korean" in rows["toyworld"]["languages"]
    korean = {**env, "LANG": "ko_KR.UTF-8", "LC_ALL": "", "LC_MESSAGES": ""}
    korean.pop("GLIMPSE_MODEL")
    rows = {m["name"]: m for m in json.loads(run(["models", "--json"], korean).stdout)["embedding"]}
    assert rows["ViT-B-32-SigLIP2-256"]["default"] and not rows["ViT-B-32-256"]["default"]
    assert "a new library uses ViT-B-32-SigLIP2-256" in run(["models"], korean).stdout


def _copies(src: Path, out: Path) -> list[Path]:
    img = Image.open(src).convert("RGB")
    w, h = img.size
    made = []
    for name, copy in (
        ("half", img.resize((w // 2, h // 2))),
        ("crop", img.crop((w // 40, h // 40, w - w // 40, h - h // 40))),
        ("bright", ImageEnhance.Brightness(img).enhance(1.25)),
    ):
        made.append(out / f"{src.stem}-{name}.jpg")
        copy.save(made[-1], quality=90)
    made.append(out / f"{src.stem}-q40.jpg")
    img.save(made[-1], quality=40)
    made.append(out / f"{src.stem} copy.jpg")
    made[-1].write_bytes(src.read_bytes())
    return made


def test_duplicates_are_grouped_suggested_and_trashed_only_when_confirmed(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
) -> None:
    root = tmp_path / "Photos"
    originals = [
        write_photo(root / "orig" / f"{s.colour}-{s.shape}.jpg", s, seed=50 + n, size=(640, 480))
        for n, s in enumerate(all_specs()[:4])
    ]
    # Another picture of the same thing is not a duplicate: same colour and shape, elsewhere in the frame.
    other = write_photo(root / "orig" / "second-red-circle.jpg", all_specs()[0], seed=999, size=(640, 480))
    (root / "copies").mkdir()
    copies = {o: _copies(o, (root / "copies").resolve()) for o in originals[:2]}
    assert run(["index", str(root)], env).returncode == 0
    groups = json.loads(run(["duplicates", "--json"], env).stdout)["groups"]
    found = [{m["path"] for m in g["members"]} for g in groups]
    for original, made in copies.items():
        want = {str(original.resolve()), *(str(p) for p in made)}
        assert want in found, (original, found)
        group = groups[found.index(want)]
        assert group["keep"] == str(original.resolve()), "the largest, oldest, best-named one is kept"
    assert not any(str(other.resolve()) in g for g in found)
    assert all(str(o.resolve()) not in g for o in originals[2:] for g in found)

    # The similarity threshold is the user's: at 1.0 only exact copies remain.
    exact = json.loads(run(["duplicates", "--json", "--similarity", "1"], env).stdout)["groups"]
    assert all(g["kind"] == "exact" for g in exact) and len(exact) == 2

    # Search shows a group as one result, "+N similar"; --expand lists each photo.
    shown = json.loads(run(["search", "a red circle", "--json", "-k", "50"], env).stdout)
    assert len([r for r in shown if r["path"].startswith(str(root / "copies"))]) == 0
    assert any(len(r["similar"]) == 5 for r in shown)
    assert "(+5 similar)" in run(["search", "a red circle", "-k", "50"], env).stdout
    expanded = json.loads(run(["search", "a red circle", "--json", "--expand", "-k", "50"], env).stdout)
    assert len(expanded) >= len(shown) + 5

    # Nothing moves without a yes: no terminal and no --yes is refused, and nothing is lost.
    trash_home = tmp_path / "xdg"
    trash_env = {**env, "XDG_DATA_HOME": str(trash_home)}
    refused = run(["duplicates", "--trash"], trash_env)
    assert refused.returncode != 0 and "confirmation" in refused.stderr
    assert all(p.exists() for made in copies.values() for p in made)
    moved = run(["duplicates", "--trash", "--yes", "--json"], trash_env)
    assert moved.returncode == 0, moved.stderr
    report = json.loads(moved.stdout)
    assert sorted(report["moved"]) == sorted(str(p) for made in copies.values() for p in made)
    assert all(not p.exists() for made in copies.values() for p in made)
    assert all(o.exists() for o in originals) and other.exists()
    trashed = sorted(p.name for p in (trash_home / "Trash" / "files").iterdir())
    assert len(trashed) == 10, trashed
    assert json.loads(run(["duplicates", "--json"], env).stdout)["groups"] == []
    status = json.loads(run(["status", "--json"], env).stdout)
    assert status["images"]["indexed"] == len(originals) + 1
