"""Grouped decode attention (shared/decode_attention.py, OPTIMIZE=attention=grouped) against SDPA."""

import copy

import pytest
import torch
from transformers import AttentionInterface

from shared import decode_attention
from shared.batch_decode import BatchedDecoder
from shared.decode_engine import DecodeEngine, Sampling
from tests.unit.test_batch_decode import _submit
from tests.unit.test_decode_engine import _inputs, _model, _tokens

SETTINGS = [Sampling(0, 1, 0), Sampling(1.0, 0.9, 1), Sampling(0.7, 0.95, 2)]


def test_one_query_token_over_grouped_heads_equals_sdpa_with_the_heads_copied_out():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 8, 1, 16), torch.randn(3, 2, 40, 16), torch.randn(3, 2, 40, 16)
    mask = torch.arange(40)[None, None, None, :] <= torch.tensor([5, 39, 0])[:, None, None, None]  # per row
    got, _ = decode_attention.grouped_decode_attention(None, q, k, v, mask, scaling=0.3)
    want = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1),
                                                            attn_mask=mask, scale=0.3).transpose(1, 2)
    assert got.shape == (3, 1, 8, 16)
    torch.testing.assert_close(got, want)


def test_flex_decoding_equals_sdpa_for_rows_of_different_lengths_eager_and_compiled():
    """attention=flex: each row's blocks up to its last allowed position, and the mask within them (row 1 has a hole,
    as no cache has, to show the mask still decides). On CPU FlexAttention's reference computes every block; that
    the GPU kernel skips the others is tests/gpu/test_decode_attention_gpu.py's."""
    torch.manual_seed(0)
    length = 3 * decode_attention.FLEX_BLOCK
    q, k, v = torch.randn(3, 8, 1, 16), torch.randn(3, 2, length, 16), torch.randn(3, 2, length, 16)
    mask = torch.arange(length)[None, None, None, :] <= torch.tensor([5, length - 1, 200])[:, None, None, None]
    mask[1, ..., 10:20] = False
    want = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1),
                                                            attn_mask=mask, scale=0.3).transpose(1, 2)
    got, _ = decode_attention.flex_decode_attention(None, q, k, v, mask, scaling=0.3)
    torch.testing.assert_close(got, want)
    compiled = torch.compile(decode_attention.flex_decode_attention, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(None, q, k, v, mask, scaling=0.3)[0], want)
    # A cache that is not whole blocks, or a prompt: the grouped path (which gives SDPA's output too).
    odd = length - 1
    got_odd, _ = decode_attention.flex_decode_attention(None, q, k[:, :, :odd], v[:, :, :odd], mask[..., :odd],
                                                        scaling=0.3)
    torch.testing.assert_close(got_odd, decode_attention.grouped_decode_attention(
        None, q, k[:, :, :odd], v[:, :, :odd], mask[..., :odd], scaling=0.3)[0])


@pytest.mark.parametrize("flex", [False, True], ids=["grouped", "flex"])
@pytest.mark.parametrize("name", ["smollm3-3b", "phi4-reasoning-plus", "gemma3-4b-it"])
def test_the_engine_and_the_rows_decode_the_same_tokens_with_grouped_attention(name, flex):
    model, tok = _model(name)
    inputs = _inputs(name, tok)
    grouped = copy.deepcopy(model)
    registered = decode_attention.FLEX_NAME if flex else decode_attention.NAME
    function = decode_attention.flex_decode_attention if flex else decode_attention.grouped_decode_attention
    assert decode_attention.use_grouped_decode_attention(grouped, flex=flex) == registered
    calls = []  # query lengths seen by the registered function: it must serve every decode step
    AttentionInterface.register(registered, lambda *a, **kw: calls.append(a[1].shape[2]) or function(*a, **kw))
    try:
        plain, fast = DecodeEngine(model, [256]), DecodeEngine(grouped, [256])
        for sampling in SETTINGS:
            assert _tokens(fast, inputs, max_new_tokens=12, sampling=sampling) == \
                _tokens(plain, inputs, max_new_tokens=12, sampling=sampling), sampling
        assert calls.count(1) >= 11 * len(SETTINGS) * grouped.config.get_text_config().num_hidden_layers
        rows = BatchedDecoder(grouped, rows=2, row_tokens=256, single=fast, solo=False)
        pending = [_submit(rows, inputs, 12, s)[0] for s in SETTINGS]
        for collector, sampling in zip(pending, SETTINGS, strict=True):
            assert collector.result() == _tokens(plain, inputs, max_new_tokens=12, sampling=sampling), sampling
    finally:
        AttentionInterface.register(registered, function)


