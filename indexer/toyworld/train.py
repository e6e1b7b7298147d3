"""Train the toy-world open_clip model (a few minutes on two CPU cores).

Run ``python -m indexer.toyworld.train`` to reproduce the committed weights in
``indexer/toyworld/model/``. Training is seeded; the result is a normal
open_clip checkpoint (``open_clip_config.json`` + ``open_clip_model.safetensors``),
loaded by Glimpse through the same ``local-dir:`` code path as any downloaded
Hugging Face model.

Captions are full ("a red circle") or partial ("a circle", "something red"), and
the loss uses soft targets: a caption is a positive for every picture it
describes. That teaches the text tower attributes, so query arithmetic such as
``"a circle" - "red"`` has something to work with.
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

from indexer.toyworld.world import COLOURS, SHAPES, ShapeSpec, all_specs, render

log = logging.getLogger(__name__)

MODEL_DIR = Path(__file__).resolve().parent / "model"
WEIGHTS_NAME = "open_clip_model.safetensors"

FULL_TEMPLATES = ("a {c} {s}", "a photo of a {c} {s}", "{c} {s}", "a picture of a {c} {s}")
SHAPE_TEMPLATES = ("a {s}", "a photo of a {s}", "{s}")
COLOUR_TEMPLATES = ("something {c}", "a {c} shape", "{c}")


def _caption(rng: random.Random, spec: ShapeSpec) -> tuple[str, str | None, str | None]:
    """A caption for ``spec`` and the attributes it names (None = not named)."""
    roll = rng.random()
    if roll < 0.6:
        return rng.choice(FULL_TEMPLATES).format(c=spec.colour, s=spec.shape), spec.shape, spec.colour
    if roll < 0.8:
        return rng.choice(SHAPE_TEMPLATES).format(s=spec.shape), spec.shape, None
    return rng.choice(COLOUR_TEMPLATES).format(c=spec.colour), None, spec.colour


def _to_input(img: Image.Image, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Resize and normalise as Glimpse's decoder does for a square picture."""
    img = img.resize((size, size), Image.Resampling.BICUBIC)
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    return (arr - mean[:, None, None]) / std[:, None, None]


def _sample_picture(rng: random.Random, spec: ShapeSpec) -> Image.Image:
    """A training picture; sometimes JPEG-compressed, because test photos are JPEGs."""
    side = rng.choice((64, 96, 128))
    img = render(spec, rng, (side, side))
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
    colours = list(COLOURS)
    pred_full = (img @ full.T).argmax(1).tolist()
    pred_shape = (img @ shp.T).argmax(1).tolist()
    pred_col = (img @ col.T).argmax(1).tolist()
    n = len(truth)
    return {
        "full": sum(specs[p] == t for p, t in zip(pred_full, truth, strict=False)) / n,
        "shape": sum(SHAPES[p] == t.shape for p, t in zip(pred_shape, truth, strict=False)) / n,
        "colour": sum(colours[p] == t.colour for p, t in zip(pred_col, truth, strict=False)) / n,
    }


def train(out_dir: Path, steps: int, batch: int, seed: int, lr: float) -> dict[str, float]:
    import open_clip
    from safetensors.torch import save_file

    random.seed(seed)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    cfg = json.loads((MODEL_DIR / "open_clip_config.json").read_text())
    model = open_clip.CLIP(**cfg["model_cfg"])
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
        batch_specs = [rng.choice(specs) for _ in range(batch)]
        images = torch.stack([_to_input(_sample_picture(rng, s), size, mean, std) for s in batch_specs])
        caps = [_caption(rng, s) for s in batch_specs]
        texts = tokenizer([c[0] for c in caps])
        # match[i, j]: caption j describes picture i.
        match = torch.tensor(
            [
                [
                    (shape is None or shape == s.shape) and (colour is None or colour == s.colour)
                    for (_, shape, colour) in caps
                ]
                for s in batch_specs
            ],
            dtype=torch.float32,
        )
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
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    acc = train(args.out, args.steps, args.batch, args.seed, args.lr)
    log.info("held-out zero-shot accuracy: %s", json.dumps(acc))


if __name__ == "__main__":
    main()
