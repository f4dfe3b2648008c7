"""GPU benchmarks: each deployment's optimized path against its plain bf16 baseline, in one run.

    python benchmarks/bench.py flux                # FLUX txt2img: eager bf16 vs int8-T5 + regional compile
    python benchmarks/bench.py flux-variants       # FLUX transformer: each optimization step alone and together (flux_speed.py)
    python benchmarks/bench.py flux-server         # FLUX through the Cog server: old default vs new (flux_speed.py)
    python benchmarks/bench.py flux-memory         # FLUX: memory by model, graph pool and request phase
    python benchmarks/bench.py flux-sizes          # FLUX img2img at several sizes: compile per size vs dynamic
    python benchmarks/bench.py text smollm3-3b     # decode tokens/s: HF generate bf16 eager vs the deployment
    python benchmarks/bench.py text gemma3-4b-it
    python benchmarks/bench.py text-server smollm3-3b --configs "hqq=quantize=hqq;bf16=quantize=none"
                                                   # decode through the Cog server per config (text_speed.py)
    python benchmarks/bench.py text-profile smollm3-3b --kernels torchao_int4,gemlite,bf16
                                                   # where a decode step's time goes, per int4 kernel (text_profile.py)
    python benchmarks/bench.py canary              # the canary between GPU servers: identical and compile=off candidates
    python benchmarks/bench.py cold-start smollm3-3b [--weights disk]   # boot through the Cog server: cold vs compile artifact

Weights are `synthetic` (full-size architecture, random weights): with the number of new tokens forced
and fixed step counts, the cost is the real cost. Each run writes benchmarks/results/<date>-<what>-<gpu>.json
(device, commit, date, every figure, the baseline) and prints a short table last.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WEIGHT_PROFILE", "synthetic")

from shared.catalog import source_commit  # noqa: E402
from tests.conftest import load_runner  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def peak_gb() -> float:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def variant_name() -> str:
    """The variant (OPTIMIZE, layer count) is part of a result's name: runs of one model must not overwrite
    each other. Only [A-Za-z0-9._+-]: the device tool returns no file whose name has other characters."""
    variant = os.environ.get("OPTIMIZE", "").replace(",", "+").replace("=", "_").replace(":", "_").replace("/", "-")
    variant = variant or "default"
    if os.environ.get("SYNTHETIC_NUM_LAYERS"):
        variant += f"-{os.environ['SYNTHETIC_NUM_LAYERS']}layers"
    return variant


def write(what: str, variant: str, result: dict) -> Path:
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"  # text-fidelity runs on either
    device = name.replace(" ", "-")
    result = {"what": what, "device": name, "commit": source_commit(),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "torch": torch.__version__, "weights": os.environ["WEIGHT_PROFILE"], **result}
    out = ROOT / "benchmarks" / "results" / f"{dt.date.today()}-{what}-{variant}-{device}.json"
    if out.exists() and json.loads(out.read_text()).get("commit") != result["commit"]:
        # The same configuration measured earlier that day at another commit: keep both, this one named by its commit
        # (a rerun on 2026-12-05 had overwritten the committed figures it was to be compared with).
        out = out.with_name(f"{dt.date.today()}-{what}-{variant}-{result['commit'][:7]}-{device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], out.name).write_text(out.read_text())
    return out


def bench_flux(args) -> dict:
    from shared import flux

    os.environ["OPTIMIZE"] = "text_encoder=none,transformer=none,compile=off,cuda_graphs=off,warmup=off"  # the plain baseline
    runner = load_runner("flux-lora-txt2img")
    runner.setup()
    size, steps = args.size, args.steps
    route = runner.router.route("Anime")

    def one():
        runner.generate_image({"prompt": "a lighthouse at dusk", "width": size, "height": size}, steps=steps,
                              guidance=3.5, seed=1, route=route)

    one()  # warm-up (cuDNN/cuBLAS handles, allocator)
    torch.cuda.reset_peak_memory_stats()
    eager = timed(one, args.repeats)
    eager_peak = peak_gb()

    started = time.perf_counter()
    applied = flux.optimize(runner.pipe, {"text_encoder": "int8", "transformer": args.transformer, "compile": "on",
                                          "shapes": args.shapes, "kernel_tuning": args.kernel_tuning,
                                          "cuda_graphs": "off"})
    one()  # compiles
    compile_s = time.perf_counter() - started
    torch.cuda.reset_peak_memory_stats()
    optimized = timed(one, args.repeats)
    opt_peak = peak_gb()

    import torch._dynamo.utils as dynamo_utils

    # Every trigger, the base model and a user's LoRA (tests/unit/test_user_lora.py's file of the real shapes)
    # through the one compiled slot, then a style again: no new graph may appear.
    from shared import user_lora
    from tests.unit.test_user_lora import lora_bytes

    user_file = Path(os.environ.get("TMPDIR", "/tmp")) / "bench-user-lora.safetensors"
    user_file.write_bytes(lora_bytes(runner.pipe.transformer, rank=8))
    user = runner.router.route_user("bench-user", lambda: user_lora.read_adapter(
        runner.pipeline_cls, user_file, runner.router.shapes, runner.router.rank))
    graphs_before = dynamo_utils.counters["stats"]["unique_graphs"]
    swap_times = {}
    routes = [(t, runner.router.route(t)) for lora in runner.dep.loras for t in lora.triggers]
    for label, r in [*routes, ("none", runner.router.route(None)), ("user", user), ("Anime again", route)]:
        t = time.perf_counter()
        runner.router.activate(r)
        swap_times[label] = round(time.perf_counter() - t, 4)
        runner.generate_image({"prompt": "x", "width": size, "height": size}, steps=2, guidance=3.5, seed=1, route=r)
    recompiles = dynamo_utils.counters["stats"]["unique_graphs"] - graphs_before

    # What the LoRA slot costs every step (rank-16 adapters on 494 layers, zeros when no style is asked
    # for): the same compiled transformer without any adapter layer.
    no_lora = {}
    try:
        runner.pipe.unload_lora_weights()
        torch._dynamo.reset()
        plain = lambda: runner.pipe(prompt="a lighthouse at dusk", width=size, height=size, num_inference_steps=steps,  # noqa: E731
                                    guidance_scale=3.5, generator=torch.Generator("cuda").manual_seed(1),
                                    max_sequence_length=runner.max_sequence_length)
        plain()  # compiles
        seconds = timed(plain, args.repeats)
        med_p = statistics.median(seconds)
        no_lora = {"seconds_per_image": seconds, "median_s": round(med_p, 3), "ms_per_step": round(1000 * med_p / steps, 1)}
    except Exception as error:  # noqa: BLE001 - the figures above still stand
        no_lora = {"error": repr(error)}

    med_e, med_o = statistics.median(eager), statistics.median(optimized)
    return {
        "size": size, "steps": steps, "repeats": args.repeats,
        "baseline": {"name": "bf16 eager", "seconds_per_image": eager, "median_s": round(med_e, 3),
                     "ms_per_step": round(1000 * med_e / steps, 1), "peak_gpu_gb": eager_peak},
        "optimized": {"name": "+".join(applied), "seconds_per_image": optimized, "median_s": round(med_o, 3),
                      "ms_per_step": round(1000 * med_o / steps, 1), "peak_gpu_gb": opt_peak,
                      "compile_and_first_image_s": round(compile_s, 1)},
        "speedup": round(med_e / med_o, 3),
        "lora_hot_swap_s": swap_times,
        "recompiles_during_swaps": recompiles,
        "compiled_without_lora": no_lora,
        "lora_slot_ms_per_step": (round(1000 * (med_o - no_lora["median_s"]) / steps, 1) if "median_s" in no_lora else None),
    }


def bench_flux_sizes(args) -> dict:
    """img2img at several sizes, as users send them: the first request at each size (compile included)
    and the steady time, eager vs each compile mode (`shapes`: auto = torch's default, dynamic)."""
    from PIL import Image

    import torch._dynamo.utils as dynamo_utils
    from shared import flux

    os.environ["OPTIMIZE"] = "text_encoder=int8,transformer=none,compile=off,cuda_graphs=off,warmup=off"
    runner = load_runner("flux-lora-img2img")
    runner.setup()
    route = runner.router.route("Anime")
    names = args.sizes.split(",")
    sizes = [tuple(int(v) for v in s.split("x")) for s in names]
    compile_modes = args.modes.split(",")

    def one(w, h):
        call = {"prompt": "a lighthouse at dusk", "image": Image.new("RGB", (w, h), "gray"), "strength": 1.0,
                "width": w, "height": h}
        runner.generate_image(call, steps=args.steps, guidance=3.5, seed=1, route=route)

    def per_size(mode: str) -> dict:
        rows = {}
        for w, h in sizes:
            graphs = dynamo_utils.counters["stats"]["unique_graphs"]
            first = timed(lambda w=w, h=h: one(w, h), 1)[0]
            steady = statistics.median(timed(lambda w=w, h=h: one(w, h), args.repeats))
            rows[f"{w}x{h}"] = {"first_request_s": round(first, 2), "steady_s": round(steady, 3),
                                "ms_per_step": round(1000 * steady / args.steps, 1),
                                "new_graphs": dynamo_utils.counters["stats"]["unique_graphs"] - graphs}
            print(mode, f"{w}x{h}", rows[f"{w}x{h}"], flush=True)
        return rows

    one(*sizes[0])  # cuBLAS/cuDNN handles, allocator
    modes = {"eager": per_size("eager")}
    for mode in compile_modes:
        torch._dynamo.reset()
        flux.optimize(runner.pipe, {"text_encoder": "none", "transformer": "none", "compile": "on", "shapes": mode,
                                     "kernel_tuning": "off", "cuda_graphs": "off"})
        modes[mode] = per_size(mode)
    # Headline figures at the first size (the deployments' default, 768x768).
    steady = {mode: rows[names[0]]["steady_s"] for mode, rows in modes.items()}
    best = min(compile_modes, key=steady.get)
    return {
        "task": "img2img", "steps": args.steps, "repeats": args.repeats, "sizes": names,
        "text_encoder": "int8", "modes": modes,
        "baseline": {"name": "bf16 eager", "median_s": steady["eager"], "peak_gpu_gb": None},
        "optimized": {"name": f"compile shapes={best}", "median_s": steady[best], "peak_gpu_gb": peak_gb()},
        "speedup": round(steady["eager"] / steady[best], 3),
    }


def bench_text(args) -> dict:
    from shared import catalog
    from shared.builders.text import build_random_causal_lm, build_random_gemma3
    from shared.decode_engine import Sampling

    name = args.deployment
    dep = catalog.get(name)
    new_tokens = args.tokens

    def prompt_inputs(tok_or_proc, model):
        text = "Tell me a long story about a lighthouse keeper. " * 8
        tok = getattr(tok_or_proc, "tokenizer", tok_or_proc)
        return {k: v.to(model.device) for k, v in tok(text, return_tensors="pt").items()}

    def decode_speed(model, tok, runner=None) -> tuple[float, list[float]]:
        inputs = prompt_inputs(tok, model)

        def generate():
            with torch.inference_mode():  # as requests run: a different mode would recompile
                if runner is None:
                    model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                   use_cache=True)
                else:  # the deployment's decode engine, no stop tokens: exactly new_tokens
                    for _ in runner.engine.generate(inputs, max_new_tokens=new_tokens, sampling=Sampling()):
                        pass

        # A deployment's compiled decode runs on its decoder's thread (CUDA graphs are per thread).
        gen = (lambda: runner.batch.call(generate)) if runner else generate  # noqa: E731
        for i in range(2):  # compiled decode paths compile, then capture CUDA graphs, on the first calls
            print(f"warm-up generate {i}: {timed(gen, 1)[0]:.1f} s", flush=True)
        times = timed(gen, args.repeats)
        return round(new_tokens / statistics.median(times), 2), times

    # Baseline: the plain bf16 model, HF generate, eager.
    build = build_random_gemma3 if name == "gemma3-4b-it" else build_random_causal_lm
    torch.cuda.reset_peak_memory_stats()
    base_model, base_tok = build(dep, tiny=False, device="cuda", dtype=torch.bfloat16)
    base_tps, base_times = decode_speed(base_model, base_tok)
    base_peak = peak_gb()
    del base_model
    torch.cuda.empty_cache()

    # The deployment's own setup (its default GPU options, or OPTIMIZE).
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    runner = load_runner(name)
    runner.setup()
    setup_s = time.perf_counter() - started
    opt_tps, opt_times = decode_speed(runner.model, runner.tokenizer, runner)
    return {
        "deployment": name, "new_tokens": new_tokens, "repeats": args.repeats, "batch": 1,
        "layers": os.environ.get("SYNTHETIC_NUM_LAYERS", "all"),
        "baseline": {"name": "bf16 eager HF generate", "tokens_per_s": base_tps, "seconds": base_times, "peak_gpu_gb": base_peak},
        "optimized": {"name": runner.path, "options": runner.options, "tokens_per_s": opt_tps, "seconds": opt_times,
                      "peak_gpu_gb": peak_gb(), "setup_s": round(setup_s, 1)},
        "speedup": round(opt_tps / base_tps, 3),
    }


