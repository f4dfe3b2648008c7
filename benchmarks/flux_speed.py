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

import contextlib
import copy
import functools
import io
import json
import os
import statistics
import time
from pathlib import Path

import torch

from shared.runtime import peak_memory_gb

# Variants in order: (label, options over BASE: bf16, eager, no graphs). The first run
# (2026-12-04, H200) also had cuDNN attention: torch 2.11 already picks cuDNN's kernel for FLUX, so no change.
VARIANTS = [
    ("bf16 eager", {}),
    ("bf16 compile dynamic (old default)", {"compile": "on"}),
    ("bf16 compile dynamic + graphs", {"compile": "on", "cuda_graphs": "on"}),
    ("fp8 per-row compile dynamic + graphs", {"transformer": "fp8-row", "compile": "on", "cuda_graphs": "on"}),
    ("fp8 per-tensor compile dynamic + graphs", {"transformer": "fp8", "compile": "on", "cuda_graphs": "on"}),
    ("fp8 per-row compile dynamic", {"transformer": "fp8-row", "compile": "on"}),
    ("fp8 per-row compile static + graphs", {"transformer": "fp8-row", "compile": "on", "shapes": "static",
                                              "cuda_graphs": "on"}),
    ("fp8 per-row + fused QKV, compile dynamic + graphs", {"transformer": "fp8-row", "fuse_qkv": "on", "compile": "on",
                                                           "cuda_graphs": "on"}),
    # Calibrated here on the one step it is timed and judged on: its error is a lower bound (the server's
    # calibration runs whole generations at setup).
    ("fp8 static per-tensor compile dynamic + graphs", {"transformer": "fp8-static", "compile": "on",
                                                        "cuda_graphs": "on"}),
]
BASE = {"text_encoder": "none", "transformer": "none", "fuse_qkv": "off", "compile": "off", "shapes": "dynamic",
        "kernel_tuning": "off", "cuda_graphs": "off", "warmup": "off"}


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


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def capture_transformer_inputs(runner, size: int) -> dict:
    """The keyword arguments the pipeline gives the transformer at one denoising step of this size."""
    seen = {}

    def hook(module, args, kwargs):
        seen.update({k: v.clone() if torch.is_tensor(v) else v for k, v in kwargs.items()})

    handle = runner.pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        runner.generate_image({"prompt": "a lighthouse at dusk", "width": size, "height": size}, steps=1, guidance=3.5,
                              seed=1, route=runner.router.route("Anime"))
    finally:
        handle.remove()
    assert seen.get("return_dict") is False, "the pipeline asks for the tuple form (what CUDA graphs serve)"
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
    def calibrate(model):  # fp8-static's activation ranges: one step of each size
        with torch.inference_mode():
            for size in sizes:
                model(**inputs[size])

    from shared import flux
    from tests.conftest import load_runner

    deadline = time.perf_counter() + args.budget_s
    os.environ["OPTIMIZE"] = ",".join(f"{k}={v}" for k, v in BASE.items())  # the plain pipeline: every step off
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
        reference = master(**inputs[sizes[0]])[0].float()  # bf16 eager, native attention
    for label, change in chosen:
        if time.perf_counter() > deadline:
            result["variants"][label] = {"skipped": "out of time"}
            continue
        torch._dynamo.reset()
        model = copy.deepcopy(master) if change else master  # every step changes its model in place
        row = {"options": change}
        try:
            started = time.perf_counter()
            applied = flux.optimize_transformer(model, {**BASE, **change}, functools.partial(calibrate, model))
            peak_memory_gb(reset=True)
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
                out = model(**inputs[sizes[0]])[0].float()
                row["relative_error_vs_bf16_eager"] = float((out - reference).norm() / reference.norm())
            row["applied"] = applied
            row["peak_gpu_gb"] = peak_memory_gb()
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
    if args.end_to_end and time.perf_counter() < deadline + args.end_to_end_s:
        torch._dynamo.reset()
        result["end_to_end"] = end_to_end(runner, dict(VARIANTS)[args.end_to_end], args)
        record()
    steps = 28
    rest = result["components"]
    for row in result["variants"].values():
        if "ms_per_step" in row:
            row["modelled_image_s_28_steps"] = {
                size: round((steps * ms + rest["encode_prompt_t5_int8_ms"] + rest["vae_decode_ms"]) / 1000, 3)
                for size, ms in row["ms_per_step"].items()}
    return result


def psnr(a, b) -> float:
    """PSNR of two images with pixels in [0, 1], in dB (higher is closer; inf = identical)."""
    import numpy as np

    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return round(10 * np.log10(1.0 / mse), 2) if mse > 0 else float("inf")


