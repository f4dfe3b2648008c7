"""Prompts through tinygemm int4 layers as bf16 matmuls, each layer's weight dequantized as it is needed.

tinygemm (torch's `_weight_int4pack_mm`: the kernel hqq's torchao_int4 backend, and Pruna through it, serve HQQ
4-bit layers with) is built for a few rows. A 560-token SmolLM3 prompt spent 102.5 ms in it, 92% of its prefill,
where the whole bf16 prefill took 10.8 ms of GPU time (H100, 2026-12-05, bench.py text-profile); eight ~200-token
prompts arriving together spent ~0.3 s there before any of them decoded (H200, 2026-12-06, through the server).

torch offers no dequantize for tinygemm's packed layout short of an identity matmul (hqq's `dequantize()`: K rows
through tinygemm, as slow as a K-token prompt). The layout is a fixed placement of nibbles, set by the kernel that
packs it (`matrix_to_m16n8k16_Bint4_layout` in aten/src/ATen/native/cuda/int4mm.cu), so a few tensor ops undo it.
For an input of at least MIN_ROWS rows (prompt tokens, all rows together), a patched layer dequantizes its weight
into a transient bf16 matrix and multiplies with cuBLAS; decode steps (1 to 8 rows) keep tinygemm. No weight is
stored twice. Inside a compiled prompt forward (`compiled_prompt()`) every prompt dequantizes, for one graph.
"""

from __future__ import annotations

import contextlib
import functools
import types

import torch
import torch.nn.functional as F

# Rows from which a layer dequantizes instead of calling tinygemm. Measured on SmolLM3 (H100, 2026-12-06, bench.py
# text-profile --prefill-only): tinygemm costs ~0.2 ms a row for the whole model (101.6 ms of a 512-token prompt);
# dequantizing costs ~39 ms whatever the rows (six eager passes over the weights), and cuBLAS little more. They
# cross near 200 rows: a lone ~200-token prompt is as fast either way, a 512-token one took 60 ms instead of 110,
# and eight 200-token prompts in one forward 68 ms instead of 329. Decode steps (at most 8 rows) stay on tinygemm.
MIN_ROWS = 256

# The hqq layer class whose `weight_int4pack` is in tinygemm's layout (hqq 0.2.7.post1 / 0.2.8.post1).
TINYGEMM_LAYER = "HQQLinearTorchWeightOnlynt4"


def unpack_int4pack(packed: torch.Tensor) -> torch.Tensor:
    """tinygemm's packed weight, int32 [N / 8, K / (16 T), 32, T / 2] (T inner k-tiles: 2, 4 or 8), back to its
    4-bit values, uint8 [N, K] in 0..15 (the input of `_convert_weight_to_int4pack`, one value per byte).

    Each int32 holds 8 values for one warp lane t of a 16-wide k-tile pair: row n = tile * 8 + t // 4 and, for its
    nibble p = 4 hl + 2 i2 + i1 (from the least significant), column k = k_outer * 16 T + pair * 32 + i2 * 16 +
    i1 * 8 + (t % 4) * 2 + hl: the even column of a byte pair in the low nibbles, the odd one in the high ones.
    """
    n_tiles, k_outer, lanes, pairs = packed.shape
    assert lanes == 32, packed.shape
    nibbles = torch.empty(*packed.shape, 4, 2, dtype=torch.uint8, device=packed.device)
    as_bytes = packed.contiguous().view(torch.uint8).view(*packed.shape, 4)  # little-endian: byte b = nibbles 2b, 2b+1
    torch.bitwise_and(as_bytes, 0xF, out=nibbles[..., 0])
    torch.bitwise_right_shift(as_bytes, 4, out=nibbles[..., 1])
    return _rows_and_columns(nibbles, n_tiles, k_outer, pairs)


def _rows_and_columns(nibbles: torch.Tensor, n_tiles: int, k_outer: int, pairs: int) -> torch.Tensor:
    """Nibbles in packed order (per int32 word, nibble p from the least significant) placed at their [N, K]."""
    # [tile, k_outer, t // 4, t % 4, pair, hl, i2, i1] -> [tile, t // 4 | k_outer, pair, i2, i1, t % 4, hl]
    grid = nibbles.view(n_tiles, k_outer, 8, 4, pairs, 2, 2, 2)
    return grid.permute(0, 2, 1, 4, 6, 7, 3, 5).reshape(n_tiles * 8, k_outer * pairs * 32)