def bench_canary(args) -> dict:
    """The canary between real GPU servers of one deployment (its default, compiled, path as stable).

    An identical candidate must pass: two processes, each compiling its own kernels, must not differ
    enough to raise a false alarm. A compile=off candidate changes only numerics and speed: what do
    the semantic and latency checks make of that?
    """
    from canary import report, runner
    from canary.targets import CogTarget
    from shared.cogserver import CogServer

    folder = Path(os.environ.get("OUT") or ROOT / "outputs") / "canary-gpu"
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def server(name: str, **env) -> CogServer:
        return CogServer(args.deployment, env={"WEIGHT_PROFILE": os.environ["WEIGHT_PROFILE"], **env}, setup_timeout=900,
                         log_path=logs / f"{name}.log")

    def judged(outcome) -> dict:
        report.write(outcome, folder)
        return {"result": outcome.result, "rows": [vars(r) for r in outcome.rows]}

    candidates = {}
    stable, twin = server("stable"), server("identical")
    started = time.perf_counter()
    for s in (stable.launch(), twin.launch()):  # both set up (and compile) at once
        s.wait_ready()
    setup_s = round(time.perf_counter() - started, 1)
    try:
        candidates["identical"] = judged(runner.run(args.deployment, CogTarget(stable.url), CogTarget(twin.url),
                                                    samples=args.samples))
        twin.stop()
        with server("compile_off", OPTIMIZE="compile=off") as eager:
            candidates["compile_off"] = judged(runner.run(args.deployment, CogTarget(stable.url), CogTarget(eager.url),
                                                          samples=args.samples))
    finally:
        twin.stop()
        stable.stop()
    return {"deployment": args.deployment, "samples": args.samples, "setup_s_two_servers_at_once": setup_s,
            "candidates": candidates}


