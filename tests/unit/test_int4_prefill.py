"""tinygemm's packed int4 layout undone (shared/int4_prefill.py), and the layers that dequantize for prompts.

tinygemm's packing runs on CUDA only, so here it is `_pack_like_tinygemm`: the packing kernel of
aten/src/ATen/native/cuda/int4mm.cu (`matrix_to_m16n8k16_Bint4_layout`) written out lane by lane as that kernel
does it, not vectorized like the unpacking it checks. tests/gpu/test_int4_prefill_gpu.py checks the unpacking
against torch's own packing and tinygemm's own matmul."""

import pytest
import torch

from shared import int4_prefill


def _pack_like_tinygemm(values: torch.Tensor, inner_k_tiles: int) -> torch.Tensor:
    """values uint8 [N, K] in 0..15 -> int32 [N / 8, K / (16 T), 32, T / 2], as `_convert_weight_to_int4pack` on CUDA."""
    n, k = values.shape
    packed_bytes = (values[:, ::2] << 4 | values[:, 1::2]).to(torch.uint8)  # its input: [n][k / 2], even column high
    out = torch.zeros(n // 8, k // (16 * inner_k_tiles), 32, inner_k_tiles // 2, dtype=torch.int64)
    for n_tile in range(out.shape[0]):
        for k_outer in range(out.shape[1]):
            for t in range(32):
                for inner in range(0, inner_k_tiles, 2):
                    n0 = n_tile * 8 + t // 4
                    base = (k_outer * inner_k_tiles + inner) * 16 // 2
                    ks = [base + t % 4, base + t % 4 + 4, base + 8 + t % 4, base + 8 + t % 4 + 4]
                    v = [int(packed_bytes[n0, i]) for i in ks]
                    out[n_tile, k_outer, t, inner // 2] = (
                        (v[3] & 0xF) << 28 | (v[2] & 0xF) << 24 | (v[1] & 0xF) << 20 | (v[0] & 0xF) << 16
                        | (v[3] & 0xF0) << 8 | (v[2] & 0xF0) << 4 | (v[1] & 0xF0) | (v[0] & 0xF0) >> 4)
    return (out - (out >= 2**31).long() * 2**32).to(torch.int32)  # the same bits as a signed int32


@pytest.mark.parametrize("inner_k_tiles", [2, 4, 8])
def test_unpacking_returns_every_value_to_its_row_and_column(inner_k_tiles):
    torch.manual_seed(inner_k_tiles)
    values = torch.randint(0, 16, (24, 256), dtype=torch.uint8)
    packed = _pack_like_tinygemm(values, inner_k_tiles)
    assert torch.equal(int4_prefill.unpack_int4pack(packed), values)


def test_dequantizing_applies_each_groups_scale_and_zero_as_tinygemm_does():
    torch.manual_seed(0)
    n, k, group = 16, 256, 64
    values = torch.randint(0, 16, (n, k), dtype=torch.uint8)
    scales, zeros = torch.rand(k // group, n) + 0.5, torch.randn(k // group, n)
    scales_and_zeros = torch.stack([scales, zeros], -1).to(torch.bfloat16)  # [K / group, N, 2], as tinygemm takes it
    got = int4_prefill.dequantize(_pack_like_tinygemm(values, 8), scales_and_zeros, group, torch.float32)
    s, z = scales_and_zeros.float().unbind(-1)
    want = (values.float() - 8) * s.t().repeat_interleave(group, 1) + z.t().repeat_interleave(group, 1)
    torch.testing.assert_close(got, want)


class HQQLinearTorchWeightOnlynt4(torch.nn.Module):
    """A stand-in for hqq's tinygemm layer on CPU: its packed weight and scales, and a `matmul` that multiplies
    by the weight those describe (tinygemm itself runs on CUDA only). The forward is hqq's: pad, then matmul."""

    def __init__(self, out_features=20, in_features=256, group=64):
        super().__init__()
        torch.manual_seed(out_features)
        values = torch.randint(0, 16, (24, in_features), dtype=torch.uint8)  # packed rows round up to 8
        self.weight_int4pack = _pack_like_tinygemm(values, 8)
        self.scales_and_zeros = torch.stack([torch.rand(in_features // group, 24) / 10 + 0.01,
                                             torch.randn(in_features // group, 24) / 10], -1).to(torch.bfloat16)
        s, z = self.scales_and_zeros.float().unbind(-1)
        self.exact = ((values.float() - 8) * s.t().repeat_interleave(group, 1) + z.t().repeat_interleave(group, 1))
        self.groupsize, self.out_features, self.calls = group, out_features, 0
        self.compute_dtype = torch.float32  # hqq's: the dtype its inputs come in (bf16 on a GPU)

    def matmul(self, x):
        self.calls += 1
        return x @ self.exact[: self.out_features].t()

    def forward(self, x):
        return self.matmul(x)


def test_prompts_are_multiplied_by_the_dequantized_weight_and_decode_steps_by_tinygemm():
    model = torch.nn.Sequential(HQQLinearTorchWeightOnlynt4(), torch.nn.ReLU(), HQQLinearTorchWeightOnlynt4(20, 256))
    prompt = torch.randn(1, int4_prefill.MIN_ROWS, 256)
    steps = torch.randn(8, 1, 256)
    with torch.no_grad():
        want_prompt, want_steps = model[0](prompt), model[0](steps)
        assert model[0].calls == 2
        assert int4_prefill.use_dequantized_prefill(model) == "int4-prefill-dequantized:2"  # both layers
        got_prompt, got_steps = model[0](prompt), model[0](steps)
    assert model[0].calls == 3  # the 8 rows of a step went to tinygemm; the prompt did not
    torch.testing.assert_close(got_prompt, want_prompt)
    torch.testing.assert_close(got_steps, want_steps)


def test_patching_twice_keeps_tinygemm_for_decode_steps():
    layer = torch.nn.Sequential(HQQLinearTorchWeightOnlynt4())
    int4_prefill.use_dequantized_prefill(layer)
    assert int4_prefill.use_dequantized_prefill(layer) is None  # nothing left to patch
    with torch.no_grad():
        layer(torch.randn(2, 256))
    assert layer[0].calls == 1


def test_a_model_without_tinygemm_layers_is_left_as_it_is():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    assert int4_prefill.use_dequantized_prefill(model) is None and "matmul" not in vars(model[0])


def test_the_expression_for_the_compiler_gives_the_eager_dequantize():
    torch.manual_seed(1)
    n, k, group = 16, 256, 64
    values = torch.randint(0, 16, (n, k), dtype=torch.uint8)
    packed = _pack_like_tinygemm(values, 4)
    scales_and_zeros = torch.stack([torch.rand(k // group, n) + 0.5, torch.randn(k // group, n)], -1)  # float32
    want = int4_prefill.dequantize(packed, scales_and_zeros, group, torch.float32)
    torch.testing.assert_close(int4_prefill.dequantize_expression(packed, scales_and_zeros, group, torch.float32), want)


def test_compiled_prefill_layers_compile_each_weight_shape_at_load_and_give_the_same_output():
    """dequantize-compiled: one compile per weight shape, when patched (Dynamo's eager backend on CPU; Inductor on a
    GPU), and the prompt's output the eager patch gives. Two shapes here, three layers."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    int4_prefill._compiled_dequantize.cache_clear()
    counters.clear()
    model = torch.nn.Sequential(HQQLinearTorchWeightOnlynt4(20, 256), HQQLinearTorchWeightOnlynt4(20, 256),
                                HQQLinearTorchWeightOnlynt4(24, 128, group=32))
    prompt = torch.randn(int4_prefill.MIN_ROWS, 256)
    with torch.no_grad():
        want = model[1](prompt)
    assert int4_prefill.use_dequantized_prefill(model, compiled=True) == "int4-prefill-dequantized-compiled:3"
    compiled_at_load = counters["stats"]["unique_graphs"]
    assert compiled_at_load == 2
    with torch.inference_mode():
        got = model[1](prompt)
        model[2](torch.randn(int4_prefill.MIN_ROWS, 128))
    assert counters["stats"]["unique_graphs"] == compiled_at_load  # nothing compiled inside a request
    torch.testing.assert_close(got, want)


def test_a_compiled_prompt_forward_is_one_graph_for_every_length():
    """OPTIMIZE=prefill=compiled over patched layers: with the prompt's length symbolic, every length takes the
    dequantized weight, so the whole forward is one graph (fullgraph: `dequantize()`'s `out=` into slices broke it
    at every layer) with no guard at MIN_ROWS (a second whole-model compile at boot), on both sides of it with the
    eager output. Dynamo's eager backend here, as the CPU deployments compile; Inductor on a GPU."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model = torch.nn.Sequential(HQQLinearTorchWeightOnlynt4(20, 256), torch.nn.ReLU(), torch.nn.Linear(20, 256),
                                HQQLinearTorchWeightOnlynt4(20, 256))
    prompts = [torch.randn(1, rows, 256) for rows in (12, 40, int4_prefill.MIN_ROWS, int4_prefill.MIN_ROWS + 44)]
    with torch.no_grad():
        want = [model(p) for p in prompts]
    int4_prefill.use_dequantized_prefill(model)
    counter = CompileCounter()
    forward = torch.compile(model, backend=counter, fullgraph=True)
    calls = model[0].calls
    with torch.inference_mode():
        for prompt, expected in zip(prompts, want, strict=True):
            torch._dynamo.maybe_mark_dynamic(prompt, 1)  # as the engine runs a compiled prompt (decode_engine.prefill)
            with int4_prefill.compiled_prompt():
                torch.testing.assert_close(forward(prompt), expected)
        assert counter.frame_count == 1 and model[0].calls == calls  # tinygemm never ran for the short ones
        forward(torch.randn(8, 1, 256))  # a compiled decode step (8 rows) still goes to tinygemm
    assert model[0].calls == calls + 1
