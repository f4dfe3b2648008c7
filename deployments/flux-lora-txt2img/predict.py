"""FLUX.1-dev text-to-image with style LoRAs chosen by trigger word.

Loads FLUX.1-dev (bf16) and both style LoRAs once; a trigger word hot-swaps its adapter into the
compiled transformer without reloading or recompiling. Optimizations (shared/flux.py `OPTIONS`):
int8 T5 text encoder, the transformer's precision chosen by GPU (fp8 on H100/H200, 4-bit NF4 under 34 GB),
regional torch.compile of its blocks, each step replayed as a CUDA graph. `go_fast` (opt-in) skips the
steps a first-block cache finds alike (shared/step_cache.py); the default is the exact path.
"""

from typing import Optional

from cog import Input, Path

from shared.flux import MAX_SIDE, MIN_SIDE, SIZE_MULTIPLE, FluxLoraRunner
from shared.images import fit_size, size_for_aspect_ratio
from shared.runtime import log_event


class Runner(FluxLoraRunner):
    deployment = "flux-lora-txt2img"
    pipeline_class = "FluxPipeline"

    def warmup_inputs(self, width: int, height: int) -> dict:
        return {"prompt": "warmup", "width": width, "height": height}

    # Inputs are written out literally: `cog build` reads them from this file's source and resolves nothing
    # imported. tests/unit/test_inputs_contract.py holds them to shared/inputs.py.
    def run(
        self,
        prompt: str = Input(description="What to generate.", min_length=1),
        trigger_word: Optional[str] = Input(default=None, description="Style LoRA to apply, by trigger word (case-insensitive): Cinematic, Photographic, Anime, Manga, Digital art, Pixel art, Fantasy art, Neonpunk, 3D Model, Painting, Animation, Illustration, GHIBSKY. Leave empty for the base model."),
        lora_weights: Optional[str] = Input(default=None, description="Your own FLUX LoRA instead of a style: an http(s) URL of a .safetensors file (diffusers, kohya or ai-toolkit layout; rank 16 or less, on the transformer blocks' layers). Downloaded once and cached; hot-swapped without recompiling."),
        lora_scale: float = Input(default=1.0, ge=-1.0, le=3.0, description="Strength of the LoRA, a style or your own: 0 is the base model, 1 as trained."),
        aspect_ratio: str = Input(default="custom", choices=["custom", "1:1", "16:9", "9:16", "21:9", "9:21", "3:2", "2:3", "4:3", "3:4", "5:4", "4:5"], description="Shape of the image at about one megapixel (FLUX.1-dev's training size); custom uses width and height."),
        height: int = Input(default=768, ge=256, le=1440, description="Height in pixels (rounded to a multiple of 16)."),
        width: int = Input(default=768, ge=256, le=1440, description="Width in pixels (rounded to a multiple of 16)."),
        num_inference_steps: int = Input(default=30, ge=1, le=50, description="Denoising steps: more is slower and finer."),
        guidance_scale: float = Input(default=3.5, ge=0.0, le=10.0, description="How closely the image follows the prompt."),
        seed: Optional[int] = Input(default=None, ge=0, le=4294967295, description="Random seed for a repeatable result; leave empty for a random one (the seed used is reported in metrics.seed)."),
        num_outputs: int = Input(default=1, ge=1, le=4, description="How many images to make (1-4), one after another: image i uses seed + i, so each can be made again alone; the seeds are in metrics.seeds and each PNG's text."),
        go_fast: bool = Input(default=False, description="Skip the denoising steps that would change the image least (first-block cache, threshold 0.08): faster, but not the exact image the same seed gives without it; the steps skipped are in metrics.go_fast_steps_skipped."),
        output_format: str = Input(default="png", choices=["png", "webp", "jpg"], description="Format of the output image."),
        output_quality: int = Input(default=90, ge=1, le=100, description="Quality for lossy formats (webp, jpg), 1-100; ignored for png."),
    ) -> list[Path]:
        if aspect_ratio != "custom":  # the size asked, through the ratio (already one FLUX accepts)
            width, height = size_for_aspect_ratio(aspect_ratio, megapixels=1.0, multiple=SIZE_MULTIPLE,
                                                  max_side=MAX_SIDE, min_side=MIN_SIDE)
        w, h = fit_size(width, height, multiple=SIZE_MULTIPLE, max_side=MAX_SIDE, min_side=MIN_SIDE)
        if (w, h) != (width, height):
            log_event("size.rounded", asked=f"{width}x{height}", used=f"{w}x{h}", multiple=SIZE_MULTIPLE)
        return self.run_and_save(
            prompt=prompt, trigger_word=trigger_word, lora_weights=lora_weights, lora_scale=lora_scale, seed=seed,
            steps=num_inference_steps, guidance=guidance_scale,
            output_format=output_format, output_quality=output_quality, num_outputs=num_outputs, go_fast=go_fast,
            call={"width": w, "height": h}, report={"asked_size": f"{width}x{height}", "aspect_ratio": aspect_ratio},
        )
