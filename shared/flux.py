"""The FLUX base runner shared by the text-to-image and image-to-image deployments.

setup(): load the pipeline for the weight profile, load every style LoRA once, prepare the hot-swap
slot, then `optimize()`. run() (in the subclasses): route the trigger word, hot-swap, generate, save.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from cog import BaseRunner

from . import catalog, compile as selective_compile, compile_cache, options as opts, quantize, step_cache, user_lora
from . import fused_qkv, url_input, weights
from .builders import flux as flux_builder
from .builders.loras import STANDIN_VERSION, write_random_lora
from .graphed_step import GraphedForward
from .images import png_text, save, to_pil
from .lora_router import SLOT, LoraTriggerRouter, load_normalized
from .runtime import (SEED_MAX, InputError, Phases, cache_dir, explain_oom, gpu_memory_gb, log_event, peak_memory_gb,
                      resolve_seed, return_freed_memory, seed_everything, select_device)

# Sizes: FLUX packs 2x2 latent patches over an 8x VAE, so sides must be multiples of 16.
SIZE_MULTIPLE = 16
MIN_SIDE, MAX_SIDE = 256, 1440
# Sizes made once in setup: the inputs' default and FLUX's one-megapixel square (aspect_ratio 1:1). Each gets
# its CUDA graph there (0.3-0.5 s each), not in a user's request; other sizes capture theirs on first use.
WARMUP_SIZES = ((768, 768), (1024, 1024))
MAX_OUTPUTS = 4  # images per request (num_outputs); shared/images.py keeps at least this many on disk
MAX_CHARS_PER_TOKEN = 32  # longer than any piece of T5's sentencepiece vocabulary
VAE_TILE_PX = 512  # vae=tiled: a quarter of a 1024x1024 decode's activations per tile

OPTIONS = {
    # T5-XXL is 9.5 GB in bf16 and runs once per request: int8 weights halve it at a negligible cost.
    "text_encoder": opts.Option("int8", "none", ("none", "int8"), "quantize T5 (memory)"),
    # fp8 halves the transformer's weights and runs its GEMMs on fp8 tensor cores (measured 2x faster than
    # bf16's on an H200); only compiled, and only with CUDA graphs is it faster end to end (see cuda_graphs).
    # Per-row scales: the same GPU time as per-tensor (its activation amax is one fused pass, not two) and
    # less Python per call. "auto" picks by GPU: fp8-row on Hopper and newer, per-tensor fp8 on Ada, bf16 before.
    # nf4 (bitsandbytes 4-bit) is the low-memory mode: the transformer is quantized as it is loaded, one layer
    # at a time, so a 24 GB GPU never holds its 24 GB of 16-bit weights; "auto" picks it on such cards.
    # fp8-static: per-tensor scales, the activations' fixed by a calibration run at setup (no amax pass per
    # GEMM; shared/quantize.apply_float8_static): 3.2% faster through the server (H100, 2026-12-05); opt-in
    # until its fidelity is measured on trained weights (an activation beyond the calibrated range saturates).
    "transformer": opts.Option("auto", "none", ("auto", "none", "fp8", "fp8-row", "fp8-static", "int8", "nf4"),
                               "quantize the FLUX transformer (fp8: per-tensor scales; fp8-row: per-row; fp8-static: "
                               "per-tensor, calibrated at setup; nf4: 4-bit, low memory; auto: by GPU)"),
    # Q, K and V (and the text stream's) projections as one GEMM each, the LoRA slot fused with them
    # (shared/fused_qkv.py): the input is read, and with fp8 quantized, once instead of three times. Opt-in
    # until measured; not with nf4 (its layers are 4-bit before the optimizations run).
    "fuse_qkv": opts.Option("off", "off", ("on", "off"), "fuse each attention's Q, K, V projections, LoRA slot included"),
    # Regional compile of the repeated transformer blocks: 21 s once instead of a whole-model compile
    # that did not finish in 6 minutes; hot-swapped LoRAs never trigger a recompile.
    "compile": opts.Option("on", "off", ("on", "off"), "torch.compile the transformer blocks"),
    # torch's default ("auto") specializes the graph to the first size and recompiles, size-generic, on
    # the first new one: a user request pays that. "dynamic" compiles the size-generic graph in setup,
    # which matters most for img2img, whose size follows each input image. "static" compiles one graph
    # per size (each new size compiles once, in the request that brings it).
    "shapes": opts.Option("dynamic", "dynamic", ("dynamic", "auto", "static"),
                          "compile for any image size up front, on first change, or once per size"),
    # Coordinate-descent tuning of every Inductor kernel: 240 s more boot (py-spy, H100, cold) for
    # kernels that are mostly large matmuls already picked by cuBLAS: off unless measured to pay.
    "kernel_tuning": opts.Option("off", "off", ("off", "on"), "coordinate-descent tuning of compiled kernels (boot time)"),
    # The whole denoising step replayed as one CUDA graph per image size (shared/graphed_step.py): the
    # Python between compiled blocks and the unwrapping of fp8 weights left the GPU idle 10-35% of a step.
    # shared-pool: every size's graph in one memory pool. Measured through the server (H100, 2026-12-05): the
    # serving peak stayed 18.95 GB, so the graphs' pools are not the 17 GB target's gap; opt-in.
    "cuda_graphs": opts.Option("on", "off", ("on", "off", "shared-pool"),
                               "replay the transformer step as a CUDA graph (shared-pool: one memory pool for all sizes)"),
    # The VAE decode is the serving peak's top: +2.38 GiB above the 16.37 the models hold at 1024x1024, +1.34 at
    # 768 (bench.py flux-memory, H100, 2026-12-05). Decoding in overlapping tiles of VAE_TILE_PX bounds it by the
    # tile's size (diffusers' tiled decode, seams blended), at the cost of the overlap's extra decoding.
    "vae": opts.Option("full", "full", ("full", "tiled"), f"VAE decode in one pass, or in {VAE_TILE_PX}px tiles (memory)"),
    # One short generation in setup() so the first user request does not pay for compilation.
    "warmup": opts.Option("on", "off", ("on", "off"), "generate once at setup"),
}


def optimize(pipe, chosen: dict[str, str], calibrate=None, router=None) -> list[str]:
    """Apply the chosen optimizations in a fixed order; returns the names of those applied. `calibrate` runs
    the pipeline on representative inputs (transformer=fp8-static observes its activations' ranges then);
    `router`, the LoRA router whose slot fuse_qkv moves."""
    applied = []
    if chosen["text_encoder"] == "int8":
        quantize.apply_int8_weight_only(pipe.text_encoder_2)
        applied.append("text_encoder:int8")
    if chosen.get("vae") == "tiled":
        tile_vae_decode(pipe.vae, VAE_TILE_PX)
        applied.append("vae:tiled")
    return applied + optimize_transformer(pipe.transformer, chosen, calibrate, router)


def tile_vae_decode(vae, tile_px: int) -> None:
    """diffusers' tiled decode for images larger than `tile_px` on a side. Its tile defaults to the VAE's
    config sample_size, which is FLUX's 1024: no tiling up to the largest common size, hence set here, in
    latent pixels through the VAE's own scale factor."""
    vae.enable_tiling()
    vae.tile_sample_min_size = tile_px
    vae.tile_latent_min_size = tile_px // 2 ** (len(vae.config.block_out_channels) - 1)


def not_lora(module, name: str) -> bool:
    """The layers a quantization takes: LoRA adapters (lora_A/lora_B) stay 16-bit, only the frozen base layers
    are quantized, so hot-swapping keeps copying plain tensors."""
    return "lora_" not in name


def optimize_transformer(transformer, chosen: dict[str, str], calibrate=None, router=None) -> list[str]:
    """The transformer's own steps, in order: quantize, compile, CUDA graphs (benchmarks apply them to copies,
    with no router)."""
    applied = []
    if chosen.get("fuse_qkv") == "on":
        if chosen["transformer"] == "nf4":
            log_event("fuse_qkv", skipped="the nf4 transformer's layers are 4-bit already")
        else:  # before quantization: the fused layers are quantized as one
            fused_qkv.fuse_qkv(transformer, SLOT)
            if router is not None:
                router.find_slot(transformer)  # the slot's tensors are views into the fused layers now
            applied.append("fuse_qkv")
    if chosen["transformer"] == "nf4":
        applied.append("transformer:nf4")  # quantized while loading (FluxLoraRunner.setup)
    elif chosen["transformer"] != "none":
        if chosen["transformer"] == "fp8-static":
            if calibrate is None:
                raise ValueError("transformer=fp8-static needs a calibration run (optimize(..., calibrate=))")
            quantize.apply_float8_static(transformer, calibrate, filter_fn=not_lora)
        elif chosen["transformer"] == "int8":
            quantize.apply_int8_weight_only(transformer, filter_fn=not_lora)
        else:
            granularity = "row" if chosen["transformer"] == "fp8-row" else "tensor"
            quantize.apply_float8(transformer, filter_fn=not_lora, granularity=granularity)
        applied.append(f"transformer:{chosen['transformer']}")
    if chosen["compile"] == "on":
        backend = selective_compile.default_backend()
        selective_compile.tune_kernels(chosen["kernel_tuning"] == "on")
        # diffusers' regional compile: compiles each repeated block class once (FluxTransformerBlock,
        # FluxSingleTransformerBlock) and reuses it for all 57 blocks.
        shapes = chosen["shapes"]
        if shapes == "dynamic":
            from torch.fx.experimental import _config as fx_config

            # Without this, equal sizes share one symbol (512 text tokens and 512 image tokens, say), and
            # the first request that breaks the equality recompiles.
            fx_config.use_duck_shape = False
        dynamic = {"dynamic": True, "static": False, "auto": None}[shapes]
        transformer.compile_repeated_blocks(fullgraph=True, backend=backend, dynamic=dynamic)
        log_event("compile", scope="transformer.repeated_blocks", backend=backend, shapes=shapes)
        applied.append({"dynamic": "compile:dynamic", "static": "compile:static", "auto": "compile"}[shapes])
        if chosen["kernel_tuning"] == "on":
            applied.append("kernel_tuning")
    if chosen["cuda_graphs"] != "off" and torch.cuda.is_available():
        shared = chosen["cuda_graphs"] == "shared-pool"
        GraphedForward(transformer, name="flux.transformer", shared_pool=shared)
        applied.append("cuda_graphs:shared-pool" if shared else "cuda_graphs")
    return applied


# GiB below which "auto" takes the low-memory mode: the fp8 default's setup holds the 16-bit transformer and its
# fp8 copy at once (31.9 GB peak, H200, 2026-12-04), and the bf16 path serves at 28.3 GB (H100).
LOW_MEMORY_BELOW_GB = 34


def transformer_precision(choice: str) -> str:
    """The transformer option with "auto" resolved for this GPU. Measured: fp8-row on an H100/H200 (Hopper).
    Inferred, not measured: Ada (L40S, RTX 4090) gets per-tensor fp8, whose plain cuBLAS GEMM it has for sure;
    Ampere (A100, RTX 3090) has no fp8 tensor cores and stays in bf16. A GPU with less than LOW_MEMORY_BELOW_GB
    (a 24 GB card; or GPU_MEMORY_LIMIT_GB) gets nf4, whatever its generation."""
    if choice != "auto":
        return choice
    if not torch.cuda.is_available():
        return "none"
    if gpu_memory_gb() < LOW_MEMORY_BELOW_GB:
        return "nf4"
    major_minor = torch.cuda.get_device_capability()
    return "fp8-row" if major_minor >= (9, 0) else "fp8" if major_minor >= (8, 9) else "none"


class FluxLoraRunner(BaseRunner):
    """Base for the FLUX deployments; subclasses set `deployment` and `pipeline_class` and define run()."""

    deployment: str
    pipeline_class: str  # a diffusers pipeline class name

    @classmethod
    def option_spec(cls) -> dict[str, opts.Option]:
        """Every OPTIMIZE switch of this deployment."""
        return OPTIONS

    def setup(self) -> None:
        import diffusers

        started, phases = time.perf_counter(), Phases(announce="setup.phase")
        self.dep = catalog.get(self.deployment)
        self.hw = select_device()
        self.options = opts.resolve(self.option_spec(), cuda=self.hw.is_cuda)
        self.options["transformer"] = transformer_precision(self.options["transformer"])
        url_input.limit_cog_file_inputs(type(self))  # Cog fetches an `image` URL before run(): bound it
        cache_key = compile_cache.key(self.options)
        with phases("weights"):
            self.source = weights.for_deployment(self.dep, wanted=compile_cache.wanted_files(self.dep.name, cache_key))
        self.pipeline_cls = getattr(diffusers, self.pipeline_class)
        # Low memory (transformer=nf4): the 16-bit transformer is loaded into host memory (after the rest has gone
        # to the GPU), and goes to the GPU in 4 bits after the LoRA slot is in place, one layer at a time.
        low_memory = self.options["transformer"] == "nf4"
        with phases("load"):
            self.pipe = flux_builder.load(self.dep, self.source, device=self.hw.device, dtype=self.hw.dtype,
                                          pipeline_cls=self.pipeline_cls,
                                          transformer_device="cpu" if low_memory else None)
            for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
                getattr(self.pipe, name).eval()  # built-from-config models start in train mode (dropout)
            self.pipe.set_progress_bar_config(disable=True)
            self.max_sequence_length = flux_builder.max_sequence_length(self.source)
        with phases("loras"):
            self.router = LoraTriggerRouter(self.dep.loras)
            self.router.attach(self.pipe, self._load_loras(), target_rank=self.dep.lora_target_rank)
            self.user_loras = user_lora.AdapterCache()
        if low_memory:
            with phases("to_gpu_4bit"):
                quantize.to_device_nf4(self.pipe.transformer, self.hw.device, compute_dtype=self.hw.dtype,
                                       filter_fn=not_lora)
                self.pipe.to(self.hw.device)
                self.router.to_device()
        with phases("compile_cache"):
            compile_cache.load(self.source.local_path, self.dep.name, cache_key)
        with phases("optimize"):
            applied = optimize(self.pipe, self.options, calibrate=self._calibrate, router=self.router)
        if self.options["warmup"] == "on":
            with phases("warmup"):  # where compilation happens
                self._warmup()
        compile_cache.save(self.dep.name, cache_key)
        log_event("setup.done", deployment=self.dep.name, weights=self.source.describe(), device=self.hw.device,
                  dtype=str(self.hw.dtype), optimizations=applied, options=self.options, phases=phases.seconds,
                  compile_cache=compile_cache.stats(),
                  seconds=round(time.perf_counter() - started, 2), peak_gpu_gb=peak_memory_gb(reset=True))

    def _load_loras(self) -> dict[str, dict[str, torch.Tensor]]:
        adapters = {}
        for index, lora in enumerate(self.dep.loras):
            if self.source.is_random:
                # Stand-in adapters of the real layout; big enough to visibly change the tiny model.
                folder = cache_dir() / f"loras-v{STANDIN_VERSION}-{self.source.profile.value}-{self.hw.device}"
                location = write_random_lora(self.pipeline_cls, self.pipe.transformer, lora, index, folder,
                                             magnitude=4.0 if self.source.tiny else 1.0)
                kwargs = {"weight_name": lora.weight_name}
            else:
                location, kwargs = self.source.lora_location(lora)
            adapters[lora.name] = load_normalized(self.pipeline_cls, str(location), lora, **kwargs)
        return adapters

    def _warmup(self) -> None:
        """Run every shape users get by default once, so compilation happens here, not in a request."""
        started = time.perf_counter()
        for width, height in WARMUP_SIZES:
            self.generate_image(self.warmup_inputs(width, height), steps=2, guidance=3.5, seed=0,
                                route=self.router.route(None))
        log_event("warmup.done", seconds=round(time.perf_counter() - started, 2), sizes=WARMUP_SIZES)

    def _calibrate(self) -> None:
        """The activations fp8-static's scales are fixed from: both warm-up sizes, 4 steps each (high and low
        noise), the base model and one style (an adapter changes what later layers read)."""
        for route in (self.router.route(None), self.router.route(self.dep.loras[0].triggers[0])):
            for width, height in WARMUP_SIZES:
                self.generate_image(self.warmup_inputs(width, height), steps=4, guidance=3.5, seed=0, route=route)
        self.router.activate(self.router.route(None))

    def warmup_inputs(self, width: int, height: int) -> dict:
        raise NotImplementedError

    def generate_image(self, call: dict, *, steps: int, guidance: float, seed: int, route, lora_scale: float = 1.0,
                       go_fast: dict | None = None):
        """One generation with the route's adapter hot-swapped in; `call` holds the task's own arguments.
        With `go_fast` (a dict), the transformer skips the steps the first-block cache finds alike
        (shared/step_cache.py), and the dict gets the steps computed and skipped."""
        started = time.perf_counter()
        swapped = self.router.activate(route, lora_scale)  # before the cache wraps the blocks: it finds them by name
        if swapped:
            log_event("lora.swapped", adapter=route.adapter, scale=lora_scale,
                      ms=round(1000 * (time.perf_counter() - started), 1))
        generator = seed_everything(seed)
        cache = step_cache.first_block_cache(self.pipe.transformer) if go_fast is not None else contextlib.nullcontext()
        as_pil = "output_type" not in call  # a caller's own output_type (benchmarks: "np") is kept
        with explain_oom("width/height or num_inference_steps"), torch.inference_mode(), cache as state:
            result = self.pipe(
                num_inference_steps=steps, guidance_scale=guidance, generator=generator,
                max_sequence_length=self.max_sequence_length, **({"output_type": "pt"} if as_pil else {}), **call,
            )
            image = to_pil(result.images[0]) if as_pil else result.images[0]  # 8-bit pixels made on the GPU
        if go_fast is not None:
            go_fast.update(steps_computed=state.computed, steps_skipped=state.skipped, threshold=state.threshold)
        return image, swapped

    def encode_prompt(self, prompt: str) -> dict:
        """The prompt as the transformer reads it (T5's sequence, CLIP's pooled vector), for the pipeline's
        prompt_embeds: the same tensors the pipeline would compute from `prompt` (the LoRAs touch only the
        transformer, so they do not change with the style)."""
        with explain_oom("prompt"), torch.inference_mode():
            prompt_embeds, pooled, _ = self.pipe.encode_prompt(prompt=prompt, prompt_2=None, device=self.pipe.device,
                                                               max_sequence_length=self.max_sequence_length)
        return {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}

    def route(self, trigger_word: str | None, lora_weights: str | None):
        """A style by trigger word, or the user's own LoRA (downloaded, checked, kept ready), or the base model."""
        if not lora_weights:
            return self.router.route(trigger_word)
        if trigger_word and trigger_word.strip():
            raise InputError("lora_weights", "use either trigger_word (a built-in style) or lora_weights (your own LoRA), "
                                             "not both")
        path = self.user_loras.fetch(lora_weights)
        return self.router.route_user(path.name, lambda: user_lora.read_adapter(self.pipeline_cls, path, self.router.shapes,
                                                                               self.router.rank))

    def check_prompt_length(self, prompt: str) -> None:
        """T5 reads at most max_sequence_length tokens; a longer prompt would lose its end without a word
        (diffusers truncates), so it is refused. Characters first: a 10 MB prompt held the slot 80 s in
        the tokenizer alone (no T5 token spans more than MAX_CHARS_PER_TOKEN characters)."""
        limit = self.max_sequence_length
        if len(prompt) > MAX_CHARS_PER_TOKEN * limit:
            raise InputError("prompt", f"has {len(prompt)} characters; FLUX reads at most {limit} T5 tokens "
                                       f"(a few thousand characters): shorten it")
        tokens = len(self.pipe.tokenizer_2(prompt, truncation=False).input_ids)
        if tokens > limit:
            raise InputError("prompt", f"has {tokens} T5 tokens (with the trigger word); FLUX reads at most {limit}: "
                                       "shorten it")

    def generation_parameters(self, route, lora_scale: float, steps: int, guidance: float, seed: int, image,
                              call: dict) -> dict:
        """What made this image, for its PNG text (a user's LoRA by its cache key, never its URL: it may be signed)."""
        lora = f"user {route.user}" if route.user else route.label
        # FLUX.1-dev's guidance is distilled (an input of the model, no second pass): written as Forge writes it.
        parameters = {"Steps": steps, "Sampler": "FlowMatchEulerDiscrete", "CFG scale": 1, "Distilled CFG Scale": guidance,
                      "Seed": seed,
                      "Size": f"{image.width}x{image.height}",
                      "Model": f"{self.dep.checkpoint.repo_id}@{self.dep.checkpoint.revision}",
                      "Weights": self.source.profile.value, "Lora": lora, "Lora scale": lora_scale}
        if route.lora:
            parameters["Lora revision"] = f"{route.lora.repo_id}@{route.lora.revision}"
        if "strength" in call:
            parameters["Denoising strength"] = call["strength"]
        return parameters

    def run_and_save(self, *, prompt: str, trigger_word: str | None, seed: int | None, steps: int,
                     guidance: float, output_format: str, output_quality: int, call: dict, report: dict,
                     lora_weights: str | None = None, lora_scale: float = 1.0, num_outputs: int = 1,
                     go_fast: bool = False) -> list[Path]:
        """Route, generate, save and report: the body both FLUX deployments share.

        `num_outputs` images are made one after another, image i with seed + i: each is the image a request
        with that seed alone gives (byte for byte), through the step already compiled and graphed for its size.
        A batch of them would add shapes (a graph and its memory per batch size) and change the numerics with
        the batch, for little speed: at FLUX's sizes a single image already fills the GPU's matmuls."""
        started, phases = time.perf_counter(), Phases()  # where the request's time goes, in predict.end
        with phases("route"):
            route = self.route(trigger_word, lora_weights)
            prompt = route.apply_to(prompt)  # the trigger's template around the user's text: what the model reads
            self.check_prompt_length(prompt)
        steps, num_outputs = int(steps), int(num_outputs)  # the server passes integral floats (2.0) as they came
        seed = resolve_seed(seed)
        seeds = [(seed + i) % (SEED_MAX + 1) for i in range(num_outputs)]
        log_event("predict.start", deployment=self.dep.name, trigger=route.trigger, adapter=route.adapter,
                  lora_scale=lora_scale, seeds=seeds, steps=steps, go_fast=go_fast, **report)
        paths, swaps, skipped = [], [], []
        with phases("encode"):
            encoded = self.encode_prompt(prompt)  # T5 and CLIP once for all the images (60-88 ms of T5 each time)
        for image_seed in seeds:
            cache = {} if go_fast else None
            with phases("generate"):  # swap, denoise, VAE decode, to PIL (which waits for the GPU)
                image, swapped = self.generate_image({**encoded, **call}, steps=steps, guidance=guidance,
                                                     seed=image_seed, route=route, lora_scale=lora_scale, go_fast=cache)
            parameters = self.generation_parameters(route, lora_scale, steps, guidance, image_seed, image, call)
            if go_fast:
                skipped.append(cache["steps_skipped"])
                parameters["First block cache"] = f"threshold {cache['threshold']}, {cache['steps_skipped']} steps skipped"
            with phases("save"):
                paths.append(save(image, output_format, output_quality, pnginfo=png_text(parameters, prompt)))
            swaps.append(swapped)
        seconds = round(time.perf_counter() - started, 3)
        go_fast_metrics = {"go_fast_steps_skipped": skipped} if go_fast else {}
        for key, value in {"image_count": len(paths), "seed": seed, "seeds": seeds, "width": image.width,
                           "height": image.height, "lora": route.label, **go_fast_metrics, **report}.items():
            self.record_metric(key, value)
        size = f"{image.width}x{image.height}"
        del image, call  # the last output and the decoded input, before the heap is trimmed
        log_event("predict.end", deployment=self.dep.name, seconds=seconds, phases=phases.seconds, hot_swapped=any(swaps),
                  outputs=[str(p) for p in paths], bytes=sum(p.stat().st_size for p in paths), size=size,
                  peak_gpu_gb=peak_memory_gb(), memory_returned=return_freed_memory())
        return paths
