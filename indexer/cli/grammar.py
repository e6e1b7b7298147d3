"""The ``glimpse`` command line's grammar: every command, option and exit code.

Kept apart from the commands (``indexer.cli.main``) so that the fast paths the
launcher tries first (a warm app's socket, a settled rescan, a search on a read-only
snapshot) parse a command line exactly as the full CLI does, without importing the
engine.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from indexer.errors import GlimpseError
from indexer.models.choice import ModelChoice, requested_model_from_env
from indexer.models.presets import DEFAULT_MODEL, MODEL_ENV, WEIGHTS_ENV
from indexer.settings import Settings
from store.paths import HOME_ENV, AppPaths

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130


def error_text(exc: GlimpseError) -> str:
    """How every ``glimpse`` command reports a typed error on stderr (its exit code is ``exc.exit_code``)."""
    return f"glimpse: {exc.title}\n{exc.message}\n"


class UsageRefusedError(Exception):
    """A command line :class:`QuietParser` would have answered with usage, help or an error."""


class QuietParser(argparse.ArgumentParser):
    """The CLI's parser, raising instead of printing usage and exiting: for the fast paths,
    which leave every such command line to the full command (it reports it)."""

    def error(self, message: str) -> Any:
        raise UsageRefusedError(message)

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        raise UsageRefusedError(message or "exit")


def _common_options(defaults: bool) -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (``glimpse index --model X`` too).

    The copy given to each command has no defaults (SUPPRESS), so it only sets what was typed.
    """
    suppress: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    c = argparse.ArgumentParser(add_help=False)
    c.add_argument(
        "--model",
        help=f"model of a new library: preset or open_clip name (default {DEFAULT_MODEL}; 'toyworld' for the "
        "bundled test model). An existing library uses its own; switch it with `glimpse model use`",
        **suppress,
    )
    c.add_argument("--weights", help="a weights file for the model, instead of downloading", **suppress)
    c.add_argument("--device", help="auto (default), cpu, cuda, mps", **({"default": "auto"} if defaults else suppress))
    c.add_argument("--threads", type=int, help="CPU threads for the model", **suppress)
    c.add_argument(
        "--segmenter", help="segmentation model: mobile_sam (default), sam_vit_b, sam_vit_l, sam_vit_h", **suppress
    )
    c.add_argument("--sam-weights", help="a SAM / MobileSAM checkpoint file, instead of the model folder", **suppress)
    c.add_argument(
        "-v",
        "--verbose",
        action="count",
        help="-v: Glimpse's steps, -vv: everything",
        **({"default": 0} if defaults else suppress),
    )
    return c


