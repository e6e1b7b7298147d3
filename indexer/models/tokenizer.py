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
import json
import string
from functools import lru_cache
from pathlib import Path

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


class ClipTokenizer:
    r"""Text -> (N, context_length) int64 token ids, identical to open_clip's ``SimpleTokenizer``.

    Build it from CLIP's merges file (:meth:`from_bpe`, ~120 ms) once, at export, and
    :meth:`save` its tables; a query process then :meth:`load`\s them as the JSON parser
    makes them (two dicts, no Python-level rebuilding: ~25 ms). ``encoder`` maps a token to
    its id, ``ranks`` a merge ``"first second"`` to its priority.
    """

    def __init__(
        self, encoder: dict[str, int], ranks: dict[str, int], context_length: int = 77, clean: str = "lower"
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
        path.write_text(json.dumps({"encoder": self._encoder, "ranks": self._ranks}, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path, context_length: int, clean: str) -> ClipTokenizer:
        data = json.loads(path.read_text())
        return cls(data["encoder"], data["ranks"], context_length, clean)

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
