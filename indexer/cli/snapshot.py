"""``glimpse search`` and ``glimpse similar`` on a read-only snapshot of the library.

A one-shot query reads a few rows and the vector index, embeds at most one text, and
exits. The full command opens the library through the store (SQLAlchemy, FAISS, the
writer): a third of its time and 40 MB spent on machinery a read never uses. This path
answers the same command line (parsed by the CLI's own grammar) with the same search
service and the same output, over :class:`store.snapshot.LibrarySnapshot` (standard
``sqlite3``, the vector file read with NumPy) and the model engine opened for one query.

It never writes and never decides anything the full command would decide differently:
whenever it cannot vouch for what it would read (no library, an older schema, a legacy
library without a recorded model, a region index, a vector index the database does not
vouch for, an object or region query), it says None and the launcher runs the full
command. Errors it does meet (a bad query, an unknown tag, another model than the
library's) are the same typed errors, printed the same way.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from indexer.cli.answers import query_text, similar_text
from indexer.cli.grammar import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    QuietParser,
    UsageRefusedError,
    build_parser,
    error_text,
    requested_model,
    settings_for,
    setup_logging,
)
from indexer.errors import GlimpseError
from indexer.models.choice import ACTIVE_KEY, CheckedEmbedder, check_weights, choose_model, recorded_model
from indexer.models.embedder import Embedder, check_device
from indexer.search.service import SearchService
from store.flat import SnapshotVectors, index_path
from store.paths import AppPaths
from store.snapshot import LibrarySnapshot

log = logging.getLogger(__name__)

COMMANDS = ("search", "similar")


@dataclass(frozen=True)
class _SnapshotSpace:
    """The library's model and its saved vectors (``indexer.search.service.SearchSpace``)."""

    embedder: Embedder
    saved: SnapshotVectors

    def vectors(self) -> SnapshotVectors:
        return self.saved


def open_snapshot_search(
    paths: AppPaths, args: argparse.Namespace, environ: Mapping[str, str], cwd: Path
) -> tuple[SearchService, LibrarySnapshot] | None:
    """A search service over a snapshot of the library at ``paths``, or None (see the module doc)."""
    snapshot = LibrarySnapshot.open(paths.database)
    if snapshot is None:
        return None
    try:
        search = _search_over(snapshot, paths, args, environ, cwd)
    except BaseException:
        snapshot.close()
        raise
    if search is None:
        snapshot.close()
        return None
    return search, snapshot


def _search_over(
    snapshot: LibrarySnapshot, paths: AppPaths, args: argparse.Namespace, environ: Mapping[str, str], cwd: Path
) -> SearchService | None:
    recorded = recorded_model(snapshot, ACTIVE_KEY)
    if recorded is None or not recorded.key:
        return None  # a library that has not recorded its model yet: the full command adopts one
    settings = settings_for(args, paths)
    check_device(settings.device)
    requested, requested_by = requested_model(args, dict(environ), cwd)
    choose_model(recorded, requested, requested_by)  # another model than the library's: the usual error
    record = next((m for m in snapshot.models() if m.key == recorded.key), None)
    if record is None or record.id is None or snapshot.count_regions(record.id):
        return None
    flat = snapshot.vectors(record.id, record.dim, index_path(paths.index_dir, record.id))
    if flat is None:
        return None
    from indexer.models.engine import ModelEngine
    from indexer.models.presets import resolve_model

    spec = resolve_model(recorded.name, recorded.weights, validate=False)
    engine = ModelEngine(
        spec, paths.models_dir, settings.device, settings.precision, settings.threads, settings.runtime, True
    )
    embedder = CheckedEmbedder(engine, lambda key: check_weights(recorded, key))
    space = _SnapshotSpace(embedder, SnapshotVectors(record.id, record.dim, flat))
    return SearchService(snapshot, space, snapshot, settings.duplicate_similarity)


def run_snapshot_query(
    argv: list[str], environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> int | None:
    """Answer ``search``/``similar`` from a snapshot and return the exit code, or None: run the full command."""
    try:
        args = build_parser(QuietParser).parse_args(argv)
    except UsageRefusedError:
        return None  # the full command prints the usage error (or the help) itself
    if args.command not in COMMANDS:
        return None
    if args.command == "search" and (args.object is not None or args.region is not None or not args.query):
        return None
    env = os.environ if environ is None else environ
    here = Path.cwd() if cwd is None else cwd
    setup_logging(args.verbose)
    try:
        opened = open_snapshot_search(AppPaths.from_env(dict(env)), args, env, here)
        if opened is None:
            return None
        search, snapshot = opened
        try:
            text = query_text(search, args, here) if args.command == "search" else similar_text(search, args, here)
        finally:
            snapshot.close()
    except sqlite3.Error as exc:
        log.debug("snapshot unusable (%s); running the full command", exc)
        return None  # nothing was printed yet: the full command opens the library its own way
    except GlimpseError as exc:
        sys.stderr.write(error_text(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        print("glimpse: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    log.info("answered from a read-only snapshot of the library")
    sys.stdout.write(text)
    return EXIT_OK
