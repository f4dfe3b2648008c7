"""Where a decode step's time goes, per int4 kernel, in this process (no server).

    python benchmarks/bench.py text-profile smollm3-3b --kernels torchao_int4,gemlite,bf16
    python benchmarks/bench.py text-profile smollm3-3b --kernels torchao_int4,torchao_int4+grouped --single-only
    python benchmarks/bench.py text-profile gemma3-4b-it --kernels torchao_int4,torchao_int4+grouped --single-only

For each kernel (hqq's torchao_int4 = torch's tinygemm, hqq's gemlite = Triton GEMV/GEMM, bf16 = no
quantization) on the same synthetic full-size model, with the engine and batched decoder the server
builds (one 2,048-token cache, 8 rows, the same compile settings):
- prefill of a 512-token prompt, eager (as served by default) and compiled for any length
  (`OPTIMIZE=prefill=compiled`): the long-prompt time to first token, and a profile of one of each;
- single-stream decode, 512 sampled tokens (the engine: requests longer than a row);
- the batched decoder with one request: in the rows' step at chunk 1 (a host sync per step, the code
  before) and chunk 8, and as served (alone, it decodes on the engine's step);
- the batched decoder with 8 requests of 256 tokens: the aggregate;
- a profile of 32 single-stream and 32 batched steps: GPU time per kernel, per step.
Gemma 3 (text prompts: its language model's decode, which an image request decodes the same way) gets its
deployment's one 10,240-token cache, HQQ on its language model only, and an eager prefill, as served.
A variant "KERNEL+grouped" decodes with `attention=grouped` (shared/decode_attention.py) instead of SDPA, "+flex" with
`attention=flex` (FlexAttention, each row's KV read only up to its length);
"+fused" fuses Q/K/V and gate/up first (`fuse_projections=on`, shared/fused_projections.py); "+dqprefill" sends
prompts through the int4 layers' dequantized weights (`int4_prefill=dequantize`, shared/int4_prefill.py), "+dqcompiled"
the same as one compiled kernel per weight shape (`int4_prefill=dequantize-compiled`); "+cprefill" compiles the prompt's
forward with --prefill-only (`prefill=compiled`: its first call, the compile, is `first_s`).
--single-only skips the batched decoder (its compile is the longer one): prefill, single stream, profile.
--prefill-only compiles nothing but "+cprefill": the 512-token prefill per variant, wall and GPU time, and its kernels (a minute
per variant: where the time to first token goes).
Variants run in the order given until --budget-s is spent; each one's figures are written as it ends.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path

import torch

from text_speed import LONG_PROMPT, bandwidth, weight_bytes_per_token


def _sync_time(fn) -> float:
    torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - started


def _templated(dep, tok, prompt: str) -> torch.Tensor:
    """The prompt's ids as the deployment's server makes them with a blank system prompt: its chat template with the
    model's default system message (SmolLM3 in its default no_think mode)."""
    from shared.builders.text import chat_template

    text = tok.apply_chat_template([{"role": "user", "content": prompt}], chat_template=chat_template(dep),
                                   tokenize=False, add_generation_prompt=True, enable_thinking=False)
    return tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


def _batched(batch, inputs, n, seeds, chunk):
    """Submit one request per seed to the batched decoder; returns (wall seconds, tokens, first-token times)."""
    from shared.batch_decode import Request
    from shared.decode_engine import Sampling

    batch.chunk = chunk
    done = threading.Semaphore(0)
    counts, firsts = [0] * len(seeds), [None] * len(seeds)
    started = time.perf_counter()

    def emit(i):
        def on(tokens, error):
            if tokens is None:
                done.release()
                return
            firsts[i] = firsts[i] or time.perf_counter() - started
            counts[i] += len(tokens)
        return on

    for i, seed in enumerate(seeds):
        batch.submit(Request(inputs, n, Sampling(0.7, 0.9, seed), (), emit(i)))
    for _ in seeds:
        done.acquire()
    return time.perf_counter() - started, sum(counts), firsts


def _kernel_table(prof, steps: int, top: int = 25) -> list[dict]:
    rows = []
    for e in prof.key_averages():
        us = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if us and e.key and not e.key.startswith(("ProfilerStep", "cudaGraph", "aten::", "Torch-Compiled", "CompiledFunction")):
            rows.append({"kernel": e.key[:120], "us_per_step": round(us / steps, 1), "calls_per_step": round(e.count / steps, 1)})
    rows.sort(key=lambda r: -r["us_per_step"])
    return rows[:top]


