"""Weight quantization, applied once in setup(): torchao (int8 weight-only, float8), HQQ, bitsandbytes."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .runtime import log_event, require

LinearFilter = Callable[[nn.Module, str], bool]

# torchao's configs default to set_inductor_config=True, which switches Inductor's coordinate-descent
# tuning on for the whole process: quantizing FLUX's (eager) T5 made every later compile tune each kernel,
# 240 of a 298 s cold boot (py-spy, H100). Tuning is chosen where it pays: compile.tune_kernels().
KEEP_INDUCTOR_CONFIG = {"set_inductor_config": False}


def not_lm_head(module: nn.Module, name: str) -> bool:
    """Every layer but the output head, which stays 16-bit (hqq's own default for causal LMs)."""
    return "lm_head" not in name


def linear_only(filter_fn: LinearFilter | None) -> LinearFilter:
    """torchao calls the filter on every module: restrict it to nn.Linear, then apply the caller's rule."""
    return lambda m, name: isinstance(m, nn.Linear) and (filter_fn is None or filter_fn(m, name))


def _count_linear(model: nn.Module, filter_fn: LinearFilter) -> int:
    return sum(1 for n, m in model.named_modules() if filter_fn(m, n))


def _torchao_transform(model: nn.Module, config, filter_fn: LinearFilter | None, method: str, transform=None,
                       **logged) -> nn.Module:
    """torchao's `transform` (`quantize_` unless given: `sparsify_`) with `config` on the Linears `filter_fn` picks,
    logged as a `quantize` event with their count."""
    from torchao.quantization import quantize_

    filter_fn = linear_only(filter_fn)
    count = _count_linear(model, filter_fn)
    (transform or quantize_)(model, config, filter_fn=filter_fn)
    log_event("quantize", method=method, linear_layers=count, **logged)
    return model


def apply_int8_weight_only(model: nn.Module, filter_fn: LinearFilter | None = None) -> nn.Module:
    """torchao int8 weight-only: halves the weight bytes read per decode step; pays off once compiled."""
    ao = require("torchao", install="torchao==0.18.0", purpose="int8 weight-only quantization")
    return _torchao_transform(model, ao.quantization.Int8WeightOnlyConfig(**KEEP_INDUCTOR_CONFIG), filter_fn,
                              "torchao.int8_weight_only")


def apply_float8_weight_only(model: nn.Module, filter_fn: LinearFilter | None = None) -> nn.Module:
    """torchao float8 weight-only (e4m3, one scale per output row): the same bytes per weight as int8, read by
    bf16 matmuls after an upcast that Inductor fuses; no activation quantization, so any GPU and the CPU run it."""
    ao = require("torchao", install="torchao==0.18.0", purpose="float8 weight-only quantization")
    return _torchao_transform(model, ao.quantization.Float8WeightOnlyConfig(**KEEP_INDUCTOR_CONFIG), filter_fn,
                              "torchao.float8_weight_only")


def apply_semi_sparse(model: nn.Module, filter_fn: LinearFilter | None = None) -> nn.Module:
    """Layers already pruned 2:4 (`prune.semi_structured`) stored in torch's semi-structured sparse layout
    (torchao's SemiSparseWeightConfig; CUTLASS / cuSPARSELt kernels, CUDA only): the kept half of the weights
    and their 2-bit positions. On CPU the masked dense weights are the same numbers."""
    if not torch.cuda.is_available():
        return model
    ao = require("torchao", install="torchao==0.18.0", purpose="2:4 sparse weights")
    from torchao.sparsity import SemiSparseWeightConfig, sparsify_

    return _torchao_transform(model, SemiSparseWeightConfig(), filter_fn, "torchao.semi_sparse_weight",
                              transform=sparsify_, version=ao.__version__)


def apply_float8(model: nn.Module, filter_fn: LinearFilter | None = None, granularity: str = "row") -> nn.Module:
    """torchao float8 (dynamic activation scales, fast accumulation): Hopper's fp8 tensor cores, half the memory.

    granularity "tensor": one scale per activation and per weight (cuBLAS's plain fp8 GEMM; what flux-fast
    and Replicate use); "row": one scale per activation row and weight row (finer, a rowwise GEMM).
    Slower than bf16 until compiled (measured 3.4x slower eager on FLUX): only use with compile.
    """
    require("torchao", install="torchao==0.18.0", purpose="float8 quantization")
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor

    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        raise RuntimeError("float8 quantization needs a GPU with compute capability 8.9+ (Ada/Hopper)")
    scales = {"row": PerRow, "tensor": PerTensor}
    if granularity not in scales:
        raise ValueError(f"float8 granularity must be one of {sorted(scales)}, not {granularity!r}")
    config = Float8DynamicActivationFloat8WeightConfig(granularity=scales[granularity](), **KEEP_INDUCTOR_CONFIG)
    return _torchao_transform(model, config, filter_fn, f"torchao.float8_per_{granularity}")


def apply_float8_static(model: nn.Module, calibrate: Callable[[], None], filter_fn: LinearFilter | None = None) -> nn.Module:
    """torchao float8 with static per-tensor activation scales: each Linear's input range is observed (min-max)
    while `calibrate()` runs the model on representative inputs, then its scale is fixed.

    What it saves over dynamic per-tensor scales: the reduction over the whole activation before every GEMM
    (25.7 ms of a 117 ms FLUX step at 1024, H200, 2026-12-04); compiled, the cast to fp8 fuses into the op that
    makes the activation, and the GEMM is cuBLAS's plain per-tensor one (63 ms against per-row's 73 there).
    What it costs: an input beyond the calibrated range saturates at fp8's largest value. Replicate's FLUX
    serves with static per-tensor fp8; the calibration here runs at setup, on the weights actually served.
    """
    ao = require("torchao", install="torchao==0.18.0", purpose="float8 quantization")
    from torchao.quantization import Float8StaticActivationFloat8WeightConfig, PerTensor

    filter_fn = linear_only(filter_fn)
    count = _count_linear(model, filter_fn)

    def step(name: str):
        return Float8StaticActivationFloat8WeightConfig(step=name, granularity=PerTensor(), **KEEP_INDUCTOR_CONFIG)

    ao.quantization.quantize_(model, step("prepare"), filter_fn=filter_fn)  # Linear -> Float8ObservedLinear
    calibrate()
    observed = lambda m, name: type(m).__name__ == "Float8ObservedLinear"  # noqa: E731
    ao.quantization.quantize_(model, step("convert"), filter_fn=observed)
    log_event("quantize", method="torchao.float8_static_per_tensor", linear_layers=count)
    return model


def apply_hqq(model: nn.Module, *, nbits: int = 4, group_size: int = 64, device: str = "cpu",
              compute_dtype: torch.dtype = torch.float32, filter_fn: LinearFilter | None = None) -> nn.Module:
    """HQQ (half-quadratic, calibration-free) weight quantization, via hqq itself.

    Without `filter_fn`: every decoder Linear of a causal LM through hqq's HF wrapper (transformers' HqqConfig
    path raises NotImplementedError in 5.23); lm_head stays in full precision (hqq's default tags skip it).
    With it: the Linears it picks become hqq's `HQQLinear` one by one (a model hqq's wrapper does not know,
    such as Gemma 3's language model inside its image-text model). hqq's inference backends then patch
    `HQQLinear` wherever it is (`hqq.utils.patching.prepare_for_inference`).
    """
    require("hqq", install="hqq==0.2.8.post1", purpose="HQQ quantization")
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    config = BaseQuantizeConfig(nbits=nbits, group_size=group_size)
    if filter_fn is None:
        from hqq.models.hf.base import AutoHQQHFModel

        count = _count_linear(model, linear_only(not_lm_head))
        AutoHQQHFModel.quantize_model(model, quant_config=config, compute_dtype=compute_dtype, device=device)
    else:
        targets = [name for name, m in model.named_modules() if linear_only(filter_fn)(m, name)]
        for name in targets:
            model.set_submodule(name, HQQLinear(model.get_submodule(name), quant_config=config,
                                                compute_dtype=compute_dtype, device=device, del_orig=True))
        count = len(targets)
    log_event("quantize", method="hqq", nbits=nbits, group_size=group_size, linear_layers=count)
    return model


def to_device_nf4(model: nn.Module, device: str, *, compute_dtype: torch.dtype,
                  filter_fn: LinearFilter | None = None) -> str:
    """4-bit weights for every Linear, each quantized on its way to `device`, one layer at a time: a model whose
    16-bit weights do not fit the GPU (FLUX's 24 GB transformer on a 24 GB card) never sits there whole.

    bitsandbytes NF4 (`Linear4bit`, blocks of 64 with double-quantized scales, `compute_dtype` matmuls), the
    format QLoRA and diffusers' low-memory FLUX recipes use; bitsandbytes 0.50 runs it on CPU too, so the tests
    run this very path. A peft LoRA layer around a Linear keeps working: only its base layer is replaced (filter
    out the adapters' own `lora_` layers). The rest of the model is left where it is. Returns the method used.
    """
    filter_fn = linear_only(filter_fn)
    targets = [(name, m) for name, m in model.named_modules() if filter_fn(m, name)]
    bnb = require("bitsandbytes", install="bitsandbytes==0.50.2", purpose="NF4 weights")
    for i, (name, linear) in enumerate(targets):
        targets[i] = None  # each 16-bit layer is freed once its 4-bit one replaces it
        four_bit = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                     compute_dtype=compute_dtype, quant_type="nf4", device="meta")
        four_bit.weight = bnb.nn.Params4bit(linear.weight.data.to(compute_dtype), requires_grad=False,
                                            quant_type="nf4", compress_statistics=True)
        if linear.bias is not None:
            four_bit.bias = nn.Parameter(linear.bias.data.to(compute_dtype), requires_grad=False)
        model.set_submodule(name, four_bit.to(device))  # Params4bit quantizes as it moves
    method = "bitsandbytes.nf4"
    log_event("quantize", method=method, linear_layers=len(targets), device=str(device))
    return method


def bnb_config(bits: int, compute_dtype: torch.dtype = torch.bfloat16):
    """A bitsandbytes config for `from_pretrained(quantization_config=...)` (load-time quantization)."""
    require("bitsandbytes", install="bitsandbytes==0.50.2", purpose=f"{bits}-bit bitsandbytes loading")
    from transformers import BitsAndBytesConfig

    if bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"bitsandbytes supports 4 or 8 bits, not {bits}")
