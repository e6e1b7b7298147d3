"""What ``glimpse search`` and ``glimpse similar`` print, from a search service.

Shared by the full command (``indexer.cli.main``), the warm path (``indexer.cli.warm``)
and the read-only snapshot path (``indexer.cli.snapshot``), so all three print the same
thing for the same library; nothing here imports the engine.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from indexer.search.query import photo_id
from indexer.search.service import SearchResult, SearchService
from store.filenames import shown

# A byte of a file name that is not UTF-8 (Python's surrogate escape): kept as a JSON
# ``\udcXX`` escape, which ``json.loads`` + ``os.fsencode`` turn back into the exact name.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def json_text(data: Any) -> str:
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return _ESCAPED_BYTE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"


def render_results(results: list[SearchResult], as_json: bool) -> str:
    if as_json:
        return json_text([r.to_json() for r in results])
    if not results:
        return "No results. Is the library indexed? Try `glimpse status`.\n"
    return "".join(f"{r.score:7.4f}  {shown(r.path)}\n" for r in results)


def under(cwd: Path, path: str | Path) -> Path:
    """A path the user typed, relative to *their* working directory (a warm request's differs from ours)."""
    return cwd / Path(path).expanduser()


def query_text(search: SearchService, args: argparse.Namespace, cwd: Path) -> str:
    """What ``glimpse search QUERY`` prints (a text or image query, with its filters)."""
    folders = [str(under(cwd, f)) for f in args.folder] if args.folder else None
    results = search.search(
        args.query, k=args.k, folders=folders, base_dir=cwd, tags=args.tag, without_tags=args.without_tag
    )
    return render_results(results, args.json)


def similar_text(search: SearchService, args: argparse.Namespace, cwd: Path) -> str:
    """What ``glimpse similar`` prints."""
    image: str = args.image
    number = photo_id(image)
    target: str | int = number if number is not None else str(under(cwd, image))
    folders = [str(under(cwd, f)) for f in args.folder] if args.folder else None
    results = search.similar(target, k=args.k, folders=folders, tags=args.tag, without_tags=args.without_tag)
    return render_results(results, args.json)
