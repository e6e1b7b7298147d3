"""The query language shared by the CLI and the GUI.

A query is a signed, weighted sum of terms::

    dog on a beach at sunset            one text term
    "beach" - "people"                  minus: push results away from a concept
    beach -people                       the same, shorter
    holiday.jpg + "at night"            an image file as a term
    #123 + 2*"snow"                     an indexed image by id, and a weight

An operator is a ``+`` or ``-`` at the start or after a space, followed by a
space, a quote, a ``#`` or a letter, so hyphenated words (``t-shirt``) stay text.
A term that names an existing file, or ``#id``, is an image; anything else is text.

Tag filters narrow any query without changing its ranking::

    dog tag:beach                       only photos tagged beach
    sunset -tag:people                  none tagged people
    tag:"living room"                   every photo with the tag, best first
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from indexer.errors import QueryError

# Bounds that keep every query a usage question, never a crash: a term longer than this is
# no description (CLIP reads 77 tokens), ids are SQLite integers, and a weight beyond
# this drowns every other term in a sum that is normalised anyway.
MAX_TERM_CHARS = 1000
MAX_IMAGE_ID = 2**63 - 1
MAX_WEIGHT = 100.0

_WEIGHT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*\*\s*(.+)$", re.DOTALL)
_IMAGE_ID = re.compile(r"^#(\d+)$")
_TAG_FILTER = re.compile(r"""(?:(?<=\s)|^)([+-]?)tag:(?:"([^"]+)"|'([^']+)'|(\S+))""", re.IGNORECASE)


@dataclass(frozen=True)
class Term:
    kind: str  # "text" | "file" | "id"
    value: str
    weight: float  # signed

    @property
    def image_id(self) -> int:
        return int(self.value)


@dataclass(frozen=True)
class Query:
    terms: tuple[Term, ...]
    tags: tuple[str, ...] = ()  # every one required
    without_tags: tuple[str, ...] = ()  # none allowed

    @property
    def has_positive(self) -> bool:
        return any(t.weight > 0 for t in self.terms)


def _is_operator(text: str, i: int) -> bool:
    nxt = text[i + 1] if i + 1 < len(text) else ""
    return (i == 0 or text[i - 1].isspace()) and (nxt.isspace() or nxt.isalnum() or nxt in "\"'#.")


def _split(text: str) -> list[tuple[int, str]]:
    """Split into (sign, raw term) on top-level operators, respecting quotes."""
    parts: list[tuple[int, str]] = []
    sign, buf, quote = 1, "", ""
    operator_pending = False  # an operator was read and no term has followed it yet
    for i, ch in enumerate(text):
        if quote:
            buf += ch
            quote = "" if ch == quote else quote
        elif ch in "\"'" and (not buf.strip() or buf.rstrip().endswith("*")):
            quote = ch
            buf += ch
        elif ch in "+-" and _is_operator(text, i):
            if buf.strip():
                parts.append((sign, buf))
            elif operator_pending:
                raise QueryError("Two operators in a row; put a term between them.")
            sign, buf, operator_pending = (1 if ch == "+" else -1), "", True
        else:
            buf += ch
    if quote:
        raise QueryError(f"A quote ({quote}) is not closed.")
    if buf.strip():
        parts.append((sign, buf))
    elif operator_pending:
        raise QueryError("The query ends with an operator; add a term after it.")
    return parts


_PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".heic", ".heif", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".avif")


def _looks_like_path(value: str) -> bool:
    """A term a person meant as a file: a path with a separator, ``~``/``./``, or a photo file name."""
    if " " in value.strip() and not value.startswith(("/", "~", "./", "../")):
        return False
    return value.startswith(("/", "~", "./", "../")) or value.lower().endswith(_PHOTO_SUFFIXES)


def photo_id(text: str) -> int | None:
    """The photo number in ``#123``, or None if ``text`` is not one; too large a number is a
    :class:`QueryError` (ids are SQLite integers), never an ``OverflowError`` further on."""
    if not (m := _IMAGE_ID.match(text)):
        return None
    if int(m.group(1)) > MAX_IMAGE_ID:
        raise QueryError(f"There is no photo #{m.group(1)[:24]}…: photo numbers are smaller.")
    return int(m.group(1))


def _resolve(value: str, base_dir: Path | None) -> Path:
    candidate = Path(value).expanduser()
    if base_dir is not None and not candidate.is_absolute():
        candidate = base_dir / candidate
    return candidate.resolve()


def _is_file(value: str, base_dir: Path | None) -> bool:
    """Whether ``value`` names an existing file (a name too long for the system names none)."""
    try:
        return _resolve(value, base_dir).is_file()
    except (OSError, ValueError, RuntimeError):  # ENAMETOOLONG, a NUL byte, a symlink loop
        return False


def parse_query(text: str, base_dir: Path | None = None) -> Query:
    """Parse ``text``; raises :class:`QueryError` with a readable reason."""
    if not text or not text.strip():
        raise QueryError("The query is empty.")
    tags: list[str] = []
    without: list[str] = []

    def take_filter(m: re.Match[str]) -> str:
        name = (m.group(2) or m.group(3) or m.group(4)).strip()
        (without if m.group(1) == "-" else tags).append(name)
        return " "

    text = _TAG_FILTER.sub(take_filter, text)
    if not text.strip():
        if not tags:
            raise QueryError("A query needs something to search for; it cannot only exclude tags.")
        return Query((), tuple(tags), tuple(without))
    terms: list[Term] = []
    for sign, raw in _split(text.strip()):
        weight = 1.0
        m = _WEIGHT.match(raw)
        if m:
            weight = float(m.group(1))
            raw = m.group(2)
            if not 0 < weight <= MAX_WEIGHT:  # also catches inf from a 400-digit number
                raise QueryError(f"A weight must be above 0 and at most {MAX_WEIGHT:g} (got {m.group(1)[:20]}).")
        raw = raw.strip()
        quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'"
        value = raw[1:-1].strip() if quoted else raw
        if not value:
            raise QueryError('A term is empty ("").')
        if len(value) > MAX_TERM_CHARS:
            raise QueryError(f"A term is {len(value):,} characters long; keep each under {MAX_TERM_CHARS:,}.")
        if not quoted and photo_id(value) is not None:
            terms.append(Term("id", value[1:], sign * weight))
            continue
        if _is_file(value, base_dir):
            terms.append(Term("file", str(_resolve(value, base_dir)), sign * weight))
        elif not quoted and _looks_like_path(value):
            raise QueryError(
                f"{value} looks like a photo's path, but there is no such file. To search for the words "
                f'instead, put them in quotes: "{value}".',
                title="No such photo",
            )
        else:
            terms.append(Term("text", value, sign * weight))
    query = Query(tuple(terms), tuple(tags), tuple(without))
    if not query.has_positive:
        raise QueryError("A query needs at least one term to search for; it cannot only exclude.")
    return query
