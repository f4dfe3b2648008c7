"""Text speed through the Cog server: the decode engine per configuration, against HF generate bf16 eager.

    python benchmarks/bench.py text-server smollm3-3b --configs "hqq-int4=quantize=hqq;bf16=quantize=none"

One run: the baseline (the same synthetic model, bf16, HF `generate` eager, token count forced) in this
process, then for each configuration a Cog server booted with that OPTIMIZE, and its figures from the
predictions' own metrics (`predict_time`, `time_to_first_token`, `output_token_count`):
- bs1 decode at 512 new tokens (and 4,000 with --long), sampled (temperature 0.7, top_p 0.9);
- time to first token for a 512-token prompt (chat template included);
- a deployment that takes an image (Gemma 3) sends its catalog example image with every request, and adds
  its example question with 128 new tokens, against HF generate of the same image and question;
- 8 simultaneous requests of 256 tokens: how many are served and refused, and the aggregate tokens/s;
- serving memory (the worker's peak after setup).
Each figure is also given as a fraction of its roofline: bytes of weights read per token / HBM bandwidth.
Fidelity: the quantized model against the bf16 one on the same weights, top-1 agreement and logit cosine
over a fixed set of prompts (teacher-forced), measured in this process.
"""

from __future__ import annotations

import gc
import io
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from shared.runtime import peak_memory_gb

# HBM bandwidth by GPU (spec sheets), for the roofline.
BANDWIDTH_TBS = {"H100": 3.35, "H200": 4.8, "A100": 2.0, "L40S": 0.864}
SENTENCE = "The lighthouse keeper wrote in his log every night about the sea, the ships and the weather. "
LONG_PROMPT = SENTENCE * 28  # 1,316 tokens (SmolLM3's tokenizer)
# Fixed prompts of the fidelity check: prose, code, a fact, a sequence (teacher-forced, no template).
FIDELITY_PROMPTS = [LONG_PROMPT[:400], "def fibonacci(n):\n    return", "Paris is the capital of", "1, 2, 3, 5, 8,"]
# The reference: the deployment's own loading with its weights left as built (bf16, nothing pruned).
UNCHANGED = "prune=none,quantize=none,compile=off"


def bandwidth(device_name: str) -> float:
    return next((v for k, v in BANDWIDTH_TBS.items() if k in device_name), 3.35)


def weight_bytes_per_token(model, int4_group: int | None = None, bytes_per_weight: float = 2.0) -> dict:
    """Bytes a one-token step reads: every decoder Linear (bf16, int8 / fp8 at `bytes_per_weight` 1, or int4
    with a bf16 scale and zero per group) and the lm_head (bf16; tied to the embeddings in SmolLM3 and Gemma 3,
    read once per token). The vision tower is not part of a decode step."""
    linear = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and "lm_head" not in n and "vision" not in n)
    head = model.get_output_embeddings().weight.numel()
    per_param = bytes_per_weight if int4_group is None else 0.5 + 4.0 / int4_group
    return {"decoder_linear_params": linear, "lm_head_params": head, "bytes": int(linear * per_param + head * 2)}


def rooflines(model, tbs: float) -> dict:
    """Single-stream decode tokens/s at the HBM bandwidth, per weight format."""
    formats = {"bf16": weight_bytes_per_token(model), "int8": weight_bytes_per_token(model, bytes_per_weight=1.0),
               "int4": weight_bytes_per_token(model, int4_group=64)}
    return {name: round(tbs * 1e12 / b["bytes"], 1) for name, b in formats.items()}


def weight_format(path: str) -> str:
    """Which roofline a served path decodes at, from its setup path (or OPTIMIZE where setup failed)."""
    if any(tag in path for tag in ("hqq", "int4", "pruna", "bnb4")):  # bnb4: Unsloth's NF4 (4 bits + a scale per 64)
        return "int4"
    if any(tag in path for tag in ("int8", "fp8")):
        return "int8"
    return "bf16"


def hf_generate_baseline(model, tok, new_tokens: int, repeats: int) -> dict:
    tok = getattr(tok, "tokenizer", tok)  # Gemma's processor: its text part
    inputs = {k: v.to(model.device) for k, v in tok("Tell me a long story about a lighthouse keeper.",
                                                     return_tensors="pt").items()}
    times = _timed_generate(model, inputs, new_tokens, repeats)
    return {"name": "bf16 eager HF generate", "new_tokens": new_tokens, "seconds": times,
            "tokens_per_s": round(new_tokens / statistics.median(times), 2)}