def build_parser(parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The command line's grammar (``parser_class``: the warm path's parser raises instead of exiting)."""
    p = parser_class(
        prog="glimpse",
        description="Semantic photo search on your own machine.",
        epilog=f"Environment: {HOME_ENV} (library folder), {MODEL_ENV}, {WEIGHTS_ENV}.",
        parents=[_common_options(defaults=True)],
    )
    p.add_argument("--version", action=_VersionAction)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    common = _common_options(defaults=False)
    add_command = sub.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("parents", [common])
        return add_command(name, **kwargs)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    s = sub.add_parser("index", help="add folders and index their photos (no folder: rescan all)")
    s.add_argument("paths", nargs="*", type=Path)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--workers", type=int, help="decode processes (default: one per core)")
    s.add_argument(
        "--regions",
        action=argparse.BooleanOptionalAction,
        help="also index 5 regions per photo so small objects are found (about 4x the indexing time; remembered)",
    )
    s.add_argument("--json", action="store_true", help="print a JSON summary")

    for name, helptext in (
        ("search", "search by text, image or a combination"),
        ("similar", "find photos similar to an image"),
    ):
        s = sub.add_parser(name, help=helptext)
        if name == "search":
            s.add_argument("query", nargs="?", help="the query (leave out with --object or --region)")
            s.add_argument(
                "--object", type=Path, metavar="IMAGE", help="search for an object of IMAGE (with --point/--box)"
            )
            s.add_argument("--region", type=Path, metavar="IMAGE", help="search for a rectangle of IMAGE (with --box)")
            add_prompt_arguments(s)
        else:
            s.add_argument("image")
        s.add_argument("-k", "--top", type=_count, default=20, dest="k", help="at most this many results (default 20)")
        s.add_argument(
            "--all",
            action="store_true",
            dest="show_all",
            help="after the matches, list weaker ones below a divider (up to -k in all)",
        )
        s.add_argument(
            "--expand",
            action="store_true",
            help='list near-duplicates as results of their own (by default a group is one result, "+N similar")',
        )
        s.add_argument("--folder", action="append", help="only photos under this folder (repeatable)")
        s.add_argument("--tag", action="append", default=[], help="only photos with this tag (repeatable)")
        s.add_argument("--without-tag", action="append", default=[], help="no photos with this tag (repeatable)")
        s.add_argument("--json", action="store_true", help="print results as JSON")

    s = sub.add_parser("status", help="what the library holds and whether its index is healthy")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("models", help="model presets and which are on this machine")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("watch", help="keep the library up to date as folders change (foreground)")
    s.add_argument("paths", nargs="*", type=Path, help="folders to add before watching")
    s.add_argument("--once", action="store_true", help="catch up with changes, then exit")
    s.add_argument("--json", action="store_true", help="print a JSON summary when it stops")

    s = sub.add_parser("model", help="the library's model: show it, switch to another, cancel a switch")
    s.add_argument("--json", action="store_true")
    msub = s.add_subparsers(dest="model_command", metavar="ACTION")
    m = msub.add_parser("show", help="the model the library uses, and a switch in progress (default)")
    m.add_argument("--json", action="store_true")
    m = msub.add_parser("use", help="switch the library to another model (search keeps working meanwhile)")
    m.add_argument("name", help="a preset (see `glimpse models`), ARCH/TAG, hf-hub:ORG/REPO or local-dir:PATH")
    m.add_argument("--weights", dest="use_weights", help="a weights file for that model")
    m.add_argument("--background", action="store_true", help="only start it; `glimpse watch` or the app finish it")
    m.add_argument("--json", action="store_true")
    m = msub.add_parser("cancel", help="stop a switch in progress and drop what it embedded")
    m.add_argument("--json", action="store_true")

    s = sub.add_parser("folders", help="manage the library's folders")
    fsub = s.add_subparsers(dest="folders_command", metavar="ACTION", required=True)
    fa = fsub.add_parser("add", help="add a folder (indexed by the next `index` or `watch`)")
    fa.add_argument("path", type=Path)
    fa.add_argument("--json", action="store_true")
    fr = fsub.add_parser("remove", help="forget a folder and its photos (files are not touched)")
    fr.add_argument("path", type=Path)
    fr.add_argument("--json", action="store_true")
    fl = fsub.add_parser("list", help="folders with photo counts")
    fl.add_argument("--json", action="store_true")

    _add_tags_parser(sub)
    _add_segment_parser(sub)

    s = sub.add_parser("duplicates", help="exact copies and near-duplicates, with the one to keep suggested")
    s.add_argument(
        "--similarity",
        type=_similarity,
        default=None,
        help="how alike two photos must be, 0.5-1 (cosine of their vectors; default: the duplicate_similarity "
        "setting, 0.96). Lower finds more",
    )
    s.add_argument("--folder", action="append", help="only photos under this folder (repeatable)")
    s.add_argument(
        "--trash",
        action="store_true",
        help="move every photo but the suggested one of each group to the system trash (asks first)",
    )
    s.add_argument("--yes", action="store_true", help="with --trash: move them without asking")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("doctor", help="check the library's consistency and repair it")
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--restore-backup",
        action="store_true",
        help="put the last backup of the library database in place of a damaged one (which is moved aside)",
    )
    return p


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked for (reading package metadata costs every command ~18 ms)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        sys.stdout.write(f"glimpse {_version()}\n")
        parser.exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # ~18 ms: only for --version

    try:
        return version("glimpse")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _similarity(text: str) -> float:
    """``--similarity``: a cosine threshold from 0.5 to 1 (argparse turns the error into exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.5 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0.5 and 1")
    return value


def _count(text: str) -> int:
    """``-k``: a number of results, at least 1 (argparse turns the ValueError into exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} results makes no sense; ask for 1 or more")
    if value > MAX_RESULTS:
        raise argparse.ArgumentTypeError(f"ask for at most {MAX_RESULTS:,} results")
    return value


MAX_RESULTS = 1_000_000


def point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"a point is X,Y in photo pixels, not {text!r}") from exc
    return x, y


def box(text: str) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"a box is X0,Y0,X1,Y1 in photo pixels, not {text!r}") from exc
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def add_prompt_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--point", type=point, action="append", default=[], metavar="X,Y", help="on the object")
    p.add_argument("--negative", type=point, action="append", default=[], metavar="X,Y", help="not on it")
    p.add_argument("--box", type=box, metavar="X0,Y0,X1,Y1", help="a box around the object")
    p.add_argument("--candidate", type=int, default=1, choices=(1, 2, 3), help="which of the 3 masks (1 = best)")


def _add_segment_parser(sub: Any) -> None:
    s = sub.add_parser("segment", help="cut an object out of a photo: points and/or a box -> mask")
    s.add_argument("image", type=Path)
    add_prompt_arguments(s)
    s.add_argument("--out", type=Path, help="write the mask as a PNG (white = object), photo-sized")
    s.add_argument("--cutout", type=Path, help="write the object as a PNG with transparency")
    s.add_argument("--json", action="store_true")


def _add_tags_parser(sub: Any) -> None:
    s = sub.add_parser("tags", help="automatic tags: vocabulary, tag by hand, teach, export to XMP")
    tsub = s.add_subparsers(dest="tags_command", metavar="ACTION", required=True)

    a = tsub.add_parser("list", help="tags with photo counts")
    a.add_argument("--all", action="store_true", help="include disabled tags")
    a.add_argument("--group", help="only this group")
    a.add_argument("--json", action="store_true")

    a = tsub.add_parser("add", help="add a tag to the vocabulary, or put it on photos by hand")
    a.add_argument("tag")
    a.add_argument("photos", nargs="*", help="photos (paths or #id) to tag by hand; none: add a zero-shot tag")
    a.add_argument("--prompt", action="append", default=[], help="a phrase the tag matches (repeatable)")
    a.add_argument("--group", default="mine", help="group for a new tag (default: mine)")
    a.add_argument("--json", action="store_true")

    a = tsub.add_parser("remove", help="take a tag off photos by hand, or delete it from the vocabulary")
    a.add_argument("tag")
    a.add_argument("photos", nargs="*", help="photos to take the tag off; none: delete the tag")
    a.add_argument("--json", action="store_true")

    a = tsub.add_parser("edit", help="rename a tag, change its prompts, threshold or group, disable it")
    a.add_argument("tag")
    a.add_argument("--rename")
    a.add_argument("--prompt", action="append", help="replace the prompts (repeatable)")
    a.add_argument("--add-prompt", action="append", default=[], help="add a prompt (repeatable)")
    a.add_argument("--threshold", type=float, help="probability a photo needs to get the tag (0-1)")
    a.add_argument("--group")
    on_off = a.add_mutually_exclusive_group()
    on_off.add_argument("--enable", action="store_true")
    on_off.add_argument("--disable", action="store_true")
    a.add_argument("--json", action="store_true")

    a = tsub.add_parser("apply", help="re-tag the whole library from the stored vectors")
    a.add_argument("--json", action="store_true")

    a = tsub.add_parser("teach", help="teach a tag from example photos and apply it to the library")
    a.add_argument("tag")
    a.add_argument("photos", nargs="+", help="photos that show it (five or more work best)")
    a.add_argument("--not", dest="negatives", action="append", default=[], help="a photo that does not show it")
    a.add_argument("--json", action="store_true")

    a = tsub.add_parser("show", help="the tags of photos")
    a.add_argument("photos", nargs="+")
    a.add_argument("--json", action="store_true")

    a = tsub.add_parser("export", help="write tags to XMP sidecars (the photos are never modified)")
    a.add_argument("paths", nargs="*", type=Path, help="photos or folders (default: the whole library)")
    a.add_argument(
        "--style",
        choices=("append", "replace"),
        default="append",
        help="append: photo.jpg.xmp (darktable, digiKam; default); replace: photo.xmp (Lightroom)",
    )
    a.add_argument("--json", action="store_true")


def requested_model(
    args: argparse.Namespace, environ: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[ModelChoice | None, str]:
    """The model this command asks for (flags win over environment variables), and who asked.

    It picks the model of a new library; for an existing one it must be the library's own.
    ``environ`` and ``cwd`` are the asking process's (a warm request's: ``indexer.cli.warm``);
    a relative weights path is taken from that working directory.
    """
    base = Path.cwd() if cwd is None else cwd
    env = dict(os.environ if environ is None else environ)
    if args.model or args.weights:
        weights = str(base / Path(args.weights).expanduser()) if args.weights else None
        return ModelChoice(args.model or DEFAULT_MODEL, weights), "--model" if args.model else "--weights"
    if env.get(WEIGHTS_ENV):
        env[WEIGHTS_ENV] = str(base / Path(env[WEIGHTS_ENV]).expanduser())
    return requested_model_from_env(env)


def setup_logging(verbose: int) -> None:
    """Quiet by default (the commands print what matters); -v shows Glimpse's steps, -vv everything."""
    logging.basicConfig(
        level=logging.DEBUG if verbose >= 2 else logging.WARNING, format="%(message)s", stream=sys.stderr
    )
    if verbose == 1:
        for name in ("glimpse", "indexer", "store"):
            logging.getLogger(name).setLevel(logging.INFO)
    # Third-party libraries' warnings (timm's deprecations, torch's notices) are for their
    # developers, not for someone searching photos: logged, shown only with -vv.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if verbose >= 2 else logging.ERROR)


def settings_for(args: argparse.Namespace, paths: AppPaths) -> Settings:
    """The saved settings with this command's flags on top, validated (a bad value: exit 2).

    ``index --regions`` is remembered for the library. The model is not a setting:
    see :func:`requested_model`.
    """
    settings = Settings.load(paths.settings_file)
    settings.device = args.device if args.device != "auto" else settings.device
    settings.threads = args.threads if args.threads is not None else settings.threads
    settings.segmenter = args.segmenter or settings.segmenter
    settings.sam_weights = args.sam_weights or settings.sam_weights
    if args.command == "index":
        settings.batch_size = args.batch_size if args.batch_size is not None else settings.batch_size
        settings.decode_workers = args.workers if args.workers is not None else settings.decode_workers
    settings.validate()
    if args.command == "index" and args.regions is not None and args.regions != settings.regions:
        settings.regions = args.regions
        saved = Settings.load(paths.settings_file)
        saved.regions = args.regions
        saved.save(paths.settings_file)
    return settings
