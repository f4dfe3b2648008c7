"""Phi-4-reasoning-plus served through Unsloth.

Loads the catalog's Phi-4-reasoning-plus checkpoint (bf16) with Unsloth's FastLanguageModel and its inference mode
on GPU; on CPU (tiny weights) the same model class runs through plain transformers. Prompts use the
checkpoint's own chat template (Phi's reasoning system prompt).
"""

from typing import Optional

import cog
from cog import ConcatenateIterator

from shared import inputs, llm_backends
from shared.llm import TextGenerationRunner

MAX_SEQ_LENGTH = 32768


class Runner(TextGenerationRunner):
    deployment = "phi4-reasoning-plus"

    def load_model(self):
        return llm_backends.load_with_unsloth(self.dep, self.source, device=self.hw.device, dtype=self.hw.dtype,
                                              max_seq_length=MAX_SEQ_LENGTH)

    @cog.streaming
    def run(
        self,
        prompt: str = inputs.PROMPT,
        max_new_tokens: int = inputs.max_new_tokens(2048, 16384),
        temperature: float = inputs.TEMPERATURE,
        top_p: float = inputs.top_p(0.95),
        seed: Optional[int] = inputs.SEED,
    ) -> ConcatenateIterator[str]:
        yield from self.stream(messages=[{"role": "user", "content": prompt}], max_new_tokens=max_new_tokens,
                               temperature=temperature, top_p=top_p, seed=seed)
