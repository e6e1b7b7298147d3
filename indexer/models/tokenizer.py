"""CLIP's byte-pair tokenizer without PyTorch, for the ONNX text encoder.

open_clip's ``SimpleTokenizer`` returns torch tensors, so using it would import
torch (seconds) on every text query. This is the same algorithm (OpenAI's CLIP
BPE, MIT licence) returning NumPy arrays; the exporter checks it against
open_clip's tokenizer on a set of probe strings before an export is trusted, so
a difference can never reach a search silently (``indexer.models.onnx_export``).
"""

from __future__ import annotations

import gzip
import html
import itertools
import sqlite3
import string
import threading
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
CLEANERS = ("lower", "whitespace", "canonicalize")
_MERGES = 49152 - 256 - 2  # the merges CLIP's vocabulary uses, after the header line
_NEVER = 1 << 30  # the rank of a pair that is no merge


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table (avoids whitespace/control characters)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(word))


def _plain(text: str) -> bool:
    """Printable ASCII without entities: nothing for ftfy to fix."""
    return text.isascii() and "&" not in text and all(" " <= c < "\x7f" or c in "\t\n" for c in text)


class _Table(Mapping[str, int]):
    """One table of a saved tokenizer file as a read-only mapping, read on demand."""

    def __init__(self, conn: sqlite3.Connection, table: str, lock: threading.Lock) -> None:
        self._conn = conn
        self._lock = lock  # one connection, used from whichever thread tokenizes
        self._get = f"SELECT value FROM {table} WHERE key = ?"
        self._table = table

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._conn.execute(self._get, (key,)).fetchone()
        return default if row is None else row[0]

    def __getitem__(self, key: str) -> int:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return int(value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            keys = [r[0] for r in self._conn.execute(f"SELECT key FROM {self._table}")]
        return iter(keys)

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute(f"SELECT count(*) FROM {self._table}").fetchone()[0])


class ClipTokenizer:
    r"""Text -> (N, context_length) int64 token ids, identical to open_clip's ``SimpleTokenizer``.

    Build it from CLIP's merges file (:meth:`from_bpe`, ~120 ms) once, at export, and
    :meth:`save` its tables into a small SQLite file. A query process :meth:`load`\s that
    file and looks entries up as it needs them: a query touches a few dozen of the ~98,000
    entries, and holding them all as Python dicts cost 25 MB and 50 ms in every one-shot
    search. ``encoder`` maps a token to its id, ``ranks`` a merge ``"first second"`` to its
    priority; either a dict or a table of the file (:class:`_Table`).
    """

    def __init__(
        self, encoder: Mapping[str, int], ranks: Mapping[str, int], context_length: int = 77, clean: str = "lower"
    ) -> None:
        import regex

        if clean not in CLEANERS:
            raise ValueError(f"unknown text cleaning {clean!r}; expected one of {CLEANERS}")
        self.context_length = context_length
        self.clean = clean
        self._byte_encoder = _bytes_to_unicode()
        self._encoder = encoder
        self._ranks = ranks
        self._cache: dict[str, str] = {t: t for t in SPECIAL_TOKENS}
        self._pattern = regex.compile(
            "|".join(SPECIAL_TOKENS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self.sot = self._encoder[SPECIAL_TOKENS[0]]
        self.eot = self._encoder[SPECIAL_TOKENS[1]]

    @classmethod
    def from_bpe(cls, bpe_path: Path, context_length: int = 77, clean: str = "lower") -> ClipTokenizer:
        """From CLIP's gzipped merges file (``bpe_simple_vocab_16e6.txt.gz``), as open_clip builds it."""
        with gzip.open(bpe_path) as fh:
            lines = fh.read().decode("utf-8").split("\n")[1 : _MERGES + 1]
        merges = [line.split() for line in lines]
        byte_chars = list(_bytes_to_unicode().values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + list(SPECIAL_TOKENS)
        encoder = {token: i for i, token in enumerate(vocab)}
        return cls(encoder, {f"{a} {b}": i for i, (a, b) in enumerate(merges)}, context_length, clean)

    def save(self, path: Path) -> None:
        """Write the tables as a SQLite file (read back by :meth:`load`), replacing ``path``."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        conn = sqlite3.connect(tmp)
        try:
            for table, items in (("encoder", self._encoder.items()), ("ranks", self._ranks.items())):
                conn.execute(f"CREATE TABLE {table} (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID")
                conn.executemany(f"INSERT INTO {table} VALUES (?, ?)", items)
            conn.commit()
        finally:
            conn.close()
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, context_length: int, clean: str) -> ClipTokenizer:
        """The tokenizer over the tables :meth:`save` wrote; entries are read on demand."""
        if not path.is_file():
            raise FileNotFoundError(path)
        # immutable: the file never changes after an export, so SQLite takes no locks on it.
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        lock = threading.Lock()
        return cls(_Table(conn, "encoder", lock), _Table(conn, "ranks", lock), context_length, clean)

    def _clean(self, text: str) -> str:
        if not _plain(text):  # ftfy is the identity on plain text; importing it costs ~35 ms
            import ftfy

            text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text)).strip()
        if self.clean == "canonicalize":
            text = text.replace("_", " ").translate(str.maketrans("", "", string.punctuation)).lower()
            return " ".join(text.split()).strip()
        text = " ".join(text.split()).strip()
        return text.lower() if self.clean == "lower" else text

    def _bpe(self, token: str) -> str:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word: tuple[str, ...] = (*token[:-1], token[-1] + "</w>")
        pairs = _pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            ranks = self._ranks
            bigram = min(pairs, key=lambda pair: ranks.get(f"{pair[0]} {pair[1]}", _NEVER))
            if f"{bigram[0]} {bigram[1]}" not in ranks:
                break
            first, second = bigram
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        result = " ".join(word)
        self._cache[token] = result
        return result

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for token in self._pattern.findall(self._clean(text)):
            token = "".join(self._byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self._encoder[piece] for piece in self._bpe(token).split(" "))
        return ids

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.context_length), np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot
            out[row, : len(ids)] = ids
        return out
