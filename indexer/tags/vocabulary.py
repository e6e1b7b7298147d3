"""Tag vocabularies: the file format (templates, background prompts, groups of tags with prompts).

A library starts from the vocabulary that fits its model (the toy world ships its
own); the tags then live in the library and are edited there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from indexer.errors import VocabularyError
from indexer.models.presets import ModelSpec
from store.library import LibraryStore

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
DEFAULT_VOCABULARY = RESOURCES / "vocabulary.json"
TOYWORLD_VOCABULARY = Path(__file__).resolve().parents[1] / "toyworld" / "vocabulary.json"


@dataclass(frozen=True)
class GroupSpec:
    name: str
    exclusive: bool = False  # at most one tag of the group fits a photo (indoors / outdoors)
    templates: tuple[str, ...] | None = None  # None: the vocabulary's templates


@dataclass(frozen=True)
class Vocabulary:
    """A tag vocabulary file: templates, background prompts, groups of tags with prompts."""

    key: str
    templates: tuple[str, ...]
    background: tuple[str, ...]
    groups: dict[str, GroupSpec]
    tags: tuple[tuple[str, str, tuple[str, ...]], ...]  # (name, group, prompts)
    threshold: float = 0.5
    max_tags: int = 15

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            groups: dict[str, GroupSpec] = {}
            tags: list[tuple[str, str, tuple[str, ...]]] = []
            for gname, g in data["groups"].items():
                templates = tuple(g["templates"]) if "templates" in g else None
                groups[gname] = GroupSpec(gname, bool(g.get("exclusive", False)), templates)
                for tname, prompts in g["tags"].items():
                    tags.append((tname, gname, tuple(prompts)))
            vocab = cls(
                key=str(data.get("name", path.stem)),
                templates=tuple(data.get("templates", ["{}"])),
                background=tuple(data.get("background", [])),
                groups=groups,
                tags=tuple(tags),
                threshold=float(data.get("threshold", 0.5)),
                max_tags=int(data.get("max_tags", 15)),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise VocabularyError(f"Cannot read the tag vocabulary {path}: {exc}") from exc
        for template in (*vocab.templates, *(t for g in groups.values() for t in g.templates or ())):
            if "{}" not in template:
                raise VocabularyError(f'Template "{template}" in {path} has no {{}} for the tag\'s phrase.')
        if not vocab.background and not all(g.exclusive for g in groups.values()):
            raise VocabularyError(
                f"{path} has groups that are not exclusive but no background prompts; their scores could "
                'not be calibrated. Add generic prompts such as "a photo." under "background".'
            )
        return vocab

    def templates_for(self, group: str) -> tuple[str, ...]:
        spec = self.groups.get(group)
        return spec.templates if spec is not None and spec.templates else self.templates

    def exclusive(self, group: str) -> bool:
        spec = self.groups.get(group)
        return bool(spec and spec.exclusive)


def vocabulary_for(model: ModelSpec, override: str | None = None) -> Path:
    """The vocabulary a library starts with: the user's file, or the one that fits the model."""
    if override:
        return Path(override).expanduser()
    return TOYWORLD_VOCABULARY if model.name == "toyworld" else DEFAULT_VOCABULARY


VOCABULARY_KEY = "vocabulary.file"
_BUILTIN = {"builtin:default": DEFAULT_VOCABULARY, "builtin:toyworld": TOYWORLD_VOCABULARY}


def vocabulary_ref(path: Path) -> str:
    """How a library records its vocabulary file: built-in ones by name (they move with Glimpse)."""
    for ref, builtin in _BUILTIN.items():
        if path.resolve() == builtin.resolve():
            return ref
    return str(path.expanduser().resolve())


def library_vocabulary(store: LibraryStore, model: ModelSpec, override: str | None = None) -> Path:
    """The vocabulary a library uses: the settings' file, else the one it was first seeded from,
    else the one that fits its model. A model switch keeps the library's vocabulary."""
    if override:
        return Path(override).expanduser()
    recorded = store.get_meta(VOCABULARY_KEY)
    if recorded:
        return _BUILTIN.get(recorded, Path(recorded))
    return vocabulary_for(model)