def end_to_end(runner, change: dict, args) -> dict:
    """One variant applied to the deployment's own pipeline (int8 T5, the LoRA slot): whole images at both
    sizes, the fidelity of a whole 28-step image against bf16 eager, and LoRA swaps through the graphs."""
    import numpy as np

    from shared import flux

    anime, router = runner.router.route("Anime"), runner.router
    out = {"variant": change, "repeats": args.repeats_images}

    def image(size: int, steps: int, route=anime, **extra):
        # As a request reads it: the trigger's template around the text (styles of one LoRA differ by it alone).
        call = {"prompt": route.apply_to("a lighthouse at dusk"), "width": size, "height": size, "output_type": "np", **extra}
        return runner.generate_image(call, steps=steps, guidance=3.5, seed=1, route=route)[0]

    reference = image(1024, 28)  # bf16 eager transformer, same weights, seed and T5
    out["applied"] = flux.optimize_transformer(runner.pipe.transformer, {**BASE, **change}, runner._calibrate,
                                               runner.router)
    started = time.perf_counter()
    for size in (1024, 768):
        image(size, 2)  # compiles and captures each size's graph
    out["compile_and_capture_s"] = round(time.perf_counter() - started, 1)
    fast = image(1024, 28)
    out["fidelity_1024_28_steps"] = {"psnr_db": psnr(fast, reference),
                                     "relative_error": float(np.linalg.norm(fast - reference) / np.linalg.norm(reference)),
                                     "finite": bool(np.isfinite(fast).all() and np.isfinite(reference).all())}
    for size, steps in ((1024, 28), (768, 30)):
        peak_memory_gb(reset=True)
        seconds = [cuda_median_ms(lambda s=size, n=steps: image(s, n), 1) / 1000 for _ in range(args.repeats_images)]
        out[f"{size}_{steps}_steps"] = {"seconds": seconds, "median_s": round(statistics.median(seconds), 3),
                                        "peak_gpu_gb": peak_memory_gb()}
        print("end to end", size, steps, out[f"{size}_{steps}_steps"], flush=True)
    # Hot-swaps through the graph: every style gives other pixels, a style comes back the same, and the
    # graph's pixels are the eager forward's.
    swaps, pixels = {}, {}
    for label in ("Anime", "GHIBSKY", "Pixel art", "none", "Anime again"):
        route = router.route(None if label == "none" else label.replace(" again", ""))
        started = time.perf_counter()
        router.activate(route)
        swaps[label] = round(1000 * (time.perf_counter() - started), 1)
        pixels[label] = image(768, 4, route=route)
    out["swap_ms"] = swaps
    labels = list(pixels)[:-1]
    out["styles_differ"] = all(not np.array_equal(pixels[a], pixels[b]) for i, a in enumerate(labels) for b in labels[i + 1:])
    out["style_comes_back_identical"] = bool(np.array_equal(pixels["Anime"], pixels["Anime again"]))
    graphed = runner.pipe.transformer.forward
    if hasattr(graphed, "remove"):
        graphed.remove()
        eager = image(768, 4)
        out["graph_vs_eager_max_abs_diff"] = float(np.abs(eager - pixels["Anime again"]).max())
    print("end to end", {k: v for k, v in out.items() if not k[0].isdigit()}, flush=True)
    return out


# Through the Cog server, as users call it: the old default (bf16, regional compile) against the new one.
SERVER_CONFIGS = {"old default (bf16 + compile)": "transformer=none,cuda_graphs=off", "new default": ""}


def _predict(server, logs: list[str], inputs: dict) -> dict:
    """One prediction's body; its logs (where the worker's events are) kept."""
    body = server.predict(inputs).json()
    logs.append(body.get("logs") or "")
    return body