def _prompt_512(tok) -> torch.Tensor:
    """The issue's 512-token prompt, as ids on the GPU (no chat template: the prefill alone is timed)."""
    return tok(LONG_PROMPT, return_tensors="pt")["input_ids"][:, :512].cuda()


def prefill_figures(model, tok, engine, repeats: int) -> dict:
    """The eager prefill of the issue's 512-token prompt alone (no compile): wall time, and GPU time by kernel.
    Wall minus GPU time is the forward's Python, which a compiled prefill removes."""
    from torch.profiler import ProfilerActivity, profile

    ids = _prompt_512(tok)
    cache = engine.caches[0]

    def run():
        cache.reset()
        with torch.inference_mode():
            engine.prefill({"input_ids": ids}, cache)

    # Eight ~200-token prompts in one forward, as the joint prefill of requests arriving together (SmolLM3's
    # templated prompts are ~200 tokens; through the server 7 of 8 waited ~0.3 s for theirs, H200 2026-12-06).
    together = ids[:, :200].repeat(8, 1)

    def run_together():
        with torch.inference_mode():
            model(input_ids=together, use_cache=False, logits_to_keep=1)

    times_together = [_sync_time(run_together) for _ in range(repeats + 2)][2:]
    times = [_sync_time(run) for _ in range(repeats + 2)]  # two warm-ups: kernels load (or compile), then settle
    first_s, times = times[0], times[2:]
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    kernels = _kernel_table(prof, 1)
    return {"prefill": {"prompt_tokens": int(ids.shape[1]), "median_ms": round(1e3 * statistics.median(times), 1),
                        "runs_ms": [round(1e3 * t, 1) for t in times], "first_s": round(first_s, 1),
                        "gpu_ms": round(sum(e.device_time_total for e in prof.key_averages()
                                            if getattr(e, "device_time_total", 0)) / 1e3, 1)},
            "prefill_8x200": {"median_ms": round(1e3 * statistics.median(times_together), 1),
                              "runs_ms": [round(1e3 * t, 1) for t in times_together]},
            "profile_prefill_512": kernels}


