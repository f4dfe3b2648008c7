"""SmolLM3-3B with think / no_think reasoning modes.

Loads SmolLM3-3B (bf16), quantizes every decoder Linear to 4-bit HQQ (through Pruna on GPU, hqq
directly on CPU, where Pruna refuses) and decodes with a static KV cache and a compiled one-token
step. Prompts go through SmolLM3's own chat template (vendored), which holds the /think logic.
"""

from typing import Optional

import cog
from cog import ConcatenateIterator, Input

from shared import inputs, llm_backends
from shared.builders.text import load_causal_lm
from shared.llm import TextGenerationRunner
from shared.options import Option


class Runner(TextGenerationRunner):
    deployment = "smollm3-3b"
    template_source = "vendored"
    static_cache_tokens = 2048 + 16384  # prompt (the think-mode system prompt alone is ~800) + max max_new_tokens
    OPTIONS = {
        "quantize": Option("pruna-hqq", "hqq", ("none", "hqq", "pruna-hqq"), "4-bit HQQ weights: 4x fewer bytes per token"),
        "compile": Option("on", "off", ("on", "off"), "static KV cache + compiled decode step"),
    }

    def load_model(self):
        model, tokenizer = load_causal_lm(self.dep, self.source, device=self.hw.device, dtype=self.hw.dtype)
        path = [f"transformers-{self.hw.device}"]
        if self.options["quantize"] != "none":
            model, how = llm_backends.hqq_quantize(model, via="pruna" if self.options["quantize"] == "pruna-hqq" else "hqq",
                                                   device=self.hw.device, dtype=self.hw.dtype)
            path.append(how)
        if self.options["compile"] == "on":
            path.append(llm_backends.enable_compiled_decode(model))
        return model, tokenizer, "+".join(path)

    @cog.streaming
    def run(
        self,
        prompt: str = inputs.PROMPT,
        max_new_tokens: int = inputs.max_new_tokens(512, 16384),
        temperature: float = inputs.TEMPERATURE,
        top_p: float = inputs.top_p(0.9),
        mode: str = Input(default="no_think", choices=["no_think", "think"],
                          description="think: reason step by step inside <think>...</think> before answering."),
        seed: Optional[int] = inputs.SEED,
    ) -> ConcatenateIterator[str]:
        yield from self.stream(messages=[{"role": "user", "content": prompt}], max_new_tokens=max_new_tokens,
                               temperature=temperature, top_p=top_p, seed=seed,
                               template_kwargs={"enable_thinking": mode == "think"})
