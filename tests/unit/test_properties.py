"""Property-based tests (Hypothesis) of what takes arbitrary input: the query parser, tag
names, the XMP writer and the stored form of file names."""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer.errors import QueryError
from indexer.search.query import MAX_TERM_CHARS, parse_query
from indexer.tags.xmp import Keyword, read_keywords, write_sidecar, xml_text
from store.errors import InvalidNameError
from store.filenames import from_db, shown, to_db
from store.tags import MAX_TAG_NAME, check_tag_name

# Text as a hostile user or disk hands it over: any code point, surrogate escapes included.
_ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
_QUERY_PIECES = st.sampled_from(
    ['"', "'", "+", "-", " - ", " + ", "#", "#1", "#" + "9" * 30, "*", "2*", "1" + "0" * 400 + "*", "tag:", "-tag:",
     "tag:\"a b\"", "./x.jpg", "~/", "/", "\x00", "a" * 300, "dog", " ", "\t", "é", "\udce9"]
)  # fmt: skip
_QUERIES = st.one_of(_ANY_TEXT, st.lists(_QUERY_PIECES, max_size=8).map("".join))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_QUERIES)
def test_any_query_parses_or_says_why(text: str, tmp_path: Path) -> None:
    """Never a traceback (ENAMETOOLONG, OverflowError), never a NaN weight: a Query or a QueryError."""
    try:
        query = parse_query(text, base_dir=tmp_path)
    except QueryError as exc:
        assert exc.exit_code == 2 and exc.message
        return
    assert query.terms or query.tags
    for term in query.terms:
        assert math.isfinite(term.weight) and term.weight != 0
        assert 0 < len(term.value) <= MAX_TERM_CHARS
        if term.kind == "id":
            assert 0 <= term.image_id < 2**63


@settings(max_examples=300, deadline=None)
@given(name=_ANY_TEXT)
def test_a_tag_name_is_accepted_only_if_it_can_be_stored_shown_and_exported(name: str) -> None:
    try:
        clean = check_tag_name(name)
    except InvalidNameError as exc:
        assert exc.exit_code == 2
        return
    assert clean == clean.strip() and 0 < len(clean) <= MAX_TAG_NAME
    clean.encode("utf-8")
    assert xml_text(clean) == clean and "|" not in clean


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(_ANY_TEXT.filter(lambda s: xml_text(s).strip() != ""), min_size=1, max_size=5))
def test_the_xmp_writer_always_writes_xml_that_it_and_others_can_read_back(names: list[str], tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x")
    for round_ in range(2):  # writing over its own sidecar must work too
        sidecar = write_sidecar(photo, [Keyword(n, "group") for n in names])
        ET.parse(sidecar)  # well-formed XML
        expected = list(dict.fromkeys(xml_text(n) for n in names))
        assert read_keywords(sidecar) == expected, round_


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=60))
def test_any_file_name_bytes_survive_the_database_form(raw: bytes) -> None:
    path = os.fsdecode(raw)
    stored = to_db(path)
    stored.encode("utf-8")  # SQLite text
    assert os.fsencode(from_db(stored)) == raw
    shown(path).encode("utf-8")  # printable anywhere


@settings(max_examples=300, deadline=None)
@given(folder=st.binary(min_size=1, max_size=20), rest=st.binary(max_size=20))
def test_the_database_form_keeps_folder_prefixes(folder: bytes, rest: bytes) -> None:
    """Range queries select a folder's photos by prefix: the stored form must keep it."""
    root, child = os.fsdecode(folder), os.fsdecode(folder + b"/" + rest)
    assert to_db(child).startswith(to_db(root) + "/")


def test_examples_from_the_attack() -> None:
    with pytest.raises(QueryError):
        parse_query("#" + "1" * 30)
    with pytest.raises(QueryError):
        parse_query("1" + "0" * 400 + '*"dog"')
    with pytest.raises(QueryError):
        parse_query("x" * 5000)
    assert parse_query("a" * 300).terms[0].kind == "text"  # was ENAMETOOLONG