class _Layer:
    """What sliding_window_of reads from a transformers attention module."""

    def __init__(self, layer_type, window=6):
        self.config = type("Config", (), {"layer_types": ["full_attention", layer_type], "sliding_window": window})()
        self.layer_idx = 1


def test_a_sliding_layer_reads_only_its_window_and_attends_as_over_the_whole_cache():
    torch.manual_seed(0)
    length, window = 40, 6
    q, k, v = torch.randn(5, 8, 1, 16), torch.randn(5, 2, length, 16), torch.randn(5, 2, length, 16)
    # Rows at the cache's start, inside it, at its very end, near it (the window moves back to fit), and a row whose
    # own prompt began after some padding (allowed positions fewer than the window).
    position = torch.tensor([2, 20, length - 1, length - 3, 30])
    kv = torch.arange(length)
    mask = (kv <= position[:, None]) & (kv > position[:, None] - window)
    mask[4, 25:27] = False
    mask = mask[:, None, None, :]
    seen = []
    real_last_window = decode_attention.last_window
    decode_attention.last_window = lambda *a: seen.append(a[0].shape[2]) or real_last_window(*a)
    try:
        got, _ = decode_attention.grouped_decode_attention(_Layer("sliding_attention", window), q, k, v, mask, scaling=0.3)
    finally:
        decode_attention.last_window = real_last_window
    want, _ = decode_attention.grouped_decode_attention(None, q, k, v, mask, scaling=0.3)  # every position read
    assert seen == [length]
    torch.testing.assert_close(got, want)
    keys, _, kept = decode_attention.last_window(k, v, mask, window)
    assert keys.shape[2] == window and kept.sum().item() == mask.sum().item()  # every allowed position, once


def test_only_layers_built_with_a_sliding_mask_are_windowed():
    assert decode_attention.sliding_window_of(_Layer("sliding_attention")) == 6
    assert decode_attention.sliding_window_of(_Layer("full_attention")) is None
    # Phi-3's attention passes its config's sliding_window to every layer; without layer_types no mask is known.
    phi3_like = type("Attention", (), {"config": type("Config", (), {"sliding_window": 6})(), "layer_idx": 0})()
    assert decode_attention.sliding_window_of(phi3_like) is None
    assert decode_attention.sliding_window_of(None) is None


def test_gemmas_sliding_layers_decode_through_their_window_with_sdpas_tokens(monkeypatch):
    """The tiny Gemma 3 (sliding window 16) past its window, on the engine and in rows: the windowed layers are
    taken, and the tokens are SDPA's."""
    model, tok = _model("gemma3-4b-it")
    inputs = _inputs("gemma3-4b-it", tok)
    assert inputs["input_ids"].shape[1] > model.config.get_text_config().sliding_window
    grouped = copy.deepcopy(model)
    decode_attention.use_grouped_decode_attention(grouped)
    windows = []
    real_last_window = decode_attention.last_window
    monkeypatch.setattr(decode_attention, "last_window", lambda k, v, m, w: windows.append(w) or real_last_window(k, v, m, w))
    plain, fast = DecodeEngine(model, [256]), DecodeEngine(grouped, [256])
    for sampling in SETTINGS:
        assert _tokens(fast, inputs, max_new_tokens=12, sampling=sampling) == \
            _tokens(plain, inputs, max_new_tokens=12, sampling=sampling), sampling
    config = grouped.config.get_text_config()
    assert set(windows) == {config.sliding_window}
    assert len(windows) >= 11 * len(SETTINGS) * config.layer_types.count("sliding_attention")
