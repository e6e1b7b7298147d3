"""Writing the library's tags to XMP sidecars, photo by photo, reporting what could not be written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from store.library import LibraryStore
from store.tags import TagStore


@dataclass
class ExportReport:
    written: list[str] = field(default_factory=list)
    skipped: int = 0  # no tags and no sidecar to update
    failures: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "written": len(self.written),
            "skipped": self.skipped,
            "failures": [{"path": p, "error": e} for p, e in self.failures],
        }


def export_sidecars(
    tags: TagStore, store: LibraryStore, image_ids: Sequence[int], style: str = "append"
) -> ExportReport:
    """Write each photo's tags to its XMP sidecar (dc:subject); the photos themselves are never touched.

    A photo that cannot be written (read-only folder, unplugged drive, broken
    sidecar) is reported and the others go on.
    """
    from indexer.tags.xmp import Keyword, XmpError, sidecar_path, write_sidecar

    report = ExportReport()
    records = store.images(image_ids)
    on_photo = tags.tags_of(list(records))
    for image_id, rec in records.items():
        photo = Path(rec.path)
        keywords = [Keyword(t.name, t.group) for t in on_photo.get(image_id, [])]
        if not keywords and not sidecar_path(photo, style).exists():
            report.skipped += 1
            continue
        if not photo.exists():
            report.failures.append((rec.path, "the photo is not there (moved, or its drive is unplugged)"))
            continue
        try:
            report.written.append(str(write_sidecar(photo, keywords, style)))
        except XmpError as exc:
            report.failures.append((rec.path, exc.message))
    return report
