"""Which int4 kernel Pruna's HQQ path ends on, and how SmolLM3's `quantize` values route there.

Pruna needs a GPU (it refuses CPU), so its `smash` is stood in for by a module that records the SmashConfig it
is given and quantizes with hqq itself, as Pruna's HQQ does; the kernel patch (hqq's `prepare_for_inference`,
CUDA-only) is recorded instead of run. What is checked is what this repository decides: Pruna 0.3.4's HQQ
patches in one backend itself (torchao_int4, a constant hyperparameter), so gemlite needs its own patch off
and hqq's after. The GPU path itself: tests/gpu/test_gpu_paths.py.
"""

import importlib.machinery
import sys
import types

import pytest
import torch

from shared import catalog, llm_backends
from shared.builders.text import build_random_causal_lm
from shared.quantize import apply_hqq


@pytest.fixture
def fake_pruna(monkeypatch):
    configs, patched = [], []

    class SmashConfig(dict):
        def __init__(self, algorithms, device):
            super().__init__(algorithms)
            configs.append(algorithms["hqq"])

    def smash(model, smash_config):
        apply_hqq(model, nbits=4, group_size=64, device="cpu", compute_dtype=torch.float32)
        return model

    pruna = types.ModuleType("pruna")
    pruna.__spec__ = importlib.machinery.ModuleSpec("pruna", None)
    pruna.SmashConfig, pruna.smash = SmashConfig, smash
    monkeypatch.setitem(sys.modules, "pruna", pruna)
    monkeypatch.setattr(llm_backends, "pack_hqq_int4_on_any_torch", lambda: None)
    monkeypatch.setattr(llm_backends, "_patch_int4", lambda model, kernel: patched.append(kernel) or 0)
    return configs, patched


@pytest.mark.parametrize("kernel, pruna_patches, then_patched", [("torchao_int4", True, []), ("gemlite", False, ["gemlite"])])
def test_pruna_patches_torchao_itself_and_leaves_gemlite_to_hqq(fake_pruna, kernel, pruna_patches, then_patched):
    configs, patched = fake_pruna
    model, _ = build_random_causal_lm(catalog.get("smollm3-3b"), tiny=True, device="cpu", dtype=torch.float32)
    _, path = llm_backends.hqq_quantize(model, via="pruna", device="cpu", dtype=torch.bfloat16, kernel=kernel)
    (config,) = configs
    assert config["use_torchao_kernels"] is pruna_patches and config["compute_dtype"] == "torch.bfloat16"
    assert patched == then_patched
    assert path == "pruna-hqq4-dequantize"  # the stand-in swapped no layer in: the path says so, not a kernel name


@pytest.mark.parametrize("value, via, kernel", [
    ("pruna-hqq", "pruna", "torchao_int4"), ("pruna-hqq-gemlite", "pruna", "gemlite"),
    ("hqq", "hqq", "torchao_int4"), ("hqq-gemlite", "hqq", "gemlite"),
])
def test_smollm3_quantize_values_route_to_their_quantizer_and_kernel(monkeypatch, value, via, kernel):
    from tests.conftest import runner_before_load

    asked = []

    def hqq_quantize(model, **kwargs):
        asked.append((kwargs["via"], kwargs["kernel"]))
        return model, "recorded"

    monkeypatch.setattr(llm_backends, "hqq_quantize", hqq_quantize)
    monkeypatch.setenv("OPTIMIZE", f"quantize={value}")
    runner_before_load("smollm3-3b").load_model()
    assert asked == [(via, kernel)]
