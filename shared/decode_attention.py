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
"""

from __future__ import annotations

import torch

NAME = "grouped_decode"


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
    grouped = query.view(batch, kv_heads, heads // kv_heads, dim)  # the query heads that share each KV head
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float() * scaling  # [B, KVH, G, L]
    if attention_mask is not None:
        mask = attention_mask[:, :, -1:, : key.shape[-2]]  # [B, 1, 1, L]: broadcasts over KVH and G
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value)  # [B, KVH, G, D]
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def use_grouped_decode_attention(model) -> str:
    """Route the language model's attention through `grouped_decode_attention`; returns what it set."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, grouped_decode_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    config = model.config.get_text_config(decoder=True)
    if config._attn_implementation != "sdpa":
        raise ValueError(f"attention=grouped replaces SDPA; this model uses {config._attn_implementation!r}")
    config._attn_implementation = NAME
    return NAME
