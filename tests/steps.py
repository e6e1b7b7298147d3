"""Running the engine's progress generators to their end in tests."""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")


def drain(gen: Generator[object, None, T]) -> T:
    """Run ``gen`` (a pipeline's ``run``, ``index_pending``, …) to its end and return its value."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
