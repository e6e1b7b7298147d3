"""File names that are not valid UTF-8, kept losslessly.

On Linux a file name is bytes. Python hands a name that is not valid UTF-8 (Latin-1
``caf\\xe9.jpg`` from an old drive or archive) to us as a ``str`` holding *surrogate
escapes* (``'caf\\udce9.jpg'``): ``os.fsencode`` turns it back into the exact bytes, so
every file operation works on it. SQLite text must be UTF-8, though, and a lone
surrogate cannot be encoded, so such a name would stop indexing at the first insert.

The library therefore stores paths in a reversible text form: each escaped byte
``\\udcXX`` becomes ``U+FFFD`` followed by its two hex digits, and a literal ``U+FFFD``
in a name becomes ``U+FFFD 00``. The mapping is one to one and works character by
character, so a folder's prefix is still the prefix of every path under it and range
queries on the path index keep working. Everything above the store sees real paths;
only :func:`to_db` and :func:`from_db` know the stored form.

:func:`shown` is the form for people (terminal, GUI, logs): escaped bytes as ``\\xe9``,
never a character that cannot be printed.
"""

from __future__ import annotations

_MARK = "\ufffd"
_LITERAL = "00"


def to_db(path: str) -> str:
    """``path`` as stored in SQLite (valid UTF-8 whatever bytes the file name holds)."""
    if path.isascii():
        return path
    out: list[str] = []
    for ch in path:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"{_MARK}{code - 0xDC00:02x}")
        elif ch == _MARK:
            out.append(_MARK + _LITERAL)
        elif 0xD800 <= code <= 0xDFFF:  # a surrogate no file name can produce; keep it visible
            out.append(f"{_MARK}{_LITERAL}")
        else:
            out.append(ch)
    return "".join(out)


def from_db(text: str) -> str:
    """The real path (with surrogate escapes where the name is not UTF-8) of a stored one."""
    if _MARK not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == _MARK and i + 3 <= len(text):
            code = text[i + 1 : i + 3]
            out.append(_MARK if code == _LITERAL else chr(0xDC00 + int(code, 16)))
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def shown(path: str) -> str:
    """``path`` for people: bytes that are not UTF-8 written as ``\\xNN``; printable anywhere."""
    if path.isascii() and path.isprintable():
        return path
    out: list[str] = []
    for ch in path:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif not ch.isprintable() and ch != " ":
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)
