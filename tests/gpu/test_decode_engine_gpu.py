"""The decode engine's compiled step on a GPU: Inductor + CUDA graphs (reduce-overhead), sampling inside.

A tiny SmolLM3 (float32: the compiled and eager kernels then agree to the token) decoded by the compiled
engine gives the eager engine's tokens, greedy and sampled, in both cache sizes, without recompiling; and
HQQ's int4 kernels (the ones Pruna patches in) run inside the captured step. On the device machine
(`make test-gpu`); CPU tests check the same engine with Dynamo's eager backend."""

import pytest
import torch

from shared import catalog
from shared.builders.text import build_random_causal_lm
from shared.decode_engine import DecodeEngine, Sampling

pytestmark = pytest.mark.gpu

SETTINGS = [Sampling(0.0, 1.0, 0), Sampling(1.0, 0.9, 1), Sampling(0.7, 0.95, 2)]


def _model(dtype=torch.float32):
    model, tok = build_random_causal_lm(catalog.get("smollm3-3b"), tiny=True, device="cuda", dtype=dtype)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.15)  # varied greedy text (see tests/unit/test_decode_engine.py)
    return model, {k: v.cuda() for k, v in tok("the lighthouse keeper walked to the shore", return_tensors="pt").items()}


def _tokens(engine, inputs, n, sampling):
    return [t for chunk in engine.generate(inputs, max_new_tokens=n, sampling=sampling) for t in chunk]


def test_compiled_graphed_step_gives_the_eager_tokens_without_recompiling():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    model, inputs = _model()
    eager = DecodeEngine(model, [64, 512])
    compiled = DecodeEngine(model, [64, 512], compile_step={"backend": "inductor", "mode": "reduce-overhead"})
    compiled.warm_up(inputs)
    graphs = counters["stats"]["unique_graphs"]
    for sampling in SETTINGS:
        for n in (30, 200):  # the small cache, then the large one
            assert _tokens(compiled, inputs, n, sampling) == _tokens(eager, inputs, n, sampling), (sampling, n)
    assert counters["stats"]["unique_graphs"] == graphs, "a request recompiled the step"


def test_hqq_int4_kernels_run_inside_the_captured_step(monkeypatch):
    """SmolLM3's real widths (tinygemm needs them: the tiny model's 64-wide layers fail its tiling check),
    two layers."""
    from shared import llm_backends

    torch._dynamo.reset()
    monkeypatch.setenv("SYNTHETIC_NUM_LAYERS", "2")
    model, tok = build_random_causal_lm(catalog.get("smollm3-3b"), tiny=False, device="cuda", dtype=torch.bfloat16)
    inputs = {k: v.cuda() for k, v in tok("the lighthouse keeper walked to the shore", return_tensors="pt").items()}
    model, path = llm_backends.hqq_quantize(model, via="hqq", device="cuda", dtype=torch.bfloat16)
    assert path == "hqq4-torchao_int4"
    engine = DecodeEngine(model, [128], compile_step={"backend": "inductor", "mode": "reduce-overhead"})
    engine.warm_up(inputs)
    a = _tokens(engine, inputs, 40, Sampling(1.0, 0.9, 5))
    assert len(a) == 40 and a == _tokens(engine, inputs, 40, Sampling(1.0, 0.9, 5))


def test_batched_compiled_step_gives_each_request_its_single_stream_tokens():
    """The batched decoder's step compiled with CUDA graphs (every row, per-row positions and seeds), set up as
    served: the engine's buckets (one shorter than a row) and the rows over one KV allocation, both captured.
    Requests sent at once (the first may start alone on the engine and move into row 0) and one after another
    get the eager single-stream engine's tokens."""
    from torch._dynamo.utils import counters

    from shared.batch_decode import BatchedDecoder
    from shared.decode_engine import same_memory

    torch._dynamo.reset()
    counters.clear()
    model, inputs = _model()
    eager = DecodeEngine(model, [256])
    graphs = {"backend": "inductor", "mode": "reduce-overhead"}
    compiled = DecodeEngine(model, [64, 512], compile_step=graphs, reserve_tokens=3 * 256)
    decoder = BatchedDecoder(model, rows=3, row_tokens=256, single=compiled, compile_step=graphs)
    assert all(same_memory(decoder.cache, c) for c in compiled.caches)
    decoder.call(lambda: compiled.warm_up(inputs))
    decoder.warm_up(inputs)
    # Views of one allocation, marked static: CUDA graphs read and write them in place. Inductor skips the graphs
    # (and runs slowly, copying nothing back) for a mutated input it does not see as static.
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
    _each_gets_the_eager_tokens(decoder, eager, inputs, SETTINGS + SETTINGS[1:])
    for i, sampling in enumerate(SETTINGS):
        _each_gets_the_eager_tokens(decoder, eager, inputs, [sampling], extra=300 * (i % 2))  # past a row: alone


