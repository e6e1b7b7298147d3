"""The relevance cutoff's arithmetic (``indexer.search.relevance``) on vectors whose answers are known."""

from __future__ import annotations

import numpy as np

from indexer.search.relevance import CUTOFF, Descriptions, cut, image_strengths, text_strengths
from store.records import DescriptionsRecord


def _unit(*parts: float, dim: int = 8) -> np.ndarray:
    v = np.zeros(dim, np.float32)
    v[: len(parts)] = parts
    return v / np.linalg.norm(v)


def _descriptions(temperature: float = 50.0) -> Descriptions:
    # Axis 0: "a photo" (background); axis 1: tag "red"; axis 2: tag "square".
    return Descriptions(np.stack([_unit(1)]), np.stack([_unit(0, 1), _unit(0, 0, 1)]), temperature)


def test_a_photo_matches_a_query_that_describes_it_better_than_the_background_and_its_tags() -> None:
    query = _unit(0, 1, 0, 1)  # "a red circle": red, and axis 3 for circle
    red_circle = _unit(0.2, 0.6, 0, 0.8)
    wallpaper = _unit(1, 0.1)  # described best as "a photo"
    red_square = _unit(0.1, 0.7, 0.7)  # its tags "red" and "square" describe it better
    rows = np.stack([red_circle, wallpaper, red_square])
    strengths = text_strengths(rows @ query, rows, _descriptions(), query)
    assert strengths[0] > 0.9
    assert strengths[1] < 0.1
    assert strengths[2] < CUTOFF


def test_a_query_that_names_a_tag_still_matches_the_photos_of_that_tag() -> None:
    # The query "red" is (nearly) the tag's own phrase: the margin keeps its photos matching.
    query = _unit(0, 1, 0, 0.05)
    red_thing = _unit(0.1, 0.9, 0.1)
    rows = red_thing[None]
    assert text_strengths(rows @ query, rows, _descriptions(), query)[0] >= CUTOFF


def test_descriptions_read_back_from_their_stored_record() -> None:
    d = _descriptions(18.5)
    rows = np.concatenate([d.background, d.phrases]).astype(np.float32)
    record = DescriptionsRecord(3, "k", 18.5, len(d.background), len(rows), rows.tobytes())
    back = Descriptions.from_record(record, 8)
    np.testing.assert_array_equal(back.background, d.background)
    np.testing.assert_array_equal(back.phrases, d.phrases)
    assert back.temperature == 18.5 and back


def test_a_photo_query_matches_what_stands_out_from_the_library() -> None:
    rng = np.random.default_rng(0)
    library = rng.normal(0.3, 0.05, 2048).astype(np.float32)  # the query's scores on an even sample
    scores = np.asarray([0.95, 0.9, 0.33, 0.31], np.float32)  # two near copies, two ordinary photos
    strengths = image_strengths(scores, library)
    assert (strengths[:2] > 0.99).all()
    assert (strengths[2:] < 0.2).all()


def test_a_tiny_library_counts_its_candidates_in_the_distribution() -> None:
    scores = np.asarray([0.99, 0.5, 0.49, 0.48, 0.47, 0.46, 0.45, 0.44], np.float32)
    strengths = image_strengths(scores, np.empty(0, np.float32))
    assert strengths[0] > CUTOFF > strengths[1:].max()


def _library_sample(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, 0.2, 2048).astype(np.float32)  # spread 0.2


def test_near_misses_far_below_the_best_match_are_not_matches() -> None:
    sample = _library_sample(np.random.default_rng(1))
    scores = np.asarray([0.65, 0.64, 0.54, 0.53, 0.2], np.float32)
    strengths = np.asarray([0.99, 0.98, 0.85, 0.93, 0.6], np.float32)
    final = cut(scores, strengths, sample)
    np.testing.assert_allclose(final[:2], strengths[:2], atol=1e-3)  # within the window: as calibrated
    assert (final[2:] < CUTOFF).all()  # half a spread below the best: near misses


def test_matches_close_together_all_stay() -> None:
    sample = _library_sample(np.random.default_rng(2))
    scores = np.linspace(0.62, 0.6, 12).astype(np.float32)
    strengths = np.full(12, 0.9, np.float32)
    np.testing.assert_allclose(cut(scores, strengths, sample), strengths, atol=1e-3)


def test_nothing_strong_enough_means_no_match_whatever_the_scores() -> None:
    sample = _library_sample(np.random.default_rng(3))
    scores = np.asarray([0.5, 0.1, 0.09], np.float32)
    strengths = np.asarray([0.3, 0.01, 0.01], np.float32)
    final = cut(scores, strengths, sample)
    assert (final < CUTOFF).all()