def bench_flux_server(args) -> dict:
    """predict_time of each figure the issue names, per configuration, each server booted in this run:
    txt2img 1024/28 and 768/30, img2img 1024 strength 0.7/28, every style and none through the slot
    (swap ms and recompiles from the server's log), peak GPU memory as the worker reports it."""
    from PIL import Image

    from shared import catalog
    from shared.cogserver import to_data_uri

    work = Path(os.environ.get("OUT") or "/tmp")
    photo = Path("/tmp/bench-photo.png")
    Image.new("RGB", (1024, 1024), "teal").save(photo)
    triggers = [t for lora in catalog.STYLE_LORAS for t in lora.triggers]
    cases = {
        "flux-lora-txt2img": {
            "1024x1024_28_steps": {"prompt": "a lighthouse at dusk", "width": 1024, "height": 1024,
                                   "num_inference_steps": 28, "seed": 1, "trigger_word": "Anime"},
            "768x768_30_steps": {"prompt": "a lighthouse at dusk", "width": 768, "height": 768,
                                 "num_inference_steps": 30, "seed": 1, "trigger_word": "Anime"},
        },
        "flux-lora-img2img": {
            "1024x1024_strength_0.7_28_steps": {"prompt": "a lighthouse at dusk", "image": to_data_uri(photo),
                                                "strength": 0.7, "num_inference_steps": 28, "seed": 1,
                                                "trigger_word": "Anime"},
        },
    }
    configs = dict(item.split("=", 1) for item in args.configs.split(";")) if args.configs else SERVER_CONFIGS
    user_lora_files = contextlib.ExitStack()
    args.user_lora_url = user_lora_url(user_lora_files, work, tiny=os.environ["WEIGHT_PROFILE"] == "tiny")
    result = {"repeats": args.repeats, "configs": configs, "gpu_memory_limit_gb": args.gpu_memory_gb, "deployments": {}}
    for name in args.deployments.split(","):
        for config, optimize in configs.items():
            env = {"WEIGHT_PROFILE": os.environ["WEIGHT_PROFILE"], "TORCH_LOGS": "recompiles", "OPTIMIZE": optimize}
            if args.gpu_memory_gb:  # the server behaves as a GPU of this size would (shared/runtime.py)
                env["GPU_MEMORY_LIMIT_GB"] = str(args.gpu_memory_gb)
            label = f"{name}-{''.join(c if c.isalnum() else '_' for c in config)}"
            row = result["deployments"].setdefault(name, {}).setdefault(config, {})
            wanted = {case: inputs for case, inputs in cases[name].items() if not args.only or args.only in case}
            try:
                serve_config(name, config, env, work / f"server-{label}.log", wanted, row, args, triggers)
            except Exception as e:  # recorded, not lost: the next configuration still runs
                row["error"] = f"{type(e).__name__}: {e}"[:2000]
            print(name, config, {k: v for k, v in row.items() if k != "setup"}, flush=True)
            (work / "flux-server-partial.json").write_text(json.dumps(result, indent=2))
    user_lora_files.close()
    return result


def user_lora_url(stack: contextlib.ExitStack, work: Path, tiny: bool = False) -> str:
    """A user's LoRA as users send one: an http URL of a diffusers-format file, here served from this process.
    Rank 16 (the slot's rank) on every block's attention projections of the FLUX transformer (the tiny one for
    the tiny profile), whose layer shapes come from its config on the meta device (no weights are made)."""
    from diffusers import FluxTransformer2DModel

    from shared import catalog
    from shared.builders import flux as flux_builder
    from tests.mirror_server import MirrorServer
    from tests.unit.test_user_lora import lora_bytes

    with torch.device("meta"):
        shapes = FluxTransformer2DModel(**flux_builder.transformer_config(catalog.get("flux-lora-txt2img"), tiny=tiny))
    files = stack.enter_context(MirrorServer(work / "user-lora", prefix="/files"))
    return files.add("user.safetensors", lora_bytes(shapes, rank=16))


def go_fast_figures(predict, inputs: dict, exact: dict, repeats: int) -> dict:
    """The same request with go_fast: its predict_time, the steps it skipped, and how far its image is from
    the exact path's (same seed; PSNR over pixels in [0, 1], higher is closer; inf = identical)."""
    import numpy as np

    from shared.cogserver import from_data_uri

    def pixels(body):
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(from_data_uri(body["output"][0])[1])).convert("RGB")) / 255.0

    bodies = [predict({**inputs, "go_fast": True}) for _ in range(repeats + 1)]
    assert all(b["status"] == "succeeded" for b in bodies), [b.get("error") for b in bodies]
    times = [b["metrics"]["predict_time"] for b in bodies[1:]]
    return {"predict_time_s": times, "median_s": round(statistics.median(times), 3),
            "steps_skipped": bodies[-1]["metrics"]["go_fast_steps_skipped"],
            "psnr_db_vs_exact": psnr(pixels(bodies[-1]), pixels(exact))}


def median_phases(logs: list[str]) -> dict:
    """The median seconds of each phase the worker logs with predict.end (route, encode, generate, save),
    and the whole of run() (predict_time beyond it is Cog's own work on the output)."""
    from shared.cogserver import log_events

    ends = [e for text in logs for e in log_events(text, "predict.end")]
    if not ends:
        return {}
    names = sorted({name for e in ends for name in e.get("phases", {})})
    medians = {name: round(statistics.median(e.get("phases", {}).get(name, 0.0) for e in ends), 3) for name in names}
    return {**medians, "whole_run": round(statistics.median(e["seconds"] for e in ends), 3)}


