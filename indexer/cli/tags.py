"""``glimpse tags …``: the tag vocabulary, tagging by hand, teaching, re-tagging, XMP export.

Every vocabulary change re-tags the library from its stored vectors before the
command returns (seconds, no image model), so what ``tags list`` shows afterwards
is already true.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from indexer.cli.answers import json_text
from indexer.composition import Services
from indexer.errors import NotFoundError
from indexer.tags.export import export_sidecars
from indexer.tags.tagger import RetagReport
from store.filenames import shown
from store.records import TagRecord


def _print_json(data: Any) -> None:
    sys.stdout.write(json_text(data))  # file names that are not UTF-8 stay exact (answers.json_text)


def _retagged(report: RetagReport) -> None:
    print(
        f"Re-tagged {report.photos} photos with {report.tags} tags in {report.seconds:.2f} s "
        f"({report.texts_embedded} prompts embedded, no photo re-read)."
    )


def _tag_json(tag: TagRecord) -> dict[str, Any]:
    return {"name": tag.name, "group": tag.group, "kind": tag.kind, "enabled": tag.enabled,
            "prompts": list(tag.prompts), "threshold": tag.threshold}  # fmt: skip


def _list(svc: Services, args: argparse.Namespace) -> int:
    tags = svc.tags
    counts = tags.counts()
    rows: list[dict[str, Any]] = [
        {**_tag_json(t), "photos": counts.get(t.id, 0)}
        for t in tags.tags(include_disabled=args.all)
        if args.group is None or t.group == args.group
    ]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("No tags yet: they come with the first `glimpse index`, or add one with `glimpse tags add NAME`.")
    for r in sorted(rows, key=lambda r: (-int(r["photos"]), str(r["name"]))):
        state = "" if r["enabled"] else "  [disabled]"
        kind = "" if r["kind"] == "prompts" else f"  ({r['kind']})"
        print(f"{r['photos']:7d}  {r['name']:<24} {r['group']}{kind}{state}")
    return 0


def _retag_after(svc: Services, args: argparse.Namespace, tag: TagRecord, said: str) -> int:
    """A vocabulary change: re-tag the library before returning, then report the tag and the re-tag."""
    report = svc.tagger.retag()
    if args.json:
        _print_json({"tag": _tag_json(tag), "retag": report.to_json()})
    else:
        print(said)
        _retagged(report)
    return 0


def _by_hand(svc: Services, args: argparse.Namespace, present: bool) -> int:
    """``tags add TAG PHOTO…`` / ``tags remove TAG PHOTO…``: the user's word, which re-tagging keeps."""
    editor = svc.tag_editor
    ids = editor.resolve_images(args.photos)
    tag = editor.tag_photos(args.tag, ids, present=present)
    if args.json:
        _print_json({"tag": _tag_json(tag), "tagged" if present else "untagged": len(ids)})
    elif present:
        print(f'Tagged {len(ids)} photos "{tag.name}" (by hand: re-tagging never undoes this).')
    else:
        print(f'Took "{tag.name}" off {len(ids)} photos (re-tagging never puts it back).')
    return 0


def _add(svc: Services, args: argparse.Namespace) -> int:
    if args.photos:
        return _by_hand(svc, args, present=True)
    editor = svc.tag_editor
    tag = editor.add_tag(args.tag, args.prompt, args.group)
    return _retag_after(svc, args, tag, f'Added tag "{tag.name}" matching: {", ".join(tag.prompts or (tag.name,))}.')


def _remove(svc: Services, args: argparse.Namespace) -> int:
    if args.photos:
        return _by_hand(svc, args, present=False)
    svc.tag_editor.delete(args.tag)
    if args.json:
        _print_json({"deleted": args.tag})
    else:
        print(f'Deleted tag "{args.tag}" and its tags on photos.')
    return 0


def _edit(svc: Services, args: argparse.Namespace) -> int:
    editor = svc.tag_editor
    tag = editor.edit(
        args.tag,
        prompts=args.prompt,
        add_prompts=args.add_prompt,
        enabled=True if args.enable else False if args.disable else None,
        threshold=args.threshold,
        group=args.group,
    )
    if args.rename:
        tag = editor.rename(tag.name, args.rename)
    state = "enabled" if tag.enabled else "disabled"
    return _retag_after(svc, args, tag, f'Tag "{tag.name}": {state}, prompts: {", ".join(tag.prompts)}.')


def _apply(svc: Services, args: argparse.Namespace) -> int:
    tagger = svc.tagger
    report = tagger.retag()
    if args.json:
        _print_json(report.to_json())
    else:
        _retagged(report)
    return 0


def _teach(svc: Services, args: argparse.Namespace) -> int:
    tagger = svc.tag_editor
    positives = tagger.resolve_images(args.photos)
    negatives = tagger.resolve_images(args.negatives)
    teach = tagger.teach(args.tag, positives, negatives)
    if args.json:
        _print_json(teach.to_json())
        return 0
    if teach.recall is None:
        estimate = "too few examples to estimate how well it works (mark at least three)"
    elif teach.precision is None:
        estimate = (
            f"estimated recall {teach.recall:.0%} on held-out examples; precision cannot be estimated "
            "yet (mark a few photos that do not show it as counter-examples)"
        )
    else:
        estimate = f"estimated precision {teach.precision:.0%}, recall {teach.recall:.0%} on held-out labelled examples"
    print(f'Taught "{teach.tag}" from {teach.positives} photos ({teach.negatives} counter-examples): {estimate}.')
    print(f"{teach.tagged} photos now carry it; new photos are tagged as they are indexed.")
    return 0


def _show(svc: Services, args: argparse.Namespace) -> int:
    tagger = svc.tag_editor
    tags = svc.tags
    ids = tagger.resolve_images(args.photos)
    on = tags.tags_of(ids)
    records = svc.store.images(ids)
    if args.json:
        _print_json(
            [
                {"path": records[i].path, "tags": [{"name": t.name, "source": t.source, "score": round(t.score, 4)}
                                                   for t in on[i]]}
                for i in ids
            ]
        )  # fmt: skip
        return 0
    for i in ids:
        listed = ", ".join(f"{t.name} ({t.score:.2f}{', by hand' if t.source == 'user' else ''})" for t in on[i])
        print(f"{shown(records[i].path)}: {listed or 'no tags'}")
    return 0


def _export(svc: Services, args: argparse.Namespace) -> int:
    tagger = svc.tag_editor
    tags = svc.tags
    if args.paths:
        ids = []
        for path in args.paths:
            resolved = path.expanduser().resolve()
            if resolved.is_dir():
                ids += svc.store.ids_under([str(resolved)]).tolist()
            elif resolved.exists():
                ids += tagger.resolve_images([str(resolved)])
            else:
                raise NotFoundError(f"{path} does not exist.")
    else:
        ids = tags.image_ids().tolist()
    report = export_sidecars(tags, svc.store, ids, args.style)
    if args.json:
        _print_json(report.to_json())
    else:
        print(f"Wrote {len(report.written)} XMP sidecars ({report.skipped} photos without tags skipped).")
        for path, error in report.failures[:20]:
            print(f"  not written: {shown(path)}: {error}", file=sys.stderr)
    return 3 if report.failures else 0


ACTIONS = {
    "list": _list,
    "add": _add,
    "remove": _remove,
    "edit": _edit,
    "apply": _apply,
    "teach": _teach,
    "show": _show,
    "export": _export,
}


def cmd_tags(svc: Services, args: argparse.Namespace) -> int:
    return ACTIONS[args.tags_command](svc, args)