def hf_image_baseline(model, processor, image, question: str, new_tokens: int, repeats: int) -> dict:
    """HF generate, bf16 eager, on one image and question: end to end (the processor included), as the
    deployment's `predict_time` is."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def inputs():
        enc = processor(text=text, images=[image], return_tensors="pt", add_special_tokens=False)
        return {k: v.to(model.device) for k, v in enc.items()}

    times = _timed_generate(model, inputs, new_tokens, repeats)
    return {"name": "bf16 eager HF generate, image + question", "new_tokens": new_tokens, "seconds": times,
            "median_s": round(statistics.median(times), 4), "tokens_per_s": round(new_tokens / statistics.median(times), 2)}


def _timed_generate(model, inputs, new_tokens: int, repeats: int) -> list[float]:
    """Seconds per sampled generate of exactly `new_tokens` (one warm-up first); `inputs` a dict or a function
    that makes it (timed too)."""
    sync = torch.cuda.synchronize if model.device.type == "cuda" else lambda: None

    def once():
        sync()
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(**(inputs() if callable(inputs) else inputs), max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, do_sample=True, temperature=0.7, top_p=0.9, use_cache=True)
        sync()
        return time.perf_counter() - started

    once()
    return [once() for _ in range(repeats)]


def fidelity(reference, quantized_logits_fn, tok, prompts: list[str]) -> dict:
    """Teacher-forced next-token logits of the quantized model against the bf16 one, on the same text."""
    return logit_agreement(prompt_logits(lambda ids: reference(input_ids=ids).logits, tok, reference.device, prompts),
                           prompt_logits(quantized_logits_fn, tok, reference.device, prompts))


def prompt_logits(forward, tok, device, prompts: list[str]) -> list[torch.Tensor]:
    """Each prompt's teacher-forced logits from `forward(input_ids)`, in float32 on the CPU."""
    with torch.inference_mode():
        return [forward(tok(text, return_tensors="pt")["input_ids"].to(device))[0].float().cpu() for text in prompts]


def logit_agreement(reference: list[torch.Tensor], served: list[torch.Tensor]) -> dict:
    """Per position of each prompt: whether the top token is the same, and the logits' cosine (mean)."""
    agree = sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in zip(reference, served, strict=True))
    n = sum(a.shape[0] for a in reference)
    cos = [torch.nn.functional.cosine_similarity(a, b, dim=-1).mean().item() for a, b in zip(reference, served, strict=True)]
    return {"top1_agreement": round(agree / n, 4), "logit_cosine": round(statistics.mean(cos), 4), "positions": n}


def _metrics(body: dict) -> dict:
    m = body["metrics"]
    ttft, total, out = m.get("time_to_first_token"), m["predict_time"], m.get("output_token_count")
    decode = round((out - 1) / (total - ttft), 1) if ttft is not None and out and total > ttft else None
    return {"predict_time": total, "ttft": ttft, "input_tokens": m.get("input_token_count"), "tokens": out,
            "decode_tok_s": decode}


def _median(rows: list[dict], key: str):
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(values), 4) if values else None


def prompt_of_tokens(deployment: str, tokens: int) -> tuple[str, int]:
    """A prompt of whole sentences whose chat-templated form (what the deployment's `input_token_count` counts,
    its image tokens aside) is closest to `tokens`: (the prompt, its templated token count)."""
    from shared import catalog
    from shared.builders.text import tokenizer_for

    tok = tokenizer_for(catalog.get(deployment))  # with the deployment's vendored chat template

    def count(prompt: str) -> int:
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True,
                                       enable_thinking=False)  # SmolLM3's default mode
        return len(tok(text, add_special_tokens=False)["input_ids"])

    # The count grows with each sentence: stop at the first prompt that reaches `tokens`, or the one before it.
    n, below = 1, None
    while (size := count(SENTENCE * n)) < tokens:
        n, below = n + 1, size
    if below is not None and tokens - below <= size - tokens:
        return SENTENCE * (n - 1), below
    return SENTENCE * n, size


