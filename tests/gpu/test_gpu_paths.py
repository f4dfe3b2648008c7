"""The optimized GPU paths, through the real Cog server, on full-size synthetic weights.

Run on a GPU machine: `make test-gpu` (WEIGHT_PROFILE=synthetic). Skipped on CPU with the reason.
Each deployment's default GPU options are used: what production runs, on random weights.
"""

import json
import os

import pytest

from shared.cogserver import CogServer, example_inputs
from tests.integration.conftest import decode_image, ok, only

pytestmark = pytest.mark.gpu

ENV = {"WEIGHT_PROFILE": "synthetic", "TORCH_LOGS": "recompiles"}


def _server(name, **env):
    return CogServer(name, env={**ENV, **env}, setup_timeout=900)


def _report(name, body):
    print(json.dumps({"deployment": name, "metrics": body["metrics"]}))


def test_flux_txt2img_compiled_and_hot_swapping_without_recompiles(tmp_path):
    """Stand-ins of the published layouts (rank 8 on 342 layers, rank 16 on 494), every trigger, the base
    model and a user's LoRA: one compiled slot, no recompile."""
    import torch
    from diffusers import FluxTransformer2DModel

    from shared import catalog
    from shared.builders import flux as flux_builder
    from tests.mirror_server import MirrorServer
    from tests.unit.test_user_lora import lora_bytes

    with torch.device("meta"):  # only the layer shapes are needed for the user's file
        shapes = FluxTransformer2DModel(**flux_builder._config(catalog.get("flux-lora-txt2img"), "transformer"))
    with MirrorServer(tmp_path, prefix="/files") as files, _server("flux-lora-txt2img") as s:
        user = files.add("user.safetensors", lora_bytes(shapes, rank=8))
        setup = s.log_path.read_text()
        assert all(step in setup for step in ("compile", "text_encoder:int8", "transformer:fp8-row", "cuda_graphs"))
        common = {"prompt": "a lighthouse", "seed": 1, "num_inference_steps": 8, "width": 768, "height": 768}
        # No trigger: the field is left out (JSON null is not a string to the server's validator).
        triggers = [t for lora in catalog.STYLE_LORAS for t in lora.triggers]
        requests = [{"trigger_word": t} for t in triggers] + [{}, {"lora_weights": user}, {"trigger_word": "Anime"}]
        bodies = [ok(s.predict({**common, **extra})) for extra in requests]
        for b in bodies:
            _report("flux-lora-txt2img", b)
            assert decode_image(only(b)).size == (768, 768)
            assert "Recompiling" not in b["logs"], b["logs"][-2000:]
        assert bodies[-1]["output"] == bodies[triggers.index("Anime")]["output"], "a style survives the swaps"
        # Through the replayed CUDA graph: the base model and the user's LoRA get the same prompt, so a swap the
        # graph did not see (reading the old weights) would make those two images equal.
        assert len({only(b) for b in bodies[:-1]}) == len(bodies) - 1
        # go_fast runs the compiled blocks eagerly around the first-block cache, then hands the graph back:
        # nothing recompiles, and the exact path after it gives the same bytes as before it.
        fast = ok(s.predict({**common, "trigger_word": "Anime", "go_fast": True}))
        _report("flux-lora-txt2img", fast)
        assert "Recompiling" not in fast["logs"] and len(fast["metrics"]["go_fast_steps_skipped"]) == 1
        assert ok(s.predict({**common, "trigger_word": "Anime"}))["output"] == bodies[-1]["output"]


