"""Model presets and how a user's ``--model``/``--weights`` choice resolves to weights on disk.

Weights come from one of three places, and nothing else touches the network:

* a preset or ``ARCH/TAG``: open_clip's published weights, fetched once into the
  Hugging Face cache and read from there afterwards without any request;
* ``--weights FILE``: a checkpoint the user gives, loaded with the preprocessing of
  the architecture's published tag (mean/std/resize differ between families);
* ``local-dir:PATH`` (and the bundled ``toyworld``): a folder in the Hugging Face
  open_clip layout (``open_clip_config.json`` + weights).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from indexer.errors import ModelUnavailableError, NotFoundError

log = logging.getLogger(__name__)

TOYWORLD_DIR = Path(__file__).resolve().parent.parent / "toyworld" / "model"
MODEL_ENV = "GLIMPSE_MODEL"
WEIGHTS_ENV = "GLIMPSE_WEIGHTS"
HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class ModelPreset:
    name: str
    arch: str
    pretrained: str | None
    summary: str
    licence: str
    imagenet_top1: float | None = None  # published zero-shot accuracy, %
    languages: str = "English"  # the languages its text encoder understands, for people
    local_dir: Path | None = None
    cost: str = ""  # what it costs beside the default, measured on a 2-core CPU (docs/performance.md)

    @property
    def multilingual(self) -> bool:
        return self.languages != "English"


DEFAULT_MODEL = "ViT-B-32-256"
# The default of a new library when the system's language is not English.
MULTILINGUAL_MODEL = "ViT-B-32-SigLIP2-256"
_LOCALE_VARIABLES = ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE")


def system_language(environ: Mapping[str, str] | None = None) -> str | None:
    """The system's language as a code ("ko", "de"), from the locale variables; None when unset or C/POSIX."""
    env = os.environ if environ is None else environ
    for name in _LOCALE_VARIABLES:
        value = env.get(name, "")
        if value:
            code = value.split(":")[0].split(".")[0].split("_")[0].split("-")[0].lower()
            return None if code in ("c", "posix", "") else code
    return None


def default_model(environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """The model a new library gets when nothing asks for one, and the language that chose it:
    the multilingual preset when the system speaks another language than English."""
    language = system_language(environ)
    if language is not None and language != "en":
        return MULTILINGUAL_MODEL, language
    return DEFAULT_MODEL, None


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            "ViT-B-32-256",
            "ViT-B-32-256",
            "datacomp_s34b_b86k",
            "default: best accuracy per CPU second",
            "MIT",
            72.8,
        ),
        ModelPreset(
            "ViT-B-32", "ViT-B-32", "laion2b_s34b_b79k", "fastest: for slow laptops and huge libraries", "MIT", 66.6
        ),
        ModelPreset(
            "ViT-B-32-SigLIP2-256",
            "ViT-B-32-SigLIP2-256",
            "webli",
            "multilingual: queries in Korean, German, Japanese, ...",
            "Apache-2.0",
            74.0,
            languages="many languages: Korean, German, Japanese, Chinese, Spanish, ...",
            cost="indexes about as fast as the default (26 img/s fp32 on 2 cores); a text query encodes in "
            "about twice the default's time (62 vs 34 ms fp32); a larger download",
        ),
        ModelPreset(
            "ViT-B-16-SigLIP2",
            "ViT-B-16-SigLIP2",
            "webli",
            "best quality, multilingual; ~3.6x the cost, for GPUs",
            "Apache-2.0",
            78.2,
            languages="many languages: Korean, German, Japanese, Chinese, Spanish, ...",
            cost="about 3.6 times the default's indexing time on a CPU (7 vs 26 img/s fp32 on 2 cores)",
        ),
        ModelPreset(
            "MobileCLIP2-S0",
            "MobileCLIP2-S0",
            "dfndr2b",
            "opt-in: Apple research-only licence, not for commercial use",
            "Apple AMLR (research only)",
        ),
        ModelPreset(
            "toyworld",
            "toyworld",
            None,
            "tiny test model for coloured shapes (ships with Glimpse; not for real photos)",
            "Apache-2.0",
            None,
            languages="English, Korean",
            local_dir=TOYWORLD_DIR,
        ),
    )
}


def language_note(language: str) -> str:
    """Why a new library gets the multilingual preset on this system, and what it costs."""
    preset = PRESETS[MULTILINGUAL_MODEL]
    return (
        f"Your system's language is '{language}': a new library uses {preset.name}, which understands queries "
        f"in {preset.languages}. Cost beside the English-only default: {preset.cost}. "
        f"For the default instead: --model {DEFAULT_MODEL}."
    )


@dataclass(frozen=True)
class ModelSpec:
    """A resolved choice: what to build and where its weights come from."""

    name: str  # what the user asked for, for messages
    arch: str  # open_clip architecture name, or "local-dir:..." / "hf-hub:..."
    pretrained: str | None = None  # open_clip tag
    weights_file: Path | None = None
    local_dir: Path | None = None

    @property
    def display(self) -> str:
        if self.weights_file:
            return f"{self.arch} from {self.weights_file}"
        if self.local_dir:
            return f"{self.name} ({self.local_dir})"
        return f"{self.arch}/{self.pretrained}" if self.pretrained else self.arch


