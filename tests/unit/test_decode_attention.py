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


@pytest.mark.parametrize("name", ["smollm3-3b", "phi4-reasoning-plus", "gemma3-4b-it"])
def test_the_engine_and_the_rows_decode_the_same_tokens_with_grouped_attention(name):
    model, tok = _model(name)
    inputs = _inputs(name, tok)
    grouped = copy.deepcopy(model)
    assert decode_attention.use_grouped_decode_attention(grouped) == decode_attention.NAME
    calls = []  # query lengths seen by the registered function: it must serve every decode step
    AttentionInterface.register(decode_attention.NAME, lambda *a, **kw: calls.append(a[1].shape[2]) or
                                decode_attention.grouped_decode_attention(*a, **kw))
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
        AttentionInterface.register(decode_attention.NAME, decode_attention.grouped_decode_attention)
