"""FLUX with static per-tensor fp8 (`OPTIMIZE=transformer=fp8-static`) on the tiny pipeline, CPU.

Setup observes each base layer's input range while it generates at both warm-up sizes (shared/flux.py
`_calibrate`), then fixes every scale (shared/quantize.py `apply_float8_static`). torchao's static float8
runs on CPU, so this is the GPU's path but for the GEMM kernel; Dynamo traces it under fullgraph=True here.
Checked: every base layer is fp8 with one fixed activation scale, the LoRA slot stays 16-bit, styles
hot-swap exactly without recompiling, and the image stays close to the 16-bit model's.
"""

import pytest
import torch

from tests.unit.test_lora_router import (assert_near_the_16_bit_image, assert_styles_swap_exactly_without_recompiling,
                                         compiled_once)


@pytest.fixture(scope="module")
def static_fp8():
    return compiled_once("transformer=fp8-static,compile=on")


def test_every_base_layer_is_fp8_with_a_calibrated_scale_and_the_slot_stays_16_bit(static_fp8):
    runner, _ = static_fp8
    modules = dict(runner.pipe.transformer.named_modules())
    bases = [m for n, m in modules.items() if n.endswith(".base_layer")]
    assert bases and all(type(m.weight).__name__ == "PrototypeFloat8Tensor" for m in bases)
    assert all(m.weight.qdata.dtype == torch.float8_e4m3fn for m in bases)
    # One fixed activation scale per layer, from what calibration saw (a layer it never ran keeps none).
    scales = [m.weight.act_quant_scale for m in bases]
    assert all(s is not None and s.numel() == 1 and float(s) > 0 for s in scales)
    assert len({float(s) for s in scales}) > len(scales) // 2  # measured per layer, not one constant
    assert not any(type(m).__name__ == "Float8ObservedLinear" for m in modules.values())  # no observer left
    slot = list(runner.router._slot.values())
    assert slot and all(p.dtype == runner.hw.dtype for p in slot)


def test_styles_swap_exactly_and_never_recompile_over_fp8_layers(static_fp8):
    assert_styles_swap_exactly_without_recompiling(*static_fp8)


def test_the_fp8_image_stays_close_to_the_16_bit_one(static_fp8, runners):
    assert_near_the_16_bit_image(static_fp8[0], runners)
