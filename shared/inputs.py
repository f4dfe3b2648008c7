"""Input definitions shared by several deployments (defined once, like cog-flux's shared inputs).

Cog's `Input(...)` returns an immutable FieldInfo, so one definition can serve as the default of
many `run()` signatures. Ranges here are what the server's schema enforces (422 on violation).
"""

from __future__ import annotations

from cog import Input

from .images import OUTPUT_FORMATS
from .runtime import SEED_MAX

PROMPT = Input(description="What to generate.", min_length=1)
SEED = Input(default=None, ge=0, le=SEED_MAX,
             description="Random seed for a repeatable result; leave empty for a random one "
                         "(the seed used is reported in metrics.seed).")

# Image generation
NUM_INFERENCE_STEPS = Input(default=30, ge=1, le=50, description="Denoising steps: more is slower and finer.")
GUIDANCE_SCALE = Input(default=3.5, ge=0.0, le=10.0, description="How closely the image follows the prompt.")
OUTPUT_FORMAT = Input(default="png", choices=list(OUTPUT_FORMATS), description="Format of the output image.")
OUTPUT_QUALITY = Input(default=90, ge=1, le=100,
                       description="Quality for lossy formats (webp, jpg), 1-100; ignored for png.")


def trigger_word(triggers: list[str]):
    return Input(default=None, description=(
        "Style LoRA to apply, by trigger word (case-insensitive): " + ", ".join(triggers)
        + ". Leave empty for the base model."))


# Text generation
TEMPERATURE = Input(default=0.7, ge=0.0, le=2.0, description="Sampling temperature; 0 picks the most likely token (greedy).")


def max_new_tokens(default: int, maximum: int):
    return Input(default=default, ge=1, le=maximum, description="Maximum number of tokens to generate.")


def top_p(default: float):
    return Input(default=default, ge=0.0, le=1.0,
                 description="Nucleus sampling: keep the smallest set of tokens whose probability adds up to top_p (0 = greedy).")
