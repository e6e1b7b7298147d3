"""``glimpse tags`` and tag filters, as a user runs them (real toy model, real files)."""

from __future__ import annotations

import json
from pathlib import Path

from indexer.tags.xmp import read_keywords
from indexer.toyworld.world import all_specs
from tests.e2e.test_cli import env, run  # noqa: F401  (env is a fixture)
from tests.photos import write_photo


def test_tags_from_index_to_xmp(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    root = tmp_path / "photos"
    for n, spec in enumerate(all_specs()):
        for i in range(3):
            write_photo(root / spec.shape / f"{spec.colour}-{i}.jpg", spec, seed=300 + 10 * n + i)
    assert run(["index", str(root)], env).returncode == 0

    listed = json.loads(run(["tags", "list", "--json"], env).stdout)
    counts = {r["name"]: r["photos"] for r in listed}
    assert set(counts) >= {"red", "blue", "star", "circle"} and 15 <= counts["star"] <= 21

    res = run(["search", "a shape", "--tag", "star", "--without-tag", "blue", "-k", "50", "--json"], env)
    assert res.returncode == 0, res.stderr
    hits = json.loads(res.stdout)
    assert hits and all("star" in h["tags"] and "blue" not in h["tags"] for h in hits)

    photo = root / "circle" / "red-0.jpg"
    assert run(["tags", "add", "holiday", str(photo)], env).returncode == 0
    assert run(["tags", "remove", "circle", str(photo)], env).returncode == 0
    assert run(["tags", "apply"], env).returncode == 0  # a re-tag keeps the user's word
    shown = json.loads(run(["tags", "show", str(photo), "--json"], env).stdout)[0]
    names = {t["name"]: t["source"] for t in shown["tags"]}
    assert names.get("holiday") == "user" and "circle" not in names

    stars = sorted((root / "star").glob("blue-*.jpg"))
    res = run(["tags", "teach", "sky star", *map(str, stars), "--json"], env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["tagged"] >= 3

    res = run(["tags", "export", str(root / "circle")], env)
    assert res.returncode == 0, res.stderr
    assert set(read_keywords(Path(f"{photo}.xmp"))) >= {"holiday", "red"}
    assert "circle" not in read_keywords(Path(f"{photo}.xmp"))

    res = run(["search", "tag:unicorn"], env)
    assert res.returncode == 5 and "no tag called" in res.stderr
