"""FLUX's query, key and value projections fused into one GEMM, the LoRA slot fused with them.

Each FLUX attention projects the same input three times (`to_q`, `to_k`, `to_v`; the double-stream blocks also
`add_q_proj`, `add_k_proj`, `add_v_proj` for the text tokens). One Linear with the three weights stacked reads
the input once, and with fp8 quantizes it once instead of three times (each dynamic fp8 projection measures and
casts its own copy of the input). diffusers' `fuse_qkv_projections` does this for a plain model, but drops a
LoRA: its fused layer takes only the base weights.

Here the LoRA slot is fused too, exactly: with the three adapters' A stacked (3r x in) and their B placed on
the block diagonal of one (3 out x 3r) matrix, B @ (A @ x) gives each projection's own B_i @ (A_i @ x), since
the off-diagonal blocks stay zero. The three adapters' A and B are views into the fused parameters
(`slot_views`), so the LoRA router still hot-swaps by copying each layer's tensors, now into the views.
"""

from __future__ import annotations

import torch
from torch import nn

from .fused_projections import stacked_linear
from .runtime import log_event

# (the projections that read one input, the fused layer diffusers' attention processor calls)
GROUPS = ((("to_q", "to_k", "to_v"), "to_qkv"), (("add_q_proj", "add_k_proj", "add_v_proj"), "to_added_qkv"))


class FusedLoraLinear(nn.Module):
    """base(x) + lora_B(lora_A(x)): a stacked base projection and the block-diagonal LoRA slot over it.
    The children are named as peft names them, so quantization filters that skip `lora_` skip them here too."""

    def __init__(self, base: nn.Linear, lora_A: nn.Linear, lora_B: nn.Linear):
        super().__init__()
        self.base, self.lora_A, self.lora_B = base, lora_A, lora_B
        self.slot_views: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # part -> (its A rows, its B block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(x))


def _fuse(parts: list[nn.Module], adapter: str) -> tuple[FusedLoraLinear, list[tuple[torch.Tensor, torch.Tensor] | None]]:
    bases = [getattr(p, "base_layer", p) for p in parts]
    if not all(type(b) is nn.Linear for b in bases):
        raise TypeError(f"can fuse plain Linear projections only, not {[type(b).__name__ for b in bases]}")
    slots = [(p.lora_A[adapter], p.lora_B[adapter], p.scaling[adapter]) if adapter in getattr(p, "lora_A", {}) else None
             for p in parts]
    if any(s is not None and float(s[2]) != 1.0 for s in slots):
        raise ValueError("the LoRA slot's scaling must be 1 (the router bakes each adapter's scale into lora_B)")
    rank = max((s[0].weight.shape[0] for s in slots if s is not None), default=0)
    base = stacked_linear(bases)
    outs = [b.out_features for b in bases]
    kwargs = {"device": base.weight.device, "dtype": base.weight.dtype}
    lora_A = nn.Linear(bases[0].in_features, rank * len(parts), bias=False, **kwargs)
    lora_B = nn.Linear(rank * len(parts), sum(outs), bias=False, **kwargs)
    views = []
    with torch.no_grad():
        lora_A.weight.zero_()
        lora_B.weight.zero_()
        row = 0
        for i, (slot, out) in enumerate(zip(slots, outs, strict=True)):
            a = lora_A.weight[i * rank:(i + 1) * rank]
            b = lora_B.weight[row:row + out, i * rank:(i + 1) * rank]
            row += out
            if slot is None:
                views.append(None)  # no adapter targets this projection: its block stays zero
                continue
            own_rank = slot[0].weight.shape[0]
            a[:own_rank].copy_(slot[0].weight)
            b[:, :own_rank].copy_(slot[1].weight)
            views.append((a[:own_rank], b[:, :own_rank]))
    for module in (base, lora_A, lora_B):
        module.requires_grad_(False)
    return FusedLoraLinear(base, lora_A, lora_B), views


def fuse_qkv(transformer: nn.Module, adapter: str) -> int:
    """Fuse every attention's projection groups in place (LoRA slot `adapter` included); returns how many
    fused layers were made. The original projections are removed, so nothing can use them by mistake."""
    fused = 0
    for attn in [m for m in transformer.modules() if hasattr(m, "fused_projections")]:
        for names, fused_name in GROUPS:
            if not all(getattr(attn, n, None) is not None for n in names):
                continue
            layer, views = _fuse([getattr(attn, n) for n in names], adapter)
            layer.slot_views = {n: v for n, v in zip(names, views, strict=True) if v is not None}
            for name in names:
                delattr(attn, name)
            setattr(attn, fused_name, layer)
            attn.fused_projections = True  # what diffusers' attention processor reads to call the fused layers
            fused += 1
    log_event("fuse_qkv", fused_layers=fused, adapter=adapter)
    return fused


def slot_tensor(transformer: nn.Module, prefix: str, ab: str, adapter: str) -> torch.Tensor:
    """The slot's lora_A or lora_B tensor of one projection (`prefix` relative to the transformer), whether it
    is still a peft layer or now a view into a fused one."""
    parent_name, _, name = prefix.rpartition(".")
    parent = transformer.get_submodule(parent_name)
    if hasattr(parent, name):
        return getattr(getattr(parent, name), f"lora_{ab}")[adapter].weight
    for names, fused_name in GROUPS:
        if name in names and isinstance(getattr(parent, fused_name, None), FusedLoraLinear):
            return getattr(parent, fused_name).slot_views[name]["AB".index(ab)]
    raise KeyError(f"no LoRA slot at {prefix}")
