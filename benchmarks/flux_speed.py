"""FLUX speed: each optimization step of `shared.flux.optimize_transformer` measured alone and together, in one run.

    python benchmarks/bench.py flux-variants              # transformer step times per variant, component costs, profile

One process builds the txt2img deployment (synthetic weights, the LoRA slot attached, a style active, as a
request runs) and captures the transformer's real inputs at each size. Every variant is applied to its own
copy of the bf16 transformer, compiled, warmed up, then timed with CUDA events (median of `--repeats` steps).
The pipeline's other costs (T5, CLIP, VAE decode) are timed once each, so that an image's time is
steps x step + the rest. A profile of one step of each variant says where its step goes, and its output
against bf16 eager's on the same inputs what it costs in fidelity.
Results are written as they come (a variant that fails or runs out of time is recorded, not lost).
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch

# Variants in order: (label, options over the base {transformer: none, attention: native, compile: off}).
VARIANTS = [
    ("bf16 eager", {}),
    ("bf16 eager + cudnn attention", {"attention": "cudnn"}),
    ("bf16 compile dynamic (old default)", {"compile": "on", "shapes": "dynamic"}),
    ("bf16 compile dynamic + cudnn", {"compile": "on", "shapes": "dynamic", "attention": "cudnn"}),
    *[(f"fp8 per-{scales} compile {shapes} + cudnn",
       {"transformer": value, "compile": "on", "shapes": shapes, "attention": "cudnn"})
      for scales, value in (("tensor", "fp8"), ("row", "fp8-row")) for shapes in ("static", "dynamic")],
]
BASE = {"text_encoder": "none", "transformer": "none", "attention": "native", "compile": "off", "shapes": "dynamic",
        "kernel_tuning": "off", "warmup": "off"}


def cuda_median_ms(fn, repeats: int) -> float:
    """Median milliseconds of `fn` by CUDA events (by the wall clock without a GPU: the CPU smoke run)."""
    times = []
    for _ in range(repeats):
        if not torch.cuda.is_available():
            started = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - started))
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return round(statistics.median(times), 2)


def peak_gb() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def capture_transformer_inputs(runner, size: int) -> dict:
    """The keyword arguments the pipeline gives the transformer at one denoising step of this size."""
    seen = {}

    def hook(module, args, kwargs):
        seen.update({k: v.clone() if torch.is_tensor(v) else v for k, v in kwargs.items() if k != "return_dict"})

    handle = runner.pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        runner.generate_image({"prompt": "a lighthouse at dusk", "width": size, "height": size}, steps=1, guidance=3.5,
                              seed=1, route=runner.router.route("Anime"))
    finally:
        handle.remove()
    return seen


def component_costs(runner, size: int, repeats: int) -> dict:
    """What an image costs besides its denoising steps: prompt encoding (T5 bf16 and int8, CLIP) and VAE decode."""
    pipe = runner.pipe
    out = {}
    with torch.inference_mode():
        encode = lambda: pipe.encode_prompt(prompt="a lighthouse at dusk", prompt_2=None,  # noqa: E731
                                            max_sequence_length=runner.max_sequence_length)
        out["encode_prompt_bf16_ms"] = cuda_median_ms(encode, repeats)
        vae = pipe.vae
        latents = torch.randn(1, vae.config.latent_channels, size // 8, size // 8, device=vae.device, dtype=vae.dtype)
        decode = lambda: pipe.vae.decode(latents, return_dict=False)  # noqa: E731
        decode()
        out["vae_decode_ms"] = cuda_median_ms(decode, repeats)
        pipe.vae.to(memory_format=torch.channels_last)
        decode()
        out["vae_decode_channels_last_ms"] = cuda_median_ms(decode, repeats)
        pipe.vae.to(memory_format=torch.contiguous_format)
    from shared import quantize

    quantize.apply_int8_weight_only(pipe.text_encoder_2)  # the deployment's default T5
    with torch.inference_mode():
        encode()
        out["encode_prompt_t5_int8_ms"] = cuda_median_ms(encode, repeats)
    return out


def profile_step(transformer, inputs: dict) -> dict:
    """Where one step goes: CUDA time per kernel family (GEMMs, attention, the rest) from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    activity = ProfilerActivity.CUDA if torch.cuda.is_available() else ProfilerActivity.CPU
    with torch.inference_mode(), profile(activities=[activity]) as prof:
        transformer(**inputs)
        synchronize()
    families = {"gemm": 0.0, "attention": 0.0, "other": 0.0}
    top = []
    for event in prof.key_averages():
        us = event.device_time_total if torch.cuda.is_available() else event.self_cpu_time_total
        if us <= 0:
            continue
        name = event.key.lower()
        if any(k in name for k in ("flash", "fmha", "attention", "sdpa", "cudnn_generated")):
            families["attention"] += us
        elif any(k in name for k in ("gemm", "matmul", "scaled_mm", "sm90_xmma", "cutlass", "nvjet", "mm_")):
            families["gemm"] += us
        else:
            families["other"] += us
        top.append((us, event.key[:90], event.count))
    top.sort(reverse=True)
    return {"ms": {k: round(v / 1000, 2) for k, v in families.items()},
            "top_kernels": [{"ms": round(us / 1000, 2), "kernel": k, "calls": n} for us, k, n in top[:8]]}


