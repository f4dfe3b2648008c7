"""GPU-only inference libraries (Pruna, Unsloth) behind CPU paths with the same interface.

Each function returns what it did as a short string; the runner logs it, so which path served a
request is never a guess.
"""

from __future__ import annotations

import copy
import os

import torch

from . import compile as selective_compile
from .builders import text as text_builder
from .quantize import apply_hqq
from .runtime import cache_dir, log_event, require


# A serving container makes no network call it was not asked for. The switches each library's own source
# reads (checked in the wheels of the pinned versions, 2026-11-25), set before it is imported:
NO_NETWORK_ENV = {
    # pruna 0.3.4 pruna/telemetry/metrics.py: an OTLP metrics exporter is built at import; counters are
    # recorded only when PRUNA_METRICS_ENABLED is "true" (it defaults to its config.yaml otherwise).
    "PRUNA_METRICS_ENABLED": "false",
    # OpenTelemetry's SDK (the exporter above) becomes a no-op provider.
    "OTEL_SDK_DISABLED": "true",
    # unsloth 2026.10.9 unsloth/models/_utils.py get_statistics(): from_pretrained downloads README files of
    # unslothai/* from the Hub (up to 120 s, raising TimeoutError) unless this variable is set.
    "UNSLOTH_DISABLE_STATISTICS": "1",
}


def quiet_libraries() -> None:
    """Set NO_NETWORK_ENV (an operator's own value wins)."""
    for name, value in NO_NETWORK_ENV.items():
        os.environ.setdefault(name, value)


def hqq_quantize(model, *, via: str, device: str, dtype: torch.dtype, nbits: int = 4, group_size: int = 64):
    """HQQ 4-bit weights: through Pruna's `smash` on GPU, through hqq directly on CPU.

    Pruna's HQQ refuses CPU, hence the direct path; both quantize the same layers the same way.
    Returns (model, path).
    """
    if via == "pruna":
        quiet_libraries()
        pruna = require("pruna", install="pruna==0.3.4", purpose="Pruna HQQ quantization")
        pack_hqq_int4_on_any_torch()
        config = pruna.SmashConfig({"hqq": {"weight_bits": nbits, "group_size": group_size,
                                            "compute_dtype": "torch.bfloat16" if dtype == torch.bfloat16 else "torch.float16"}},
                                   device=device)
        smashed = pruna.smash(model=model, smash_config=config)
        inner = getattr(smashed, "model", smashed)
        # Pruna logs and swallows a failure to patch in the int4 kernels, leaving HQQ's dequantize-then-matmul
        # layers (2.6x slower than bf16 eager): say which one serves.
        fast = sum(type(m).__name__ == "HQQLinearTorchWeightOnlynt4" for m in inner.modules())
        kernel = "int4mm" if fast else "dequantize"
        log_event("quantize", method="pruna.hqq", nbits=nbits, group_size=group_size, kernel=kernel, int4mm_layers=fast)
        return inner, f"pruna-hqq{nbits}-{kernel}"
    apply_hqq(model, nbits=nbits, group_size=group_size, device=device, compute_dtype=dtype)
    return model, f"hqq{nbits}"


def pack_hqq_int4_on_any_torch() -> None:
    """hqq's torchao_int4 backend (the int4 kernels Pruna's HQQ patches in for inference) packs two 4-bit
    values per byte only if `float(torch.__version__[:3]) >= 2.5`, which reads torch 2.11 as 2.1 (hqq
    0.2.7.post1 and 0.2.8.post1, hqq/backends/torchao.py). The unpacked int32 weights then fail
    `_convert_weight_to_int4pack` ("Expected in.dtype() == at::kByte"). Pack what it leaves unpacked."""
    from hqq.backends import torchao as hqq_torchao

    layer = hqq_torchao.HQQLinearTorchWeightOnlynt4
    unpatched = layer.hqq_quants_to_torch_quants
    if getattr(unpatched, "packs_int4", False):
        return

    def hqq_quants_to_torch_quants(self, *args, **kwargs):
        weight, scales, zeros = unpatched(self, *args, **kwargs)
        if weight.dtype == torch.int32:  # skipped by the version test: pair up columns into one byte
            weight = (weight[:, ::2] << 4 | weight[:, 1::2]).to(torch.uint8)
        return weight, scales, zeros

    hqq_quants_to_torch_quants.packs_int4 = True
    layer.hqq_quants_to_torch_quants = hqq_quants_to_torch_quants


def enable_compiled_decode(model) -> str:
    """A compiled one-token decode step over a static KV cache (gpt-fast's trick, done by transformers).

    Given a static cache (the runner owns one: shared/llm.py), transformers' generate() compiles only
    the decode forward (fixed shapes, CUDA-graph friendly) and runs prefill eagerly. Compiling
    `model.forward` for both crashed with CUDA graphs ("accessing tensor output of CUDAGraphs that has
    been overwritten").
    """
    from transformers import CompileConfig

    backend = selective_compile.default_backend()
    # CUDA graphs (reduce-overhead) are an inductor mode; on CPU the same graphs and guards run eagerly.
    mode = "reduce-overhead" if backend == "inductor" else None
    config = CompileConfig(fullgraph=True, mode=mode, dynamic=False, backend=backend)
    config._compile_all_devices = True  # transformers otherwise compiles on GPUs only: keep CPU tests honest
    model.generation_config.compile_config = config
    log_event("compile", scope="decode_step", cache="static", backend=str(backend), mode=mode)
    return "static-cache+compiled-decode"


def has_compiled_decode(model) -> bool:
    return getattr(model.generation_config, "compile_config", None) is not None


def new_static_cache(model, max_cache_len: int):
    """A static KV cache of `max_cache_len` tokens whose layers all have full length.

    transformers' sliding-window static layers (Gemma 3: 5 of every 6 layers) count tokens in a Python
    int that torch.compile guards on, so every decode step recompiles (48 s each for Gemma 3 4B on the
    H100; transformers#44609). Full-length layers under the model's own sliding-window masks compute the
    same attention with fixed shapes, for more cache memory (~1.4 GB at 10k tokens for Gemma 3 4B).
    """
    from transformers import StaticCache

    config = copy.copy(model.config.get_text_config(decoder=True))
    config.layer_types = ["full_attention"] * config.num_hidden_layers
    return StaticCache(config=config, max_cache_len=max_cache_len)


def load_with_unsloth(dep, source, *, device: str, dtype: torch.dtype, max_seq_length: int):
    """Unsloth's FastLanguageModel on GPU; plain transformers on CPU. Returns (model, tokenizer, path)."""
    if device == "cpu":
        model, tok = text_builder.load_causal_lm(dep, source, device=device, dtype=dtype)
        log_event("backend", path="transformers", reason="Unsloth needs a GPU")
        return model, tok, "transformers (CPU)"
    quiet_libraries()
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
