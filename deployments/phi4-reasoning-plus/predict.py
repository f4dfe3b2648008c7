"""Phi-4-reasoning-plus served through Unsloth.

Loads the catalog's Phi-4-reasoning-plus checkpoint (bf16) with Unsloth's FastLanguageModel and its inference mode
on GPU; on CPU (tiny weights) the same model class runs through plain transformers. On GPU the decode step is
compiled and attends over the grouped KV heads. Opt-in: 4-bit weights (`OPTIMIZE=quantize=4bit`, Unsloth's NF4
load; `quantize=int4`, HQQ after Unsloth's 16-bit load). Prompts use the checkpoint's own chat template (Phi's
reasoning system prompt).
"""

from typing import Optional

import cog
from cog import AsyncConcatenateIterator, Input

from shared import llm_backends
from shared.llm import TextGenerationRunner, attention_option, int4_prefill_option
from shared.options import Option

MAX_SEQ_LENGTH = 32768


class Runner(TextGenerationRunner):
    deployment = "phi4-reasoning-plus"
    # Batched rows that hold a request at the defaults: the reasoning system prompt (~720 tokens) and 2,048 new
    # tokens. In rows of 2,048 such requests ran one after another. 8 x 4,096 rows: 6.7 GB of KV in bf16.
    batch_row_tokens = 4096
    OPTIONS = {
        # 4-bit stays opt-in: bitsandbytes' NF4 decoded 115 tok/s alone but 289 tok/s for 8 requests at once
        # (its kernel for more than one row dequantizes every weight to bf16 each step), against 85 and 546 in
        # 16 bits, and served in 13.0 GB (H100, 2026-12-05, bench.py text-server; docs/optimizations.md).
        # int4: Unsloth's 16-bit load, then HQQ 4-bit weights served by torch's tinygemm, which SmolLM3 serves with
        # a step of 1.6 ms for one row and 3.7 ms for eight (its 3B weights) where bitsandbytes dequantizes every
        # weight for more than one row; its prompts through the weights dequantized (int4_prefill). Built
        # 2026-12-06, not yet measured: opt-in.
        "quantize": Option("none", "none", ("none", "4bit", "int4"),
                           "4-bit weights: Unsloth's bitsandbytes NF4 load (4bit) or HQQ int4 after Unsloth's load (int4)"),
        "int4_prefill": int4_prefill_option(gpu_default="dequantize"),
        # The compiled step with grouped attention: 84.9 tok/s for 512 tokens (72% of the bf16 roofline) and 546
        # tok/s for 8 requests at once, against 44 for HF generate and ~20 for Unsloth's own eager inference; a
        # cold boot compiles for ~150 s (175 s to ready; 49 s from a warm compile cache). H100, 2026-12-05.
        "compile": Option("on", "off", ("on", "off"), "compiled one-token decode step (CUDA graphs on GPU)"),
        "attention": attention_option(gpu_default="grouped"),
    }

    def load_model(self):
        model, tokenizer, path = llm_backends.load_with_unsloth(
            self.dep, self.source, device=self.hw.device, dtype=self.hw.dtype, max_seq_length=MAX_SEQ_LENGTH,
            four_bit=self.options["quantize"] == "4bit", compiled_decode=self.options["compile"] == "on")
        if self.options["quantize"] == "int4":
            model, how = llm_backends.hqq_quantize(model, via="hqq", device=self.hw.device, dtype=self.hw.dtype)
            path += "+" + how
        if self.options["quantize"] in ("4bit", "int4"):
            # The 4-bit mode is the small one (the product's claim: 12 GB). With 8 rows of 2,048 it served in 13.0 GB,
            # 3.4 GB of it KV (H100, 2026-12-05). 5 rows of 2,048 fit the 10,240 positions the single-stream cache has
            # anyway, so the KV is 2.1 GB: it served in 11.73 GB (H100, 2026-12-06). Requests of up to 2,048 tokens are
            # decoded 5 at a time (the others wait for a row: 8 at once gave 171 tok/s instead of 289), longer ones one
            # at a time.
            self.batch_rows, self.batch_row_tokens = 5, TextGenerationRunner.batch_row_tokens
        if self.options["compile"] == "on":
            self.decode_compile = llm_backends.decode_step_compile()
            path += "+compiled-decode"
        return model, tokenizer, path

    # Inputs are written out literally: `cog build` reads them from this file's source and resolves nothing
    # imported. tests/unit/test_inputs_contract.py holds them to shared/inputs.py.
    # Up to 8 requests at once, decoded together (shared/batch_decode.py); each keeps its own seed.
    @cog.concurrent(max=8)
    @cog.streaming
    async def run(
        self,
        prompt: str = Input(description="What to generate.", min_length=1),
        system_prompt: str = Input(default="", description="Instructions that set how the model answers, given as the chat's system message; empty keeps the model's own default."),
        max_new_tokens: int = Input(default=2048, ge=1, le=16384, description="Maximum number of tokens to generate."),
        temperature: float = Input(default=0.7, ge=0.0, le=2.0, description="Sampling temperature; 0 picks the most likely token (greedy)."),
        top_p: float = Input(default=0.95, ge=0.0, le=1.0, description="Nucleus sampling: keep the smallest set of tokens whose probability adds up to top_p (0 = greedy)."),
        seed: Optional[int] = Input(default=None, ge=0, le=4294967295, description="Random seed for a repeatable result; leave empty for a random one (the seed used is reported in metrics.seed)."),
    ) -> AsyncConcatenateIterator[str]:
        async for piece in self.stream(messages=[{"role": "user", "content": prompt}], max_new_tokens=max_new_tokens,
                                       temperature=temperature, top_p=top_p, seed=seed, system_prompt=system_prompt):
            yield piece
