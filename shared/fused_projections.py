"""Projections of one input as one matmul (`OPTIMIZE=fuse_projections=on`): Q, K and V; gate and up.

A decode step reads every weight once per token, and at SmolLM3's widths each int4 GEMV is short: 252
launches per token, the int4 matmuls ~1.5-1.8 ms of a ~4 ms step at ~1 TB/s, 30% of an H100's bandwidth
(benchmarks/results/2026-12-05-text-profile-*). Concatenating the projections that read the same input
gives 4 matmuls per layer instead of 7, each longer (gpt-fast fuses wqkv the same way).

The model's own forward is left as it is: `q_proj`, `k_proj` and `v_proj` become views of one
`SharedInputLinear` registered beside them (`qkv_proj`; `gate_up_proj` in the MLP). The first view called
with an input runs the fused Linear and keeps its output; the others slice it; after the last view has read
it, nothing is kept. Inductor and Dynamo trace this as one matmul. Fuse before quantizing: the fused Linear
is an ordinary `nn.Linear`, quantized row by row as its parts would have been.
"""

from __future__ import annotations

import torch
from torch import nn

# (module attribute, parts, fused name): the projections of the same input in transformers' decoder layers.
GROUPS = (("self_attn", ("q_proj", "k_proj", "v_proj"), "qkv_proj"), ("mlp", ("gate_proj", "up_proj"), "gate_up_proj"))


def stacked_linear(parts: list[nn.Linear]) -> nn.Linear:
    """One Linear whose outputs are the parts' outputs side by side: their weights (and biases) stacked."""
    has_bias = all(p.bias is not None for p in parts)
    if not has_bias and any(p.bias is not None for p in parts):
        raise ValueError("some of the projections have a bias and some do not")
    weight = parts[0].weight
    layer = nn.Linear(parts[0].in_features, sum(p.out_features for p in parts), bias=has_bias,
                      device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.cat([p.weight for p in parts]))
        if has_bias:
            layer.bias.copy_(torch.cat([p.bias for p in parts]))
    return layer


class SharedInputLinear(nn.Module):
    """One Linear standing for several that read the same input; `views()` are what replaces them."""

    def __init__(self, parts: list[nn.Linear]):
        super().__init__()
        self.fused = stacked_linear(parts)
        self.sizes = [p.out_features for p in parts]
        self._input = self._outputs = None
        self._reads = 0

    def read(self, x: torch.Tensor, part: int) -> torch.Tensor:
        if self._input is not x:  # a new input: one matmul for every part
            self._outputs = self.fused(x).split(self.sizes, dim=-1)
            self._input, self._reads = x, 0
        out = self._outputs[part]
        self._reads += 1
        if self._reads == len(self.sizes):  # every part has read it: keep no tensor past the forward
            self._input = self._outputs = None
            self._reads = 0
        return out

    def views(self) -> list[nn.Module]:
        return [_View(self, i) for i in range(len(self.sizes))]


class _View(nn.Module):
    """Stands where one of the fused Linears was; its output is that Linear's slice of the fused one."""

    def __init__(self, shared: SharedInputLinear, part: int):
        super().__init__()
        self.__dict__["shared"] = shared  # not a submodule: it is registered once, beside the views
        self.part = part
        self.out_features = shared.sizes[part]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared.read(x, self.part)


def fuse_projections(model: nn.Module) -> int:
    """Fuse every group of GROUPS found in the model's layers (Phi-3's are fused already: none found);
    returns how many fused Linears replaced their parts."""
    fused = 0
    for module in list(model.modules()):
        for attr, names, fused_name in GROUPS:
            block = getattr(module, attr, None)
            parts = [getattr(block, name, None) for name in names]
            if block is None or not all(type(p) is nn.Linear for p in parts):
                continue
            shared = SharedInputLinear(parts)
            setattr(block, fused_name, shared)
            for name, view in zip(names, shared.views(), strict=True):
                setattr(block, name, view)
            fused += 1
    return fused