def _each_gets_the_eager_tokens(decoder, eager, inputs, settings, extra: int = 0):
    """Submit one request per setting at once (20, 21, ... tokens, plus `extra`); each must get the eager engine's
    tokens."""
    import threading

    from shared.batch_decode import Request

    results = []
    for i, sampling in enumerate(settings):
        tokens, done = [], threading.Event()
        decoder.submit(Request(inputs, 20 + i + extra, sampling, (),
                               lambda t, e, out=tokens, d=done: out.extend(t) if t is not None else d.set()))
        results.append((tokens, done, 20 + i + extra, sampling))
    for tokens, done, n, sampling in results:
        assert done.wait(120)
        assert tokens == _tokens(eager, inputs, n, sampling), sampling


@pytest.mark.parametrize("flex", [False, True], ids=["grouped", "flex"])
def test_grouped_decode_attention_compiled_with_cuda_graphs_gives_the_sdpa_tokens(flex):
    """OPTIMIZE=attention=grouped (and flex) under Inductor + CUDA graphs, on the engine and in the rows (on the
    decoder's own thread), against the eager SDPA engine."""
    import copy

    from shared.batch_decode import BatchedDecoder
    from shared.decode_attention import use_grouped_decode_attention

    torch._dynamo.reset()
    model, inputs = _model()
    grouped = copy.deepcopy(model)
    use_grouped_decode_attention(grouped, flex=flex)
    eager = DecodeEngine(model, [256])
    graphs = {"backend": "inductor", "mode": "reduce-overhead"}
    compiled = DecodeEngine(grouped, [256], compile_step=graphs)
    decoder = BatchedDecoder(grouped, rows=3, row_tokens=256, single=compiled, compile_step=graphs)
    decoder.call(lambda: compiled.warm_up(inputs))
    decoder.warm_up(inputs)
    for sampling in SETTINGS:
        assert decoder.call(lambda s=sampling: _tokens(compiled, inputs, 30, s)) == _tokens(eager, inputs, 30, sampling)
    _each_gets_the_eager_tokens(decoder, eager, inputs, SETTINGS)