def serve_config(name: str, config: str, env: dict, log_path: Path, cases: dict, row: dict, args, triggers: list) -> None:
    """One configuration's server: boot it, then its figures into `row`."""
    from shared.cogserver import CogServer, log_events

    started = time.perf_counter()
    with CogServer(name, env=env, setup_timeout=args.setup_timeout, log_path=log_path) as server:
        row["ready_s"] = round(time.perf_counter() - started, 1)
        setup = server.events("setup.done")[-1]
        row["setup"] = {k: setup.get(k) for k in ("optimizations", "phases", "peak_gpu_gb", "seconds")}
        logs = []
        predict = functools.partial(_predict, server, logs)
        for case, inputs in cases.items():
            bodies = [predict(inputs) for _ in range(args.repeats + 1)]  # the first warms up
            assert all(b["status"] == "succeeded" for b in bodies), [b.get("error") for b in bodies]
            times = [b["metrics"]["predict_time"] for b in bodies[1:]]
            row[case] = {"predict_time_s": times, "median_s": round(statistics.median(times), 3),
                         "first_s": bodies[0]["metrics"]["predict_time"],
                         "median_phases_s": median_phases(logs[-args.repeats:])}
            print(name, config, case, row[case], flush=True)
            if args.go_fast:
                row[f"{case}_go_fast"] = go_fast_figures(predict, inputs, bodies[-1], args.repeats)
                print(name, config, case, "go_fast", row[f"{case}_go_fast"], flush=True)
        if name == "flux-lora-txt2img":  # every style, the base model, a user's LoRA, a style again: 4 steps at 768
            routes = [*({"trigger_word": t} for t in triggers), {}, *[{"lora_weights": args.user_lora_url}] * 2,
                      {"trigger_word": "Anime"}]
            swaps = [{"prompt": "x", "num_inference_steps": 4, "seed": 1, **route} for route in routes]
            outputs = [predict(body) for body in swaps]
            assert all(o["status"] == "succeeded" for o in outputs), [o.get("error") for o in outputs]
            row["swap_ms"] = [e["ms"] for e in log_events("\n".join(logs[-len(swaps):]), "lora.swapped")]
            # The user's LoRA twice: downloaded and checked the first time (this predict_time), kept the second.
            row["user_lora_predict_time_s"] = [o["metrics"]["predict_time"] for o in outputs[-3:-1]]
            row["distinct_outputs_of_styles_none_and_user"] = len({o["output"][0] for o in outputs[:-2]})
            row["user_lora_comes_back_identical"] = outputs[-3]["output"] == outputs[-2]["output"]
            row["style_comes_back_identical"] = outputs[-1]["output"] == outputs[triggers.index("Anime")]["output"]
        row["peak_gpu_gb"] = max((e.get("peak_gpu_gb") or 0 for e in log_events("\n".join(logs), "predict.end")),
                                 default=None)
        row["recompiles_after_setup"] = sum(text.count("Recompiling") for text in logs)


# -- where the serving memory goes ----------------------------------------------------------------

