"""Stand-in LoRA files for the tiny and synthetic profiles, in the layouts of the published files.

A hot-swap depends on which layers each adapter targets, at which rank, and whether the file carries
alphas or adapter metadata (diffusers derives a rank and alpha pattern from what it finds). So each
stand-in copies its published file in all of these, from the facts in `LAYOUTS`, and only the numbers
are random: two styles still give different pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..catalog import Lora

STANDIN_VERSION = 3  # bump when the stand-in adapters change, so cached files are not reused

BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")  # FLUX's 19 double and 38 single blocks


@dataclass(frozen=True)
class LoraLayout:
    """The shape of a published LoRA file: which Linear layers it has weights for (its rank is the catalog's)."""

    targets: tuple[str, ...] | None  # module-name suffixes, matched as PEFT matches them; None: every Linear
    source: str  # where the facts come from

    def covers(self, name: str) -> bool:
        if not name.startswith(BLOCKS):
            return False
        return self.targets is None or any(name.endswith("." + t) for t in self.targets)


LAYOUTS = {
    "open_image_preferences": LoraLayout(
        targets=("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                 "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                 "ff_context.net.2"),
        source="trained with diffusers' examples/dreambooth/train_dreambooth_lora_flux.py (Hub tags "
               "diffusers-training, template:sd-lora) at rank 8 with its default target modules, which PEFT "
               "matches by suffix, so the single blocks' attn.to_q/k/v are targeted too: 342 layers; keys "
               "transformer.<layer>.lora_A/B.weight, no alpha keys, no adapter metadata",
    ),
    "ghibsky": LoraLayout(
        targets=None,
        source="trained with ai-toolkit (Replicate's FLUX trainer) at rank 16 on every nn.Linear of the 57 "
               "blocks (norm1.linear, norm1_context.linear, norm.linear, proj_mlp, proj_out included): 494 "
               "layers, 85,917,696 bf16 parameters = 171,835,392 bytes, the published 171,969,416 bytes less "
               "its safetensors header (Hub commit e7a8c87); diffusers-style keys, no alpha keys",
    ),
}


def target_layers(transformer, lora: Lora) -> list[str]:
    """The names of the Linear layers the published file of `lora` has weights for, in this transformer."""
    from torch import nn

    layout = LAYOUTS[lora.name]
    return [name for name, module in transformer.named_modules() if isinstance(module, nn.Linear) and layout.covers(name)]


def write_random_lora(pipeline_cls, transformer, lora: Lora, index: int, folder: Path, magnitude: float) -> Path:
    """Save a seeded random adapter of `lora`'s published layout under folder/lora.name/lora.weight_name.

    The state dict is made from the Linear shapes alone (the model is not touched); lora_B is non-zero so
    the adapter changes the output. Like the published files, it carries no alphas and no metadata.
    """
    out = folder / lora.name
    if (out / lora.weight_name).exists():
        return out
    generator = torch.Generator("cpu").manual_seed(1000 + index)
    dtype = next(transformer.parameters()).dtype
    modules = dict(transformer.named_modules())
    state = {}
    for name in target_layers(transformer, lora):
        module = modules[name]
        a = torch.randn(lora.rank, module.in_features, generator=generator) / module.in_features ** 0.5
        b = torch.randn(module.out_features, lora.rank, generator=generator) * magnitude / lora.rank ** 0.5
        state[f"transformer.{name}.lora_A.weight"] = a.to(dtype).contiguous()
        state[f"transformer.{name}.lora_B.weight"] = b.to(dtype).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".partial"
    tmp.mkdir(exist_ok=True)
    pipeline_cls.write_lora_layers(state_dict=state, save_directory=str(tmp), is_main_process=True,
                                   weight_name=lora.weight_name, save_function=None, safe_serialization=True)
    os.replace(tmp / lora.weight_name, out / lora.weight_name)
    return out