def request_plan(deployment: str, *, long: bool, tokens: int = 512, long_tokens: int = 4000,
                 concurrent_tokens: int = 256) -> tuple[dict, dict, dict]:
    """(inputs every request carries, the bs1 cases by name, the request sent 8 times at once).
    A deployment that needs an image (Gemma 3) gets its catalog example's with every request, and a case of
    its example question with 128 new tokens (the issue's figure)."""
    from shared.cogserver import example_inputs

    example = example_inputs(deployment)
    extra = {k: v for k, v in example.items() if k == "image"}
    cases = {f"{tokens}_tokens": {"prompt": "Tell me a long story about a lighthouse keeper.", "max_new_tokens": tokens}}
    if long:
        cases[f"{long_tokens}_tokens"] = {"prompt": "Tell me a very long story about a lighthouse keeper.",
                                          "max_new_tokens": long_tokens}
    if extra:
        cases["image_question_128"] = {"prompt": example["prompt"], "max_new_tokens": 128}
    # The time to first token is for a 512-token prompt. (Until 4be34bf this case sent LONG_PROMPT:
    # 1,501 tokens with SmolLM3's template, not the ~560 it was said to be.)
    cases["ttft_512_token_prompt"] = {"prompt": prompt_of_tokens(deployment, 512)[0], "max_new_tokens": 8}
    concurrent = {"prompt": "Write a poem about the sea.", "max_new_tokens": concurrent_tokens}
    return extra, cases, concurrent


def server_figures(server, repeats: int, extra: dict, cases: dict, concurrent: dict, rows_at_once: int = 8,
                   progress=lambda row: None, at_defaults: bool = False) -> dict:
    """Every case's figures, then the simultaneous requests; requests longer than a batched row (the 4,000-token
    case) come last, as the longest. `progress(row)` is called after each, so a run stopped midway keeps them.
    `at_defaults`: also the same number of requests at once with the deployment's own max_new_tokens (one run:
    Phi-4's default 2,048 tokens take ~30 s); their first tokens say whether they were decoded together or queued."""
    from shared.cogserver import log_events, post_prediction

    logs: list[str] = []

    def predict(inputs):
        body = server.predict({**extra, **inputs}).json()
        logs.append(body.get("logs") or "")
        assert body["status"] == "succeeded", body.get("error")
        return body

    def run_case(case, inputs):
        rows = [_metrics(predict({**inputs, "temperature": 0.7, "top_p": 0.9, "seed": i}))
                for i in range(repeats + 1)][1:]  # the first warms up
        medians = {f"median_{k}": _median(rows, k) for k in ("predict_time", "ttft", "input_tokens", "tokens", "decode_tok_s")}
        row[case] = {"runs": rows, **medians}
        print(case, {k: v for k, v in row[case].items() if k != "runs"}, flush=True)
        progress(row)

    row = {}
    longest = {k: v for k, v in cases.items() if v["max_new_tokens"] > 2048}
    for case, inputs in cases.items():
        if case not in longest:
            run_case(case, inputs)
    # N requests at once. A 409 is retried for at most 1 s (the server frees a slot a few ms after it answers:
    # docs/operations.md); a server that takes one request at a time refuses the others for seconds.
    body = {**extra, **concurrent, "temperature": 0.7, "top_p": 0.9}

    def at_once(first_seed: int, body: dict = body) -> dict:
        def post(i):
            answer = post_prediction(server.url, {**body, "seed": first_seed + i}, timeout=600, busy_wait=1.0)
            return answer, time.perf_counter()

        started = time.perf_counter()
        with ThreadPoolExecutor(rows_at_once) as pool:
            answered = list(pool.map(post, range(rows_at_once)))
        wall = time.perf_counter() - started
        answers = [a for a, _ in answered]
        served = [(a.json(), at) for a, at in answered if a.status_code == 200 and a.json().get("status") == "succeeded"]
        logs.extend(b.get("logs") or "" for b, _ in served)
        tokens = sum(b["metrics"].get("output_token_count") or 0 for b, _ in served)
        # Where the server's time goes (Cog's response carries no timestamps): when each prediction's run() began,
        # as its answer's arrival less its predict_time, relative to the first; and its first token after that.
        starts = sorted(at - b["metrics"]["predict_time"] for b, at in served)
        return {"served": len(served), "refused": sum(a.status_code == 409 for a in answers),
                "other": [a.status_code for a in answers if a.status_code not in (200, 409)],
                "tokens": tokens, "wall_s": round(wall, 3), "aggregate_tok_s": round(tokens / wall, 1),
                "start_spread_s": round(starts[-1] - starts[0], 3) if starts else None,
                "ttft_s": sorted(t for b, _ in served if (t := b["metrics"].get("time_to_first_token")) is not None)}

    runs = [at_once(i * rows_at_once) for i in range(repeats + 1)][1:]  # the first warms up, as for every case
    row[f"concurrent_{rows_at_once}x{concurrent['max_new_tokens']}"] = {
        "served": min(r["served"] for r in runs), "refused": sum(r["refused"] for r in runs),
        "other": [code for r in runs for code in r["other"]], "tokens": min(r["tokens"] for r in runs),
        **{f"median_{k}": _median(runs, k) for k in ("wall_s", "aggregate_tok_s", "start_spread_s")},
        "runs": runs}
    print("concurrent", {k: v for k, v in row[f"concurrent_{rows_at_once}x{concurrent['max_new_tokens']}"].items()
                         if k != "runs"}, flush=True)
    progress(row)
    if at_defaults:
        defaults = {k: v for k, v in body.items() if k != "max_new_tokens"}
        row[f"concurrent_{rows_at_once}_at_defaults"] = at_once(1000, defaults)
        print("concurrent at defaults", row[f"concurrent_{rows_at_once}_at_defaults"], flush=True)
        progress(row)
    for case, inputs in longest.items():
        run_case(case, inputs)
    ends = log_events("\n".join(logs), "predict.end")
    row["serving_peak_gpu_gb"] = max((e.get("peak_gpu_gb") or 0 for e in ends), default=None)
    row["recompiles_after_setup"] = sum(text.count("Recompiling") for text in logs)
    return row


