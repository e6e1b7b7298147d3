"""``glimpse duplicates``: exact copies and near-duplicates, grouped, the one to keep first.

It only lists, unless asked to ``--trash``: then every photo but the suggested one of
each group goes to the system's trash (restorable from there, never deleted), after the
user says yes at the prompt, or with ``--yes`` in a script. Without a terminal to ask
and without ``--yes``, nothing is moved.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from indexer.cli.answers import json_text, under
from indexer.composition import Services
from indexer.errors import QueryError
from indexer.search.duplicates import DuplicateGroup, Member
from store.filenames import shown

EXIT_OK = 0
EXIT_PARTIAL = 3  # some files could not be moved (the same code as photos that could not be read)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n //= 1024
    return f"{n} B"


def _member_line(m: Member, keep: bool) -> str:
    dims = f"{m.width}×{m.height}" if m.width and m.height else "?×?"
    date = m.when.strftime("%Y-%m-%d") if m.when else "undated"
    mark = f"keep ({m.why_keep})" if keep else "     "
    return f"  {mark:<20} {shown(m.path)}  {dims}  {_size(m.size)}  {date}\n"


def render_groups(groups: list[DuplicateGroup], similarity: float) -> str:
    if not groups:
        return f"No duplicates at similarity {similarity:g}. A lower --similarity finds looser ones.\n"
    out = []
    extra = sum(len(g.extra) for g in groups)
    freed = sum(m.size for g in groups for m in g.extra)
    for n, g in enumerate(groups, 1):
        kind = "exact copies" if g.exact else f"near-duplicates, {g.similarity:.1%} alike"
        out.append(f"Group {n}: {len(g.members)} photos, {kind}\n")
        out.extend(_member_line(m, i == 0) for i, m in enumerate(g.members))
    out.append(
        f"{len(groups)} group{'s' if len(groups) != 1 else ''}; {extra} photo{'s' if extra != 1 else ''} "
        f"beside the suggested ones ({_size(freed)}). `glimpse duplicates --trash` moves those to the trash.\n"
    )
    return "".join(out)


def _confirmed(count: int, assume_yes: bool) -> bool:
    """The user's explicit yes: ``--yes``, or an answer at the terminal."""
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise QueryError(
            "Moving photos to the trash needs your confirmation: run it in a terminal, or add --yes.",
            title="Not confirmed",
        )
    answer = input(f"Move {count} photo{'s' if count != 1 else ''} to the trash? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def cmd_duplicates(svc: Services, args: argparse.Namespace) -> int:
    similarity = args.similarity if args.similarity is not None else svc.settings.duplicate_similarity
    folders = [str(under(Path.cwd(), f)) for f in args.folder] if args.folder else None
    groups = svc.duplicates.find(similarity, folders)
    if not args.trash:
        if args.json:
            sys.stdout.write(json_text({"similarity": similarity, "groups": [g.to_json() for g in groups]}))
        else:
            sys.stdout.write(render_groups(groups, similarity))
        return EXIT_OK
    extra = [m for g in groups for m in g.extra]
    if not extra:
        print(f"No duplicates at similarity {similarity:g}: nothing to move.")
        return EXIT_OK
    if not args.json:
        sys.stdout.write(render_groups(groups, similarity))
    if not _confirmed(len(extra), args.yes):
        print("Nothing was moved.")
        return EXIT_OK
    report = svc.duplicates.trash(extra)
    if args.json:
        sys.stdout.write(
            json_text({"moved": report.moved, "failed": [{"path": p, "reason": r} for p, r in report.failed]})
        )
    else:
        print(f"Moved {len(report.moved)} photo{'s' if len(report.moved) != 1 else ''} to the trash.")
        for path, reason in report.failed:
            print(f"  not moved: {shown(path)}: {reason}")
    return EXIT_PARTIAL if report.failed else EXIT_OK
