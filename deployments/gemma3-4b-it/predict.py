"""Gemma 3 4B instruct: answers about an image.

Loads the catalog's Gemma 3 4B it checkpoint (bf16). The language model's Linear layers get int8 weight-only
quantization (torchao) after light magnitude pruning of the layers the prune filter allows. On a GPU the
language model's one-token decode step is compiled (selective compile); the vision tower runs eagerly.
"""

from typing import Optional

import cog
from cog import AsyncConcatenateIterator, Input, Path

from shared import compile as selective_compile, llm_backends, prune, quantize
from shared.builders.text import load_gemma3
from shared.fused_projections import fuse_projections
from shared.images import load_rgb, sent_file
from shared.llm import TextGenerationRunner, attention_option, int4_prefill_option
from shared.options import Option

LANGUAGE_MODEL = "model.language_model"


class Runner(TextGenerationRunner):
    deployment = "gemma3-4b-it"
    # One cache size only: each size costs its own compile of the int8 decode step (249 s on a cold H100,
    # measured), and this one was measured (docs/optimizations.md).
    static_cache_buckets = ()
    # A request fits the compiled step's cache (10,240 tokens), not all of Gemma's 128k: a longer one would
    # recompile inside the request (minutes), and a 100k-token prompt's attention exhausted a 24 GB machine
    # (the worker was killed; tests/fuzz.py).
    window_tokens = TextGenerationRunner.static_cache_tokens
    OPTIONS = {
        # 2:4: the pattern sparse kernels read; with quantize=none the pruned layers are stored 2:4 on a GPU (half
        # the weights plus their positions). Opt-in until measured against int8.
        "prune": Option("magnitude:0.1", "magnitude:0.1",
                        ("none", "magnitude:<amount>", "gradual:<amount>", "structured:<amount>", "2:4"),
                        "zero the smallest weights of q/k/v and MLP input projections"),
        # fp8: float8 weight-only, the same bytes as int8; int4: HQQ 4-bit with the int4 kernels SmolLM3 uses
        # (half the bytes again). Both opt-in until measured against int8 on a GPU.
        "quantize": Option("int8", "int8", ("none", "int8", "fp8", "int4"),
                           "weights of the language model: torchao int8 or float8 weight-only, or HQQ 4-bit"),
        # Q, K, V as one matmul and gate, up as one (shared/fused_projections.py), after pruning and before
        # quantizing. Opt-in until measured on a GPU.
        "fuse_projections": Option("off", "off", ("on", "off"), "one matmul for Q, K, V and one for gate, up"),
        # decode: static cache + compiled one-token decode step of the language model (int8 kernels only
        # pay off compiled); blocks: regional compile of its decoder layers. The vision tower runs once
        # per request, eagerly.
        "compile": Option("decode", "off", ("decode", "blocks", "off"), "compile the language model only"),
        # Grouped decode attention on a GPU: SDPA's path copied the 4 KV heads out to 8 every step and read the
        # copy, ~3.2 ms of a 6.4 ms step; grouped, ~1 ms, and decode rose from 155 to 221 tok/s (int4 weights,
        # H100, 2026-12-05, bench.py text-profile; the attention is the same whatever the weights).
        "attention": attention_option(gpu_default="grouped"),
        # Prompts through the int4 layers (quantize=int4; shared/int4_prefill.py): a 512-token prompt's prefill took
        # 88 ms instead of 150, and eight 200-token prompts together 83 ms instead of 374 (H100, 2026-12-06, in process).
        # dequantize-compiled: the same as one fused kernel per weight shape (~3 ms of the ~39 ms the eager passes
        # take, by the bytes), compiled at load: opt-in until measured.
        "int4_prefill": int4_prefill_option(gpu_default="dequantize"),
        # Coordinate-descent tuning of the compiled int8 kernels (what torchao and gpt-fast turn on): costs
        # boot time, which the compile artifact carries. Cold, with both steps tuned, the boot ran past 575 s (H100,
        # 2026-12-05: 343 s for the single-stream step, the 8-row step still tuning); one-row tunes the
        # single-stream step only. Opt-in until measured.
        "kernel_tuning": Option("on", "off", ("on", "one-row", "off"), "tune the compiled kernels' launch configs"),
    }

    def load_model(self):
        model, processor = load_gemma3(self.dep, self.source, device=self.hw.device, dtype=self.hw.dtype)
        path = [f"transformers-{self.hw.device}"]
        semi_structured = self.options["prune"] == "2:4"
        if self.options["prune"] != "none":
            method, amount = ("2:4", "0.5") if semi_structured else self.options["prune"].split(":")
            prune.apply(model, method, float(amount), scope=LANGUAGE_MODEL)
            path.append(self.options["prune"])
        language_model = lambda m, name: name.startswith(LANGUAGE_MODEL)  # noqa: E731 (the vision tower stays 16-bit)
        if semi_structured and self.options["quantize"] == "none":  # the sparse layout, where a GPU has its kernels
            quantize.apply_semi_sparse(model, filter_fn=lambda m, name: prune.is_prunable(name, m) and language_model(m, name))
            path.append("2:4-sparse-layout" if self.hw.is_cuda else "2:4-mask")
        if self.options["fuse_projections"] == "on":
            if semi_structured:
                raise ValueError("OPTIMIZE fuse_projections=on cannot take prune=2:4: the sparse layout is per layer")
            path.append(f"fused-projections:{fuse_projections(model)}")
        if self.options["quantize"] == "int8":
            quantize.apply_int8_weight_only(model, filter_fn=language_model)
            path.append("int8-weight-only")
        elif self.options["quantize"] == "fp8":
            quantize.apply_float8_weight_only(model, filter_fn=language_model)
            path.append("fp8-weight-only")
        elif self.options["quantize"] == "int4":
            model, method = llm_backends.hqq_quantize(model, via="hqq", device=self.hw.device, dtype=self.hw.dtype,
                                                      filter_fn=language_model)
            path.append(method)
        selective_compile.tune_kernels(self.options["kernel_tuning"] != "off")
        if self.options["compile"] == "decode":
            self.decode_compile = llm_backends.decode_step_compile()
            path.append("static-cache+compiled-decode")
        elif self.options["compile"] == "blocks":
            selective_compile.compile_blocks(model, ("Gemma3DecoderLayer",), fullgraph=False)
            path.append("compiled-decoder-layers")
        return model, processor, "+".join(path)

    def before_batched_compile(self):
        if self.options["kernel_tuning"] == "one-row":  # the 8-row step compiles untuned
            selective_compile.tune_kernels(False)

    # Inputs are written out literally: `cog build` reads them from this file's source and resolves nothing
    # imported. tests/unit/test_inputs_contract.py holds them to shared/inputs.py.
    # Up to 8 requests at once, decoded together (shared/batch_decode.py); each keeps its own seed.
    @cog.concurrent(max=8)
    @cog.streaming
    async def run(
        self,
        image: Path = Input(description="Image to ask about (file or URL): PNG, JPEG or WebP."),
        prompt: str = Input(description="What to generate.", min_length=1),
        system_prompt: str = Input(default="", description="Instructions that set how the model answers, given as the chat's system message; empty keeps the model's own default."),
        max_new_tokens: int = Input(default=256, ge=1, le=8192, description="Maximum number of tokens to generate."),
        temperature: float = Input(default=0.7, ge=0.0, le=2.0, description="Sampling temperature; 0 picks the most likely token (greedy)."),
        top_p: float = Input(default=0.9, ge=0.0, le=1.0, description="Nucleus sampling: keep the smallest set of tokens whose probability adds up to top_p (0 = greedy)."),
        seed: Optional[int] = Input(default=None, ge=0, le=4294967295, description="Random seed for a repeatable result; leave empty for a random one (the seed used is reported in metrics.seed)."),
    ) -> AsyncConcatenateIterator[str]:
        picture = load_rgb(sent_file(image))
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        async for piece in self.stream(messages=messages, images=[picture], max_new_tokens=max_new_tokens,
                                       temperature=temperature, top_p=top_p, seed=seed, system_prompt=system_prompt):
            yield piece
