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


CLOSEST = 3  # how many weaker photos a query with no good match shows


def _line(result: SearchResult) -> str:
    more = f"  (+{len(result.similar)} similar)" if result.similar else ""
    return f"{result.strength:5.0%}  {shown(result.path)}{more}\n"


def render_results(
    results: list[SearchResult], as_json: bool, show_all: bool = False, asked: str = "", expand: bool = False
) -> str:
    """The matches, with their calibrated strength; ``show_all`` adds the weaker ones below a
    divider. With no match at all, it says so and shows the closest few (text only: JSON lists
    matches, and weaker ones only with ``show_all``). Near-duplicates are one result
    ("+N similar") unless ``expand``."""
    if not expand:
        results = [r for r in results if r.duplicate_of is None]
    matches = [r for r in results if not r.weak]
    weaker = [r for r in results if r.weak]
    if as_json:
        return json_text([r.to_json() for r in (results if show_all else matches)])
    if not results:
        return "No results. Is the library indexed? Try `glimpse status`.\n"
    out = [_line(r) for r in matches]
    if not matches:
        out.append(f"No good match{f' for {asked}' if asked else ''}; closest:\n")
        shown_weak, weaker = weaker[:CLOSEST], weaker[CLOSEST:]
        out.extend(_line(r) for r in shown_weak)
    if show_all and weaker:
        out.append("── weaker matches ──\n")
        out.extend(_line(r) for r in weaker)
    return "".join(out)


def under(cwd: Path, path: str | Path) -> Path:
    """A path the user typed, relative to *their* working directory (a warm request's differs from ours)."""
    return cwd / Path(path).expanduser()


def query_text(search: SearchService, args: argparse.Namespace, cwd: Path) -> str:
    """What ``glimpse search QUERY`` prints (a text or image query, with its filters)."""
    folders = [str(under(cwd, f)) for f in args.folder] if args.folder else None
    results = search.search(
        args.query, k=args.k, folders=folders, base_dir=cwd, tags=args.tag, without_tags=args.without_tag
    )
    return render_results(results, args.json, args.show_all, f"“{args.query}”", args.expand)


def similar_text(search: SearchService, args: argparse.Namespace, cwd: Path) -> str:
    """What ``glimpse similar`` prints."""
    image: str = args.image
    number = photo_id(image)
    target: str | int = number if number is not None else str(under(cwd, image))
    folders = [str(under(cwd, f)) for f in args.folder] if args.folder else None
    results = search.similar(target, k=args.k, folders=folders, tags=args.tag, without_tags=args.without_tag)
    return render_results(results, args.json, args.show_all, f"photos like {image}", args.expand)
