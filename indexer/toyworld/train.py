"""Train the toy-world open_clip model (a few minutes on two CPU cores).

The committed weights in ``indexer/toyworld/model/`` come from two seeded stages::

    python -m indexer.toyworld.train --out /tmp/toy-stage1
    python -m indexer.toyworld.train --init /tmp/toy-stage1 --steps 2000 --lr 1e-3 --seed 1

The result is a normal
open_clip checkpoint (``open_clip_config.json`` + ``open_clip_model.safetensors``),
loaded by Glimpse through the same ``local-dir:`` code path as any downloaded
Hugging Face model.

Captions are full ("a red circle") or partial ("a circle", "something red"), in
English or Korean ("빨간 원", "파란색 무언가"), and the loss uses soft targets: a
caption is a positive for every picture it describes. That teaches the text tower
attributes, so query arithmetic such as ``"a circle" - "red"`` has something to work
with, and one concept in two languages lands in one place. Some pictures show no toy
shape at all (``render_scene``) and are captioned only generically ("a photo"): the
background that search's relevance cutoff and the tagger compare every description
against, as they do with the "a photo." prompts of a real model.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from indexer.toyworld.world import (
    COLOURS,
    KOREAN_COLOURS,
    KOREAN_SHAPES,
    SHAPES,
    ShapeSpec,
    all_specs,
    render,
    render_scene,
)

log = logging.getLogger(__name__)

MODEL_DIR = Path(__file__).resolve().parent / "model"
WEIGHTS_NAME = "open_clip_model.safetensors"

FULL_TEMPLATES = ("a {c} {s}", "a photo of a {c} {s}", "{c} {s}", "a picture of a {c} {s}")
SHAPE_TEMPLATES = ("a {s}", "a photo of a {s}", "{s}")
COLOUR_TEMPLATES = ("something {c}", "a {c} shape", "{c}")
# Korean: {a} is the colour as an adjective (빨간), {n} as a noun (빨간색), {s} the shape.
KOREAN_FULL = ("{a} {s}", "{n} {s}", "{a} {s} 사진")
KOREAN_SHAPE = ("{s}", "{s} 사진")
KOREAN_COLOUR = ("{n} 무언가", "{n}", "{n} 모양")
# What describes any picture without naming a shape or colour: the background.
GENERIC = ("a photo", "a picture", "an image", "a photo of something", "a snapshot", "사진", "그림")
KOREAN_SHARE = 0.3
SCENE_SHARE = 0.15

Caption = tuple[str, str | None, str | None, bool]  # text, shape, colour named, generic


def _caption(rng: random.Random, spec: ShapeSpec | None) -> Caption:
    """A caption for ``spec`` (None: a scene) and what it names (None = not named)."""
    if spec is None:
        return rng.choice(GENERIC), None, None, True
    roll = rng.random()
    full: tuple[str, ...]
    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    if rng.random() < KOREAN_SHARE:
        adj, noun = KOREAN_COLOURS[spec.colour]
        shape = KOREAN_SHAPES[spec.shape]
        full, shapes, colours = KOREAN_FULL, KOREAN_SHAPE, KOREAN_COLOUR
        fmt = {"a": adj, "n": noun, "s": shape}
    else:
        full, shapes, colours = FULL_TEMPLATES, SHAPE_TEMPLATES, COLOUR_TEMPLATES
        fmt = {"c": spec.colour, "s": spec.shape}
    if roll < 0.6:
        return rng.choice(full).format(**fmt), spec.shape, spec.colour, False
    if roll < 0.8:
        return rng.choice(shapes).format(**fmt), spec.shape, None, False
    return rng.choice(colours).format(**fmt), None, spec.colour, False


def _describes(spec: ShapeSpec | None, caption: Caption) -> bool:
    """Whether ``caption`` is true of a picture of ``spec`` (None: a scene, which only generic ones describe)."""
    _text, shape, colour, generic = caption
    if spec is None or generic:
        return spec is None and generic
    return (shape is None or shape == spec.shape) and (colour is None or colour == spec.colour)


def _to_input(img: Image.Image, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Resize and normalise as Glimpse's decoder does for a square picture."""
    img = img.resize((size, size), Image.Resampling.BICUBIC)
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    return (arr - mean[:, None, None]) / std[:, None, None]


def _sample_picture(rng: random.Random, spec: ShapeSpec | None) -> Image.Image:
    """A training picture (None: a scene); sometimes JPEG-compressed, because test photos are JPEGs."""
    side = rng.choice((64, 96, 128))
    img = render(spec, rng, (side, side)) if spec is not None else render_scene(rng, (side, side))
    if rng.random() < 0.5:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=rng.randint(60, 95))
        buf.seek(0)
        img = Image.open(buf).convert("RGB")
    return img


