"""GPU-only inference libraries (Pruna, Unsloth) behind CPU paths with the same interface.

Each function returns what it did as a short string; the runner logs it, so which path served a
request is never a guess.
"""

from __future__ import annotations

import contextlib
import os

import torch

from . import compile as selective_compile
from .builders import text as text_builder
from .quantize import apply_hqq, not_lm_head, to_device_nf4
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


def hqq_quantize(model, *, via: str, device: str, dtype: torch.dtype, nbits: int = 4, group_size: int = 64,
                 kernel: str = "torchao_int4", filter_fn=None):
    """HQQ 4-bit weights: through Pruna's `smash` (`via="pruna"`, GPU only), or through hqq directly.

    Pruna's HQQ refuses CPU, hence the direct path; both quantize the same layers the same way. On a
    GPU the direct path patches in the same int4 kernels Pruna does (`kernel="torchao_int4"`: torch's
    tinygemm `_weight_int4pack_mm`) or gemlite's Triton GEMV kernels (`kernel="gemlite"`); on CPU
    HQQ's own dequantize-then-matmul layers serve. `filter_fn` (direct path only): which Linears, for a model
    hqq's HF wrapper does not know. Returns (model, path).
    """
    if via == "pruna":
        quiet_libraries()
        pruna = require("pruna", install="pruna==0.3.4", purpose="Pruna HQQ quantization")
        pack_hqq_int4_on_any_torch()
        # Pruna 0.3.4's HQQ patches in one int4 backend itself (its `backend` hyperparameter is a constant,
        # torchao_int4); for gemlite it leaves HQQ's layers (`use_torchao_kernels` off) and hqq patches them here.
        config = pruna.SmashConfig({"hqq": {"weight_bits": nbits, "group_size": group_size,
                                            "compute_dtype": "torch.bfloat16" if dtype == torch.bfloat16 else "torch.float16",
                                            "use_torchao_kernels": kernel == "torchao_int4"}},
                                   device=device)
        smashed = pruna.smash(model=model, smash_config=config)
        inner = getattr(smashed, "model", smashed)
        if kernel == "gemlite":
            _patch_int4(inner, kernel)
        # Pruna logs and swallows a failure to patch in the int4 kernels, leaving HQQ's dequantize-then-matmul
        # layers (2.6x slower than bf16 eager): say which one serves.
        fast = sum(type(m).__name__ in _INT4_LAYERS[kernel] for m in inner.modules())
        served = ("int4mm" if kernel == "torchao_int4" else kernel) if fast else "dequantize"
        log_event("quantize", method="pruna.hqq", nbits=nbits, group_size=group_size, kernel=served, int4_layers=fast)
        return inner, f"pruna-hqq{nbits}-{served}"
    apply_hqq(model, nbits=nbits, group_size=group_size, device=device, compute_dtype=dtype, filter_fn=filter_fn)
    if device == "cpu":
        return model, f"hqq{nbits}"
    patched = _patch_int4(model, kernel)
    log_event("quantize", method="hqq", nbits=nbits, group_size=group_size, kernel=kernel, patched_layers=patched)
    if not patched:
        raise RuntimeError(f"hqq's {kernel} backend patched no layer: the slow dequantize path would serve")
    return model, f"hqq{nbits}-{kernel}"


def _patch_int4(model, kernel: str) -> int:
    """Swap HQQ's layers for an int4 inference backend's (hqq's `prepare_for_inference`); how many it swapped."""
    from hqq.utils.patching import prepare_for_inference

    if kernel == "torchao_int4":
        pack_hqq_int4_on_any_torch()
    else:
        require("gemlite", install="gemlite==0.6.0.post2", purpose="HQQ's gemlite int4 kernels")
        load_gemlite_configs()
    prepare_for_inference(model, backend=kernel)
    return sum(type(m).__name__ in _INT4_LAYERS[kernel] for m in model.modules())


# The layer classes each of hqq's inference backends swaps in (hqq 0.2.8.post1, gemlite 0.6.0.post2).
_INT4_LAYERS = {"torchao_int4": ("HQQLinearTorchWeightOnlynt4",), "gemlite": ("GemLiteLinearTriton", "GemLiteLinear")}


# gemlite's tuned kernel configs by architecture (files in gemlite/configs/ of 0.6.0.post2), for a GPU whose
# name matches none of the files: the H200 ("nvidia_h200") has the H100's SMs and takes its tunings.
GEMLITE_CONFIG_BY_ARCH = {(9, 0): "h100", (8, 0): "a100", (8, 9): "l40s"}


def gemlite_config_for(gpu_name: str, capability: tuple[int, int], shipped: list[str]) -> str | None:
    """Which of gemlite's shipped config files (`shipped`: their tags) this GPU should load, or None when
    gemlite loads one itself (a tag in the GPU's name, which is its own rule) or none fits."""
    name = gpu_name.lower().replace(" ", "_")
    if any(tag in name for tag in shipped):
        return None
    tag = GEMLITE_CONFIG_BY_ARCH.get(tuple(capability))
    return tag if tag in shipped else None


