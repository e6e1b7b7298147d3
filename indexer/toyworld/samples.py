"""Write a sample folder of toy-world photos: ``python -m indexer.toyworld.samples DIR``.

The README quickstart indexes it, so a new user can try Glimpse without photos of their own.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from indexer.toyworld.world import write_sample_folder

log = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--per-shape", type=int, default=2, help="photos per (shape, colour) pair")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    written = write_sample_folder(args.folder, per_spec=args.per_shape)
    log.info("wrote %d sample photos to %s", len(written), args.folder)


if __name__ == "__main__":
    main()