def test_flex_decoding_reads_no_block_past_a_rows_length():
    """attention=flex compiled by Inductor: KV blocks past each row's last allowed position hold NaN, and the output
    is still SDPA's over the clean cache: its kernel never read them (the grouped step reads them all and masks)."""
    from shared.decode_attention import FLEX_BLOCK, flex_decode_attention

    torch.manual_seed(0)
    length = 16 * FLEX_BLOCK
    q = torch.randn(3, 16, 1, 128, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(3, 4, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    ends = torch.tensor([5, length, 3 * FLEX_BLOCK + 7], device="cuda")
    mask = torch.arange(length, device="cuda")[None, None, None, :] < ends[:, None, None, None]
    want = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1),
                                                            attn_mask=mask, scale=0.1).transpose(1, 2)
    for row, end in enumerate(ends.tolist()):
        first_unread = -(-end // FLEX_BLOCK) * FLEX_BLOCK
        k[row, :, first_unread:], v[row, :, first_unread:] = float("nan"), float("nan")
    got, _ = torch.compile(flex_decode_attention, fullgraph=True)(None, q, k, v, mask, scaling=0.1)
    assert not got.isnan().any()
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


def test_prefill_compiled_by_inductor_gives_the_eager_tokens_for_any_prompt_length():
    """OPTIMIZE=prefill=compiled: Inductor with the prompt's length symbolic; after the warm-up, no prompt
    length and no cache size compiles again."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    model, inputs = _model()
    eager = DecodeEngine(model, [64, 512])
    compiled = DecodeEngine(model, [64, 512], compile_prefill={"backend": "inductor"})
    compiled.warm_up(inputs)
    graphs = counters["stats"]["unique_graphs"]
    for cut in (3, 5, inputs["input_ids"].shape[1]):
        prompt = {k: v[:, :cut] for k, v in inputs.items()}
        for n in (20, 200):
            assert _tokens(compiled, prompt, n, SETTINGS[0]) == _tokens(eager, prompt, n, SETTINGS[0]), (cut, n)
    assert counters["stats"]["unique_graphs"] == graphs, "a prompt length or a cache size recompiled the prefill"


@pytest.mark.parametrize("kernel", ["torchao_int4", "gemlite"])
def test_fused_projections_in_int4_give_the_unfused_tokens_inside_the_captured_step(monkeypatch, kernel):
    """OPTIMIZE=fuse_projections=on: the fused Q/K/V and gate/up Linears quantized by HQQ and patched with the int4
    kernels, at SmolLM3's real widths (two layers), compiled with CUDA graphs: the unfused model's greedy tokens."""
    import copy

    from shared import llm_backends, quantize
    from shared.fused_projections import fuse_projections

    torch._dynamo.reset()
    monkeypatch.setenv("SYNTHETIC_NUM_LAYERS", "2")
    model, tok = build_random_causal_lm(catalog.get("smollm3-3b"), tiny=False, device="cuda", dtype=torch.bfloat16)
    inputs = {k: v.cuda() for k, v in tok("the lighthouse keeper walked to the shore", return_tensors="pt").items()}
    fused = copy.deepcopy(model)
    assert fuse_projections(fused) == 4
    tokens = []
    for m in (model, fused):  # the same layers quantized the same way, the fused ones concatenated
        m, _ = llm_backends.hqq_quantize(m, via="hqq", device="cuda", dtype=torch.bfloat16, kernel=kernel,
                                         filter_fn=quantize.not_lm_head)
        engine = DecodeEngine(m, [128], compile_step={"backend": "inductor", "mode": "reduce-overhead"})
        engine.warm_up(inputs)
        tokens.append(_tokens(engine, inputs, 40, SETTINGS[0]))
    assert len(tokens[0]) == 40 and tokens[0] == tokens[1]


def test_2_4_sparse_layout_gives_the_masked_dense_tokens_inside_the_captured_step(monkeypatch):
    """OPTIMIZE=prune=2:4 with quantize=none (Gemma 3's option, checked here at SmolLM3's real widths, two
    layers): the layers pruned 2:4 and stored in torch's semi-structured layout decode, compiled with CUDA
    graphs, the tokens of the same masked weights kept dense."""
    import copy

    from shared import prune, quantize

    torch._dynamo.reset()
    monkeypatch.setenv("SYNTHETIC_NUM_LAYERS", "2")
    model, tok = build_random_causal_lm(catalog.get("smollm3-3b"), tiny=False, device="cuda", dtype=torch.bfloat16)
    inputs = {k: v.cuda() for k, v in tok("the lighthouse keeper walked to the shore", return_tensors="pt").items()}
    prune.apply(model, "2:4", 0.5)
    sparse = copy.deepcopy(model)
    quantize.apply_semi_sparse(sparse, filter_fn=lambda m, name: prune.is_prunable(name, m))
    assert any(type(m.weight).__name__.startswith("SparseSemiStructuredTensor") for m in sparse.modules()
               if isinstance(m, torch.nn.Linear))
    graphs = {"backend": "inductor", "mode": "reduce-overhead"}
    tokens = []
    for m in (model, sparse):
        engine = DecodeEngine(m, [128], compile_step=graphs)
        engine.warm_up(inputs)
        tokens.append(_tokens(engine, inputs, 40, SETTINGS[0]))
    assert len(tokens[0]) == 40 and tokens[0] == tokens[1]
