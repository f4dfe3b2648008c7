"""The input contract every deployment shares: one table that each predict.py's inputs are checked against.

`cog build` reads run()'s inputs from predict.py's source, not by running it (Cog >= 0.19; see
tests/cog_static_schema.py): a default must be an `Input(...)` written in predict.py with literal
arguments, so these definitions cannot be imported as defaults. Each predict.py writes its inputs out
literally instead, and tests/unit/test_inputs_contract.py checks that any input named here has exactly
these fields there (a name used by two deployments must be defined here). Ranges are what the server's
schema enforces (422 on violation).
"""

from __future__ import annotations

from .catalog import Deployment
from .flux import MAX_OUTPUTS, MAX_SIDE, MIN_SIDE, SIZE_MULTIPLE
from .images import ASPECT_RATIOS, OUTPUT_FORMATS
from .runtime import SEED_MAX
from .step_cache import THRESHOLD

# name -> the fields an input of that name has in every deployment that takes it. Fields left out
# (max_new_tokens' default and maximum, top_p's default, an image's description) are per deployment.
SHARED: dict[str, dict] = {
    "prompt": dict(description="What to generate.", min_length=1),
    "system_prompt": dict(default="", description="Instructions that set how the model answers, given as the chat's "
                                                   "system message; empty keeps the model's own default."),
    "seed": dict(default=None, ge=0, le=SEED_MAX,
                 description="Random seed for a repeatable result; leave empty for a random one "
                             "(the seed used is reported in metrics.seed)."),
    # Image generation
    "height": dict(default=768, ge=MIN_SIDE, le=MAX_SIDE,
                   description=f"Height in pixels (rounded to a multiple of {SIZE_MULTIPLE})."),
    "width": dict(default=768, ge=MIN_SIDE, le=MAX_SIDE,
                  description=f"Width in pixels (rounded to a multiple of {SIZE_MULTIPLE})."),
    "num_inference_steps": dict(default=30, ge=1, le=50, description="Denoising steps: more is slower and finer."),
    "guidance_scale": dict(default=3.5, ge=0.0, le=10.0, description="How closely the image follows the prompt."),
    "num_outputs": dict(default=1, ge=1, le=MAX_OUTPUTS,
                        description=f"How many images to make (1-{MAX_OUTPUTS}), one after another: image i uses seed + i, "
                                    "so each can be made again alone; the seeds are in metrics.seeds and each PNG's text."),
    "go_fast": dict(default=False, description="Skip the denoising steps that would change the image least (first-block "
                                               f"cache, threshold {THRESHOLD}): faster, but not the exact image the same "
                                               "seed gives without it; the steps skipped are in metrics.go_fast_steps_skipped."),
    "output_format": dict(default="png", choices=list(OUTPUT_FORMATS), description="Format of the output image."),
    "output_quality": dict(default=90, ge=1, le=100,
                           description="Quality for lossy formats (webp, jpg), 1-100; ignored for png."),
    "aspect_ratio": dict(default="custom", choices=["custom", *ASPECT_RATIOS],
                         description="Shape of the image at about one megapixel (FLUX.1-dev's training size); "
                                     "custom uses width and height."),
    "image": dict(),  # a required file; its description says what the deployment does with it
    # Text generation
    "temperature": dict(default=0.7, ge=0.0, le=2.0,
                        description="Sampling temperature; 0 picks the most likely token (greedy)."),
    "max_new_tokens": dict(ge=1, description="Maximum number of tokens to generate."),
    "top_p": dict(ge=0.0, le=1.0, description="Nucleus sampling: keep the smallest set of tokens whose probability "
                                               "adds up to top_p (0 = greedy)."),
}


def trigger_word(dep: Deployment) -> dict:
    """The trigger_word input of a FLUX deployment: its description lists the catalog's triggers."""
    triggers = [t for lora in dep.loras for t in lora.triggers]
    return dict(default=None, description="Style LoRA to apply, by trigger word (case-insensitive): "
                + ", ".join(triggers) + ". Leave empty for the base model.")


def lora_weights(dep: Deployment) -> dict:
    """A user's own LoRA (shared/user_lora.py): its description states the slot's rank."""
    return dict(default=None, description="Your own FLUX LoRA instead of a style: an http(s) URL of a .safetensors file "
                f"(diffusers, kohya or ai-toolkit layout; rank {dep.lora_target_rank} or less, on the transformer "
                "blocks' layers). Downloaded once and cached; hot-swapped without recompiling.")


LORA_SCALE = dict(default=1.0, ge=-1.0, le=3.0,
                  description="Strength of the LoRA, a style or your own: 0 is the base model, 1 as trained.")


def contract(dep: Deployment) -> dict[str, dict]:
    """Every shared input definition, with the ones that depend on the deployment filled in."""
    loras = {"trigger_word": trigger_word(dep), "lora_weights": lora_weights(dep), "lora_scale": LORA_SCALE}
    return {**SHARED, **(loras if dep.loras else {})}
