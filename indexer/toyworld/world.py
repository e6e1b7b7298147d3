"""The toy world: generated pictures of single coloured shapes.

Tests need a model whose answers can be checked ("a red circle" must rank red
circles first), but real CLIP weights cannot be downloaded on the build
machines. The toy world is small enough to train a tiny open_clip model on two
CPU cores in minutes, yet it exercises exactly the same loading, preprocessing,
embedding and search code as a real model. The same renderer generates the
training data, the test photo folders, the benchmark inputs and the README's
sample folder, so they all come from one definition of the world.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "green": (35, 165, 60),
    "blue": (35, 75, 220),
    "yellow": (240, 215, 30),
    "purple": (135, 45, 175),
    "orange": (250, 135, 20),
}


# The same world in Korean, so that tests can prove a query in another language reaches the
# photos its English twin does: each colour as an adjective ("빨간 원", a red circle) and as
# a noun ("빨간색", red, as in "빨간색 무언가", something red).
KOREAN_COLOURS: dict[str, tuple[str, str]] = {
    "red": ("빨간", "빨간색"),
    "green": ("초록", "초록색"),
    "blue": ("파란", "파란색"),
    "yellow": ("노란", "노란색"),
    "purple": ("보라", "보라색"),
    "orange": ("주황", "주황색"),
}
KOREAN_SHAPES: dict[str, str] = {
    "circle": "원",
    "square": "사각형",
    "triangle": "삼각형",
    "star": "별",
    "heart": "하트",
    "cross": "십자가",
}


@dataclass(frozen=True)
class ShapeSpec:
    """What a picture shows: the ground truth that tests compare against."""

    shape: str
    colour: str

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape}"

    @property
    def korean_caption(self) -> str:
        return f"{KOREAN_COLOURS[self.colour][0]} {KOREAN_SHAPES[self.shape]}"


def all_specs() -> list[ShapeSpec]:
    """Every (shape, colour) pair, in a stable order."""
    return [ShapeSpec(s, c) for s in SHAPES for c in COLOURS]


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Outline of a shape of radius ``r`` around (cx, cy), rotated by ``angle``."""
    if shape == "square":
        pts = [(math.cos(a), math.sin(a)) for a in (math.pi / 4 + k * math.pi / 2 for k in range(4))]
        pts = [(x * 1.0, y * 1.0) for x, y in pts]
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    elif shape == "star":
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rad = 1.0 if k % 2 == 0 else 0.42
            pts.append((rad * math.cos(a), rad * math.sin(a)))
    elif shape == "cross":
        w = 0.33
        pts = [
            (-w, -1),
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
        ]
    elif shape == "heart":
        pts = []
        for k in range(48):
            t = 2 * math.pi * k / 48
            x = 16 * math.sin(t) ** 3
            y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            pts.append((x / 17.0, y / 17.0 + 0.1))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in pts]


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, v + rng.randint(-amount, amount))) for v in rgb)
    return (r, g, b)


def draw_shape(
    draw: ImageDraw.ImageDraw,
    spec: ShapeSpec,
    cx: float,
    cy: float,
    radius: float,
    rng: random.Random,
) -> None:
    """Draw one shape; colour jitter and rotation keep the model from memorising pixels."""
    fill = _jitter(COLOURS[spec.colour], rng, 18)
    if spec.shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
        return
    max_rot = {"square": 0.35, "triangle": 0.35, "star": 0.6, "cross": 0.35, "heart": 0.25}[spec.shape]
    draw.polygon(_polygon(spec.shape, cx, cy, radius, rng.uniform(-max_rot, max_rot)), fill=fill)


