"""Attention for one-token decode steps that reads grouped KV heads as they are (`OPTIMIZE=attention=grouped`).

SmolLM3, Phi-4 and Gemma 3 share each KV head among several query heads (GQA). transformers' SDPA path
copies the KV heads out to one per query head whenever a mask is passed on CUDA (`use_gqa_in_sdpa`,
transformers 5.23: the fused kernels take no mask with grouped heads), and a static cache always needs a
mask. On the H200 that copy, with the masked cuDNN kernel after it, cost 637 us of a 3.15 ms SmolLM3 step
at one row and 3.1 ms of an 8-row step (benchmarks/results/2026-12-05-text-profile-*).

Here a decode step (one query token per row) groups the query heads under their KV head instead: two
batched matmuls and a softmax, which Inductor fuses, reading K and V once and copying nothing. Prefill
(several query tokens) keeps transformers' SDPA. Registered under its own name with transformers'
attention and mask interfaces, and set on the language model's config only (Gemma's vision tower keeps
SDPA); masks are SDPA's (boolean, or None).

A sliding-window layer (Gemma 3: 5 of every 6) attends to its last `sliding_window` positions only, but the
engine's static cache keeps every layer full length (decode_engine.new_static_cache), so the step read all
10,240 positions in every layer to mask most of them away: ~980 us of Gemma's 4.5 ms step (H100, int4,
2026-12-05). Such a layer now gathers the window's positions first: a fixed number of them (one graph, CUDA
graph safe), starting per row where its mask starts.
"""

from __future__ import annotations

import torch

NAME = "grouped_decode"
FLEX_NAME = "flex_decode"
# Positions per KV block of the flex variant: a row reads whole blocks up to its last allowed position. Every cache
# and row length of the text deployments (2,048, 4,096, 4,608, 10,240, 18,432) is a multiple of it.
FLEX_BLOCK = 128


def grouped_decode_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                             is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """query [B, H, Q, D], key / value [B, KVH, L, D]; returns ([B, Q, H, D], None) as transformers expects."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    if q_len != 1 or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    scaling = dim ** -0.5 if scaling is None else scaling
    mask = None if attention_mask is None else attention_mask[:, :, -1:, : key.shape[-2]]  # [B, 1, 1, L]
    window = sliding_window_of(module)
    if window and mask is not None and mask.dtype == torch.bool and window < key.shape[-2]:
        key, value, mask = last_window(key, value, mask, window)
    grouped = query.view(batch, kv_heads, heads // kv_heads, dim)  # the query heads that share each KV head
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float() * scaling  # [B, KVH, G, L]
    if mask is not None:  # broadcasts over KVH and G
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value)  # [B, KVH, G, D]
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def flex_decode_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """`grouped_decode_attention`, except that a full-attention layer's one-token step reads each row's KV only up to
    the block holding its last allowed position (`OPTIMIZE=attention=flex`): the grouped step reads the whole static
    cache every step, 4,608 positions for SmolLM3's 4,000-token request whose average fill is ~2,200 (H200,
    2026-12-06), and a batched row of 2,048 for a request of a few hundred. torch's FlexAttention with a block mask
    built from the boolean mask: how many blocks a row has is data (a tensor), read by its decoding kernel, so the
    step keeps one graph and stays CUDA-graph safe; the mask itself still decides within the last block. Sliding
    layers keep their window gather, and anything else (a prompt, a float mask) the grouped path."""
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    batch, _, q_len, _ = query.shape
    length = key.shape[-2]
    if (q_len != 1 or dropout or attention_mask is None or attention_mask.dtype != torch.bool
            or length % FLEX_BLOCK or sliding_window_of(module)):
        return grouped_decode_attention(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                        is_causal=is_causal, **kwargs)
    allowed = attention_mask[:, 0, -1, :length].expand(batch, length)  # [B, L]
    # One past each row's last allowed position, rounded up to whole blocks (a row that allows nothing reads all).
    end = length - allowed.flip(-1).to(torch.int32).argmax(-1)
    blocks = length // FLEX_BLOCK
    block_mask = BlockMask.from_kv_blocks(
        ((end + FLEX_BLOCK - 1) // FLEX_BLOCK).to(torch.int32).view(batch, 1, 1),
        torch.arange(blocks, dtype=torch.int32, device=query.device).expand(batch, 1, 1, blocks),
        BLOCK_SIZE=(FLEX_BLOCK, FLEX_BLOCK), mask_mod=lambda b, h, q, kv: allowed[b, kv], seq_lengths=(1, length),
        compute_q_blocks=False)  # the query-side index serves the backward pass only
    out = flex_attention(query, key, value, block_mask=block_mask, scale=scaling, enable_gqa=True)  # [B, H, 1, D]
    return out.transpose(1, 2).contiguous(), None


def sliding_window_of(module) -> int | None:
    """The window of a layer whose mask transformers builds as a sliding window (its config's `layer_types`), else
    None. Not the `sliding_window` argument: Phi-3's attention passes its config's on every layer."""
    config = getattr(module, "config", None)
    types = getattr(config, "layer_types", None)
    if types is not None and types[module.layer_idx] == "sliding_attention":
        return config.sliding_window
    return None


def last_window(key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, window: int):
    """The `window` positions of each row that hold every one its boolean sliding-window mask [B, 1, 1, L] lets
    through: from the first allowed position (the mask allows at most `window` after it, transformers'
    `sliding_window_overlay`), moved back to fit before the cache's end. Positions gathered but not allowed stay
    masked."""
    batch, kv_heads, length, dim = key.shape
    first = mask[:, 0, 0, :].to(torch.int32).argmax(-1)  # [B, or 1 broadcast]; a row that allows nothing gives 0
    index = first.clamp(max=length - window)[:, None] + torch.arange(window, device=key.device)  # [B, W]
    rows = index[:, None, :, None].expand(batch, kv_heads, window, dim)
    return key.gather(2, rows), value.gather(2, rows), mask.gather(3, index[:, None, None, :])


def use_grouped_decode_attention(model, flex: bool = False) -> str:
    """Route the language model's attention through `grouped_decode_attention` (or `flex_decode_attention`); returns
    what it set."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    name, function = (FLEX_NAME, flex_decode_attention) if flex else (NAME, grouped_decode_attention)
    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, sdpa_mask)
    config = model.config.get_text_config(decoder=True)
    if config._attn_implementation != "sdpa":
        raise ValueError(f"attention={'flex' if flex else 'grouped'} replaces SDPA; this model uses "
                         f"{config._attn_implementation!r}")
    config._attn_implementation = name
    return name