def test_flux_low_memory_mode_serves_within_a_24_gb_card():
    """transformer=auto under GPU_MEMORY_LIMIT_GB=23 takes the NF4 low-memory mode: it boots, compiles the 4-bit
    layers with Inductor, hot-swaps without recompiling, and never allocates past the cap."""
    with _server("flux-lora-txt2img", GPU_MEMORY_LIMIT_GB="23") as s:
        setup = s.events("setup.done")[-1]
        assert "transformer:nf4" in setup["optimizations"] and setup["peak_gpu_gb"] < 23, setup
        common = {"prompt": "a lighthouse", "seed": 1, "num_inference_steps": 8, "width": 1024, "height": 1024}
        bodies = [ok(s.predict({**common, **extra})) for extra in ({"trigger_word": "Anime"}, {}, {"trigger_word": "Anime"})]
        for b in bodies:
            _report("flux-lora-txt2img nf4", b)
            assert "Recompiling" not in b["logs"], b["logs"][-2000:]
        assert bodies[0]["output"] != bodies[1]["output"] and bodies[0]["output"] == bodies[2]["output"]
        assert max(e["peak_gpu_gb"] for e in s.events("predict.end")) < 23


def test_flux_img2img_serves_any_size_without_recompiling(tmp_path):
    """img2img's size follows the input: sizes other than the warm-up's must not compile in a request."""
    from PIL import Image

    from shared.cogserver import to_data_uri

    other = tmp_path / "wide.png"
    Image.new("RGB", (1024, 576), "teal").save(other)
    with _server("flux-lora-img2img") as s:
        assert "compile:dynamic" in s.log_path.read_text()
        for image, size in ((example_inputs("flux-lora-img2img")["image"], (336, 256)), (to_data_uri(other), (1024, 576))):
            body = ok(s.predict({**example_inputs("flux-lora-img2img"), "image": image, "num_inference_steps": 28}))
            _report("flux-lora-img2img", body)
            assert decode_image(only(body)).size == size
            assert "Recompiling" not in body["logs"], body["logs"][-2000:]


@pytest.mark.parametrize("name", ["smollm3-3b", "gemma3-4b-it", "phi4-reasoning-plus"])
def test_text_deployment_serves_its_optimized_path(name):
    if name == "smollm3-3b" and not _importable("pruna"):
        pytest.skip("pruna is not installed here: carry its wheels (../shared/gpu/fetch-wheels.sh pruna)")
    if name == "phi4-reasoning-plus" and not _importable("unsloth"):
        pytest.skip("unsloth is not installed here: carry its wheels (../shared/gpu/fetch-wheels.sh unsloth)")
    with _server(name) as s:
        body = ok(s.predict({**example_inputs(name), "max_new_tokens": 64}))
        _report(name, body)
        setup_log = s.log_path.read_text()
        assert "setup.done" in setup_log
        expected = {"smollm3-3b": "pruna-hqq4-int4mm", "gemma3-4b-it": "int8-weight-only", "phi4-reasoning-plus": "unsloth"}[name]
        assert expected in setup_log
        assert body["metrics"]["output_token_count"] > 0


def test_pruna_with_gemlite_kernels_serves_gemlites_layers():
    """quantize=pruna-hqq-gemlite: Pruna's HQQ with its own patch off, then hqq's gemlite backend."""
    if not _importable("pruna") or not _importable("gemlite"):
        pytest.skip("pruna and gemlite are not installed here: carry their wheels (../shared/gpu/fetch-wheels.sh pruna)")
    with _server("smollm3-3b", OPTIMIZE="quantize=pruna-hqq-gemlite") as s:
        body = ok(s.predict({"prompt": "Tell me a story.", "max_new_tokens": 64, "seed": 1}))
        _report("smollm3-3b", body)
        assert "pruna-hqq4-gemlite" in s.log_path.read_text()
        assert body["metrics"]["output_token_count"] > 0


def test_compiled_decode_is_warm_before_the_first_request():
    """bf16 + compiled decode (no Pruna needed): requests of different lengths never recompile."""
    with _server("smollm3-3b", OPTIMIZE="quantize=none") as s:
        assert "warmup.done" in s.log_path.read_text()
        for n in (64, 300):
            body = ok(s.predict({"prompt": "Tell me a story.", "max_new_tokens": n, "seed": 1}))
            _report("smollm3-3b", body)
            assert "Recompiling" not in body["logs"], body["logs"][-2000:]


def _importable(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_gpu_is_really_used():
    import torch

    assert torch.cuda.is_available() and os.environ.get("FORCE_CPU") != "1"
