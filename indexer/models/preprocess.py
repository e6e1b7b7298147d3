"""What a model wants its pixels to look like, as plain data the decode workers can receive.

It lives with the models (each open_clip tag defines it) and not with decoding, so
that the decoders depend on the models' description and never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PreprocessSpec:
    """How a model wants its pixels: open_clip's preprocess config, made picklable.

    Mean and std are applied on the model side (in batches); workers send uint8.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    @classmethod
    def from_open_clip(cls, cfg: dict[str, Any]) -> PreprocessSpec:
        size = cfg["size"]
        if isinstance(size, (tuple, list)):
            if size[0] != size[1]:
                raise ValueError(f"non-square model input {size} is not supported")
            size = size[0]
        interpolation = cfg.get("interpolation") or "bicubic"
        return cls(
            size=int(size),
            mean=tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
            interpolation="bilinear" if interpolation == "bilinear" else "bicubic",
            resize_mode=cfg.get("resize_mode") or "shortest",
            fill_color=int(cfg.get("fill_color") or 0),
        )