def bench_text_server(args) -> dict:
    from shared import catalog, llm_backends
    from shared.builders.text import build_random_causal_lm, build_random_gemma3
    from shared.cogserver import CogServer, from_data_uri

    name = args.deployment
    dep = catalog.get(name)
    work = Path(os.environ.get("OUT") or "/tmp")
    configs = dict(item.split("=", 1) for item in args.configs.split(";"))
    device = torch.cuda.get_device_name()
    tbs = bandwidth(device)
    extra, cases, concurrent = request_plan(name, long=args.long)
    result: dict = {"deployment": name, "repeats": args.repeats, "configs": configs, "bandwidth_tb_s": tbs,
                    "cases": {k: v["max_new_tokens"] for k, v in cases.items()}, "variants": {}}

    torch.cuda.reset_peak_memory_stats()
    build = build_random_gemma3 if name == "gemma3-4b-it" else build_random_causal_lm
    model, tok = build(dep, tiny=False, device="cuda", dtype=torch.bfloat16)
    if args.baseline_from:  # measured by an earlier run of this benchmark (same commit): named, not re-run
        result["baseline"] = {**json.loads(Path(args.baseline_from).read_text())["baseline"], "from": args.baseline_from}
    else:
        result["baseline"] = {**hf_generate_baseline(model, tok, args.tokens, args.repeats), "peak_gpu_gb": peak_memory_gb()}
        if extra:  # the same image and question the server gets
            from shared.images import load_rgb

            image = load_rgb(io.BytesIO(from_data_uri(extra["image"])[1]))
            result["baseline_image_question"] = hf_image_baseline(model, tok, image, cases["image_question_128"]["prompt"],
                                                                  128, args.repeats)
    result["roofline_tok_s"] = rooflines(model, tbs)
    print("baseline", result["baseline"]["tokens_per_s"], "roofline", result["roofline_tok_s"], flush=True)
    (work / "text-server-partial.json").write_text(json.dumps(result, indent=2))
    if args.fidelity:
        import copy

        quantized, _ = llm_backends.hqq_quantize(copy.deepcopy(model), via="hqq", device="cuda", dtype=torch.bfloat16)
        result["fidelity_hqq4_vs_bf16"] = fidelity(model, lambda ids: quantized(input_ids=ids).logits, tok, FIDELITY_PROMPTS)
        print("fidelity", result["fidelity_hqq4_vs_bf16"], flush=True)
        del quantized
    del model
    torch.cuda.empty_cache()

    first = next(iter(configs))
    for label, optimize in configs.items():
        env = {"WEIGHT_PROFILE": os.environ["WEIGHT_PROFILE"], "TORCH_LOGS": "recompiles", "OPTIMIZE": optimize}
        started = time.perf_counter()
        try:
            with CogServer(name, env=env, setup_timeout=args.setup_timeout, log_path=work / f"server-{label}.log") as server:
                row = {"ready_s": round(time.perf_counter() - started, 1)}
                setup = server.events("setup.done")[-1]
                row["setup"] = {k: setup.get(k) for k in ("path", "phases", "peak_gpu_gb", "kv_cache_gb", "seconds")}
                mine = cases if label == first else {k: v for k, v in cases.items() if k != "4000_tokens"}

                def partial(figures, row=row, label=label):
                    result["variants"][label] = {**row, **figures, "partial": True}
                    (work / "text-server-partial.json").write_text(json.dumps(result, indent=2))

                row.update(server_figures(server, args.repeats, extra, mine, concurrent, progress=partial,
                                          at_defaults=args.at_defaults))
        except Exception as e:  # recorded, not lost: the next configuration still runs
            row = {**result["variants"].get(label, {}), "error": f"{type(e).__name__}: {e}"[:2000]}  # figures so far kept
        row["weight_format"] = weight_format(row.get("setup", {}).get("path") or optimize)
        roof = result["roofline_tok_s"][row["weight_format"]]
        decode = row.get("512_tokens", {}).get("median_decode_tok_s")
        row["fraction_of_roofline_512"] = round(decode / roof, 3) if decode else None
        result["variants"][label] = row
        print(label, {k: v for k, v in row.items() if k != "setup"}, flush=True)
        (work / "text-server-partial.json").write_text(json.dumps(result, indent=2))
    return result