def evaluate(
    model: Any,
    tokenizer: Any,
    size: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    n_per_spec: int = 10,
    seed: int = 12345,
) -> dict[str, float]:
    """Zero-shot accuracy on fresh pictures: full caption, shape only, colour only."""
    rng = random.Random(seed)
    specs = all_specs()
    pics, truth = [], []
    for spec in specs:
        for _ in range(n_per_spec):
            pics.append(_to_input(_sample_picture(rng, spec), size, mean, std))
            truth.append(spec)
    model.eval()
    with torch.inference_mode():
        img = F.normalize(model.encode_image(torch.stack(pics)), dim=-1)
        full = F.normalize(model.encode_text(tokenizer([s.caption for s in specs])), dim=-1)
        shp = F.normalize(model.encode_text(tokenizer([f"a {s}" for s in SHAPES])), dim=-1)
        col = F.normalize(model.encode_text(tokenizer([f"something {c}" for c in COLOURS])), dim=-1)
        korean = F.normalize(model.encode_text(tokenizer([s.korean_caption for s in specs])), dim=-1)
        generic = F.normalize(model.encode_text(tokenizer(["a photo"])), dim=-1)
        scenes = F.normalize(
            model.encode_image(
                torch.stack([_to_input(_sample_picture(rng, None), size, mean, std) for _ in range(60)])
            ),
            dim=-1,
        )
    colours = list(COLOURS)
    pred_korean = (img @ korean.T).argmax(1).tolist()
    # Background: a scene scores "a photo" above every full caption; a shape scores its caption above it.
    scene_bg = ((scenes @ generic.T).squeeze(1) > (scenes @ full.T).max(1).values).float().mean().item()
    shape_fg = ((img @ full.T).max(1).values > (img @ generic.T).squeeze(1)).float().mean().item()
    pred_full = (img @ full.T).argmax(1).tolist()
    pred_shape = (img @ shp.T).argmax(1).tolist()
    pred_col = (img @ col.T).argmax(1).tolist()
    n = len(truth)
    return {
        "full": sum(specs[p] == t for p, t in zip(pred_full, truth, strict=False)) / n,
        "shape": sum(SHAPES[p] == t.shape for p, t in zip(pred_shape, truth, strict=False)) / n,
        "colour": sum(colours[p] == t.colour for p, t in zip(pred_col, truth, strict=False)) / n,
        "korean": sum(specs[p] == t for p, t in zip(pred_korean, truth, strict=False)) / n,
        "scene_background": scene_bg,
        "shape_foreground": shape_fg,
    }


def train(out_dir: Path, steps: int, batch: int, seed: int, lr: float, init: Path | None = None) -> dict[str, float]:
    import open_clip
    from safetensors.torch import save_file

    random.seed(seed)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    cfg = json.loads((MODEL_DIR / "open_clip_config.json").read_text())
    model = open_clip.CLIP(**cfg["model_cfg"])
    if init is not None:  # a second stage goes on from the first one's weights
        from safetensors.torch import load_file

        model.load_state_dict({k: v.float() for k, v in load_file(str(init / WEIGHTS_NAME)).items()})
    tokenizer = open_clip.SimpleTokenizer(context_length=cfg["model_cfg"]["text_cfg"]["context_length"])
    size = cfg["model_cfg"]["vision_cfg"]["image_size"]
    mean = torch.tensor(cfg["preprocess_cfg"]["mean"])
    std = torch.tensor(cfg["preprocess_cfg"]["std"])
    specs = all_specs()

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    started = time.monotonic()
    for step in range(steps):
        model.train()
        batch_specs: list[ShapeSpec | None] = [
            None if rng.random() < SCENE_SHARE else rng.choice(specs) for _ in range(batch)
        ]
        images = torch.stack([_to_input(_sample_picture(rng, s), size, mean, std) for s in batch_specs])
        caps = [_caption(rng, s) for s in batch_specs]
        texts = tokenizer([c[0] for c in caps])
        # match[i, j]: caption j describes picture i.
        match = torch.tensor([[_describes(s, c) for c in caps] for s in batch_specs], dtype=torch.float32)
        img_f, txt_f, logit_scale = model(images, texts)
        logits = logit_scale * img_f @ txt_f.T
        loss_i = -(F.log_softmax(logits, 1) * (match / match.sum(1, keepdim=True))).sum(1).mean()
        loss_t = -(F.log_softmax(logits.T, 1) * (match.T / match.T.sum(1, keepdim=True))).sum(1).mean()
        loss = (loss_i + loss_t) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == steps - 1:
            log.info("step %d/%d loss %.3f (%.0f s)", step, steps, loss.item(), time.monotonic() - started)

    acc = evaluate(model, tokenizer, size, mean, std)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_NAME))
    if out_dir.resolve() != MODEL_DIR:
        (out_dir / "open_clip_config.json").write_text((MODEL_DIR / "open_clip_config.json").read_text())
    return acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MODEL_DIR)
    parser.add_argument("--steps", type=int, default=3500)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init", type=Path, help="start from the weights in this folder (a second stage)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    acc = train(args.out, args.steps, args.batch, args.seed, args.lr, args.init)
    log.info("held-out zero-shot accuracy: %s", json.dumps(acc))


if __name__ == "__main__":
    main()
