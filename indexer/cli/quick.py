"""``glimpse index`` with nothing to do, answered before anything heavy is imported.

A rescan of an unchanged library is the most common ``index`` there is, and the full
command spends almost all of its time importing SQLAlchemy, NumPy and FAISS to find
out that nothing changed. So a full run that leaves the library settled (every photo
embedded, tags current, the vector index saved, nothing offline or unreadable) records
a *settled stamp*: the library's revision (``meta.revision``, counted by the writer in
every committed command), and what on disk the library depended on (the settings file,
the tag vocabulary file, the vector index file).

The next ``glimpse index`` (exactly that: no folders, no options) reads the stamp with
the standard library's ``sqlite3`` and walks the folders with the scanner's own walk
(``indexer.ingest.walk``). Only if the revision is the same (nothing was written since),
those files are untouched, every folder is there and readable, and every photo on disk
is in the library with the same size and modification time, and nothing else is, does it
print the usual summary and exit. Anything else, or any doubt, and the full command
runs. It never writes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

SETTLED_KEY = "index.settled"
FORMAT = 1


def file_state(path: Path | None) -> list[int] | None:
    """What a file's content is assumed from: (size, mtime_ns); None where there is no file."""
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def stamp(revision: int, model: str, settings: Path, vocabulary: Path | None, index_file: Path) -> str:
    """The settled stamp a full run records (as its very last write; see the module doc)."""
    return json.dumps(
        {
            "format": FORMAT,
            "revision": revision,
            "model": model,
            "settings": file_state(settings),
            "vocabulary": [str(vocabulary), file_state(vocabulary)] if vocabulary else None,
            "index_file": [str(index_file), file_state(index_file)],
        },
        sort_keys=True,
    )


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _settled(data_dir: Path, environ: dict[str, str]) -> int | None:
    """The number of photos found if nothing needs doing, else None."""
    database = data_dir / "library.sqlite3"
    if not database.is_file() or environ.get("GLIMPSE_WEIGHTS"):
        return None
    con = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=1.0)
    try:
        meta = dict(con.execute("SELECT key, value FROM meta WHERE key IN (?, ?)", ("revision", SETTLED_KEY)))
        raw = meta.get(SETTLED_KEY)
        if raw is None:
            return None
        recorded: dict[str, Any] = json.loads(raw)
        if recorded.get("format") != FORMAT or str(recorded.get("revision")) != str(meta.get("revision")):
            return None  # something was written since the library settled
        wanted = environ.get("GLIMPSE_MODEL")
        if wanted and wanted != recorded.get("model"):
            return None  # the full command decides what another model means
        if file_state(data_dir / "settings.json") != recorded.get("settings"):
            return None
        vocabulary = recorded.get("vocabulary")
        if vocabulary is not None and file_state(Path(vocabulary[0])) != vocabulary[1]:
            return None
        index_file = recorded.get("index_file") or [None, None]
        if index_file[0] is None or file_state(Path(index_file[0])) != index_file[1]:
            return None
        roots = [r[0] for r in con.execute("SELECT path FROM folders WHERE enabled = 1 AND online = 1")]
        if not roots or con.execute("SELECT 1 FROM folders WHERE enabled = 1 AND online = 0").fetchone():
            return None
        known = {p: (s, m) for p, s, m, st in con.execute("SELECT path, size, mtime_ns, status FROM images")
                 if st != "missing" and any(_under(p, r) for r in roots)}  # fmt: skip
        if con.execute("SELECT 1 FROM images WHERE status = 'missing' LIMIT 1").fetchone():
            return None
    finally:
        con.close()
    from indexer.ingest.walk import walk_photos

    found = 0
    for root in roots:
        if not Path(root).is_dir():
            return None  # offline now: the full command records it
        unreadable: list[str] = []
        for photo in walk_photos(Path(root), None, unreadable):
            if known.pop(photo.path, None) != (photo.size, photo.mtime_ns):
                return None  # new or changed
            found += 1
        if unreadable:
            return None
    return found if not known else None  # rows left over: photos that are gone


def run_quick_index(argv: list[str], environ: dict[str, str] | None = None) -> int | None:
    """Answer ``glimpse index`` from the settled stamp, or None: run the full command."""
    if argv != ["index"]:
        return None
    started = time.perf_counter()
    from store.paths import AppPaths

    env = dict(os.environ if environ is None else environ)
    try:
        found = _settled(AppPaths.from_env(env).data_dir, env)
    except (OSError, sqlite3.Error, ValueError, TypeError, KeyError, IndexError):
        return None  # no doubt is resolved here: the full command knows what to do
    if found is None:
        return None
    seconds = time.perf_counter() - started
    sys.stdout.write(
        f"{found} photos found: 0 new, 0 changed, 0 moved, 0 removed.\n"
        f"Indexed 0 in {seconds:.1f} s (0.0 photos/s); 0 could not be read.\n"
    )
    return 0
