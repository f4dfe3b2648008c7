"""Stand-in LoRA files for the tiny and synthetic profiles, written in the diffusers format.

Each adapter gets its own seed and target layers, so two styles give different pixels and the
hot-swap has to cope with adapters of different ranks and layer sets, as real ones do.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..catalog import Lora

STANDIN_VERSION = 2  # bump when the stand-in adapters change, so cached files are not reused

# Which attention projections each stand-in adapter targets (subsets of each other on purpose).
_TARGETS = (["to_q", "to_k", "to_v", "to_out.0"], ["to_q", "to_k", "to_v"])


def write_random_lora(pipeline_cls, transformer, lora: Lora, index: int, folder: Path, magnitude: float) -> Path:
    """Save a seeded random adapter for `transformer` under folder/lora.name/lora.weight_name.

    The state dict is made from the Linear shapes alone (the model is not touched), in the key layout
    diffusers writes for FLUX LoRAs; lora_B is non-zero so the adapter changes the output.
    """
    from torch import nn

    out = folder / lora.name
    if (out / lora.weight_name).exists():
        return out
    targets = _TARGETS[index % len(_TARGETS)]
    generator = torch.Generator("cpu").manual_seed(1000 + index)
    dtype = next(transformer.parameters()).dtype
    state = {}
    for name, module in transformer.named_modules():
        if isinstance(module, nn.Linear) and any(name.endswith("." + t) for t in targets):
            a = torch.randn(lora.rank, module.in_features, generator=generator) / module.in_features ** 0.5
            b = torch.randn(module.out_features, lora.rank, generator=generator) * magnitude / lora.rank ** 0.5
            state[f"transformer.{name}.lora_A.weight"] = a.to(dtype).contiguous()
            state[f"transformer.{name}.lora_B.weight"] = b.to(dtype).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".partial"
    tmp.mkdir(exist_ok=True)
    pipeline_cls.write_lora_layers(
        state_dict=state, save_directory=str(tmp), is_main_process=True, weight_name=lora.weight_name,
        save_function=None, safe_serialization=True,
        lora_adapter_metadata={"transformer.r": lora.rank, "transformer.lora_alpha": lora.rank,
                               "transformer.target_modules": targets},
    )
    os.replace(tmp / lora.weight_name, out / lora.weight_name)
    return out
