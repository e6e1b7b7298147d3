"""Query parsing and the arithmetic of combined, weighted and negative queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer.errors import NotFoundError, QueryError
from indexer.models.space import single_space
from indexer.search.query import parse_query
from indexer.search.service import SearchService
from store.library import LibraryStore
from store.records import EmbeddedImage, NewFile, ScanChanges
from tests.fakes import FakeEmbedder


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("dog on a beach at sunset", [("text", "dog on a beach at sunset", 1.0)]),
        ('"beach" - "people"', [("text", "beach", 1.0), ("text", "people", -1.0)]),
        ("beach -people", [("text", "beach", 1.0), ("text", "people", -1.0)]),
        ("t-shirt + well-lit", [("text", "t-shirt", 1.0), ("text", "well-lit", 1.0)]),
        ('#12 + 2*"snow" - 0.5 * rain', [("id", "12", 1.0), ("text", "snow", 2.0), ("text", "rain", -0.5)]),
        ("\"dog's toy\" + 'red - blue'", [("text", "dog's toy", 1.0), ("text", "red - blue", 1.0)]),
    ],
)
def test_parse(query: str, expected: list[tuple[str, str, float]]) -> None:
    assert [(t.kind, t.value, t.weight) for t in parse_query(query).terms] == expected


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a +", "ends with an operator"),
        ("a + - b", "Two operators"),
        ('"open', "not closed"),
        ("-people", "only exclude"),
        ('a + ""', "empty"),
    ],
)
def test_parse_errors(query: str, reason: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_query(query)
    assert reason in info.value.message


def test_existing_file_is_an_image_term(tmp_path: Path) -> None:
    photo = tmp_path / "holiday.jpg"
    Image.new("RGB", (8, 8)).save(photo)
    terms = parse_query('holiday.jpg + "at night"', base_dir=tmp_path).terms
    assert [(t.kind, t.weight) for t in terms] == [("file", 1.0), ("text", 1.0)]
    assert terms[0].value == str(photo.resolve())


# ---- search arithmetic over a library whose vectors the test chooses ------------------------

AXES = {"x": [1, 0, 0], "y": [0, 1, 0], "z": [0, 0, 1]}


@pytest.fixture
def service(tmp_path: Path) -> tuple[SearchService, dict[str, int], FakeEmbedder]:
    store = LibraryStore.open(tmp_path / "lib.sqlite3")
    embedder = FakeEmbedder(AXES)
    model_id = store.register_model(embedder.record)
    vectors = {  # photo name -> vector
        "x.jpg": [1, 0, 0],
        "y.jpg": [0, 1, 0],
        "z.jpg": [0, 0, 1],
        "xy.jpg": [1, 1, 0],
        "xz.jpg": [1, 0, 1],
        "sub/x2.jpg": [0.9, 0.1, 0],
    }
    root = str(tmp_path / "lib")
    folder = store.add_folder(root)
    store.apply_scan(ScanChanges(new=[NewFile(f"{root}/{n}", folder.id, 1, 1, None) for n in vectors]))
    ids = {Path(p).relative_to(root).as_posix(): s.id for p, s in store.files_under(root).items()}
    done = []
    for name, v in vectors.items():
        arr = np.asarray(v, np.float32)
        done.append(
            EmbeddedImage(
                ids[name], (arr / np.linalg.norm(arr)).astype("<f2").tobytes(), 1, 1, None, None, None, None, None
            )
        )
    store.save_batch(model_id, done, [])
    slot = single_space(store, embedder, tmp_path / "idx")
    yield SearchService(store, slot), ids, embedder
    store.close()


def _names(results) -> list[str]:  # type: ignore[no-untyped-def]
    return [Path(r.path).name if Path(r.path).parent.name != "sub" else f"sub/{Path(r.path).name}" for r in results]


def test_text_query_ranks_by_cosine(service) -> None:
    svc, _, _ = service
    res = svc.search("x", k=6)
    assert _names(res)[:2] == ["x.jpg", "sub/x2.jpg"]
    assert res[0].score == pytest.approx(1.0, abs=1e-3)
    assert res[-1].score == pytest.approx(0.0, abs=1e-3)


def test_negative_term_pushes_away(service) -> None:
    svc, _, _ = service
    # x - y = (1,-1,0)/sqrt2: x.jpg 0.707, xz 0.5, x2 ~0.63, xy 0, y last.
    res = svc.search("x - y", k=6)
    assert _names(res)[0] == "x.jpg"
    assert _names(res)[-1] == "y.jpg"
    assert res[0].score == pytest.approx(1 / np.sqrt(2), abs=2e-3)
    assert svc.search("x", k=6)[0].score > res[0].score


def test_weights_change_the_balance(service) -> None:
    svc, _, _ = service
    # 2y + z = (0, 2, 1)/sqrt5: y .894, xy .632, z .447; y + 2z mirrors it.
    assert _names(svc.search("2*y + z", k=3)) == ["y.jpg", "xy.jpg", "z.jpg"]
    assert _names(svc.search("y + 2*z", k=3)) == ["z.jpg", "xz.jpg", "y.jpg"]


def test_image_term_uses_stored_vector_without_model(service) -> None:
    svc, ids, embedder = service
    before = embedder.image_calls
    res = svc.search(f"#{ids['xz.jpg']} - z", k=3)
    assert _names(res)[0] in ("x.jpg", "sub/x2.jpg")
    assert "xz.jpg" not in _names(res), "the query photo itself is left out"
    assert embedder.image_calls == before


def test_similar_by_path_and_folder_filter(service, tmp_path: Path) -> None:
    svc, ids, _ = service
    res = svc.similar(ids["x.jpg"], k=3)
    assert _names(res)[0] == "sub/x2.jpg"
    sub = str(Path(res[0].path).parent)
    assert _names(svc.search("x", k=5, folders=[sub])) == ["sub/x2.jpg"]
    # A file that is not in the library is decoded and embedded on the fly (mean colour = blue-ish).
    outside = tmp_path / "blue.png"
    Image.new("RGB", (16, 16), (0, 0, 255)).save(outside)
    assert _names(svc.similar(str(outside), k=1)) == ["z.jpg"]
    with pytest.raises(NotFoundError):
        svc.similar(str(tmp_path / "nope.jpg"))
    with pytest.raises(NotFoundError):
        svc.search("#99999 + x")


def test_terms_that_cancel_are_an_error(service) -> None:
    svc, _, _ = service
    with pytest.raises(QueryError):
        svc.search("x - x")
