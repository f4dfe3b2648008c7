"""FLUX.1-dev image-to-image with style LoRAs chosen by trigger word, and a `strength` control.

Same model, LoRAs and optimizations as flux-lora-txt2img (shared/flux.py). The output keeps the input's
size, rounded to what FLUX accepts (multiples of 16, at most 1440 px a side); the size used is
reported in the logs and in metrics.width / metrics.height.
"""

from typing import Optional

from cog import Input, Path

from shared import inputs
from shared.catalog import STYLE_LORAS
from shared.flux import MAX_SIDE, MIN_SIDE, SIZE_MULTIPLE, FluxLoraRunner
from shared.images import fit_size, load_rgb
from shared.runtime import InputError, log_event

TRIGGERS = [t for lora in STYLE_LORAS for t in lora.triggers]


class Runner(FluxLoraRunner):
    deployment = "flux-lora-img2img"
    pipeline_class = "FluxImg2ImgPipeline"

    def warmup_inputs(self) -> dict:
        from PIL import Image

        return {"prompt": "warmup", "image": Image.new("RGB", (768, 768), "gray"), "strength": 1.0,
                "width": 768, "height": 768}

    def run(
        self,
        image: Path = Input(description="Starting image (file or URL): PNG, JPEG or WebP."),
        prompt: str = inputs.PROMPT,
        trigger_word: Optional[str] = inputs.trigger_word(TRIGGERS),
        strength: float = Input(default=0.7, ge=0.0, le=1.0,
                                description="How much to change the image: low stays close to it, 1 ignores it. At least one "
                                            "denoising step must run (strength x num_inference_steps >= 1)."),
        num_inference_steps: int = inputs.NUM_INFERENCE_STEPS,
        guidance_scale: float = inputs.GUIDANCE_SCALE,
        seed: Optional[int] = inputs.SEED,
        output_format: str = inputs.OUTPUT_FORMAT,
        output_quality: int = inputs.OUTPUT_QUALITY,
    ) -> Path:
        if int(num_inference_steps * strength) < 1:
            raise InputError("strength", f"{strength} with num_inference_steps={num_inference_steps} runs no denoising step; "
                             f"use strength >= {1 / num_inference_steps:.3f} (range 0.0-1.0) or more steps")
        source = load_rgb(image)
        w, h = fit_size(source.width, source.height, multiple=SIZE_MULTIPLE, max_side=MAX_SIDE, min_side=MIN_SIDE)
        if (w, h) != source.size:
            log_event("size.rounded", input=f"{source.width}x{source.height}", used=f"{w}x{h}",
                      reason=f"sides must be multiples of {SIZE_MULTIPLE} within {MIN_SIDE}-{MAX_SIDE}")
        return self.run_and_save(
            prompt=prompt, trigger_word=trigger_word, seed=seed, steps=num_inference_steps, guidance=guidance_scale,
            output_format=output_format, output_quality=output_quality,
            call={"image": source, "strength": strength, "width": w, "height": h},
            report={"input_size": f"{source.width}x{source.height}"},
        )