GIB = 2**30


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds, through tensor subclasses (torchao's fp8 and int8 weights keep theirs inside)."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, name)) for name in names)
    return t.numel() * t.element_size()


def model_gib(model: torch.nn.Module) -> float:
    return round(sum(tensor_bytes(t) for t in model.state_dict().values() if t.device.type == "cuda") / GIB, 3)


def pool_gib() -> dict:
    """Memory the allocator holds per pool: (0, 0) is the default one, every other a CUDA graph's private pool."""
    pools: dict[str, list[float]] = {}
    for segment in torch.cuda.memory._snapshot()["segments"]:
        held = pools.setdefault(str(tuple(segment.get("segment_pool_id", (0, 0)))), [0.0, 0.0])
        held[0] += segment["total_size"] / GIB
        held[1] += segment["allocated_size"] / GIB
    return {pool: {"reserved_gib": round(r, 3), "allocated_gib": round(a, 3)} for pool, (r, a) in pools.items()}


class PhasePeaks:
    """The peak allocated memory of each phase of a request, above what was allocated when the phase began.
    Each phase resets the allocator's peak, so the whole request's peak is kept here (`whole_peak`): read
    before each reset and at the end."""

    def __init__(self):
        self.peaks: dict[str, dict] = {}
        self.overall = 0

    def start_request(self) -> None:
        self.peaks, self.overall = {}, 0
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def whole_peak(self) -> int:
        torch.cuda.synchronize()
        self.overall = max(self.overall, torch.cuda.max_memory_allocated())
        return self.overall

    def wrap(self, name: str, fn):
        def measured(*args, **kwargs):
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            self.overall = max(self.overall, torch.cuda.max_memory_allocated())  # what came before this phase
            torch.cuda.reset_peak_memory_stats()
            out = fn(*args, **kwargs)
            torch.cuda.synchronize()
            row = self.peaks.setdefault(name, {"calls": 0, "peak_gib": 0.0, "above_start_gib": 0.0})
            row["calls"] += 1
            peak = torch.cuda.max_memory_allocated()
            row["peak_gib"] = round(max(row["peak_gib"], peak / GIB), 3)
            row["above_start_gib"] = round(max(row["above_start_gib"], (peak - before) / GIB), 3)
            return out
        return measured


def bench_flux_memory(args) -> dict:
    """Where FLUX's serving peak goes, on the deployment's own runner (its default options unless OPTIMIZE
    says otherwise, set up and warmed as a boot does): what setup leaves allocated, by model and by allocator
    pool (each CUDA graph has its own), then one request per size with the peak of each phase (T5 + CLIP,
    the denoising steps, the VAE decode) above what was allocated when it began."""
    from tests.conftest import load_runner

    runner = load_runner(args.deployment)
    runner.setup()
    pipe = runner.pipe
    torch.cuda.synchronize()
    result = {"after_setup_gib": round(torch.cuda.memory_allocated() / GIB, 3),
              "models_gib": {name: model_gib(getattr(pipe, name))
                             for name in ("transformer", "text_encoder_2", "text_encoder", "vae")},
              "lora_slot_gib": round(sum(tensor_bytes(t) for t in runner.router._slot.values()) / GIB, 3),
              "pools_after_setup": pool_gib(), "requests": {}}
    phases = PhasePeaks()
    pipe.encode_prompt = phases.wrap("encode_prompt (T5 + CLIP)", pipe.encode_prompt)
    decode, latents = pipe.vae.decode, {}
    pipe.vae.decode = phases.wrap("vae_decode", lambda z, **kw: latents.update(last=z) or decode(z, **kw))
    transformer_call = pipe.transformer.forward
    pipe.transformer.forward = phases.wrap("transformer_step", transformer_call)
    route = runner.router.route("Anime")
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            phases.start_request()
            runner.generate_image({"prompt": route.apply_to("a lighthouse at dusk"), "width": size, "height": size},
                                  steps=args.steps, guidance=3.5, seed=1, route=route)
            request_peak = round(phases.whole_peak() / GIB, 3)
            result["requests"][f"{size}x{size}_{args.steps}_steps"] = {"phases": phases.peaks, "pools": pool_gib(),
                                                                       "whole_request_peak_gib": request_peak}
            print(size, result["requests"][f"{size}x{size}_{args.steps}_steps"], flush=True)
            result["requests"][f"{size}x{size}_{args.steps}_steps"]["vae_decode_modes"] = vae_decode_modes(
                pipe.vae, decode, latents["last"])
            print(size, "vae", result["requests"][f"{size}x{size}_{args.steps}_steps"]["vae_decode_modes"], flush=True)
    finally:
        pipe.transformer.forward = transformer_call
    return result


def vae_decode_modes(vae, decode, z, repeats: int = 3) -> dict:
    """The request's own latents decoded in one pass and in tiles (vae=tiled, shared/flux.tile_vae_decode): for
    each, the peak allocated above the start and the median ms; and the PSNR of the tiled image against the
    one-pass one. The VAE's tiling state is put back as it was."""
    from shared import flux

    kept = vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size
    figures, images = {}, {}
    try:
        for mode in ("full", "tiled"):
            if mode == "tiled":
                flux.tile_vae_decode(vae, flux.VAE_TILE_PX)
            else:
                vae.disable_tiling()
            times, above = [], 0
            for _ in range(repeats):
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                started = time.perf_counter()
                with torch.inference_mode():
                    out = decode(z, return_dict=False)[0]
                torch.cuda.synchronize()
                times.append(time.perf_counter() - started)
                above = max(above, torch.cuda.max_memory_allocated() - before)
            images[mode] = ((out.float().clamp(-1, 1) + 1) / 2).cpu().numpy()
            figures[mode] = {"above_start_gib": round(above / GIB, 3), "median_ms": round(statistics.median(times) * 1e3, 1)}
    finally:
        vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size = kept
    figures["psnr_db_tiled_vs_full"] = psnr(images["tiled"], images["full"])
    return figures
