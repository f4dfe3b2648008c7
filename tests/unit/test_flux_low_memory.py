"""FLUX's low-memory mode (`OPTIMIZE=transformer=nf4`) on the tiny pipeline.

The transformer's base layers become bitsandbytes NF4 as they go to the device (shared/quantize.py
`to_device_nf4`); bitsandbytes 0.50 runs NF4 on CPU, so this is the path a GPU runs, Dynamo's tracing of the
4-bit layers under fullgraph=True included (Inductor's kernels for them are the GPU's own question). Checked:
every base layer is 4-bit, the LoRA slot stays 16-bit over it, styles still hot-swap exactly and without
recompiling, and the image stays close to the 16-bit model's. When
`transformer=auto` picks it: tests/unit/test_quantize_compile.py.
"""

import pytest
import torch

from tests.unit.test_lora_router import (assert_near_the_16_bit_image, assert_styles_swap_exactly_without_recompiling,
                                         compiled_once)


@pytest.fixture(scope="module")
def low_memory():
    return compiled_once("transformer=nf4,compile=on")


def test_every_base_layer_is_4_bit_and_the_lora_slot_stays_16_bit(low_memory):
    runner, _ = low_memory
    modules = dict(runner.pipe.transformer.named_modules())
    plain = [n for n, m in modules.items() if type(m) is torch.nn.Linear and "lora_" not in n]
    assert plain == []  # nothing left in 16 bits but the adapters
    bases = [m for n, m in modules.items() if n.endswith(".base_layer")]
    assert bases and all(type(m).__name__ == "Linear4bit" and m.weight.quant_type == "nf4" for m in bases)
    slot = list(runner.router._slot.values())
    assert slot and all(p.dtype == runner.hw.dtype for p in slot)


def test_styles_swap_exactly_and_never_recompile_over_4_bit_layers(low_memory):
    assert_styles_swap_exactly_without_recompiling(*low_memory)


def test_the_4_bit_image_stays_close_to_the_16_bit_one(low_memory, runners):
    assert_near_the_16_bit_image(low_memory[0], runners)
