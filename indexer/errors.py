"""Errors raised by the indexer, on top of the store's hierarchy."""

from __future__ import annotations

from store.errors import GlimpseError, NotFoundError, StoreError

__all__ = [
    "DecodeError",
    "GlimpseError",
    "ModelMismatchError",
    "ModelUnavailableError",
    "NotFoundError",
    "PhotoVanishedError",
    "QueryError",
    "SettingsError",
    "StoreError",
    "TeachError",
    "VocabularyError",
]


class ModelUnavailableError(GlimpseError):
    """The embedding model's weights are not on disk and could not be fetched."""

    title = "Model weights not available"
    exit_code = 4


class QueryError(GlimpseError):
    """A search query could not be understood."""

    title = "Cannot read the query"
    exit_code = 2


class DecodeError(GlimpseError):
    """A photo could not be decoded; the reason is recorded and the file skipped."""

    title = "Cannot read photo"


class PhotoVanishedError(DecodeError):
    """The file was gone when its turn to be decoded came (moved or deleted meanwhile).

    Not a property of the photo: it must not be recorded as unreadable. The watcher or
    the next scan says where it went (a move keeps the row, now at its new path, pending).
    """


class VocabularyError(GlimpseError):
    """The tag vocabulary file cannot be read or makes no sense."""

    title = "Tag vocabulary unreadable"


class TeachError(GlimpseError):
    """A tag cannot be taught from the examples given."""

    title = "Cannot teach this tag"


class SettingsError(GlimpseError):
    """A setting (in settings.json, a flag or an environment variable) has a value Glimpse cannot use."""

    title = "Invalid setting"
    exit_code = 2


class ModelMismatchError(GlimpseError):
    """The command asked for a model other than the one the library is indexed with."""

    title = "The library uses another model"
    exit_code = 2
