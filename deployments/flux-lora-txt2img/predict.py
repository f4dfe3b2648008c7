"""FLUX.1-dev text-to-image with style LoRAs chosen by trigger word.

Loads FLUX.1-dev (bf16) and both style LoRAs once; a trigger word hot-swaps its adapter into the
compiled transformer without reloading or recompiling. Optimizations (shared/flux.py `OPTIONS`):
int8 T5 text encoder, regional torch.compile of the transformer blocks, optional fp8 transformer.
"""

from typing import Optional

from cog import Input, Path

from shared import inputs
from shared.catalog import STYLE_LORAS
from shared.flux import MAX_SIDE, MIN_SIDE, SIZE_MULTIPLE, FluxLoraRunner
from shared.images import fit_size
from shared.runtime import log_event

TRIGGERS = [t for lora in STYLE_LORAS for t in lora.triggers]
SIDE = dict(ge=MIN_SIDE, le=MAX_SIDE)


class Runner(FluxLoraRunner):
    deployment = "flux-lora-txt2img"
    pipeline_class = "FluxPipeline"

    def warmup_inputs(self) -> dict:
        return {"prompt": "warmup", "width": 768, "height": 768}

    def run(
        self,
        prompt: str = inputs.PROMPT,
        trigger_word: Optional[str] = inputs.trigger_word(TRIGGERS),
        height: int = Input(default=768, **SIDE, description=f"Height in pixels (rounded to a multiple of {SIZE_MULTIPLE})."),
        width: int = Input(default=768, **SIDE, description=f"Width in pixels (rounded to a multiple of {SIZE_MULTIPLE})."),
        num_inference_steps: int = inputs.NUM_INFERENCE_STEPS,
        guidance_scale: float = inputs.GUIDANCE_SCALE,
        seed: Optional[int] = inputs.SEED,
        output_format: str = inputs.OUTPUT_FORMAT,
        output_quality: int = inputs.OUTPUT_QUALITY,
    ) -> Path:
        w, h = fit_size(width, height, multiple=SIZE_MULTIPLE, max_side=MAX_SIDE, min_side=MIN_SIDE)
        if (w, h) != (width, height):
            log_event("size.rounded", asked=f"{width}x{height}", used=f"{w}x{h}", multiple=SIZE_MULTIPLE)
        return self.run_and_save(
            prompt=prompt, trigger_word=trigger_word, seed=seed, steps=num_inference_steps, guidance=guidance_scale,
            output_format=output_format, output_quality=output_quality,
            call={"width": w, "height": h}, report={"asked_size": f"{width}x{height}"},
        )
