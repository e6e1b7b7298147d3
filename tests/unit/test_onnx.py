"""The ONNX Runtime path: a torch-free tokenizer, exports that reproduce torch, the engine's choices."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer.models.embedder import OpenClipEmbedder
from indexer.models.engine import ModelEngine, describe_runtime, expected_key
from indexer.models.onnx_export import MIN_COSINE, PROBE_TEXTS, ExportError, export_model
from indexer.models.onnx_runtime import FAILED, ExportManifest, OnnxEmbedder, export_dir
from indexer.models.presets import resolve_model
from indexer.models.tokenizer import ClipTokenizer


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _random_texts(n: int, seed: int = 0) -> list[str]:
    """Words, punctuation, entities, accents, CJK, emoji, control characters and long runs, mixed."""
    rng = random.Random(seed)
    pieces = ["dog", "Beach", "SUNSET", "it's", "we'll", "3", "2019", "&amp;", "&lt;b&gt;", "caf\u00e9", "na\u00efve",
              "\u00c3\u00a9", "\u6771\u4eac", "\u0416\u0443\u043a", "\U0001f436", "!!", "...", "-", "_", "\t", "\n",
              "\r", "\x0b", "\x00", "  ", "e\u0301", "\uff21", "\ufb01", "\u201cquoted\u201d", "a" * 30]  # fmt: skip
    return ["".join(rng.choice(pieces) + rng.choice(["", " "]) for _ in range(rng.randint(0, 40))) for _ in range(n)]


@pytest.mark.parametrize("clean", ["lower", "whitespace", "canonicalize"])
def test_the_torch_free_tokenizer_matches_open_clip(clean: str, tmp_path: Path) -> None:
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    texts = PROBE_TEXTS + _random_texts(300)
    theirs = SimpleTokenizer(context_length=77, clean=clean)(texts).numpy()
    ours = ClipTokenizer.from_bpe(Path(default_bpe()), 77, clean)
    assert np.array_equal(ours(texts), theirs)
    ours.save(tmp_path / "tok.json")
    assert np.array_equal(ClipTokenizer.load(tmp_path / "tok.json", 77, clean)(texts), theirs)


@pytest.fixture(scope="module")
def toy_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[OpenClipEmbedder, OnnxEmbedder]:
    torch_model = OpenClipEmbedder(resolve_model("toyworld"), device="cpu", precision="fp32")
    folder = export_dir(tmp_path_factory.mktemp("models"), expected_key(torch_model.spec), "toyworld")
    manifest = export_model(torch_model, folder)
    return torch_model, OnnxEmbedder(folder, manifest)


def test_the_toy_export_reproduces_torch(toy_export: tuple[OpenClipEmbedder, OnnxEmbedder]) -> None:
    torch_model, onnx = toy_export
    assert onnx.record == torch_model.record and onnx.preprocess == torch_model.preprocess
    assert onnx.logit_scale == pytest.approx(torch_model.logit_scale)
    texts = [t for t in PROBE_TEXTS if t] + ["a red circle", "a blue square"]
    assert _cos(onnx.embed_texts(texts), torch_model.embed_texts(texts)).min() >= MIN_COSINE
    pixels = np.random.default_rng(1).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    assert _cos(onnx.embed_images(pixels), torch_model.embed_images(pixels)).min() >= MIN_COSINE
    assert np.allclose(np.linalg.norm(onnx.embed_images(pixels), axis=1), 1.0, atol=1e-5)


def test_a_text_query_opens_only_the_text_tower(toy_export: tuple[OpenClipEmbedder, OnnxEmbedder]) -> None:
    _torch, onnx = toy_export
    fresh = OnnxEmbedder(onnx.folder, onnx.manifest)
    fresh.embed_texts(["a red circle"])
    assert set(fresh._sessions) == {"text"}
    fresh.embed_images(np.zeros((1, 64, 64, 3), np.uint8))
    assert set(fresh._sessions) == {"text", "image"}


def test_an_incomplete_export_is_not_trusted(toy_export: tuple[OpenClipEmbedder, OnnxEmbedder], tmp_path: Path) -> None:
    _torch, onnx = toy_export
    assert ExportManifest.read(onnx.folder) is not None
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "manifest.json").write_text((onnx.folder / "manifest.json").read_text())
    assert ExportManifest.read(copy) is None  # the towers are missing
    (copy / "manifest.json").write_text("{")
    assert ExportManifest.read(copy) is None


def test_the_engine_exports_once_then_runs_without_torch(tmp_path: Path) -> None:
    """First use exports; a fresh process then answers a text query with ONNX Runtime alone."""
    engine = ModelEngine(resolve_model("toyworld"), tmp_path / "models")
    assert "first use" in describe_runtime(tmp_path / "models", engine.spec, None)
    vector = engine.embed_texts(["a red circle"])
    assert engine.runtime == "onnxruntime" and engine.record.key == expected_key(engine.spec)
    assert "text on ONNX Runtime" in describe_runtime(tmp_path / "models", engine.spec, None)
    script = (
        "import sys, numpy as np; from pathlib import Path\n"
        "from indexer.models.engine import ModelEngine\nfrom indexer.models.presets import resolve_model\n"
        f"e = ModelEngine(resolve_model('toyworld'), Path({str(tmp_path / 'models')!r}))\n"
        "np.save(sys.argv[1], e.embed_texts(['a red circle']))\n"
        "print(','.join(m for m in ('torch', 'open_clip') if m in sys.modules) or '-')\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "v.npy")], capture_output=True, text=True)
    assert out.stdout.strip() == "-", out.stderr
    assert np.allclose(np.load(tmp_path / "v.npy"), vector, atol=1e-6)


def test_a_failed_export_falls_back_to_torch_and_is_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import indexer.models.onnx_export as onnx_export

    calls = []

    def broken(embedder: OpenClipEmbedder, folder: Path) -> ExportManifest:
        calls.append(folder)
        raise ExportError("the ONNX export differs from torch (cosine 0.5 < 0.999)")

    monkeypatch.setattr(onnx_export, "export_model", broken)
    engine = ModelEngine(resolve_model("toyworld"), tmp_path / "models")
    assert engine.embed_texts(["a red circle"]).shape == (1, 64)
    assert engine.runtime == "torch" and "cosine 0.5" in (engine.fallback_reason or "")
    assert "export failed" in describe_runtime(tmp_path / "models", engine.spec, None)
    again = ModelEngine(resolve_model("toyworld"), tmp_path / "models")
    again.load()
    assert again.runtime == "torch" and len(calls) == 1, "a failed export is not retried for the same versions"
    failed = next((tmp_path / "models" / "onnx").glob(f"*.{FAILED}"))
    assert "cosine 0.5" in json.loads(failed.read_text())["reason"]
    forced = ModelEngine(resolve_model("toyworld"), tmp_path / "models", runtime="onnx")
    with pytest.raises(ExportError):
        forced.load()


def test_runtime_torch_never_exports(tmp_path: Path) -> None:
    engine = ModelEngine(resolve_model("toyworld"), tmp_path / "models", runtime="torch")
    engine.embed_texts(["x"])
    assert engine.runtime == "torch" and not (tmp_path / "models").exists()


@pytest.mark.slow
def test_a_random_vit_b_32_256_export_reproduces_torch(tmp_path: Path) -> None:
    """The default architecture, with random weights in a checkpoint file (no weights can be downloaded here)."""
    import open_clip
    import torch

    weights = tmp_path / "vit.pt"
    torch.save(open_clip.create_model("ViT-B-32-256").state_dict(), weights)
    torch_model = OpenClipEmbedder(resolve_model("ViT-B-32-256", str(weights)), device="cpu", precision="fp32")
    folder = export_dir(tmp_path / "models", expected_key(torch_model.spec), "ViT-B-32-256")
    onnx = OnnxEmbedder(folder, export_model(torch_model, folder))
    texts = [t for t in PROBE_TEXTS if t]
    assert _cos(onnx.embed_texts(texts), torch_model.embed_texts(texts)).min() >= MIN_COSINE
    pixels = np.random.default_rng(2).integers(0, 256, (4, 256, 256, 3), dtype=np.uint8)
    assert _cos(onnx.embed_images(pixels), torch_model.embed_images(pixels)).min() >= MIN_COSINE


def test_prompt_vectors_are_cached_per_model_and_queries_are_not(tmp_path: Path) -> None:
    engine = ModelEngine(resolve_model("toyworld"), tmp_path / "models")
    prompts = ["a photo of a red circle.", "a picture of a blue star."]
    first = engine.embed_prompts(prompts)
    assert np.allclose(first, engine.embed_texts(prompts), atol=1e-6)
    engine.embed_texts(["my private search"])
    again = ModelEngine(resolve_model("toyworld"), tmp_path / "models")  # another process, say
    calls = again.text_calls
    assert np.array_equal(again.embed_prompts(list(reversed(prompts))), first[::-1])
    assert again.text_calls == calls, "cached prompts are not embedded again"
    with np.load(engine.export_folder / "prompt-vectors.npz") as data:
        assert len(data["keys"]) == 2 and "my private search" not in str(data["keys"])
    mixed = again.embed_prompts([prompts[0], "a photo of a green heart."])
    assert again.text_calls == calls + 1 and np.array_equal(mixed[0], first[0])


def test_weights_that_do_not_load_are_the_users_error_not_a_failed_export(tmp_path: Path) -> None:
    """Offline or broken weights must stay a clear error, and must not stop a later export."""
    from indexer.errors import ModelUnavailableError

    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    engine = ModelEngine(resolve_model("ViT-B-32-256", str(broken)), tmp_path / "models")
    with pytest.raises(ModelUnavailableError):
        engine.embed_texts(["x"])
    assert not list((tmp_path / "models").rglob(f"*{FAILED}"))


def test_an_export_killed_midway_leaves_no_debris_after_the_next(tmp_path: Path) -> None:
    """A kill during an export leaves its temporary folder; the next export removes it (not a live one's)."""
    torch_model = OpenClipEmbedder(resolve_model("toyworld"), device="cpu", precision="fp32")
    folder = export_dir(tmp_path / "models", expected_key(torch_model.spec), "toyworld")
    folder.parent.mkdir(parents=True)
    dead = folder.with_name(f"{folder.name}.tmp-999999999")  # no such process
    (dead / "image.onnx").parent.mkdir()
    (dead / "image.onnx").write_bytes(b"half an export")
    live = folder.with_name(f"{folder.name}.tmp-1")  # pid 1 is alive: another process exporting
    live.mkdir()
    export_model(torch_model, folder)
    assert not dead.exists() and live.exists() and ExportManifest.read(folder) is not None
