"""The real open_clip loading code with weight files the tests create, and the offline path."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from indexer.errors import ModelUnavailableError, NotFoundError
from indexer.models.embedder import OpenClipEmbedder, cpu_bf16_is_fast
from indexer.models.presets import resolve_model

TINY = "glimpse-test-tiny"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Register a tiny architecture with open_clip, as a new built-in model would be."""
    import open_clip

    folder = tmp_path_factory.mktemp("cfg")
    (folder / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(folder / f"{TINY}.json")
    return TINY


def _reference_model(seed: int):  # type: ignore[no-untyped-def]
    import open_clip

    torch.manual_seed(seed)
    return open_clip.CLIP(**TINY_CFG).eval()


def _pixels(n: int = 3, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, size, size, 3), dtype=np.uint8)


def test_weights_file_is_loaded_exactly(tiny_arch: str, tmp_path: Path) -> None:
    ref = _reference_model(seed=3)
    weights = tmp_path / "tiny.pt"
    torch.save(ref.state_dict(), weights)
    embedder = OpenClipEmbedder(resolve_model(tiny_arch, str(weights)), device="cpu", precision="fp32")
    out = embedder.embed_images(_pixels())
    assert out.shape == (3, 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # The same pixels through the reference model with open_clip's default (OpenAI) normalisation.
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
    x = (torch.from_numpy(_pixels()).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        expected = torch.nn.functional.normalize(ref.encode_image(x), dim=-1).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)
    texts = embedder.embed_texts(["a red circle", "a blue star"])
    assert texts.shape == (2, 32)
    rec = embedder.record
    assert rec.dim == 32 and rec.weights_id and rec.key.startswith(f"{tiny_arch}@")
    # Different weights give a different embedding space, never mixed in one index.
    torch.save(_reference_model(seed=4).state_dict(), tmp_path / "other.pt")
    other = OpenClipEmbedder(resolve_model(tiny_arch, str(tmp_path / "other.pt")), precision="fp32")
    assert other.record.key != rec.key


def test_damaged_weights_file_gives_clear_error(tiny_arch: str, tmp_path: Path) -> None:
    weights = tmp_path / "broken.pt"
    weights.write_bytes(b"\x00" * 1000)
    with pytest.raises(ModelUnavailableError) as info:
        OpenClipEmbedder(resolve_model(tiny_arch, str(weights))).load()
    assert "broken.pt" in info.value.message and info.value.title == "Cannot load model weights"


def test_weights_from_another_architecture_are_refused(tiny_arch: str, tmp_path: Path) -> None:
    weights = tmp_path / "wrong.pt"
    torch.save({"visual.proj": torch.zeros(3, 3)}, weights)
    with pytest.raises(ModelUnavailableError):
        OpenClipEmbedder(resolve_model(tiny_arch, str(weights))).load()


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_offline_without_weights_fails_fast_and_says_what_to_do(empty_hf_cache: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError) as info:
        OpenClipEmbedder(resolve_model("ViT-B-32")).load()
    assert time.monotonic() - started < 20
    msg = info.value.message
    for needle in (
        "ViT-B-32/laion2b_s34b_b79k",
        str(empty_hf_cache),
        "--weights FILE",
        "huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "GLIMPSE_MODEL=toyworld",
    ):
        assert needle in msg, needle
    assert info.value.exit_code == 4


def test_cached_pretrained_weights_load_without_network(
    tiny_arch: str, empty_hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once downloaded, a tagged model loads from the Hugging Face cache with the hub offline."""
    from open_clip import pretrained

    tag_cfg = {
        "hf_hub": "glimpse/tiny-test/",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "interpolation": "bicubic",
        "resize_mode": "squash",
    }
    monkeypatch.setitem(pretrained._PRETRAINED, tiny_arch, {"cached": tag_cfg})
    repo = empty_hf_cache / "models--glimpse--tiny-test"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    from safetensors.torch import save_file

    save_file(_reference_model(seed=5).state_dict(), str(snapshot / "open_clip_model.safetensors"))
    embedder = OpenClipEmbedder(resolve_model(f"{tiny_arch}/cached"), precision="fp32")
    assert embedder.embed_images(_pixels()).shape == (3, 32)
    # The tag's preprocessing is used, not the architecture's defaults.
    assert embedder.preprocess.resize_mode == "squash" and embedder.preprocess.mean == (0.5, 0.5, 0.5)
    assert embedder.record.key == f"{tiny_arch}/cached"


def test_resolve_model_choices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_model().arch == "ViT-B-32-256"
    monkeypatch.setenv("GLIMPSE_MODEL", "toyworld")
    assert resolve_model().local_dir is not None
    assert resolve_model("ViT-B-32-SigLIP2-256").pretrained == "webli"
    with pytest.raises(NotFoundError):
        resolve_model("no-such-model")
    with pytest.raises(NotFoundError):
        resolve_model("ViT-B-32", str(tmp_path / "missing.pt"))
    with pytest.raises(NotFoundError):
        resolve_model(f"local-dir:{tmp_path}")


def test_toyworld_bf16_matches_fp32(toy_embedder: OpenClipEmbedder) -> None:
    if not cpu_bf16_is_fast():
        pytest.skip("this CPU has no fast bf16; Glimpse stays in fp32 here")
    bf16 = OpenClipEmbedder(toy_embedder.spec, precision="bf16")
    px = _pixels(8, 64)
    cos = (bf16.embed_images(px) * toy_embedder.embed_images(px)).sum(1)
    print(f"toy-world bf16 vs fp32 cosine: min {cos.min():.5f}")
    assert cos.min() > 0.99