def background(rng: random.Random, size: tuple[int, int], dark: bool | None = None) -> Image.Image:
    """A plain light or dark background with a gentle gradient, like an indoor photo."""
    if dark is None:
        dark = rng.random() < 0.5
    base = rng.randint(10, 60) if dark else rng.randint(190, 250)
    tint = [base + rng.randint(-8, 8) for _ in range(3)]
    w, h = size
    img = Image.new("RGB", size, tuple(tint))
    # A vertical gradient drawn as a few bands; cheap and enough to break flatness.
    draw = ImageDraw.Draw(img)
    delta = rng.randint(-18, 18)
    bands = 8
    for i in range(bands):
        shade = tuple(max(0, min(255, t + delta * i // bands)) for t in tint)
        draw.rectangle((0, i * h // bands, w, (i + 1) * h // bands), fill=shade)
    return img


def render(
    spec: ShapeSpec,
    rng: random.Random,
    size: tuple[int, int] = (96, 96),
    dark: bool | None = None,
) -> Image.Image:
    """One picture of ``spec`` at a random position and size, kept near the centre.

    Shapes stay inside the central square so that a centre crop of a
    non-square photo (what CLIP preprocessing does) still shows them.
    """
    w, h = size
    side = min(w, h)
    img = background(rng, size, dark)
    radius = side * rng.uniform(0.16, 0.34)
    margin = radius + side * 0.04
    x0 = (w - side) / 2
    y0 = (h - side) / 2
    cx = x0 + rng.uniform(margin, side - margin)
    cy = y0 + rng.uniform(margin, side - margin)
    draw_shape(ImageDraw.Draw(img), spec, cx, cy, radius, rng)
    return img


def render_scene(rng: random.Random, size: tuple[int, int] = (96, 96)) -> Image.Image:
    """A picture that is *not* one toy shape: gradients, blotches of many colours, stripes, clutter.

    The toy world's "anything else". Trained against generic captions ("a photo"), it
    gives the model what real CLIP models have and search calibration relies on: a
    background that beats every specific description on a photo that shows none of them.
    """
    w, h = size
    kind = rng.randrange(5)
    img = Image.new("RGB", size, tuple(rng.randint(0, 255) for _ in range(3)))
    draw = ImageDraw.Draw(img)

    def colour() -> tuple[int, int, int]:
        return (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))

    if kind == 0:  # a smooth gradient between two arbitrary colours
        a, b = colour(), colour()
        vertical = rng.random() < 0.5
        steps = h if vertical else w
        for i in range(steps):
            t = i / max(1, steps - 1)
            c = tuple(int(a[k] + (b[k] - a[k]) * t) for k in range(3))
            draw.line((0, i, w, i) if vertical else (i, 0, i, h), fill=c)
    elif kind == 1:  # stripes or bands
        for _ in range(rng.randint(3, 12)):
            x = rng.uniform(0, w)
            draw.line((x, 0, x + rng.uniform(-w, w), h), fill=colour(), width=rng.randint(2, max(3, w // 6)))
    elif kind == 2:  # clutter: many small overlapping pieces of many colours
        for _ in range(rng.randint(12, 40)):
            x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2, max(3.0, w / 8))
            if rng.random() < 0.5:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=colour())
            else:
                draw.polygon(
                    [(x + rng.uniform(-r, r) * 2, y + rng.uniform(-r, r) * 2) for _ in range(4)], fill=colour()
                )
    elif kind == 3:  # a landscape: sky over ground, split by a wavy horizon
        sky, ground = colour(), colour()
        horizon, amp, freq = rng.uniform(0.3, 0.7) * h, rng.uniform(0, h / 8), rng.uniform(0.5, 4)
        draw.rectangle((0, 0, w, h), fill=sky)
        outline = [(x, horizon + amp * math.sin(freq * 2 * math.pi * x / w)) for x in range(0, w + 1, 4)]
        draw.polygon([*outline, (w, h), (0, h)], fill=ground)
    else:  # blotchy texture: coarse random noise, scaled up smoothly
        cells = rng.randint(3, 9)
        small = Image.new("RGB", (cells, cells))
        small.putdata([colour() for _ in range(cells * cells)])
        img = small.resize(size, Image.Resampling.BICUBIC)
    return img


def write_sample_folder(
    root: Path, per_spec: int = 2, seed: int = 0, size: tuple[int, int] = (320, 240)
) -> list[tuple[Path, ShapeSpec]]:
    """Write a small library of toy-world JPEGs under ``root`` (nested by shape).

    Used by the README quickstart and by tests that need a plain folder of photos.
    """
    rng = random.Random(seed)
    written: list[tuple[Path, ShapeSpec]] = []
    for spec in all_specs():
        folder = root / spec.shape
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_spec):
            path = folder / f"{spec.colour}-{spec.shape}-{i}.jpg"
            render(spec, rng, size).save(path, quality=90)
            written.append((path, spec))
    return written
