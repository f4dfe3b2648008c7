"""The one source of truth for every deployment: its name, model id, pinned revision, LoRAs and triggers.

Folders under `deployments/`, Makefile targets, Replicate model names, docs tables and canary pins
derive from this file or are checked against it by `tests/unit/test_catalog.py`.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
EXAMPLES = ASSETS / "examples"
REPO_ROOT = Path(__file__).resolve().parent.parent
REPLICATE_OWNER = "cog-deployments"
# Base URL of the weight mirror a boot downloads from without a Hub token (shared/weight_download.py):
# None until the owner publishes the bundles (docs/operations.md); WEIGHTS_URL overrides it.
WEIGHTS_MIRROR: str | None = None


def source_commit() -> str:
    """The commit results are recorded against: $COMMIT where the tree's git is absent or stale (the
    device machine gets a copy of the working tree), else this checkout's HEAD."""
    if os.environ.get("COMMIT"):
        return os.environ["COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass(frozen=True)
class Checkpoint:
    repo_id: str
    # A commit id where one could be confirmed from public sources; "main" where none could be
    # (see docs/models.md): pin it with `huggingface-cli` as soon as the Hub is reachable.
    revision: str
    assets: str  # folder under shared/assets with the vendored config and chat template
    gated: bool = False
    # The Hub files a deployment loads (snapshot allow-patterns): what the mirror holds and a boot fetches.
    files: tuple[str, ...] = ("*.json", "*.safetensors", "*.jinja", "*.txt", "tokenizer.model")

    @property
    def assets_dir(self) -> Path:
        return ASSETS / self.assets


@dataclass(frozen=True)
class Lora:
    name: str  # adapter name used by the hot-swap (stable across swaps)
    repo_id: str
    weight_name: str
    revision: str
    triggers: tuple[str, ...]
    # What the trigger adds to the prompt: "{trigger}" is replaced by the canonical trigger word.
    prompt_template: str
    scale: float = 1.0
    rank: int = 16  # the published file's rank (its stand-ins copy it: shared/builders/loras.py)


@dataclass(frozen=True)
class Deployment:
    name: str  # folder, Makefile D=, Replicate model, docs, tests
    title: str
    checkpoint: Checkpoint
    task: str  # "text-to-image" | "image-to-image" | "text-generation" | "image-text-to-text"
    loras: tuple[Lora, ...] = ()
    description: str = ""
    # One real request per deployment: used by `make demo`, the README and the canary cases.
    # "@name" values are files under shared/assets/examples/.
    example: dict = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return REPO_ROOT / "deployments" / self.name

    @property
    def lora_target_rank(self) -> int:
        """The hot-swap slot's rank: every adapter is padded to it, so it is the largest published rank
        (a larger slot only adds LoRA matmul work to every step)."""
        return max((lora.rank for lora in self.loras), default=0)

    @property
    def replicate_model(self) -> str:
        return f"{REPLICATE_OWNER}/{self.name}"


FLUX_DEV = Checkpoint(
    "black-forest-labs/FLUX.1-dev", "3de623fc3c33e44ffbe2bad470d0f45bccf2eb21", "flux1-dev", gated=True,
    # The diffusers layout only: the repo's single-file flux1-dev.safetensors and ae.safetensors (another
    # 24 GB) are never loaded.
    files=("model_index.json", "scheduler/*", "text_encoder/*", "text_encoder_2/*", "tokenizer/*", "tokenizer_2/*",
           "transformer/*", "vae/*"),
)
SMOLLM3 = Checkpoint("HuggingFaceTB/SmolLM3-3B", "a07cc9a04f16550a088caea529712d1d335b0ac1", "smollm3-3b")
PHI4_REASONING_PLUS = Checkpoint("unsloth/phi-4-reasoning-plus", "main", "phi4-reasoning-plus")
GEMMA3_4B_IT = Checkpoint(
    "google/gemma-3-4b-it", "093f9f388b31de276ce2de164bdc2081324b9767", "gemma3-4b-it", gated=True
)

STYLE_LORAS = (
    Lora(
        name="open_image_preferences",
        repo_id="data-is-better-together/open-image-preferences-v1-flux-dev-lora",
        weight_name="pytorch_lora_weights.safetensors",
        # "Add generated example", on top of "End of training" (Hub commit page, seen 2026-11-25).
        revision="3144c6f4d3d283513193f748774630c673a5a8b6",
        triggers=(
            "Cinematic", "Photographic", "Anime", "Manga", "Digital art", "Pixel art",
            "Fantasy art", "Neonpunk", "3D Model", "Painting", "Animation", "Illustration",
        ),
        prompt_template="{trigger}, ",
        rank=8,
    ),
    Lora(
        name="ghibsky",
        repo_id="aleksa-codes/flux-ghibsky-illustration",
        weight_name="lora.safetensors",
        # "Revert back to previous LoRA version": lora.safetensors sha256 41010aee..., 171969416 bytes (the
        # file was replaced and reverted upstream; later commits carry the same blob).
        revision="e7a8c87fdc27591adb9cf2b1aca1153255b8520c",
        triggers=("GHIBSKY",),
        prompt_template="{trigger} style, ",
        rank=16,
    ),
)

_FLUX_COMMON = dict(checkpoint=FLUX_DEV, loras=STYLE_LORAS)

DEPLOYMENTS: dict[str, Deployment] = {
    d.name: d
    for d in (
        Deployment(
            name="flux-lora-txt2img",
            title="FLUX.1-dev LoRA hot-swap, text-to-image",
            task="text-to-image",
            description="FLUX.1-dev with style LoRAs picked by trigger word, hot-swapped without recompiling.",
            example={"prompt": "a lighthouse on a cliff at sunset", "trigger_word": "Anime", "num_inference_steps": 4,
                     "width": 512, "height": 512, "seed": 42},
            **_FLUX_COMMON,
        ),
        Deployment(
            name="flux-lora-img2img",
            title="FLUX.1-dev LoRA hot-swap, image-to-image",
            task="image-to-image",
            description="FLUX.1-dev image-to-image with hot-swapped style LoRAs and a `strength` control.",
            example={"image": "@landscape.png", "prompt": "a watercolor village", "trigger_word": "GHIBSKY",
                     "strength": 0.7, "num_inference_steps": 4, "seed": 42},
            **_FLUX_COMMON,
        ),
        Deployment(
            name="smollm3-3b",
            title="SmolLM3-3B with think / no_think modes",
            checkpoint=SMOLLM3,
            task="text-generation",
            description="SmolLM3-3B, HQQ-quantized (Pruna on GPU), compiled decode, reasoning on demand.",
            example={"prompt": "Why is the sky blue? Answer in two sentences.", "mode": "think", "max_new_tokens": 48,
                     "seed": 42},
        ),
        Deployment(
            name="phi4-reasoning-plus",
            title="Phi-4 reasoning plus (Unsloth)",
            checkpoint=PHI4_REASONING_PLUS,
            task="text-generation",
            description="Phi-4-reasoning-plus served through Unsloth's inference path.",
            example={"prompt": "What is 17 * 23? Show your reasoning.", "max_new_tokens": 48, "seed": 42},
        ),
        Deployment(
            name="gemma3-4b-it",
            title="Gemma 3 4B instruct, image + text",
            checkpoint=GEMMA3_4B_IT,
            task="image-text-to-text",
            description="Gemma 3 4B it with int8 weight-only quantization, pruning and selective compile.",
            example={"image": "@landscape.png", "prompt": "Describe this picture in one sentence.",
                     "max_new_tokens": 48, "seed": 42},
        ),
    )
}


def get(name: str) -> Deployment:
    try:
        return DEPLOYMENTS[name]
    except KeyError:
        raise KeyError(f"unknown deployment {name!r}; known: {', '.join(DEPLOYMENTS)}") from None