def resolve_model(name: str | None = None, weights: str | Path | None = None, validate: bool = True) -> ModelSpec:
    """Turn ``--model``/``--weights`` (or their environment variables) into a ModelSpec.

    ``validate=False`` trusts an ``ARCH/TAG`` name (one a library already recorded) instead of
    checking it against open_clip's list, which costs an open_clip import.
    """
    name = name or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
    weights = weights or os.environ.get(WEIGHTS_ENV) or None
    weights_file = Path(weights).expanduser().resolve() if weights else None
    if weights_file is not None and not weights_file.is_file():
        raise NotFoundError(f"The weights file {weights_file} does not exist.", title="Weights file not found")

    if name.startswith("local-dir:"):
        folder = Path(name[len("local-dir:") :]).expanduser().resolve()
        if not (folder / "open_clip_config.json").is_file():
            raise NotFoundError(f"{folder} has no open_clip_config.json; it is not an open_clip model folder.")
        return ModelSpec(name=name, arch=f"local-dir:{folder}", local_dir=folder)
    if name.startswith("hf-hub:"):
        return ModelSpec(name=name, arch=name)

    preset = PRESETS.get(name)
    if preset is not None:
        if preset.local_dir is not None:
            return ModelSpec(name=name, arch=f"local-dir:{preset.local_dir}", local_dir=preset.local_dir)
        return ModelSpec(name=name, arch=preset.arch, pretrained=preset.pretrained, weights_file=weights_file)

    arch, _, tag = name.partition("/")
    if not validate and (tag or weights_file is not None):
        return ModelSpec(name=name, arch=arch, pretrained=tag or None, weights_file=weights_file)
    import open_clip  # only for names outside the presets: importing it costs ~1.5 s

    if arch not in open_clip.list_models():
        known = ", ".join(PRESETS)
        raise NotFoundError(
            f"Unknown model {name!r}. Use a preset ({known}), an open_clip name such as ViT-L-14/"
            "datacomp_xl_s13b_b90k, hf-hub:ORG/REPO, or local-dir:PATH.",
            title="Unknown model",
        )
    if not tag and weights_file is None:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if not tags:
            raise NotFoundError(f"{arch} has no published weights; pass a checkpoint with --weights FILE.")
        tag = tags[0]
    return ModelSpec(name=name, arch=arch, pretrained=tag or None, weights_file=weights_file)


def fingerprint_file(path: Path, block: int = 1 << 20) -> str:
    """Identity of a weights file without reading all of it: size + first and last MiB."""
    h = hashlib.blake2b(digest_size=12)
    size = path.stat().st_size
    h.update(size.to_bytes(8, "little"))
    with open(path, "rb") as fh:
        h.update(fh.read(block))
        if size > block:
            fh.seek(max(block, size - block))
            h.update(fh.read(block))
    return h.hexdigest()


def hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check, so an offline machine fails in seconds, not after minutes of retries."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def cached_hf_weights(repo: str, filenames: tuple[str, ...] = HF_WEIGHT_FILES) -> Path | None:
    """The weights file for ``repo`` if it is already in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        hit = try_to_load_from_cache(repo, filename)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    return None


def fetch_hf_weights(repo: str, spec: ModelSpec, filenames: tuple[str, ...] | None = None) -> Path:
    """Weights for ``repo``: from the cache, else downloaded once (with a progress bar)."""
    filenames = filenames or HF_WEIGHT_FILES
    cached = cached_hf_weights(repo, filenames)
    if cached is not None:
        return cached
    if not hub_reachable():
        raise ModelUnavailableError(offline_message(spec, repo, "the Hugging Face Hub cannot be reached"))
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    last: Exception | None = None
    for filename in filenames:
        try:
            log.info("downloading %s/%s (once; later runs read the cache)", repo, filename)
            return Path(hf_hub_download(repo_id=repo, filename=filename))
        except EntryNotFoundError as exc:
            last = exc
        except Exception as exc:  # network, disk full, permissions: all end the same way for the user
            raise ModelUnavailableError(offline_message(spec, repo, str(exc))) from exc
    raise ModelUnavailableError(offline_message(spec, repo, f"no weights file in the repository ({last})"))


def offline_message(spec: ModelSpec, repo: str, reason: str) -> str:
    files = " or ".join(HF_WEIGHT_FILES)
    return (
        f"Glimpse needs the weights of {spec.display} and they are not on this machine "
        f"(looked in the Hugging Face cache {hf_cache_dir()}); downloading them failed: {reason}.\n"
        f"  - Connect to the internet once and run the command again (about 150-600 MB, downloaded once), or\n"
        f"  - download {files} from https://huggingface.co/{repo} on another machine and pass it with "
        f"--weights FILE (or {WEIGHTS_ENV}=FILE), or\n"
        f"  - try Glimpse with the bundled test model: {MODEL_ENV}=toyworld."
    )
