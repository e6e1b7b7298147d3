"""The ``glimpse`` command line.

Human-readable output by default, ``--json`` for scripts. Errors print their
title and message to stderr and exit with the error's code:

  0 success; 1 unexpected error; 2 bad usage, query or setting, or another model
  than the library's; 3 indexing finished but some photos could not be read; 4 model
  weights unavailable; 5 not found (no library yet, no such photo); 75 the library is
  in use by another process and did not come free; 130 interrupted.

Read-only commands (status, search, similar, tags list/show/export, folders list,
doctor, model) never create a library, and never take the library's lock unless
they must write.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from indexer.cli import duplicates as cli_duplicates
from indexer.cli import segment as cli_segment
from indexer.cli import tags as cli_tags
from indexer.cli.answers import json_text, query_text, render_results, similar_text, under
from indexer.cli.grammar import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    build_parser,
    error_text,
    requested_model,
    settings_for,
    setup_logging,
)
from indexer.composition import Services, build_services
from indexer.errors import GlimpseError, NotFoundError, QueryError
from indexer.models.choice import ModelChoice, recorded_model
from indexer.models.engine import describe_runtime
from indexer.models.measured import measured_rate
from indexer.models.presets import (
    MODEL_ENV,
    PRESETS,
    cached_hf_weights,
    default_model,
    language_note,
    resolve_model,
)
from indexer.segment.sam import SEGMENTERS
from indexer.settings import Settings
from store.diskerrors import disk_error, is_disk_error
from store.filenames import shown
from store.flat import file_problem, index_path
from store.library import LibraryStore
from store.paths import AppPaths

if TYPE_CHECKING:
    from indexer.ingest.pipeline import Control, IndexReport, Progress

log = logging.getLogger("glimpse")


def _print_json(data: Any) -> None:
    sys.stdout.write(json_text(data))


def _drive(gen: Generator[Progress, None, Any], desc: str) -> Any:
    """Run a progress generator with a bar on stderr (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    bar = None
    bar_phase = ""
    try:
        while True:
            try:
                progress = next(gen)
            except StopIteration as stop:
                return stop.value
            if progress.phase == "loading":
                log.info("loading the model")
            elif progress.phase == "scanning":
                log.info("scanning")
            elif progress.phase == "tagging" and progress.total:
                if bar is not None and bar_phase != "tagging":
                    bar.close()
                    bar = None
                if bar is None:
                    bar_phase = "tagging"
                    print(f"Photos are searchable; preparing tags ({progress.total:,} prompts to embed).",
                          file=sys.stderr, flush=True)  # fmt: skip
                    bar = tqdm(total=progress.total, unit="prompt", file=sys.stderr, dynamic_ncols=True,
                               disable=None, desc="preparing tags")  # fmt: skip
                bar.n = progress.done
                bar.refresh()
            elif progress.phase in ("indexing", "switching") and progress.total:
                if bar is None:
                    bar_phase = progress.phase
                    bar = tqdm(total=progress.total, unit="photo", file=sys.stderr, dynamic_ncols=True,
                               disable=None, desc=desc)  # fmt: skip
                bar.total = progress.total
                bar.n = progress.done
                bar.set_postfix(failed=progress.failed, refresh=False)
                bar.refresh()
    except KeyboardInterrupt:
        gen.close()
        raise
    finally:
        if bar is not None:
            bar.close()


def cmd_index(svc: Services, args: argparse.Namespace) -> int:

    roots = []
    for path in args.paths:
        resolved = path.expanduser().resolve()
        if not resolved.is_dir():
            raise NotFoundError(f"{path} is not a folder.", title="Folder not found")
        roots.append(resolved)
    if not roots:
        roots = [Path(f.path) for f in svc.store.folders() if f.enabled]
        if not roots:
            raise NotFoundError("The library has no folders yet: run `glimpse index FOLDER`.", title="No folders")
    from indexer.ingest.pipeline import Control

    svc.tagger.seed_vocabulary()  # indexing with the library's own model: its vocabulary comes in once
    control = Control()
    report: IndexReport | None = _drive(svc.pipeline.run(roots, control), "indexing")
    switched = _continue_switch(svc, control)
    assert report is not None
    if not control.cancelled:
        svc.store.db.backup()  # the one rotating backup, after a run that changed something
    if not args.paths and not control.cancelled:
        _record_settled(svc, report)
    scan = report.scan
    summary = {
        "found": scan.found if scan else 0,
        "new": scan.new if scan else 0,
        "changed": scan.changed if scan else 0,
        "moved": scan.moved if scan else 0,
        "removed": scan.removed if scan else 0,
        "indexed": report.indexed,
        "failed": report.failed,
        "seconds": round(report.seconds, 2),
        "photos_per_second": round(report.rate, 2),
        "failures": [{"path": p, "error": e} for p, e in report.failures],
        "unreadable_folders": scan.unreadable_dirs if scan else [],
        "unreadable": [{"path": p, "reason": r} for p, r in (scan.problems if scan else {}).items()],
        "unavailable_folders": scan.offline_roots if scan else [],
        "model": svc.slot.space.choice.name if svc.slot.space.choice else None,
        "model_switched": switched,
    }
    if args.json:
        _print_json(summary)
    else:
        print(
            f"{summary['found']} photos found: {summary['new']} new, {summary['changed']} changed, "
            f"{summary['moved']} moved, {summary['removed']} removed."
        )
        print(
            f"Indexed {report.indexed} in {report.seconds:.1f} s ({report.rate:.1f} photos/s); "
            f"{report.failed} could not be read."
        )
        for root in scan.offline_roots if scan else []:
            print(f"  {root} is not available (unplugged?); its photos are kept.", file=sys.stderr)
        for path, error in report.failures[:20]:
            print(f"  failed: {shown(path)}: {error}", file=sys.stderr)
        if len(report.failures) > 20:
            print(f"  ... and {len(report.failures) - 20} more (see `glimpse status`)", file=sys.stderr)
        for path, reason in (scan.problems if scan else {}).items():
            print(f"  cannot read {shown(path)}: {reason}", file=sys.stderr)
    unreadable = bool(scan and scan.problems)
    return EXIT_PARTIAL if report.failed or unreadable else EXIT_OK


def _record_settled(svc: Services, report: IndexReport) -> None:
    """A rescan that leaves the library settled records so, as its last write, and the next
    ``glimpse index`` with nothing to do answers in milliseconds (``indexer.cli.quick``)."""
    from indexer.cli.quick import SETTLED_KEY, stamp

    scan = report.scan
    space = svc.slot.space
    if scan is None or scan.offline_roots or scan.unreadable_dirs or svc.settings.regions or space.choice is None:
        return
    vectors = svc.pipeline.vectors()
    state = svc.store.index_state(vectors.model_id)
    file = index_path(vectors.index_dir, vectors.model_id)
    if svc.switch.target() is not None or svc.store.pending_images(vectors.model_id) or not state.clean:
        return
    if not file.exists() or not svc.tagger.is_current():
        return
    model, settings, vocabulary = space.choice.name, svc.paths.settings_file, svc.tagger.vocabulary_path
    svc.store.set_meta_at_next_revision(
        SETTLED_KEY, lambda revision: stamp(revision, model, settings, vocabulary, file)
    )


def _continue_switch(svc: Services, control: Control) -> bool:
    """A model switch in progress goes on after indexing (search uses the old model until it completes)."""
    target = svc.switch.target()
    if target is None:
        return False
    print(f"Switching the library to {target.display}: embedding every photo with it.", file=sys.stderr)
    swapped = bool(_drive(svc.switch.run(control), f"switching to {target.name}"))
    if swapped:
        print(f"The library now uses {target.display}.", file=sys.stderr)
    return swapped


def search_text(svc: Services, args: argparse.Namespace, cwd: Path) -> str:
    """What ``glimpse search`` prints (shared by the command and the warm path, ``indexer.cli.warm``)."""
    folders = [str(under(cwd, f)) for f in args.folder] if args.folder else None
    filters = {"k": args.k, "folders": folders, "tags": args.tag, "without_tags": args.without_tag}
    if args.query and (args.object is not None or args.region is not None):
        raise QueryError(
            "Search either for a text query or for an object (--object/--region), not both at once. "
            "Filter object results with --tag or --folder."
        )
    if args.object is not None and args.region is not None:
        raise QueryError("Give --object or --region, not both.")
    if args.object is not None:
        seg = cli_segment.segment_from_args(svc, under(cwd, args.object), args)
        return render_results(
            svc.objects.search_object(seg, args.candidate - 1, **filters),
            args.json,
            args.show_all,
            "the object",
            args.expand,
        )
    if args.region is not None:
        if args.box is None:
            raise QueryError("--region needs --box X0,Y0,X1,Y1 (photo pixels).")
        return render_results(
            svc.objects.search_region(under(cwd, args.region), args.box, **filters),
            args.json,
            args.show_all,
            "the region",
            args.expand,
        )
    if not args.query:
        raise QueryError("Give a query, or --object IMAGE --point X,Y, or --region IMAGE --box X0,Y0,X1,Y1.")
    return query_text(svc.search, args, cwd)


def cmd_search(svc: Services, args: argparse.Namespace) -> int:
    sys.stdout.write(search_text(svc, args, Path.cwd()))
    return EXIT_OK


def cmd_similar(svc: Services, args: argparse.Namespace) -> int:
    sys.stdout.write(similar_text(svc.search, args, Path.cwd()))
    return EXIT_OK


def status_data(svc: Services) -> dict[str, Any]:
    """The library's state, as ``glimpse status --json`` prints it."""
    store = svc.store
    models: list[dict[str, Any]] = []
    for rec in store.models():
        assert rec.id is not None
        state = store.index_state(rec.id)
        stored = store.count_embeddings(rec.id)
        problem = file_problem(index_path(svc.paths.index_dir, rec.id), rec.dim, state)
        if problem is None and state.count != stored:
            problem = "stale"
        index = "ok" if problem is None else f"{problem} (rebuilt from the library on next use)"
        models.append(
            {
                "key": rec.key,
                "name": rec.name,
                "dim": rec.dim,
                "vectors": stored,
                "regions": store.count_regions(rec.id),
                "index": index,
                "index_generation": state.generation,
            }
        )
    tag_counts = svc.tags.counts()
    enabled = svc.tags.tags(include_disabled=False)
    switch = svc.switch.state()
    active = switch.active or svc.choice
    return {
        "model": {"name": active.name, "weights": active.weights, "key": active.key},
        "runtime": describe_runtime(
            svc.paths.models_dir, svc.model, active.key, svc.settings.runtime, svc.settings.precision
        ),
        "switch": None
        if switch.target is None
        else {"to": switch.target.name, "weights": switch.target.weights, "done": switch.done, "total": switch.total},
        "tags": {
            "vocabulary": len(enabled),
            "in_use": sum(1 for t in enabled if tag_counts.get(t.id)),
            "assigned": sum(tag_counts.values()),
        },
        "library": str(svc.paths.data_dir),
        "folders": [f.path for f in store.folders()],
        "images": store.status_counts(),
        "models": models,
        "failures": [{"path": f.path, "error": f.error} for f in store.failures(limit=50)],
        "unreadable": [{"path": p, "reason": r} for p, r in store.scan_problems(limit=50)],
    }


def status_text(svc: Services, args: argparse.Namespace) -> str:
    data = status_data(svc)
    if args.json:
        return json_text(data)
    active = ModelChoice(data["model"]["name"], data["model"]["weights"])
    lines = [f"Library: {data['library']}", f"Model in use: {active.display}", f"Runs on: {data['runtime']}"]
    if data["switch"] is not None:
        sw = data["switch"]
        lines.append(
            f"Switching to {ModelChoice(sw['to'], sw['weights']).display}: {sw['done']} of {sw['total']} photos "
            "embedded (search uses the current model until it is done; `glimpse watch` or `glimpse index` go on "
            "with it)"
        )
    lines.append(f"Folders: {len(data['folders'])}")
    lines += [f"  {f}" for f in data["folders"]]
    lines.append("Photos: " + ", ".join(f"{v} {k}" for k, v in data["images"].items()))
    for m in data["models"]:
        regions = f", {m['regions']} region vectors" if m["regions"] else ""
        lines.append(f"Model {m['key']}: {m['vectors']} vectors{regions}, index {m['index']}")
    t = data["tags"]
    lines.append(f"Tags: {t['in_use']} of {t['vocabulary']} in use, {t['assigned']} on photos (glimpse tags list)")
    if data["failures"]:
        lines.append("Unreadable photos:")
        lines += [f"  {shown(f['path'])}: {f['error']}" for f in data["failures"]]
    if data["unreadable"]:
        lines.append("Could not be read when the folders were last scanned:")
        lines += [f"  {shown(u['path'])}: {u['reason']}" for u in data["unreadable"]]
    return "\n".join(lines) + "\n"


def cmd_status(svc: Services, args: argparse.Namespace) -> int:
    sys.stdout.write(status_text(svc, args))
    return EXIT_OK


def _library_model(paths: AppPaths) -> ModelChoice | None:
    """The model a library records, read without creating or locking anything."""
    if not paths.database.exists():
        return None
    store = LibraryStore.open(paths.database)
    try:
        return recorded_model(store)
    finally:
        store.close()


def _measured(paths: AppPaths, model: str) -> dict[str, Any] | None:
    """The image-encoder speed measured on this machine while indexing, if any (never a fixed figure)."""
    found = measured_rate(paths.models_dir, model)
    return {"images_per_s": found[0], "runtime": found[1]} if found else None


def cmd_models(args: argparse.Namespace) -> int:
    paths = AppPaths.from_env()
    recorded = _library_model(paths)
    new_default, language = default_model()
    active = args.model or os.environ.get(MODEL_ENV) or (recorded.name if recorded else None) or new_default
    rows: list[dict[str, Any]] = []
    for p in PRESETS.values():
        if p.local_dir is not None:
            on_disk = any(p.local_dir.glob("open_clip_model.*"))
        else:
            from open_clip.pretrained import get_pretrained_cfg

            repo = os.path.split(get_pretrained_cfg(p.arch, p.pretrained or "").get("hf_hub", ""))[0]
            on_disk = bool(repo) and cached_hf_weights(repo) is not None
        rows.append(
            {
                "name": p.name,
                "weights": f"{p.arch}/{p.pretrained}" if p.pretrained else "bundled",
                "licence": p.licence,
                "imagenet_zero_shot": p.imagenet_top1,
                "multilingual": p.multilingual,
                "languages": p.languages,
                "on_disk": on_disk,
                "default": p.name == new_default,
                "active": p.name == active,
                "summary": p.summary,
                "measured": _measured(paths, p.name),
            }
        )
    models_dir = AppPaths.from_env().models_dir
    active_segmenter = args.segmenter or Settings.load(paths.settings_file).segmenter
    segmenters = [
        {
            "name": s.name,
            "arch": s.arch,
            "file": s.filename,
            "size_mb": round(s.size_bytes / 1e6),
            "licence": s.licence,
            "on_disk": (models_dir / s.filename).is_file(),
            "active": s.name == active_segmenter,
        }
        for s in SEGMENTERS.values()
    ]
    if args.json:
        _print_json({"embedding": rows, "segmentation": segmenters})
        return EXIT_OK
    for r in rows:
        flags = "".join(("*" if r["active"] else " ", "D" if r["on_disk"] else " "))
        speed = f"; {r['measured']['images_per_s']:.0f} img/s measured here" if r["measured"] else ""
        print(f"{flags} {r['name']:<22} {r['licence']:<28} {r['summary']}{speed}")
        print(f"   {'':<22} languages: {r['languages']}")
    print("\nSegmentation (click-to-segment; weights in " + str(models_dir) + "):")
    for g in segmenters:
        flags = "".join(("*" if g["active"] else " ", "D" if g["on_disk"] else " "))
        print(f"{flags} {g['name']:<22} {g['licence']:<28} {g['file']}, {g['size_mb']} MB")
    print(
        "\n* active   D weights on this machine   (a new library takes --model / GLIMPSE_MODEL; "
        "switch a library with `glimpse model use NAME`; segmenter: --segmenter)"
    )
    if language is not None:
        print(language_note(language))
    return EXIT_OK


def cmd_watch(svc: Services, args: argparse.Namespace) -> int:
    """Run the library service in the foreground with a one-line live status."""
    from indexer.live.service import ServiceStatus, tagging_message

    for path in args.paths:
        svc.library.add_folder(path)
    if not svc.store.folders():
        raise NotFoundError("The library has no folders yet: run `glimpse watch FOLDER`.", title="No folders")
    tty = sys.stderr.isatty()
    last_message: list[str | None] = [None]
    last_state: list[str | None] = [None]

    def show(status: ServiceStatus) -> None:
        if status.message and status.message != last_message[0]:
            last_message[0] = status.message
            print(("\n" if tty else "") + status.message, file=sys.stderr)
        p = status.progress
        line = f"{status.state}"
        if p is not None and status.state == "indexing":
            eta = f", {p.eta_s:.0f} s left" if p.eta_s is not None else ""
            line += f": {p.done}/{p.total} photos, {p.rate:.1f}/s{eta}, {p.failed} failed"
        elif p is not None and status.state == "tagging":
            line = tagging_message(p) + " (photos are searchable)"
        line += f" | {status.applied_events} changes applied"
        if tty:
            print("\r" + line.ljust(78), end="", file=sys.stderr, flush=True)
        elif status.state != last_state[0]:  # logs and pipes get one line per state change
            last_state[0] = status.state
            print(status.state, file=sys.stderr, flush=True)

    svc.library.start(on_status=show)
    from indexer.cli.warm import WarmServer

    warm = WarmServer(svc)  # `glimpse search` from another shell is answered here, warm
    warm.start()
    try:
        while True:
            idle = svc.library.wait_idle(timeout=1.0)
            if idle and args.once:
                break
            if idle:  # wait_idle returns at once when idle: without this the loop spun a whole core
                time.sleep(1.0)
    except KeyboardInterrupt:
        print("\nstopping...", file=sys.stderr)
    finally:
        warm.close()
        svc.library.stop()
    counts = svc.store.status_counts()
    if args.json:
        _print_json({"indexed": counts["indexed"], "failed": counts["failed"], "pending": counts["pending"],
                     "changes_applied": svc.library.status.applied_events})  # fmt: skip
    else:
        print(f"{counts['indexed']} photos indexed, {counts['failed']} unreadable, {counts['pending']} pending.")
    return EXIT_OK


def cmd_folders(svc: Services, args: argparse.Namespace) -> int:
    if args.folders_command == "add":
        path = args.path.expanduser().resolve()
        if not path.is_dir():
            raise NotFoundError(f"{args.path} is not a folder.", title="Folder not found")
        svc.library.add_folder(path)
        if args.json:
            _print_json({"added": str(path)})
        else:
            print(f"Added {path}. Run `glimpse index` or `glimpse watch` to index it.")
    elif args.folders_command == "remove":
        path = args.path.expanduser().resolve()
        svc.library.remove_folder(path)
        if args.json:
            _print_json({"removed": str(path)})
        else:
            print(f"Removed {path} from the library (the photos on disk are untouched).")
    else:
        counts = svc.store.folder_counts()
        folders = svc.store.folders()
        if args.json:
            _print_json(
                [
                    {"path": f.path, "online": f.online, "enabled": f.enabled, "photos": counts.get(f.path, {})}
                    for f in folders
                ]
            )
        else:
            for f in folders:
                c = counts.get(f.path, {})
                state = "" if f.online else "  [not available]"
                print(
                    f"{f.path}{state}: {c.get('indexed', 0)} indexed, {c.get('pending', 0)} pending, "
                    f"{c.get('failed', 0)} unreadable"
                )
    return EXIT_OK


def cmd_restore_backup(paths: AppPaths) -> int:
    """Put the backup in place of a damaged database; runs before (and instead of) opening it."""
    from store.backup import restore_backup
    from store.lock import LibraryLock

    lock = LibraryLock(paths.data_dir / "library.lock", timeout=10.0)
    lock.acquire()  # no other Glimpse may have the library open while its file is swapped
    try:
        aside = restore_backup(paths.database)
    finally:
        lock.release()
    print(f"Restored the library database from its backup. The previous file was moved to {aside}.")
    print("Run `glimpse index` to bring it up to date with your folders.")
    return EXIT_OK


def cmd_doctor(svc: Services, args: argparse.Namespace) -> int:
    from indexer.live.doctor import run_doctor

    report = run_doctor(svc.store, svc.paths.index_dir, svc.paths.thumbnails_dir)
    if args.json:
        _print_json(report.to_json())
    else:
        for line in report.checks:
            print(f"ok       {line}")
        for line in report.repairs:
            print(f"repaired {line}")
        for line in report.problems:
            print(f"PROBLEM  {line}")
        print("The library is consistent." if report.healthy else "The library needs attention (see above).")
    return EXIT_OK if report.healthy else EXIT_ERROR


def cmd_model(svc: Services, args: argparse.Namespace) -> int:
    """Show the library's model, switch it (in the foreground unless --background), or cancel a switch."""
    action = args.model_command or "show"
    if action == "use":
        weights = str(Path(args.use_weights).expanduser().resolve()) if args.use_weights else None
        choice = ModelChoice(args.name, weights)
        resolve_model(choice.name, choice.weights)  # an unknown name or a missing file: a clear error first
        outcome = svc.switch.begin(choice)
        swapped = outcome == "switched"
        if outcome == "started" and not args.background:
            from indexer.ingest.pipeline import Control

            swapped = _continue_switch(svc, Control())
        state = svc.switch.state()
        if args.json:
            _print_json({"outcome": "switched" if swapped else outcome, "model": (state.active or choice).name,
                         "target": state.target.name if state.target else None})  # fmt: skip
        elif outcome == "current":
            print(f"The library already uses {choice.display}.")
        elif swapped:
            print(f"The library now uses {choice.display}.")
        else:
            print(
                f"Switching to {choice.display} in the background: search keeps using the current model until "
                "every photo has a vector from the new one. `glimpse watch`, `glimpse index` or the app go on with it."
            )
        return EXIT_OK
    if action == "cancel":
        target = svc.switch.target()
        svc.switch.cancel()
        if args.json:
            _print_json({"cancelled": target.name if target else None})
        else:
            print(f"Cancelled the switch to {target.display}." if target else "No switch is in progress.")
        return EXIT_OK
    state = svc.switch.state()
    active = state.active or svc.choice
    if args.json:
        _print_json({"model": {"name": active.name, "weights": active.weights, "key": active.key},
                     "switch": None if state.target is None else
                     {"to": state.target.name, "done": state.done, "total": state.total}})  # fmt: skip
        return EXIT_OK
    print(f"{active.display}" + (f"  [{active.key}]" if active.key else ""))
    if state.target is not None:
        print(f"switching to {state.target.display}: {state.done} of {state.total} photos embedded")
    return EXIT_OK


COMMANDS = {
    "index": cmd_index,
    "search": cmd_search,
    "similar": cmd_similar,
    "status": cmd_status,
    "watch": cmd_watch,
    "folders": cmd_folders,
    "doctor": cmd_doctor,
    "tags": cli_tags.cmd_tags,
    "segment": cli_segment.cmd_segment,
    "model": cmd_model,
    "duplicates": cli_duplicates.cmd_duplicates,
}

# Commands that only read: they never create a library where there is none.
READ_ONLY = {"status", "search", "similar", "doctor", "folders", "tags", "duplicates"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader went away (`glimpse tags list | head`): not an error. Point stdout at
        # devnull so the interpreter's final flush does not raise a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _stop_helper_processes() -> None:
    """Leave no process behind: the decode pool's workers are joined, and multiprocessing's
    resource tracker (started with them, otherwise outliving ``glimpse index`` by a moment)
    is stopped here, at the end of the command."""
    resource_tracker = sys.modules.get("multiprocessing.resource_tracker")  # imported only where a pool ran
    tracker = getattr(resource_tracker, "_resource_tracker", None)
    stop = getattr(tracker, "_stop", None)  # private but stable since 3.8; absent: nothing to do
    if stop is not None and getattr(tracker, "_pid", None) is not None:
        try:
            stop()
        except (OSError, ChildProcessError) as exc:
            log.debug("resource tracker: %s", exc)


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "models":
            return cmd_models(args)
        paths = AppPaths.from_env()
        if args.command == "doctor" and args.restore_backup:
            return cmd_restore_backup(paths)
        settings = settings_for(args, paths)
        requested, requested_by = requested_model(args)
        create = args.command not in READ_ONLY or (args.command == "folders" and args.folders_command == "add")
        one_query = args.command in ("search", "similar")  # open the text tower fast: it runs once
        svc = build_services(paths, settings, requested, requested_by, create=create, short_lived=one_query)
        svc.store.db.lock.waiting = lambda message: print(f"glimpse: {message}", file=sys.stderr, flush=True)
        language = default_model()[1]
        if create and svc.new_library and requested is None and language is not None:
            print(f"glimpse: {language_note(language)}", file=sys.stderr)
        try:
            return COMMANDS[args.command](svc, args)
        finally:
            svc.close()
            _stop_helper_processes()
    except GlimpseError as exc:  # LibraryBusyError too: its own title, message and exit code
        sys.stderr.write(error_text(exc))
        return exc.exit_code
    except (OSError, SQLAlchemyError) as exc:
        if not is_disk_error(exc):
            raise
        error = disk_error(AppPaths.from_env().database, exc)  # a full or read-only disk: nothing lost
        sys.stderr.write(error_text(error))
        return error.exit_code
    except KeyboardInterrupt:
        print("glimpse: interrupted; finished work is saved, run the command again to continue.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
