"""``glimpse segment`` and ``glimpse search --object``: click-to-segment from the command line.

Points and boxes are in the photo's pixels as it is displayed (upright, full size):
what an image viewer shows under the mouse.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from indexer.composition import Services
from indexer.errors import NotFoundError, QueryError
from indexer.segment.objects import Segmentation, cutout


def _prepare(svc: Services) -> None:
    """Load the segmenter, with a progress bar if its weights are downloaded now."""
    from tqdm import tqdm

    bar: list[Any] = []

    def progress(done: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, unit="B", unit_scale=True, desc="downloading weights", file=sys.stderr))
        bar[0].n = done
        bar[0].refresh()

    try:
        svc.objects.prepare(progress)
    finally:
        if bar:
            bar[0].close()


def segment_from_args(svc: Services, image: Path, args: argparse.Namespace) -> Segmentation:
    if not image.expanduser().is_file():
        raise NotFoundError(f"{image} does not exist or is not a file.")
    _prepare(svc)
    points = [*args.point, *args.negative]
    labels = [1] * len(args.point) + [0] * len(args.negative)
    if not args.point and args.box is None:
        raise QueryError("Say where the object is: --point X,Y (and/or --box X0,Y0,X1,Y1).")
    return svc.objects.segment(image, points, labels, args.box)


def cmd_segment(svc: Services, args: argparse.Namespace) -> int:
    seg = segment_from_args(svc, args.image, args)
    index = args.candidate - 1
    full = seg.full_mask(index)
    if args.out:
        Image.fromarray(full.astype(np.uint8) * 255, "L").save(args.out)
    if args.cutout:
        cutout(svc.objects.full_pixels(seg.photo), full).save(args.cutout)
    ys, xs = np.nonzero(full)
    data = {
        "image": seg.photo.path,
        "size": list(seg.photo.size),
        "candidates": [{"score": round(float(s), 4)} for s in seg.scores],
        "chosen": args.candidate,
        "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None,
        "area": round(float(full.mean()), 4),
    }
    if args.json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return 0
    for n, c in enumerate(data["candidates"], start=1):
        mark = "*" if n == args.candidate else " "
        print(f"{mark} mask {n}: score {c['score']:.3f}")
    print(f"object box {data['box']}, {data['area']:.1%} of the photo")
    for path in (args.out, args.cutout):
        if path:
            print(f"wrote {path}")
    return 0