def dequantize(packed: torch.Tensor, scales_and_zeros: torch.Tensor, group_size: int,
               dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The [N, K] weight tinygemm multiplies by: (q - 8) * scale + zero per group of `group_size` columns, with
    `scales_and_zeros` [K / group_size, N, 2] as `_weight_int4pack_mm` takes it."""
    values = unpack_int4pack(packed)
    n, k = values.shape
    scales, zeros = (scales_and_zeros[..., i].t().to(dtype)[..., None] for i in (0, 1))  # [N, K / group_size, 1]
    weight = values.view(n, k // group_size, group_size).to(dtype).sub_(8)  # exact: -8..7
    # One rounding, as tinygemm's fused multiply-add: zero + (q - 8) * scale.
    return torch.addcmul(zeros, weight, scales, out=weight).view(n, k)


def dequantize_expression(packed: torch.Tensor, scales_and_zeros: torch.Tensor, group_size: int,
                          dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """`dequantize()` written as one expression (no `out=`, nothing in place) for Inductor to fuse into a single
    kernel that reads the int4 words once and writes the weight once. Eagerly it makes an int32 per value, which is
    why `dequantize()` stays the eager path."""
    n_tiles, k_outer, _, pairs = packed.shape
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=packed.device)
    values = _rows_and_columns((packed.unsqueeze(-1) >> shifts) & 0xF, n_tiles, k_outer, pairs)
    n, k = values.shape
    scales, zeros = (scales_and_zeros[..., i].t().to(dtype)[..., None] for i in (0, 1))
    return ((values.view(n, k // group_size, group_size).to(dtype) - 8) * scales + zeros).view(n, k)


@functools.cache
def _compiled_dequantize():
    """One compiled function; Dynamo specializes it per weight shape (SmolLM3 has 4, Gemma 3 5, under its limit of 8).
    Inductor on a GPU; Dynamo's eager backend on CPU, as for the decode step (shared/compile.py)."""
    from .compile import default_backend

    return torch.compile(dequantize_expression, backend=default_backend(), dynamic=False, fullgraph=True)


# Whether a compiled prompt forward is running (`compiled_prompt()`). Dynamo reads it as a constant of each graph it
# traces, and guards on it: the compiled prefill is traced with it set, the decode steps without.
_in_compiled_prompt = False


@contextlib.contextmanager
def compiled_prompt():
    """Around a call of a compiled prompt forward (decode_engine's `prefill`): its int4 layers take the dequantized
    weight whatever the prompt's length, for one graph."""
    global _in_compiled_prompt
    before, _in_compiled_prompt = _in_compiled_prompt, True
    try:
        yield
    finally:
        _in_compiled_prompt = before


def _matmul(layer, x: torch.Tensor) -> torch.Tensor:
    """The layer's `matmul` (input already padded to its packed width): tinygemm for few rows, else the weight
    dequantized and a dense matmul."""
    if _in_compiled_prompt and torch.compiler.is_compiling():
        # A compiled prompt forward (OPTIMIZE=prefill=compiled; its length symbolic): always the weight dequantized, so
        # one graph serves every length (a branch at MIN_ROWS would guard on it: a second whole-model compile at
        # boot). A short prompt then pays the fused dequantize, ~6.5 ms of GPU time for SmolLM3 (16.8 ms against 10.3
        # with bf16 weights, H100), where tinygemm takes ~0.2 ms a row. The expression, which Inductor fuses into one
        # kernel: `dequantize()` writes into slices (`out=`), which Dynamo cannot trace.
        weight = dequantize_expression(layer.weight_int4pack, layer.scales_and_zeros, layer.groupsize, x.dtype)
    elif x.numel() // x.shape[-1] < MIN_ROWS:
        return layer.tinygemm_matmul(x)
    elif layer.dequantize_compiled:
        weight = _compiled_dequantize()(layer.weight_int4pack, layer.scales_and_zeros, layer.groupsize, x.dtype)
    else:
        weight = dequantize(layer.weight_int4pack, layer.scales_and_zeros, layer.groupsize, x.dtype)
    return F.linear(x, weight[: layer.out_features])


def use_dequantized_prefill(model, compiled: bool = False) -> str | None:
    """Patch every tinygemm layer of `model` (see the module's docstring); what it did, for the path, or None where
    the model has no such layer left to patch. `compiled`: the dequantize as one compiled kernel per weight shape,
    compiled here, at load, under inference mode as requests run: never inside a request."""
    patched, shapes = 0, {}
    for module in model.modules():
        if type(module).__name__ == TINYGEMM_LAYER and not hasattr(module, "tinygemm_matmul"):
            module.tinygemm_matmul = module.matmul
            module.matmul = types.MethodType(_matmul, module)
            module.dequantize_compiled = compiled
            shapes.setdefault((module.weight_int4pack.shape, module.scales_and_zeros.shape, module.groupsize), module)
            patched += 1
    if compiled:
        with torch.inference_mode():
            for layer in shapes.values():
                _compiled_dequantize()(layer.weight_int4pack, layer.scales_and_zeros, layer.groupsize,
                                       layer.compute_dtype)  # the dtype prompts come in
    if not patched:
        return None
    return f"int4-prefill-dequantized{'-compiled' if compiled else ''}:{patched}"
