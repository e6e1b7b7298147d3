"""XMP sidecars: hand Glimpse's tags to digiKam, Lightroom, darktable and friends.

Glimpse never writes into a photo. It writes (or updates) the sidecar beside it:
``IMG_0001.jpg.xmp`` by default, the name darktable and digiKam use and the one
that cannot clash when ``IMG_0001.jpg`` and ``IMG_0001.cr2`` sit side by side, or
``IMG_0001.xmp`` (Lightroom's style) on request.

An existing sidecar is edited, not replaced: every other property (a darktable
edit history, a rating, keywords typed in another program) is kept. Glimpse
records which keywords it wrote in its own property, so exporting again after a
tag was removed takes out exactly that keyword and nothing the user typed
elsewhere. Writes are atomic (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from indexer.errors import GlimpseError

log = logging.getLogger(__name__)

X = "adobe:ns:meta/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"
LR = "http://ns.adobe.com/lightroom/1.0/"
GLIMPSE = "urn:glimpse:xmp:1.0#"
_PREFIXES = {"x": X, "rdf": RDF, "dc": DC, "lr": LR, "glimpse": GLIMPSE}

_HEADER = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_FOOTER = '\n<?xpacket end="w"?>\n'


class XmpError(GlimpseError):
    title = "Cannot write the XMP sidecar"


@dataclass(frozen=True)
class Keyword:
    name: str
    group: str | None = None  # written as lr:hierarchicalSubject "group|name"


def sidecar_path(photo: Path, style: str = "append") -> Path:
    """``photo.jpg.xmp`` (style "append", darktable/digiKam) or ``photo.xmp`` (style "replace", Lightroom)."""
    if style == "replace":
        return photo.with_suffix(".xmp")
    if style == "append":
        return photo.with_name(photo.name + ".xmp")
    raise ValueError(f"unknown sidecar style {style!r}")


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


# Characters XML 1.0 cannot hold at all, not even escaped: C0 controls but tab and newlines,
# lone surrogates, U+FFFE/U+FFFF. A tag name holding one once made a sidecar no reader
# (Glimpse included) could parse again.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NOT_XML_REF = re.compile(rb"&#(?:x0*[0-8bcef]|x0*1[0-9a-f]|0*(?:[0-8]|1[124-9]|2[0-9]|3[01]));", re.IGNORECASE)


def xml_text(text: str) -> str:
    """``text`` as one keyword XML can hold: without the characters XML cannot hold at all, and
    tabs and line breaks as spaces (a reader would turn a carriage return into a newline)."""
    return _NOT_XML.sub("", text).replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _bag_items(description: ET.Element, ns: str, prop: str) -> list[str]:
    node = description.find(_q(ns, prop))
    if node is None:
        return []
    return [li.text or "" for li in node.iter(_q(RDF, "li"))]


def _set_bag(description: ET.Element, ns: str, prop: str, items: Sequence[str]) -> None:
    for old in description.findall(_q(ns, prop)):
        description.remove(old)
    if not items:
        return
    node = ET.SubElement(description, _q(ns, prop))
    bag = ET.SubElement(node, _q(RDF, "Bag"))
    for item in items:
        ET.SubElement(bag, _q(RDF, "li")).text = xml_text(item)


def _parse(path: Path) -> ET.Element:
    """The sidecar's root; one written by an older Glimpse with a control character in a
    keyword (invalid XML) is read without those characters, so it can be repaired."""
    try:
        return ET.parse(path).getroot()
    except ET.ParseError:
        raw = path.read_bytes()
        cleaned = _NOT_XML_REF.sub(b"", re.sub(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]", b"", raw))
        if cleaned == raw:
            raise
        return ET.fromstring(cleaned)


def _load(path: Path) -> tuple[ET.Element, ET.Element]:
    """The sidecar's tree and its first rdf:Description (a fresh skeleton if there is no file)."""
    if path.exists():
        try:
            # Keep the file's own prefixes (darktable:, xmp:, …) instead of ElementTree's ns0:.
            with contextlib.suppress(ET.ParseError):  # a damaged file is repaired (or refused) below
                for _, (prefix, uri) in ET.iterparse(path, events=("start-ns",)):
                    if prefix and not prefix.startswith("ns"):
                        ET.register_namespace(prefix, uri)
            root = _parse(path)
        except (ET.ParseError, OSError) as exc:
            raise XmpError(
                f"{path} exists but is not readable XMP ({exc}); it was left as it is. "
                "Move it aside to let Glimpse write a new one."
            ) from exc
        rdf = root if root.tag == _q(RDF, "RDF") else root.find(_q(RDF, "RDF"))
        if rdf is None:
            raise XmpError(f"{path} has no rdf:RDF element; it was left as it is.")
        desc = rdf.find(_q(RDF, "Description"))
        if desc is None:
            desc = ET.SubElement(rdf, _q(RDF, "Description"), {_q(RDF, "about"): ""})
        return root, desc
    root = ET.Element(_q(X, "xmpmeta"), {_q(X, "xmptk"): "Glimpse"})
    rdf = ET.SubElement(root, _q(RDF, "RDF"))
    desc = ET.SubElement(rdf, _q(RDF, "Description"), {_q(RDF, "about"): ""})
    return root, desc


def read_keywords(path: Path) -> list[str]:
    """The dc:subject keywords of a sidecar (empty if there is none)."""
    if not path.exists():
        return []
    _, desc = _load(path)
    return _bag_items(desc, DC, "subject")


def write_sidecar(photo: Path, keywords: Sequence[Keyword], style: str = "append") -> Path:
    """Merge ``keywords`` into the photo's sidecar; returns its path.

    Keywords Glimpse wrote last time and no longer has are removed; keywords from
    anyone else are kept, and so is every other property.
    """
    for prefix, uri in _PREFIXES.items():
        ET.register_namespace(prefix, uri)
    path = sidecar_path(photo, style)
    root, desc = _load(path)
    ours_before = set(_bag_items(desc, GLIMPSE, "keywords"))
    names = list(dict.fromkeys(k.name for k in keywords))
    kept = [k for k in _bag_items(desc, DC, "subject") if k not in ours_before and k not in names]
    _set_bag(desc, DC, "subject", [*kept, *names])
    hier_before = {f"{k}" for k in _bag_items(desc, GLIMPSE, "hierarchical")}
    ours_hier = list(dict.fromkeys(f"{k.group}|{k.name}" if k.group else k.name for k in keywords))
    kept_hier = [h for h in _bag_items(desc, LR, "hierarchicalSubject") if h not in hier_before and h not in ours_hier]
    _set_bag(desc, LR, "hierarchicalSubject", [*kept_hier, *ours_hier])
    _set_bag(desc, GLIMPSE, "keywords", names)
    _set_bag(desc, GLIMPSE, "hierarchical", ours_hier)
    ET.indent(root, space=" ")
    body = ET.tostring(root, encoding="unicode")
    tmp = path.with_name(f".{path.name}.glimpse-tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(_HEADER + body + _FOOTER)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise XmpError(f"Cannot write {path}: {exc.strerror or exc}.") from exc
    return path
