"""shared/int4_prefill.py against torch's own tinygemm on a GPU: the unpacking undoes `_convert_weight_to_int4pack`
for every inner k-tiling, the dequantized matmul gives `_weight_int4pack_mm`'s output, and a 2-layer SmolLM3 at real
widths with HQQ int4 layers gives the same prompt logits patched (eagerly or compiled) as through tinygemm. CPU
tests check the same functions against a lane-by-lane rewrite of the packing kernel (tests/unit/test_int4_prefill.py)."""

import pytest
import torch

from shared import catalog, int4_prefill
from shared.builders.text import build_random_causal_lm

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("inner_k_tiles", [2, 4, 8])
def test_unpacking_undoes_torchs_packing(inner_k_tiles):
    torch.manual_seed(inner_k_tiles)
    values = torch.randint(0, 16, (2048, 1024), dtype=torch.uint8, device="cuda")
    packed = torch.ops.aten._convert_weight_to_int4pack((values[:, ::2] << 4 | values[:, 1::2]).contiguous(), inner_k_tiles)
    assert torch.equal(int4_prefill.unpack_int4pack(packed), values)


def test_the_dequantized_matmul_gives_tinygemms_output():
    torch.manual_seed(0)
    n, k, group = 11008, 2048, 64
    values = torch.randint(0, 16, (n, k), dtype=torch.uint8, device="cuda")
    packed = torch.ops.aten._convert_weight_to_int4pack((values[:, ::2] << 4 | values[:, 1::2]).contiguous(), 8)
    scales_and_zeros = torch.stack([torch.rand(k // group, n, device="cuda") / 50 + 0.001,
                                    torch.randn(k // group, n, device="cuda") / 50], -1).to(torch.bfloat16)
    x = torch.randn(512, k, device="cuda", dtype=torch.bfloat16)
    want = torch.ops.aten._weight_int4pack_mm(x, packed, group, scales_and_zeros)
    got = x @ int4_prefill.dequantize(packed, scales_and_zeros, group).t()
    assert torch.nn.functional.cosine_similarity(got.float().flatten(), want.float().flatten(), dim=0) > 0.9999
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2 * want.abs().max().item())


@pytest.mark.parametrize("compiled", [False, True])
def test_a_prompt_through_dequantized_layers_gives_tinygemms_logits(monkeypatch, compiled):
    """Eager, and `dequantize-compiled` (Inductor's fused kernel per weight shape, compiled when patched)."""
    from shared import llm_backends

    torch._dynamo.reset()
    int4_prefill._compiled_dequantize.cache_clear()
    monkeypatch.setenv("SYNTHETIC_NUM_LAYERS", "2")
    model, tok = build_random_causal_lm(catalog.get("smollm3-3b"), tiny=False, device="cuda", dtype=torch.bfloat16)
    model, path = llm_backends.hqq_quantize(model, via="hqq", device="cuda", dtype=torch.bfloat16)
    assert path == "hqq4-torchao_int4"
    ids = torch.randint(0, model.config.vocab_size, (1, 300), device="cuda")
    with torch.inference_mode():
        want = model(ids).logits.float()
        assert int4_prefill.use_dequantized_prefill(model, compiled=compiled) == \
            f"int4-prefill-dequantized{'-compiled' if compiled else ''}:14"
        got = model(ids).logits.float()
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.999
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() > 0.95


def test_a_compiled_prefill_over_dequantized_layers_compiles_in_setup_only(monkeypatch):
    """OPTIMIZE=prefill=compiled with int4_prefill=dequantize, warmed as setup warms it (each cache size, a short
    prompt): no prompt length on either side of MIN_ROWS and no cache size compiles again (at most two graphs: the
    first cache's, then one with the cache's length symbolic), and the last position's logits are the eager engine's.
    Through the server (H100, 2026-12-06) the prefill recompiled for each cache size, and for a long warm-up prompt's
    strides, past the setup timeout."""
    from torch._dynamo.utils import counters

    from shared import llm_backends
    from shared.decode_engine import DecodeEngine

    torch._dynamo.reset()
    monkeypatch.setenv("SYNTHETIC_NUM_LAYERS", "2")
    model, tok = build_random_causal_lm(catalog.get("smollm3-3b"), tiny=False, device="cuda", dtype=torch.bfloat16)
    model, _ = llm_backends.hqq_quantize(model, via="hqq", device="cuda", dtype=torch.bfloat16)
    int4_prefill.use_dequantized_prefill(model)
    sizes = [2048, 4608]  # SmolLM3's first two; 2,048 is also its hidden size
    eager = DecodeEngine(model, sizes)
    compiled = DecodeEngine(model, sizes, compile_prefill={"backend": "inductor"})
    before = counters["stats"]["unique_graphs"]
    compiled.warm_up({"input_ids": tok("warm up", return_tensors="pt", add_special_tokens=False)["input_ids"].cuda()},
                     steps=1)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs - before <= 2, graphs - before
    torch.manual_seed(0)
    for rows in (15, 300, 520):
        prompt = {"input_ids": torch.randint(0, model.config.vocab_size, (1, rows), device="cuda")}
        for size in sizes:
            with torch.inference_mode():
                got = compiled.prefill(prompt, compiled.cache_for(size)).float()
                want = eager.prefill(prompt, eager.cache_for(size)).float()
            assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.999, (rows, size)
    assert counters["stats"]["unique_graphs"] == graphs, "a prompt length or a cache size recompiled the prefill"