def profile_variant(dep, variant: str, args) -> dict:
    from shared import compile as selective_compile
    from shared import llm_backends, quantize
    from shared.batch_decode import BatchedDecoder
    from shared.builders.text import build_random_causal_lm, build_random_gemma3
    from shared.decode_attention import use_grouped_decode_attention
    from shared.decode_engine import DecodeEngine, Sampling
    from shared.fused_projections import fuse_projections
    from shared.cogserver import runner_class
    from shared.int4_prefill import use_dequantized_prefill

    kernel, *flags = variant.split("+")
    known = {"grouped", "flex", "fused", "dqprefill", "dqcompiled", "cprefill"}
    if set(flags) - known:
        raise ValueError(f"unknown flags {sorted(set(flags) - known)} in variant {variant!r}")
    attention = "flex" if "flex" in flags else "grouped" if "grouped" in flags else ""
    row: dict = {"kernel": kernel, "attention": attention or "sdpa", "fused_projections": "fused" in flags,
                 "int4_prefill": ("dequantize-compiled" if "dqcompiled" in flags else
                                  "dequantize" if "dqprefill" in flags else "tinygemm"),
                 "prefill": "compiled" if "cprefill" in flags else "eager"}
    started = time.perf_counter()
    torch._dynamo.reset()
    gemma = dep.name == "gemma3-4b-it"
    model, tok = (build_random_gemma3 if gemma else build_random_causal_lm)(dep, tiny=False, device="cuda",
                                                                          dtype=torch.bfloat16)
    tok = getattr(tok, "tokenizer", tok)  # Gemma's processor: its text tokenizer
    # As served: a short request takes the deployment's smallest cache (SmolLM3's 2,048-token bucket, Gemma's one
    # 10,240-token cache); Gemma has an eager prefill, and its vision tower stays bf16 (HQQ on the language model only).
    served = runner_class(dep.name)
    cache_tokens = min((*served.static_cache_buckets, served.static_cache_tokens))
    prefill_compile = None if gemma else llm_backends.prefill_compile()
    text_only = (lambda m, name: name.startswith("model.language_model")) if gemma else None
    tbs = bandwidth(torch.cuda.get_device_name())
    weights = weight_bytes_per_token(model, None if kernel == "bf16" else 64)["bytes"]
    row["roofline_tok_s"] = round(tbs * 1e12 / weights, 1)
    if "fused" in flags:  # before quantizing, as the deployment does (OPTIMIZE=fuse_projections=on)
        fuse_projections(model)
    if kernel != "bf16":
        model, row["path"] = llm_backends.hqq_quantize(
            model, via="hqq", device="cuda", dtype=torch.bfloat16, kernel=kernel,
            filter_fn=text_only or (quantize.not_lm_head if "fused" in flags else None))
    if attention in ("grouped", "flex"):
        use_grouped_decode_attention(model, flex=attention == "flex")
    if {"dqprefill", "dqcompiled"} & set(flags):  # OPTIMIZE=int4_prefill=dequantize / dequantize-compiled
        started_patch = time.perf_counter()
        row["path"] += "+" + str(use_dequantized_prefill(model, compiled="dqcompiled" in flags))
        row["int4_prefill_setup_s"] = round(time.perf_counter() - started_patch, 1)  # the compiles, if any
    selective_compile.tune_kernels(False)  # as SmolLM3 sets it (kernel_tuning=off since 71c0392)
    row["load_s"] = round(time.perf_counter() - started, 1)
    if args.prefill_only:  # "+cprefill": the engine's prefill compiled (OPTIMIZE=prefill=compiled; its compile is first_s)
        engine = DecodeEngine(model, [cache_tokens], compile_prefill=prefill_compile if "cprefill" in flags else None)
        return row | prefill_figures(model, tok, engine, args.repeats)
    compile_step = llm_backends.decode_step_compile()
    from torch._dynamo.utils import counters

    skips_before = counters["inductor"]["cudagraph_skips"]
    single = DecodeEngine(model, [cache_tokens], compile_step=compile_step, compile_prefill=prefill_compile)
    batch = BatchedDecoder(model, rows=8, row_tokens=min(served.batch_row_tokens, served.static_cache_tokens),
                           single=single, compile_step=compile_step)
    warm = {"input_ids": tok("warm up", return_tensors="pt", add_special_tokens=False)["input_ids"].cuda()}
    started = time.perf_counter()
    batch.call(lambda: single.warm_up(warm))
    row["compile_single_s"] = round(time.perf_counter() - started, 1)
    if not args.single_only:
        started = time.perf_counter()
        batch.warm_up(warm)
        row["compile_batched_s"] = round(time.perf_counter() - started, 1)
    row["memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    # A step Inductor could not capture as a CUDA graph runs launch by launch: gemlite's one-row step measured
    # 3.79 ms against ~3.0 ms of its kernels' GPU time (2026-12-05), a gap tinygemm's step does not have.
    row["cudagraph_skips"] = counters["inductor"]["cudagraph_skips"] - skips_before

    long_ids = _prompt_512(tok)
    cache = batch.prefill_cache

    def prefill(compiled: bool):
        def run():
            cache.reset()
            with torch.inference_mode():
                if compiled:  # OPTIMIZE=prefill=compiled: one graph for any prompt length
                    single.prefill({"input_ids": long_ids}, cache)
                else:
                    model(input_ids=long_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return run

    # (name suffix, compiled): the compiled prefill only where the engine has one
    prefills = (("", False), ("_compiled", True)) if prefill_compile else (("", False),)
    for suffix, compiled in prefills:
        name = f"prefill{suffix}"
        started = time.perf_counter()
        run = prefill(compiled)
        times = [batch.call(lambda: _sync_time(run)) for _ in range(args.repeats + 1)]  # noqa: B023 (called here)
        row[name] = {"prompt_tokens": int(long_ids.shape[1]), "median_ms": round(1e3 * statistics.median(times[1:]), 1),
                     "first_s": round(times[0], 1), "seconds": round(time.perf_counter() - started, 1)}
        print(variant, name, row[name], flush=True)

    prompt = {"input_ids": tok("Tell me a long story about a lighthouse keeper.", return_tensors="pt")["input_ids"].cuda()}

    def single_stream():
        t0 = time.perf_counter()
        first = None
        count = 0
        for chunk in single.generate(prompt, max_new_tokens=512, sampling=Sampling(0.7, 0.9, 1)):
            first = first or time.perf_counter()
            count += len(chunk)
        return (count - 1) / (time.perf_counter() - first), first - t0

    runs = [batch.call(single_stream) for _ in range(args.repeats)]
    row["single_512"] = {"decode_tok_s": round(statistics.median(r[0] for r in runs), 1),
                         "ttft_ms": round(1e3 * statistics.median(r[1] for r in runs), 1)}
    print(variant, "single", row["single_512"], flush=True)
    if not args.single_only:
        for solo, chunk in ((False, 1), (False, 8), (True, 8)):  # one request in the rows' step, then on the engine
            batch.solo = solo
            runs = [_batched(batch, prompt, 512, [i], chunk) for i in range(args.repeats)]
            name = "served_1x512_solo" if solo else f"batched_1x512_chunk{chunk}"
            row[name] = {"tok_s": round(statistics.median(t / w for w, t, _ in runs), 1)}
            print(variant, name, row[name], flush=True)
        def eight_at_once(inputs) -> dict:
            runs = [_batched(batch, inputs, 256, list(range(8)), 8) for _ in range(args.repeats)]
            return {"prompt_tokens": int(inputs["input_ids"].shape[1]),
                    "aggregate_tok_s": round(statistics.median(t / w for w, t, _ in runs), 1),
                    "median_ttft_ms": round(1e3 * statistics.median(statistics.median(f) for _, _, f in runs), 1)}

        row["batched_8x256_chunk8"] = eight_at_once(prompt)
        print(variant, "batched 8", row["batched_8x256_chunk8"], flush=True)
        # The same with text-server's simultaneous request as the server tokenizes it (the chat template and its
        # system prompt: ~210 tokens for SmolLM3), where the case above prefills ~10 raw tokens. The difference is
        # the prefill's share of the server's figure (1,338 tok/s there against 1,848 above, H100, 2026-12-05).
        row["batched_8x256_served_prompt"] = eight_at_once(
            {"input_ids": _templated(dep, tok, "Write a poem about the sea.").cuda()})
        print(variant, "batched 8, served prompt", row["batched_8x256_served_prompt"], flush=True)

    from torch.profiler import ProfilerActivity, profile

    def profiled(fn):
        # On this thread: CUPTI sees the kernels of every thread, and the profiler must start where it is driven.
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        return prof

    try:  # the figures above are kept if the profiler fails
        prof = profiled(lambda: batch.call(lambda: [None for _ in single.generate(prompt, max_new_tokens=33,
                                                                                 sampling=Sampling(0.7, 0.9, 2))]))
        row["profile_single"] = _kernel_table(prof, 32)
        for suffix, compiled in prefills:
            run = prefill(compiled)
            row[f"profile_prefill_512{suffix}"] = _kernel_table(profiled(lambda: batch.call(run)), 1)  # noqa: B023 (called here)
        if not args.single_only:
            prof = profiled(lambda: _batched(batch, prompt, 33, list(range(8)), 8))
            row["profile_batched8"] = _kernel_table(prof, 32)
    except Exception as e:
        row["profile_error"] = f"{type(e).__name__}: {e}"[:500]
    return row  # (the decoder's thread keeps this model alive: a few GB per kernel, far below an H200's memory)


def bench_text_profile(args) -> dict:
    from shared import catalog

    dep = catalog.get(args.deployment)
    work = Path(os.environ.get("OUT") or "/tmp")
    result: dict = {"deployment": dep.name, "repeats": args.repeats,
                    "bandwidth_tb_s": bandwidth(torch.cuda.get_device_name()), "variants": {}}
    started = time.perf_counter()
    for variant in args.kernels.split(","):
        if time.perf_counter() - started > args.budget_s:
            result["variants"][variant] = {"skipped": f"budget of {args.budget_s} s spent"}
            continue
        try:
            result["variants"][variant] = profile_variant(dep, variant, args)
            torch.cuda.reset_peak_memory_stats()
        except Exception as e:  # recorded, not lost: the next kernel still runs
            import traceback

            result["variants"][variant] = {"error": f"{type(e).__name__}: {e}"[:2000],
                                           "traceback": traceback.format_exc()[-3000:]}
        print(variant, json.dumps(result["variants"][variant])[:3000], flush=True)
        (work / "text-profile-partial.json").write_text(json.dumps(result, indent=2))
    return result
