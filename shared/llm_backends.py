"""GPU-only inference libraries (Pruna, Unsloth) behind CPU paths with the same interface.

Each function returns what it did as a short string; the runner logs it, so which path served a
request is never a guess.
"""

from __future__ import annotations

import os

import torch

from .builders import text as text_builder
from .builders.loras import cache_dir
from .quantize import apply_hqq
from .runtime import log_event, require


def hqq_quantize(model, *, via: str, device: str, dtype: torch.dtype, nbits: int = 4, group_size: int = 64):
    """HQQ 4-bit weights: through Pruna's `smash` on GPU, through hqq directly on CPU.

    Pruna's HQQ refuses CPU, hence the direct path; both quantize the same layers the same way.
    Returns (model, path).
    """
    if via == "pruna":
        # Pruna exports telemetry at import unless told not to; a serving container must not phone home.
        os.environ.setdefault("PRUNA_DISABLE_TELEMETRY", "1")
        pruna = require("pruna", install="pruna==0.3.4", purpose="Pruna HQQ quantization")
        pruna.telemetry.set_telemetry_metrics(False)
        config = pruna.SmashConfig({"hqq": {"weight_bits": nbits, "group_size": group_size,
                                            "compute_dtype": "torch.bfloat16" if dtype == torch.bfloat16 else "torch.float16"}},
                                   device=device)
        smashed = pruna.smash(model=model, smash_config=config)
        inner = getattr(smashed, "model", smashed)
        log_event("quantize", method="pruna.hqq", nbits=nbits, group_size=group_size)
        return inner, f"pruna-hqq{nbits}"
    apply_hqq(model, nbits=nbits, group_size=group_size, device=device, compute_dtype=dtype)
    return model, f"hqq{nbits}"


def enable_compiled_decode(model, max_cache_len: int | None = None) -> str:
    """Static KV cache + a compiled one-token decode step (gpt-fast's trick, done by transformers).

    With `cache_implementation="static"`, transformers' generate() compiles only the decode forward
    (fixed shapes, CUDA-graph friendly) and runs prefill eagerly. Compiling `model.forward` for both
    crashed with CUDA graphs ("accessing tensor output of CUDAGraphs that has been overwritten").
    """
    from transformers import CompileConfig

    model.generation_config.cache_implementation = "static"
    model.generation_config.compile_config = CompileConfig(fullgraph=True, mode="reduce-overhead", dynamic=False)
    if max_cache_len:
        model.generation_config.cache_config = {"max_cache_len": max_cache_len}
    log_event("compile", scope="decode_step", cache="static", mode="reduce-overhead")
    return "static-cache+compiled-decode"


def load_with_unsloth(dep, source, *, device: str, dtype: torch.dtype, max_seq_length: int):
    """Unsloth's FastLanguageModel on GPU; plain transformers on CPU. Returns (model, tokenizer, path)."""
    if device == "cpu":
        model, tok = text_builder.load_causal_lm(dep, source, device=device, dtype=dtype)
        log_event("backend", path="transformers", reason="Unsloth needs a GPU")
        return model, tok, "transformers (CPU)"
    unsloth = require("unsloth", install="unsloth==2026.10.9", purpose="Unsloth inference")
    location, kwargs = source.location, {}
    if source.is_random:
        # Unsloth patches models as it loads them from disk, so the random model is written out first.
        location = str(materialize_random(dep, source, device=device, dtype=dtype))
        kwargs["local_files_only"] = True
    elif source.profile.value == "local":
        kwargs["local_files_only"] = True
    else:
        kwargs.update(revision=source.checkpoint.revision, token=source.from_pretrained_kwargs["token"])
    model, tok = unsloth.FastLanguageModel.from_pretrained(
        model_name=location, max_seq_length=max_seq_length, dtype=dtype, load_in_4bit=False, **kwargs)
    unsloth.FastLanguageModel.for_inference(model)
    log_event("backend", path="unsloth", version=getattr(unsloth, "__version__", "?"))
    return model, tok, "unsloth"


def materialize_random(dep, source, *, device: str, dtype: torch.dtype):
    folder = cache_dir() / f"{dep.name}-{source.profile.value}-{os.environ.get('SYNTHETIC_NUM_LAYERS', 'all')}"
    if not (folder / "config.json").exists():
        model, tok = text_builder.load_causal_lm(dep, source, device=device, dtype=dtype)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        del model
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return folder
