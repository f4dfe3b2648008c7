"""SmolLM3-3B with think / no_think reasoning modes.

Loads SmolLM3-3B (bf16), quantizes every decoder Linear to 4-bit HQQ (through Pruna on GPU, hqq
directly on CPU, where Pruna refuses) and decodes with a static KV cache and a compiled one-token
step; a prompt multiplies by the int4 weights dequantized, where the int4 kernel is slow for many rows.
Prompts go through SmolLM3's own chat template (vendored), which holds the /think logic.
"""

from typing import Optional

import cog
from cog import AsyncConcatenateIterator, Input

from shared import compile as selective_compile
from shared import llm_backends, quantize
from shared.builders.text import load_causal_lm
from shared.fused_projections import fuse_projections
from shared.llm import TextGenerationRunner, attention_option, int4_prefill_option
from shared.options import Option
from shared.runtime import InputError


class Runner(TextGenerationRunner):
    deployment = "smollm3-3b"
    template_source = "vendored"
    static_cache_tokens = 2048 + 16384  # prompt (the think-mode system prompt alone is ~800) + max max_new_tokens
    # A request decodes in the smallest cache that holds it, and a step reads all of it: 2.92 ms in 2,048 tokens,
    # 4.17 ms in the full 18,432 (H100, int4). 4,608 holds a 512-token prompt and 4,096 new tokens. The buckets
    # share the full cache's memory (shared/decode_engine.py): each costs a compile at boot, not memory.
    static_cache_buckets = (2048, 4608)
    OPTIONS = {
        # pruna-hqq: Pruna's SmashConfig (int4 kernels patched in by hqq's torchao backend); hqq: hqq itself,
        # the same kernels on a GPU (HQQ's dequantize layers on CPU); -gemlite: gemlite's Triton kernels, whose
        # GEMM took 24.7 ms of a 560-token prompt against tinygemm's 110 (H100): opt-in until the server measures it.
        "quantize": Option("pruna-hqq", "hqq", ("none", "hqq", "hqq-gemlite", "pruna-hqq", "pruna-hqq-gemlite"),
                           "4-bit HQQ weights: 4x fewer bytes per token"),
        "compile": Option("on", "off", ("on", "off"), "static KV cache + compiled decode step"),
        # Grouped decode attention on a GPU: SDPA's path copied the 4 KV heads out to 16 every step; a decode
        # step's attention took 1,278 us of GPU time with SDPA against 410 grouped (H100, 2026-12-05,
        # bench.py text-profile).
        "attention": attention_option(gpu_default="grouped"),
        # The prompt's forward compiled for any length (shared/decode_engine.py): eager, its Python cost ~60 ms of
        # a short prompt's first token (H100). Opt-in until measured on a GPU.
        "prefill": Option("eager", "eager", ("eager", "compiled"), "compile the prompt's forward (time to first token)"),
        # Prompts through the int4 layers (shared/int4_prefill.py): tinygemm took 102 ms of a 512-token prompt's 110;
        # dequantized for a bf16 matmul, the first token of a 512-token prompt came in 59 ms instead of 114 and 8
        # requests at once gave 1,620 tok/s instead of 1,338 (H100, 2026-12-06, through the Cog server).
        # dequantize-compiled, the default: the same as one fused kernel per weight shape, compiled at load (14 s):
        # the 512-token prefill took 45 ms instead of 59 (16.8 ms of GPU time instead of 50) and eight 200-token
        # prompts together 43 ms instead of 67 (in process); through the server, first token 57.9 ms and 8 at once
        # 1,641 tok/s (H100, 2026-12-06). What is left is the eager forward's Python: prefill=compiled.
        "int4_prefill": int4_prefill_option(gpu_default="dequantize-compiled"),
        # Q, K, V as one matmul and gate, up as one (shared/fused_projections.py): 4 GEMVs per layer instead of 7.
        # With quantize=none or hqq (Pruna's smash picks its layers by name). Opt-in until measured on a GPU.
        "fuse_projections": Option("off", "off", ("on", "off"), "one matmul for Q, K, V and one for gate, up"),
        # Coordinate-descent tuning of the compiled kernels. Off: the int4 matmuls are library kernels it never
        # tunes, and with it a cold boot compiled each of the three steps for ~180 s (H200, 2026-12-05), past
        # Replicate's 600 s setup limit.
        "kernel_tuning": Option("off", "off", ("on", "off"), "tune the compiled kernels' launch configs (boot time)"),
    }

    def load_model(self):
        model, tokenizer = load_causal_lm(self.dep, self.source, device=self.hw.device, dtype=self.hw.dtype)
        path = [f"transformers-{self.hw.device}"]
        via = "pruna" if self.options["quantize"].startswith("pruna") else "hqq"
        kernel = "gemlite" if self.options["quantize"].endswith("-gemlite") else "torchao_int4"
        fused = self.options["fuse_projections"] == "on"
        if fused:  # before quantizing: the fused Linears are quantized as such
            if via == "pruna":
                raise ValueError("OPTIMIZE fuse_projections=on needs quantize=none, hqq or hqq-gemlite: "
                                 "Pruna's smash picks the layers it quantizes by their names")
            path.append(f"fused-projections:{fuse_projections(model)}")
        if self.options["quantize"] != "none":
            model, how = llm_backends.hqq_quantize(model, via=via, device=self.hw.device, dtype=self.hw.dtype, kernel=kernel,
                                                   filter_fn=quantize.not_lm_head if fused else None)
            path.append(how)
        # hqq's int4 inference patch turns Inductor's coordinate-descent tuning on for the process
        # (hqq/utils/patching.py): the deployment's own choice is set after it.
        selective_compile.tune_kernels(self.options["kernel_tuning"] == "on")
        if self.options["compile"] == "on":
            self.decode_compile = llm_backends.decode_step_compile()
            path.append("static-cache+compiled-decode")
        if self.options["prefill"] == "compiled":
            self.prefill_compile = llm_backends.prefill_compile()
            path.append("compiled-prefill")
        return model, tokenizer, "+".join(path)

    # Inputs are written out literally: `cog build` reads them from this file's source and resolves nothing
    # imported. tests/unit/test_inputs_contract.py holds them to shared/inputs.py.
    # Up to 8 requests at once, decoded together (shared/batch_decode.py); each keeps its own seed.
    @cog.concurrent(max=8)
    @cog.streaming
    async def run(
        self,
        prompt: str = Input(description="What to generate.", min_length=1),
        system_prompt: str = Input(default="", description="Instructions that set how the model answers, given as the chat's system message; empty keeps the model's own default."),
        max_new_tokens: int = Input(default=512, ge=1, le=16384, description="Maximum number of tokens to generate."),
        temperature: float = Input(default=0.7, ge=0.0, le=2.0, description="Sampling temperature; 0 picks the most likely token (greedy)."),
        top_p: float = Input(default=0.9, ge=0.0, le=1.0, description="Nucleus sampling: keep the smallest set of tokens whose probability adds up to top_p (0 = greedy)."),
        mode: str = Input(default="no_think", choices=["no_think", "think"],
                          description="think: reason step by step inside <think>...</think> before answering."),
        seed: Optional[int] = Input(default=None, ge=0, le=4294967295, description="Random seed for a repeatable result; leave empty for a random one (the seed used is reported in metrics.seed)."),
    ) -> AsyncConcatenateIterator[str]:
        # SmolLM3's template also reads /think and /no_think in the system message, and they win over the
        # mode; the mode input is the switch here, so a flag that says otherwise is refused, not obeyed.
        flag = "/no_think" if "/no_think" in system_prompt else "/think" if "/think" in system_prompt else None
        if flag and flag != f"/{mode}":
            raise InputError("system_prompt", f"contains {flag} but mode is {mode}: choose the mode with the mode input")
        async for piece in self.stream(messages=[{"role": "user", "content": prompt}], max_new_tokens=max_new_tokens,
                                       temperature=temperature, top_p=top_p, seed=seed, system_prompt=system_prompt,
                                       template_kwargs={"enable_thinking": mode == "think"}):
            yield piece
