"""Weight pruning of the layers that tolerate it, applied once in setup() and made permanent.

The filter map: q/k/v projections and the MLP input projections may be pruned; embeddings, lm_head,
norms and every output projection (o_proj, down_proj, out_proj) may not: they write straight into
the residual stream, where zeroed weights hurt most.

Unstructured sparsity saves no time without sparse kernels; it is here to trade quality for a more
compressible model and to study that trade, measured by the benchmarks, not assumed. 2:4 semi-structured
sparsity is the pattern GPUs have kernels for (`semi_structured`).
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .runtime import log_event

PRUNABLE = re.compile(r"(^|\.)(q_proj|k_proj|v_proj|gate_proj|up_proj|fc1|to_q|to_k|to_v)$")
NEVER = re.compile(r"(embed|lm_head|norm|o_proj|down_proj|out_proj|fc2|to_out)")


def is_prunable(name: str, module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and bool(PRUNABLE.search(name)) and not NEVER.search(name)


def prunable_layers(model: nn.Module, scope: str = "") -> list[tuple[str, nn.Linear]]:
    """(name, layer) pairs the filter allows, optionally only under a submodule path prefix."""
    return [(n, m) for n, m in model.named_modules() if n.startswith(scope) and is_prunable(n, m)]


def magnitude(model: nn.Module, amount: float, scope: str = "") -> dict:
    """Zero the smallest-|w| fraction `amount` of each prunable layer's weights."""
    layers = prunable_layers(model, scope)
    for _, layer in layers:
        torch_prune.l1_unstructured(layer, "weight", amount=amount)
        torch_prune.remove(layer, "weight")
    return _report("magnitude", layers, amount)


def gradual(model: nn.Module, final_amount: float, steps: int = 4, scope: str = "") -> dict:
    """Reach `final_amount` sparsity in `steps` rounds on the cubic schedule of Zhu & Gupta (2017).

    Without fine-tuning between rounds this equals one-shot magnitude pruning at the final amount; the
    rounds matter when a caller interleaves recovery steps, which is why each round's target is returned.
    """
    layers = prunable_layers(model, scope)
    schedule = [final_amount * (1 - (1 - (i + 1) / steps) ** 3) for i in range(steps)]
    for target in schedule:
        for _, layer in layers:
            torch_prune.l1_unstructured(layer, "weight", amount=target)
            torch_prune.remove(layer, "weight")
    report = _report("gradual", layers, final_amount)
    report["schedule"] = [round(s, 4) for s in schedule]
    return report


def structured(model: nn.Module, amount: float, scope: str = "") -> dict:
    """Zero whole output rows with the smallest L2 norm (structured, row-wise)."""
    layers = prunable_layers(model, scope)
    for _, layer in layers:
        torch_prune.ln_structured(layer, "weight", amount=amount, n=2, dim=0)
        torch_prune.remove(layer, "weight")
    return _report("structured", layers, amount)


def semi_structured(model: nn.Module, amount: float = 0.5, scope: str = "") -> dict:
    """2:4: in every 4 consecutive weights of a row, the 2 smallest |w| are zeroed (torchao's
    `apply_fake_sparsity`, the mask its 2:4 sparse kernels need). Half of each layer, by construction; on a
    GPU the layers can then be stored in the 2:4 layout (`quantize.apply_semi_sparse`), which reads ~56% of
    the dense bytes. `amount` is fixed at 0.5 by the pattern."""
    from torchao.sparsity import apply_fake_sparsity

    if amount != 0.5:
        raise ValueError(f"2:4 sparsity zeroes half of each layer; amount must be 0.5, got {amount}")
    layers = prunable_layers(model, scope)
    chosen = {id(m) for _, m in layers}
    apply_fake_sparsity(model, filter_fn=lambda m, name: id(m) in chosen)
    return _report("2:4", layers, amount)


METHODS = {"magnitude": magnitude, "gradual": gradual, "structured": structured, "2:4": semi_structured}


def apply(model: nn.Module, method: str, amount: float, scope: str = "") -> dict:
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; use one of {sorted(METHODS)}")
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"pruning amount must be in [0, 1), got {amount}")
    return METHODS[method](model, amount, scope=scope)


def sparsity(layers: list[tuple[str, nn.Linear]]) -> float:
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    total = sum(m.weight.numel() for _, m in layers)
    return zeros / total if total else 0.0


def _report(method: str, layers, amount: float) -> dict:
    with torch.no_grad():
        report = {"method": method, "amount": amount, "layers": len(layers), "sparsity": round(sparsity(layers), 4)}
    log_event("prune", **report)
    return report
