"""XMP sidecars: written beside the photo, merged with what others wrote, read back by exiftool."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from indexer.errors import GlimpseError
from indexer.tags.xmp import Keyword, read_keywords, sidecar_path, write_sidecar

FOREIGN = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:darktable="http://darktable.sf.net/" xmp:Rating="4"
    darktable:history_end="3">
   <dc:subject><rdf:Bag><rdf:li>Grandma</rdf:li></rdf:Bag></dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""


def _exiftool(path: Path) -> dict[str, object]:
    out = subprocess.run(["exiftool", "-j", "-XMP:all", str(path)], check=True, capture_output=True, text=True).stdout
    return json.loads(out)[0]


def _photo(tmp_path: Path) -> Path:
    photo = tmp_path / "IMG 0001.jpg"
    photo.write_bytes(b"\xff\xd8 not really a jpeg")
    return photo


def test_sidecar_names() -> None:
    assert sidecar_path(Path("/p/a.jpg")) == Path("/p/a.jpg.xmp")
    assert sidecar_path(Path("/p/a.jpg"), "replace") == Path("/p/a.xmp")


def test_new_sidecar_round_trips_and_photo_is_untouched(tmp_path: Path) -> None:
    photo = _photo(tmp_path)
    before = photo.read_bytes()
    path = write_sidecar(photo, [Keyword("beach", "scene"), Keyword("Café au lait", "food")])
    assert path == tmp_path / "IMG 0001.jpg.xmp"
    assert photo.read_bytes() == before
    assert read_keywords(path) == ["beach", "Café au lait"]


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed (scripts/test.sh installs it)")
def test_exiftool_reads_what_glimpse_wrote_and_what_it_kept(tmp_path: Path) -> None:
    photo = _photo(tmp_path)
    side = sidecar_path(photo)
    side.write_text(FOREIGN, encoding="utf-8")
    write_sidecar(photo, [Keyword("beach", "scene"), Keyword("sunset", "time of day")])
    tags = _exiftool(side)
    assert tags["Subject"] == ["Grandma", "beach", "sunset"]
    assert tags["HierarchicalSubject"] == ["scene|beach", "time of day|sunset"]
    assert tags["Rating"] == 4 and tags["History_end"] == 3  # other programs' properties survive
    # Export again after "sunset" was removed: only Glimpse's own keyword goes.
    write_sidecar(photo, [Keyword("beach", "scene")])
    tags = _exiftool(side)
    assert tags["Subject"] == ["Grandma", "beach"]
    assert tags["HierarchicalSubject"] == "scene|beach"  # exiftool prints a one-item list as a scalar


def test_broken_sidecar_is_left_alone_with_a_clear_error(tmp_path: Path) -> None:
    photo = _photo(tmp_path)
    side = sidecar_path(photo)
    side.write_text("<x:xmpmeta", encoding="utf-8")
    with pytest.raises(GlimpseError, match="not readable XMP"):
        write_sidecar(photo, [Keyword("beach")])
    assert side.read_text(encoding="utf-8") == "<x:xmpmeta"
