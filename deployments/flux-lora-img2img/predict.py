"""FLUX.1-dev image-to-image with style LoRAs chosen by trigger word, and a `strength` control.

Same model, LoRAs and optimizations as flux-lora-txt2img (shared/flux.py). The output keeps the input's
size and aspect ratio, rounded to what FLUX accepts (multiples of 16, 256-1440 px a side); the size
used is reported in the logs and in metrics.width / metrics.height.
"""

from typing import Optional

from cog import Input, Path

from shared.flux import MAX_SIDE, MIN_SIDE, SIZE_MULTIPLE, FluxLoraRunner
from shared.images import fit_size, load_rgb, sent_file
from shared.runtime import InputError, log_event


class Runner(FluxLoraRunner):
    deployment = "flux-lora-img2img"
    pipeline_class = "FluxImg2ImgPipeline"

    def warmup_inputs(self, width: int, height: int) -> dict:
        from PIL import Image

        return {"prompt": "warmup", "image": Image.new("RGB", (width, height), "gray"), "strength": 1.0,
                "width": width, "height": height}

    # Inputs are written out literally: `cog build` reads them from this file's source and resolves nothing
    # imported. tests/unit/test_inputs_contract.py holds them to shared/inputs.py.
    def run(
        self,
        image: Path = Input(description="Starting image (file or URL): PNG, JPEG or WebP."),
        prompt: str = Input(description="What to generate.", min_length=1),
        trigger_word: Optional[str] = Input(default=None, description="Style LoRA to apply, by trigger word (case-insensitive): Cinematic, Photographic, Anime, Manga, Digital art, Pixel art, Fantasy art, Neonpunk, 3D Model, Painting, Animation, Illustration, GHIBSKY. Leave empty for the base model."),
        lora_weights: Optional[str] = Input(default=None, description="Your own FLUX LoRA instead of a style: an http(s) URL of a .safetensors file (diffusers, kohya or ai-toolkit layout; rank 16 or less, on the transformer blocks' layers). Downloaded once and cached; hot-swapped without recompiling."),
        lora_scale: float = Input(default=1.0, ge=-1.0, le=3.0, description="Strength of the LoRA, a style or your own: 0 is the base model, 1 as trained."),
        strength: float = Input(default=0.7, ge=0.0, le=1.0, description="How much to change the image: low stays close to it, 1 ignores it. At least one denoising step must run (strength x num_inference_steps >= 1)."),
        num_inference_steps: int = Input(default=30, ge=1, le=50, description="Denoising steps: more is slower and finer."),
        guidance_scale: float = Input(default=3.5, ge=0.0, le=10.0, description="How closely the image follows the prompt."),
        seed: Optional[int] = Input(default=None, ge=0, le=4294967295, description="Random seed for a repeatable result; leave empty for a random one (the seed used is reported in metrics.seed)."),
        num_outputs: int = Input(default=1, ge=1, le=4, description="How many images to make (1-4), one after another: image i uses seed + i, so each can be made again alone; the seeds are in metrics.seeds and each PNG's text."),
        go_fast: bool = Input(default=False, description="Skip the denoising steps that would change the image least (first-block cache, threshold 0.08): faster, but not the exact image the same seed gives without it; the steps skipped are in metrics.go_fast_steps_skipped."),
        output_format: str = Input(default="png", choices=["png", "webp", "jpg"], description="Format of the output image."),
        output_quality: int = Input(default=90, ge=1, le=100, description="Quality for lossy formats (webp, jpg), 1-100; ignored for png."),
    ) -> list[Path]:
        if int(num_inference_steps * strength) < 1:
            raise InputError("strength", f"{strength} with num_inference_steps={num_inference_steps} runs no denoising step; "
                             f"use strength >= {1 / num_inference_steps:.3f} (range 0.0-1.0) or more steps")
        source = load_rgb(sent_file(image))
        w, h = fit_size(source.width, source.height, multiple=SIZE_MULTIPLE, max_side=MAX_SIDE, min_side=MIN_SIDE)
        if (w, h) != source.size:
            log_event("size.rounded", input=f"{source.width}x{source.height}", used=f"{w}x{h}",
                      reason=f"sides must be multiples of {SIZE_MULTIPLE} within {MIN_SIDE}-{MAX_SIDE}")
        return self.run_and_save(
            prompt=prompt, trigger_word=trigger_word, lora_weights=lora_weights, lora_scale=lora_scale, seed=seed,
            steps=num_inference_steps, guidance=guidance_scale,
            output_format=output_format, output_quality=output_quality, num_outputs=num_outputs, go_fast=go_fast,
            call={"image": source, "strength": strength, "width": w, "height": h},
            report={"input_size": f"{source.width}x{source.height}"},
        )
