"""The stand-in LoRAs copy the published files where a hot-swap depends on it: layers, ranks, no alphas."""

import json
import struct

import pytest
import torch

from shared import catalog
from shared.builders import flux as flux_builder
from shared.builders.loras import LAYOUTS, target_layers, write_random_lora

GHIBSKY_FILE_BYTES = 171_969_416  # lora.safetensors at Hub commit e7a8c87 (docs/models.md)


@pytest.fixture(scope="module")
def full_size_transformer():
    """FLUX.1-dev's transformer from its published config, without memory (meta tensors)."""
    from diffusers import FluxTransformer2DModel

    cfg = flux_builder._config(catalog.get("flux-lora-txt2img"), "transformer")
    with torch.device("meta"):
        return FluxTransformer2DModel(**cfg)


def _params(transformer, lora):
    modules = dict(transformer.named_modules())
    return sum(lora.rank * (modules[n].in_features + modules[n].out_features) for n in target_layers(transformer, lora))


def test_the_ghibsky_layout_is_the_published_files_size(full_size_transformer):
    lora = next(lo for lo in catalog.STYLE_LORAS if lo.name == "ghibsky")
    layers = target_layers(full_size_transformer, lora)
    assert len(layers) == 494 and lora.rank == 16
    data = _params(full_size_transformer, lora) * 2  # bf16
    header = GHIBSKY_FILE_BYTES - data  # what is left is the safetensors header: ~135 bytes of JSON a tensor
    assert 0 < header < 2 * len(layers) * 200, header


def test_the_open_image_preferences_layout_is_diffusers_default_targets(full_size_transformer):
    lora = next(lo for lo in catalog.STYLE_LORAS if lo.name == "open_image_preferences")
    layers = target_layers(full_size_transformer, lora)
    assert len(layers) == 342 and lora.rank == 8
    singles = [n for n in layers if n.startswith("single_transformer_blocks.")]
    assert {n.rsplit(".", 1)[1] for n in singles} == {"to_q", "to_k", "to_v"}, "PEFT suffix matching"
    assert set(layers) < set(target_layers(full_size_transformer, catalog.STYLE_LORAS[1]))


def test_the_slot_rank_is_the_largest_published_rank():
    assert catalog.get("flux-lora-txt2img").lora_target_rank == max(lo.rank for lo in catalog.STYLE_LORAS) == 16


@pytest.mark.parametrize("lora", catalog.STYLE_LORAS, ids=lambda lo: lo.name)
def test_a_stand_in_file_carries_no_alphas_and_no_metadata(tmp_path, lora):
    from diffusers import FluxPipeline

    pipe = flux_builder.build_random(catalog.get("flux-lora-txt2img"), tiny=True, device="cpu", dtype=torch.float32,
                                     pipeline_cls=FluxPipeline)
    path = write_random_lora(FluxPipeline, pipe.transformer, lora, 0, tmp_path, magnitude=1.0) / lora.weight_name
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    keys = set(header) - {"__metadata__"}
    assert not any("alpha" in k for k in keys)
    assert "lora_adapter_metadata" not in header.get("__metadata__", {})
    assert len(keys) == 2 * len(target_layers(pipe.transformer, lora))
    assert {header[k]["shape"][0] for k in keys if "lora_A" in k} == {lora.rank}


def test_every_layout_names_its_source():
    assert set(LAYOUTS) == {lo.name for lo in catalog.STYLE_LORAS}
    assert all(layout.source for layout in LAYOUTS.values())