def load_gemlite_configs() -> None:
    """gemlite autotunes each matmul shape at its first call unless a tuned config is loaded; it loads its
    own file only when the file's tag is in the GPU's name. Without one (an H200), the decode step's compile
    was still autotuning after several minutes (2026-12-05). Load the same architecture's file."""
    import gemlite
    from gemlite.core import GemLiteLinear

    folder = os.path.join(os.path.dirname(gemlite.__file__), "configs")
    shipped = [f.removesuffix(".json") for f in os.listdir(folder) if f.endswith(".json")]
    tag = gemlite_config_for(torch.cuda.get_device_name(), torch.cuda.get_device_capability(), shipped)
    if tag and GemLiteLinear.load_config(os.path.join(folder, f"{tag}.json")):
        log_event("gemlite.configs", loaded=tag, gpu=torch.cuda.get_device_name())


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


def decode_step_compile() -> dict:
    """torch.compile arguments for the decode engine's one-token step (shared/decode_engine.py):
    Inductor with CUDA graphs ("reduce-overhead") on a GPU; on CPU, Dynamo with the eager backend traces
    the same graph with the same guards (and recompiles), which is what CPU tests check."""
    backend = selective_compile.default_backend()
    mode = "reduce-overhead" if backend == "inductor" else None
    log_event("compile", scope="decode_step", cache="static", backend=str(backend), mode=mode)
    return {"backend": backend, "mode": mode}


def prefill_compile() -> dict:
    """torch.compile arguments for the engine's prefill: Inductor on a GPU, without CUDA graphs (each prompt
    has its own length); Dynamo's eager backend on CPU, as for the step."""
    backend = selective_compile.default_backend()
    log_event("compile", scope="prefill", shapes="dynamic", backend=str(backend))
    return {"backend": backend}


# Scopes held for the life of the process (entered once, never left): see load_with_unsloth's compiled_decode.
_PROCESS_SCOPES = contextlib.ExitStack()


def load_with_unsloth(dep, source, *, device: str, dtype: torch.dtype, max_seq_length: int, four_bit: bool = False,
                      compiled_decode: bool = False):
    """Unsloth's FastLanguageModel on GPU; plain transformers on CPU. Returns (model, tokenizer, path).

    `four_bit`: Unsloth's 4-bit load (bitsandbytes NF4, lm_head kept 16-bit) on GPU; on CPU the same format
    through bitsandbytes directly (0.50 runs NF4 there), over the same layers.
    `compiled_decode`: the engine compiles the one-token step over this model (its `compile=on`)."""
    if device == "cpu":
        model, tok = text_builder.load_causal_lm(dep, source, device=device, dtype=dtype)
        log_event("backend", path="transformers", reason="Unsloth needs a GPU")
        if four_bit:
            how = to_device_nf4(model, device, compute_dtype=dtype, filter_fn=not_lm_head)
            return model, tok, f"transformers (CPU)+{how}"
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
    # SDPA, asked for: Unsloth otherwise picks flash-attention, flex or SDPA by its own ladder, and the engine's
    # attention options (attention=grouped) start from SDPA.
    model, tok = unsloth.FastLanguageModel.from_pretrained(
        model_name=location, max_seq_length=max_seq_length, dtype=dtype, load_in_4bit=four_bit,
        attn_implementation="sdpa", **kwargs)
    unsloth.FastLanguageModel.for_inference(model)
    if compiled_decode:
        # Unsloth 2026.10.9 wraps Phi-3's attention in torch.compiler.disable (a fullgraph step fails: "Skip
        # inlining torch.compiler.disable()d function", H100, 2026-12-05) and, after one eager inference, sets
        # Dynamo's stance to eager_on_recompile, unless its decode-compile flag is set: what its own generate()
        # does around a compiled step (unsloth_zoo/temporary_patches/utils.py). Dynamo guards on that flag, so it
        # is held for the process's life, the life of the engine's compiled step.
        patches = require("unsloth_zoo.temporary_patches.utils", install="unsloth_zoo==2026.10.9",
                          purpose="Unsloth's compiled decode")
        _PROCESS_SCOPES.enter_context(patches.unsloth_decode_compile())
    log_event("backend", path="unsloth", version=getattr(unsloth, "__version__", "?"), four_bit=four_bit,
              compiled_decode=compiled_decode)
    return model, tok, "unsloth-bnb4" if four_bit else "unsloth"


def materialize_random(dep, source, *, device: str, dtype: torch.dtype):
    folder = cache_dir() / f"{dep.name}-{source.profile.value}-{os.environ.get('SYNTHETIC_NUM_LAYERS', 'all')}"
    if not (folder / "config.json").exists():
        model, tok = text_builder.load_causal_lm(dep, source, device=device, dtype=dtype)
        # Shards of a few GB, as the real checkpoint has: one 28 GB shard is serialized in host memory whole.
        model.save_pretrained(folder, max_shard_size="4GB")
        tok.save_pretrained(folder)
        del model
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return folder