def bench_text_fidelity(args) -> dict:
    """Each configuration's next-token logits against bf16 on the same synthetic weights (`fidelity()`).

    A configuration is the deployment's own `load_model()` under its OPTIMIZE (pruning, then quantization, as
    served); the reference is the same loading with UNCHANGED. Synthetic weights are seeded, so every load
    builds the same ones. Runs on a GPU (bf16) or, slower, on the CPU (float32, as every CPU path here): the
    figures are the weights' (HQQ's CPU layers dequantize the same 4-bit weights a GPU kernel reads), not a kernel's."""
    from shared.cogserver import runner_class

    def load(optimize: str):
        os.environ["OPTIMIZE"] = optimize
        runner = runner_class(args.deployment)()
        runner.prepare()  # what setup() does before load_model()
        started = time.perf_counter()
        model, tok, path = runner.load_model()
        return model, getattr(tok, "tokenizer", tok), path, round(time.perf_counter() - started, 1)

    def logits(model, tok) -> list[torch.Tensor]:
        return prompt_logits(lambda ids: model(input_ids=ids).logits, tok, model.device, FIDELITY_PROMPTS)

    spec = runner_class(args.deployment).option_spec()
    unchanged = ",".join(item for item in UNCHANGED.split(",") if item.split("=")[0] in spec)
    model, tok, path, seconds = load(unchanged)
    reference = logits(model, tok)
    result: dict = {"deployment": args.deployment, "ran_on": str(model.device), "dtype": str(model.dtype),
                    "prompts": FIDELITY_PROMPTS,
                    "reference": {"optimize": unchanged, "path": path, "load_s": seconds}, "configs": {}}
    del model
    gc.collect()
    for label, optimize in (item.split("=", 1) for item in args.configs.split(";")):
        model, tok, path, seconds = load(optimize)
        row = logit_agreement(reference, logits(model, tok))
        result["configs"][label] = {"optimize": optimize, "path": path, "load_s": seconds, **row}
        print(label, result["configs"][label], flush=True)
        del model
        gc.collect()  # a model held in a reference cycle would stay beside the next one (the CPU run was OOM-killed)
    return result

