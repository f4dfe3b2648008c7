"""Fused Q/K/V projections with the LoRA slot fused in (`OPTIMIZE=fuse_qkv=on`, shared/fused_qkv.py), tiny
FLUX on CPU: the same images as the unfused model for every style and none, exact hot-swaps through the
views, no recompiles, and a layer-level check that the block-diagonal slot is each adapter's own."""

import numpy as np
import pytest
import torch

from shared import fused_qkv
from tests.unit.test_lora_router import _image, assert_styles_swap_exactly_without_recompiling, compiled_once


@pytest.fixture(scope="module")
def fused():
    return compiled_once("fuse_qkv=on,compile=on")


def test_every_attention_is_fused_and_the_old_projections_are_gone(fused):
    runner, _ = fused
    attns = [m for m in runner.pipe.transformer.modules() if hasattr(m, "fused_projections")]
    assert attns and all(m.fused_projections and isinstance(m.to_qkv, fused_qkv.FusedLoraLinear) for m in attns)
    assert not any(hasattr(m, name) for m in attns for name in ("to_q", "to_k", "to_v", "add_q_proj"))
    assert sum(isinstance(getattr(m, "to_added_qkv", None), fused_qkv.FusedLoraLinear) for m in attns) > 0


def test_each_style_and_none_give_the_unfused_models_image(fused, runners):
    runner, _ = fused
    plain = runners("flux-lora-txt2img")
    assert plain.options["fuse_qkv"] == "off"
    for trigger in ("GHIBSKY", "Anime", None, "Pixel art"):
        a, b = _image(runner, trigger), _image(plain, trigger)
        assert np.abs(a - b).max() <= 1, trigger  # float32: summation order only


def test_styles_swap_exactly_through_the_views_and_never_recompile(fused):
    assert_styles_swap_exactly_without_recompiling(*fused)


def test_the_block_diagonal_slot_computes_each_projections_own_adapter():
    torch.manual_seed(0)
    parts = []
    for out in (6, 6, 6):
        layer = torch.nn.Linear(5, out)
        layer.lora_A = {"s": torch.nn.Linear(5, 2, bias=False)}
        layer.lora_B = {"s": torch.nn.Linear(2, out, bias=False)}
        layer.scaling = {"s": 1.0}
        layer.base_layer = torch.nn.Linear(5, out)
        parts.append(layer)
    x = torch.randn(3, 5)
    own = [p.base_layer(x) + p.lora_B["s"](p.lora_A["s"](x)) for p in parts]
    layer, views = fused_qkv._fuse(parts, "s")
    assert torch.allclose(layer(x), torch.cat(own, dim=-1), atol=1e-6)
    with torch.no_grad():  # a swap writes only the views: the other blocks stay zero
        views[1][0].copy_(torch.ones(2, 5))
        views[1][1].copy_(torch.ones(6, 2))
    out = layer(x)
    assert torch.allclose(out[:, 6:12], parts[1].base_layer(x) + 2 * x.sum(-1, keepdim=True), atol=1e-5)
    assert torch.allclose(out[:, :6], own[0], atol=1e-6) and torch.allclose(out[:, 12:], own[2], atol=1e-6)


def test_quantization_takes_the_fused_base_and_leaves_the_fused_slot_16_bit():
    runner, counter = compiled_once("fuse_qkv=on,transformer=fp8-static,compile=off")
    layers = [m for m in runner.pipe.transformer.modules() if isinstance(m, fused_qkv.FusedLoraLinear)]
    assert layers and all(type(m.base.weight).__name__ == "PrototypeFloat8Tensor" for m in layers)
    assert all(m.lora_A.weight.dtype == m.lora_B.weight.dtype == runner.hw.dtype for m in layers)
    assert_styles_swap_exactly_without_recompiling(runner, counter)