def bench_flux_variants(args) -> dict:
    from shared import flux
    from tests.conftest import load_runner

    deadline = time.perf_counter() + args.budget_s
    os.environ["OPTIMIZE"] = "text_encoder=none,compile=off,warmup=off"
    runner = load_runner("flux-lora-txt2img")
    runner.setup()
    sizes = [int(s) for s in args.sizes.split(",")]
    inputs = {size: capture_transformer_inputs(runner, size) for size in sizes}
    master = runner.pipe.transformer  # bf16, with the LoRA slot holding the Anime style
    result = {"sizes": sizes, "repeats": args.repeats, "variants": {}, "components": {}}
    partial = Path(os.environ.get("OUT") or "/tmp") / "flux-variants-partial.json"

    def record():
        partial.write_text(json.dumps(result, indent=2))

    result["components"] = component_costs(runner, sizes[0], args.repeats)
    record()
    chosen = [v for v in VARIANTS if not args.only or any(o in v[0] for o in args.only.split(";"))]
    with torch.inference_mode():
        reference = master(**inputs[sizes[0]], return_dict=False)[0].float()  # bf16 eager, native attention
    for label, change in chosen:
        if time.perf_counter() > deadline:
            result["variants"][label] = {"skipped": "out of time"}
            continue
        torch._dynamo.reset()
        model = copy.deepcopy(master) if change else master  # every step changes its model in place
        row = {"options": change}
        try:
            started = time.perf_counter()
            applied = flux.optimize_transformer(model, {**BASE, **change})
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            with torch.inference_mode():
                for size in sizes:
                    model(**inputs[size])  # compiles (each size for static shapes)
                    synchronize()
                    row.setdefault("first_call_s", {})[size] = round(time.perf_counter() - started, 1)
                    started = time.perf_counter()
                for size in sizes:
                    step = lambda s=size, m=model: m(**inputs[s])  # noqa: E731
                    step()
                    row.setdefault("ms_per_step", {})[size] = cuda_median_ms(step, args.repeats)
                # Fidelity of one step against bf16 eager on the same inputs (the whole 28-step image:
                # the server benchmark).
                out = model(**inputs[sizes[0]], return_dict=False)[0].float()
                row["relative_error_vs_bf16_eager"] = float((out - reference).norm() / reference.norm())
            row["applied"] = applied
            row["peak_gpu_gb"] = peak_gb()
            row["profile"] = profile_step(model, inputs[sizes[0]])
            print(label, {k: v for k, v in row.items() if k != "profile"}, row["profile"]["ms"], flush=True)
        except Exception as error:  # noqa: BLE001 - one variant failing must not lose the others
            row["error"] = repr(error)[:500]
            print(label, "FAILED", row["error"], flush=True)
        result["variants"][label] = row
        if model is not master:
            del model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        record()
    steps = 28
    rest = result["components"]
    for row in result["variants"].values():
        if "ms_per_step" in row:
            row["modelled_image_s_28_steps"] = {
                size: round((steps * ms + rest["encode_prompt_t5_int8_ms"] + rest["vae_decode_ms"]) / 1000, 3)
                for size, ms in row["ms_per_step"].items()}
    return result