def save_synthetic_checkpoint(name: str, folder: Path) -> float:
    """Write the synthetic weights as a checkpoint folder in the Hub layout (LoRAs under loras/): a boot from
    it takes the real loading path (safetensors from local disk), as a boot from the mirror does."""
    from shared import catalog
    from shared.builders import flux, text

    started = time.perf_counter()
    dep = catalog.get(name)
    if dep.loras:
        import diffusers

        from shared.builders.loras import write_random_lora

        cls = diffusers.FluxImg2ImgPipeline if dep.task == "image-to-image" else diffusers.FluxPipeline
        pipe = flux.build_random(dep, tiny=False, device="cuda", dtype=torch.bfloat16, pipeline_cls=cls)
        pipe.save_pretrained(folder)
        for index, lora in enumerate(dep.loras):
            write_random_lora(cls, pipe.transformer, lora, index, folder / "loras", magnitude=1.0)
        del pipe
    else:
        build = text.build_random_gemma3 if name == "gemma3-4b-it" else text.build_random_causal_lm
        model, tok = build(dep, tiny=False, device="cuda", dtype=torch.bfloat16)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        del model
    torch.cuda.empty_cache()
    return round(time.perf_counter() - started, 1)


def bench_cold_start(args) -> dict:
    """Boots of one deployment through the Cog server, each with empty Inductor and Triton caches (a new
    machine): cold, saving the compile artifacts; then loading each kind (shared/compile_cache.py). Each:
    launch -> READY, setup's phases and compile seconds, and the first two requests (a compile left in a
    request would show in the first)."""
    import shutil
    import tempfile

    from shared import catalog
    from shared.cogserver import CogServer, log_events, resolve_files

    name = args.deployment
    work = Path(tempfile.mkdtemp(prefix="cold-start-"))
    env = {"COGDEPLOY_CACHE": str(work / "cogdeploy-cache")}
    result = {"deployment": name, "optimize": os.environ.get("OPTIMIZE", ""), "weights_from": args.weights}
    if args.weights == "disk":
        result["checkpoint_write_s"] = save_synthetic_checkpoint(name, work / "checkpoint")
        env["WEIGHT_PROFILE"] = str(work / "checkpoint")
    request = resolve_files(json.loads(args.request) if args.request else catalog.get(name).example)
    # --save-artifacts: kept after the run, for a later run on the same machine (COMPILE_CACHE=DIR)
    artifacts = Path(args.save_artifacts) if args.save_artifacts else work / "artifacts"

    def boot(label: str, **extra) -> dict:
        # A new machine: nothing compiled before, in the one cache folder every boot of a given image uses
        # (Inductor's default path on the build machine and in production alike). Triton's kernels go under
        # it (its default when TRITON_CACHE_DIR is unset), which is what a .tar artifact packs.
        shutil.rmtree(work / "inductor", ignore_errors=True)
        boot_env = {**env, **extra, "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor")}
        os.environ.pop("TRITON_CACHE_DIR", None)
        # The log goes straight to $OUT where set: a boot cut off by the call's time limit still says how far it got.
        logs = Path(os.environ["OUT"]) if os.environ.get("OUT") else work
        server = CogServer(name, env=boot_env, setup_timeout=580, log_path=logs / f"cold-start-{name}-{label}.log")
        started = time.perf_counter()
        server.launch()
        try:
            server.wait_ready()
            ready = time.perf_counter() - started
            requests_s, request_metrics, serving_peaks = [], [], []
            for _ in range(args.requests):
                body = server.predict(request).json()
                assert body["status"] == "succeeded", body.get("error")
                requests_s.append(body["metrics"].get("predict_time"))
                request_metrics.append(body["metrics"])
                serving_peaks += [e.get("peak_gpu_gb") for e in log_events(body.get("logs") or "", "predict.end")]
            [setup] = server.events("setup.done")
            loaded = server.events("compile_cache.loaded")
        finally:
            server.stop()
        figures = {"ready_s": round(ready, 1), "setup_s": setup["seconds"], "phases": setup["phases"],
                   "process_start_s": round(ready - setup["seconds"], 1), "compile_cache": setup.get("compile_cache"),
                   "artifact_loaded": bool(loaded), "first_requests_predict_time_s": requests_s,
                   "median_later_request_s": statistics.median(requests_s[1:]) if len(requests_s) > 1 else None,
                   "request_metrics": request_metrics,
                   "peak_gpu_gb": setup.get("peak_gpu_gb"),
                   "serving_peak_gpu_gb": max(filter(None, serving_peaks), default=None)}
        print(f"{name} {label}: READY after {figures['ready_s']} s; phases {figures['phases']}; "
              f"requests {requests_s}; compile cache {figures['compile_cache']}", flush=True)
        return figures

    if args.artifacts:  # made by an earlier run on this kind of GPU (carried back from its $OUT)
        artifacts = Path(args.artifacts)
    else:
        result["cold"] = boot("cold", SAVE_COMPILE_CACHE=str(artifacts))
        if os.environ.get("OUT"):  # those small enough to come back from the device, to carry to the next run
            for made in (artifacts / "compile-cache" / name).iterdir():
                if made.stat().st_size < 16 * 2**20:
                    shutil.copy(made, Path(os.environ["OUT"]) / f"{name}-{made.name}")
    files = sorted(artifacts.rglob(f"compile-cache/{name}/*.*"))
    result["artifacts"] = {f.name: f.stat().st_size for f in files}
    for kind in filter(None, args.kinds.split(",")):  # --kinds "": the cold boot only
        result[f"with_{kind}"] = boot(f"artifact-{kind}", COMPILE_CACHE=str(artifacts), COMPILE_CACHE_KIND=kind)
        for setting in args.also:  # the same boot with one setting changed: a baseline measured in the same run
            variable, _, value = setting.partition("=")
            result[f"with_{kind}_{variable}_{value}"] = boot(f"artifact-{kind}-{variable}-{value}", COMPILE_CACHE=str(artifacts),
                                                            COMPILE_CACHE_KIND=kind, **{variable: value})
    shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("flux")
    f.add_argument("--size", type=int, default=768)
    f.add_argument("--steps", type=int, default=28)
    f.add_argument("--repeats", type=int, default=3)
    f.add_argument("--transformer", default="none", choices=["none", "fp8", "int8"])
    f.add_argument("--shapes", default="dynamic", choices=["dynamic", "auto"])
    f.add_argument("--kernel-tuning", default="off", choices=["off", "on"])
    v = sub.add_parser("flux-variants")
    v.add_argument("--sizes", default="1024,768")
    v.add_argument("--repeats", type=int, default=10)
    v.add_argument("--budget-s", type=float, default=420, help="stop starting variants after this many seconds")
    v.add_argument("--only", help="run only variants whose label contains one of these (;-separated)")
    v.add_argument("--end-to-end", help="then apply this variant (its label) to the pipeline: whole images, fidelity, swaps")
    v.add_argument("--end-to-end-s", type=float, default=150, help="time allowed for it past --budget-s")
    v.add_argument("--repeats-images", type=int, default=5)
    fs = sub.add_parser("flux-server")
    fs.add_argument("--deployments", default="flux-lora-txt2img,flux-lora-img2img")
    fs.add_argument("--repeats", type=int, default=5)
    fs.add_argument("--configs", help="label=OPTIMIZE;label=OPTIMIZE (default: the old and the new default)")
    fs.add_argument("--gpu-memory-gb", type=float, help="cap each server's GPU memory (GPU_MEMORY_LIMIT_GB): a smaller card")
    fs.add_argument("--only", help="only the cases whose name contains this (e.g. 1024x1024_28)")
    fs.add_argument("--setup-timeout", type=float, default=580)
    fs.add_argument("--go-fast", action="store_true", help="each case again with go_fast: time, steps skipped, PSNR vs exact")
    fm = sub.add_parser("flux-memory", help="where FLUX's serving memory goes: models, graph pools, each phase's peak")
    fm.add_argument("--deployment", default="flux-lora-txt2img")
    fm.add_argument("--sizes", default="1024,768")
    fm.add_argument("--steps", type=int, default=28)
    z = sub.add_parser("flux-sizes")
    z.add_argument("--sizes", default="768x768,320x256,1024x576,512x896")
    z.add_argument("--modes", default="auto,dynamic")
    z.add_argument("--steps", type=int, default=20)
    z.add_argument("--repeats", type=int, default=2)
    t = sub.add_parser("text")
    t.add_argument("deployment")
    t.add_argument("--tokens", type=int, default=128)
    t.add_argument("--repeats", type=int, default=3)
    ts = sub.add_parser("text-server")
    ts.add_argument("deployment")
    ts.add_argument("--configs", default="default=", help="label=OPTIMIZE;label=OPTIMIZE (one Cog server each)")
    ts.add_argument("--tokens", type=int, default=512, help="new tokens of the in-process HF generate baseline")
    ts.add_argument("--repeats", type=int, default=5)
    ts.add_argument("--long", action="store_true", help="also 4,000-token requests (first config)")
    ts.add_argument("--fidelity", action="store_true", help="HQQ 4-bit vs bf16 logits on the baseline's weights")
    ts.add_argument("--setup-timeout", type=float, default=400)
    ts.add_argument("--baseline-from", help="take the HF generate baseline from this earlier result file")
    ts.add_argument("--at-defaults", action="store_true",
                    help="also 8 requests at once at the deployment's default max_new_tokens (one run)")
    tp = sub.add_parser("text-profile")
    tp.add_argument("deployment")
    tp.add_argument("--kernels", default="torchao_int4,gemlite,bf16",
                    help="hqq backends (or bf16), in order; KERNEL+grouped for attention=grouped")
    tp.add_argument("--single-only", action="store_true", help="skip the batched decoder (its compile, its figures)")
    tp.add_argument("--prefill-only", action="store_true", help="only the eager 512-token prefill per variant (no compile)")
    tp.add_argument("--repeats", type=int, default=5)
    tp.add_argument("--budget-s", type=float, default=330, help="start no kernel after this many seconds")
    c = sub.add_parser("canary")
    c.add_argument("--deployment", default="flux-lora-txt2img")
    c.add_argument("--samples", type=int, default=3)
    s = sub.add_parser("cold-start")
    s.add_argument("deployment")
    s.add_argument("--weights", default="synthetic", choices=["synthetic", "disk"],
                   help="synthetic: built on the GPU at boot; disk: a checkpoint folder written first, loaded at boot")
    s.add_argument("--request", help="JSON input of the requests after boot (default: the catalog's example)")
    s.add_argument("--artifacts", help="skip the cold boot: load artifacts from DIR/compile-cache/<deployment>/")
    s.add_argument("--requests", type=int, default=2, help="requests after each boot (the first shows any compile left)")
    s.add_argument("--kinds", default="tar,bin", help="artifact kinds to boot with, in this order (\"\": none)")
    s.add_argument("--save-artifacts", metavar="DIR", help="write the cold boot's artifacts here and keep them")
    s.add_argument("--also", action="append", default=[], metavar="VAR=VALUE",
                   help="also boot each kind with this environment setting (e.g. COORDESC_CACHE_FIX=0)")
    f = sub.add_parser("text-fidelity", help="each configuration's logits against bf16 on the same synthetic weights "
                                            "(GPU, or CPU: slower, same figures)")
    f.add_argument("deployment")
    f.add_argument("--configs", required=True, help="label=OPTIMIZE;label=OPTIMIZE (the deployment's own loading)")
    args = parser.parse_args()
    if args.what == "text-fidelity":
        from text_speed import bench_text_fidelity

        result = bench_text_fidelity(args)
        what = f"text-fidelity-{args.deployment}-{os.environ['WEIGHT_PROFILE']}"
        print(f"-> {write(what, '-'.join(result['configs']), result)}")
        return 0
    if not torch.cuda.is_available():
        print("benchmarks need a CUDA GPU (see docs/benchmarks.md)", file=sys.stderr)
        return 2
    variant = variant_name()  # before the run: benchmarks set OPTIMIZE for their own baselines
    from flux_speed import bench_flux_memory, bench_flux_server, bench_flux_variants
    from text_profile import bench_text_profile
    from text_speed import bench_text_server

    result = {"flux": bench_flux, "flux-variants": bench_flux_variants, "flux-server": bench_flux_server,
              "flux-memory": bench_flux_memory,
              "flux-sizes": bench_flux_sizes, "text": bench_text, "text-server": bench_text_server, "canary": bench_canary,
              "text-profile": bench_text_profile,
              "cold-start": bench_cold_start,
              }[args.what](args)
    label = args.what
    if args.what == "text":
        label = args.deployment
    elif args.what == "cold-start":
        path = write(f"cold-start-{args.deployment}-{args.weights}", variant, result)
        boots = {k: v["ready_s"] for k, v in result.items() if k == "cold" or k.startswith("with_")}
        print(f"\ncold-start {args.deployment}: READY after {boots} s; artifacts {result['artifacts']}  -> {path}")
        return 0
    elif args.what == "flux-server":
        labels = "-".join(result["configs"]) if args.configs else variant
        cap = f"-cap{args.gpu_memory_gb:g}GiB" if args.gpu_memory_gb else ""
        path = write("flux-server", "".join(c if c.isalnum() or c in "-_." else "_" for c in labels) + cap, result)
        for name, configs in result["deployments"].items():
            for config, row in configs.items():
                figures = {k: v["median_s"] for k, v in row.items() if isinstance(v, dict) and "median_s" in v}
                print(f"{name} {config}: ready {row.get('ready_s')} s, {figures}, peak {row.get('peak_gpu_gb')} GB",
                      row.get("error") or "")
        print(f"-> {path}")
        return 0
    elif args.what == "text-server":
        labels = "-".join(result["configs"]) if args.configs != "default=" else variant
        path = write(f"text-server-{args.deployment}", "".join(c if c.isalnum() or c in "-_." else "_" for c in labels), result)
        print(f"baseline {result['baseline']['tokens_per_s']} tok/s; roofline {result['roofline_tok_s']}",
              result.get("baseline_image_question", ""))
        for name, row in result["variants"].items():
            figures = {k: (v.get("median_decode_tok_s"), v.get("median_ttft")) if isinstance(v, dict) and "runs" in v
                       else v for k, v in row.items() if k != "setup"}
            print(name, row.get("error") or figures)
        print(f"-> {path}")
        return 0
    elif args.what == "text-profile":
        kernels = args.kernels.replace(",", "-").replace("+", "_") + ("-single" if args.single_only else "") + (
            "-prefill" if args.prefill_only else "")
        path = write(f"text-profile-{args.deployment}", kernels if variant == "default" else variant, result)
        for name, row in result["variants"].items():
            print(name, row.get("error") or row.get("skipped") or
                  {k: v for k, v in row.items() if not k.startswith("profile")})
        print(f"-> {path}")
        return 0
    elif args.what == "flux-variants":
        path = write("flux-variants", variant, result)
        for name, row in result["variants"].items():
            print(f"{name:45s} {row.get('ms_per_step') or row.get('error') or row.get('skipped')}")
        print(f"components {result['components']}  -> {path}")
        return 0
    elif args.what == "flux-memory":
        path = write(f"flux-memory-{args.deployment}", variant, result)
        print(f"after setup {result['after_setup_gib']} GiB: models {result['models_gib']}, slot {result['lora_slot_gib']}")
        for case, row in result["requests"].items():
            print(case, row["whole_request_peak_gib"], {k: v["above_start_gib"] for k, v in row["phases"].items()})
        print(f"-> {path}")
        return 0
    elif args.what == "canary":
        label = f"canary-{args.deployment}-{args.samples}samples"
    path = write(label, variant, result)
    if args.what == "canary":
        for name, judged in result["candidates"].items():
            figures = [f"{r['case']} {r['check']} {r['value']:.3f} {r['verdict']}"
                       for r in judged["rows"] if r["value"] is not None]
            print(f"\n{label}: {name} candidate: {judged['result'].upper()}: " + "; ".join(figures))
        print(f"-> {path}")
        return 0
    b, o = result["baseline"], result["optimized"]
    key = "tokens_per_s" if args.what == "text" else "median_s"
    print(f"\n{label}: baseline {b['name']}: {b[key]} {key}, peak {b['peak_gpu_gb']} GB | "
          f"optimized {o['name']}: {o[key]} {key}, peak {o['peak_gpu_gb']} GB | speedup x{result['speedup']}  -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
