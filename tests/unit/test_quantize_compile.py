"""Quantization (torchao int8, HQQ) and selective compilation on real tiny models."""

import pytest
import torch
from torch import nn

from shared import catalog, compile as selective_compile, quantize
from shared.builders.text import build_random_causal_lm


def _model(name="smollm3-3b"):
    return build_random_causal_lm(catalog.get(name), tiny=True, device="cpu", dtype=torch.float32)


def test_int8_weight_only_quantizes_only_the_chosen_linear_layers():
    model, tok = _model()
    ids = tok("hello there", return_tensors="pt").input_ids
    before = model(ids).logits
    quantize.apply_int8_weight_only(model, filter_fn=lambda m, n: "lm_head" not in n)
    q = model.model.layers[0].self_attn.q_proj.weight
    assert type(q).__name__ != "Parameter" or type(q.data).__name__ != "Tensor"
    assert "Int8" in type(q).__name__ or "AffineQuantized" in type(q).__name__ or "Int" in type(q.data).__name__
    assert type(model.lm_head.weight.data) is torch.Tensor
    after = model(ids).logits
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, before, atol=0.05, rtol=0.05)


@pytest.fixture
def inductor_tuning():
    """Inductor's tuning switches, restored after the test (they are process-wide)."""
    from torch._inductor import config

    saved = (config.coordinate_descent_tuning, config.coordinate_descent_check_all_directions)
    config.coordinate_descent_tuning = config.coordinate_descent_check_all_directions = False
    yield config
    config.coordinate_descent_tuning, config.coordinate_descent_check_all_directions = saved


def test_quantizing_leaves_inductor_tuning_alone(inductor_tuning):
    # torchao's default turned coordinate-descent tuning on for every later compile in the process:
    # FLUX's eager T5 quantization made its transformer compile 240 s longer.
    model, _ = _model()
    quantize.apply_int8_weight_only(model, filter_fn=lambda m, n: "lm_head" not in n)
    assert inductor_tuning.coordinate_descent_tuning is False
    selective_compile.tune_kernels(True)
    assert inductor_tuning.coordinate_descent_tuning and inductor_tuning.coordinate_descent_check_all_directions


def test_flux_tunes_kernels_only_when_asked(inductor_tuning):
    from shared import flux

    pipe = _flux_pipe()
    chosen = {"text_encoder": "int8", "transformer": "none", "compile": "on", "shapes": "auto", "kernel_tuning": "off",
              "cuda_graphs": "off"}
    assert "kernel_tuning" not in flux.optimize(pipe, chosen)
    assert inductor_tuning.coordinate_descent_tuning is False
    assert "kernel_tuning" in flux.optimize(_flux_pipe(), chosen | {"kernel_tuning": "on"})
    assert inductor_tuning.coordinate_descent_tuning is True


def _flux_pipe():
    import diffusers

    from shared.builders import flux as flux_builder

    return flux_builder.build_random(catalog.get("flux-lora-txt2img"), tiny=True, device="cpu", dtype=torch.float32,
                                     pipeline_cls=diffusers.FluxPipeline)


def test_hqq_replaces_decoder_linears_and_still_generates():
    from hqq.core.quantize import HQQLinear

    model, tok = _model()
    quantize.apply_hqq(model, nbits=4, group_size=64, device="cpu")
    assert isinstance(model.model.layers[0].mlp.up_proj, HQQLinear)
    assert isinstance(model.lm_head, nn.Linear)
    out = model.generate(**tok("hello", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert out.shape[1] > 1


def test_linear_only_filter_ignores_non_linear_modules():
    f = quantize.linear_only(lambda m, n: True)
    assert f(nn.Linear(2, 2), "x") and not f(nn.LayerNorm(2), "x") and not f(nn.Embedding(3, 2), "x")


def test_bnb_config_refuses_unsupported_bits():
    pytest.importorskip("bitsandbytes", reason="bitsandbytes ships only in the GPU images")
    with pytest.raises(ValueError, match="4 or 8"):
        quantize.bnb_config(3)


def test_missing_optional_dependency_says_what_to_install():
    from shared.runtime import require

    with pytest.raises(ImportError, match="pip install nonexistent-pkg==1"):
        require("nonexistent_pkg_xyz", install="nonexistent-pkg==1", purpose="testing")


def test_compile_blocks_compiles_each_repeated_block_in_place():
    model, tok = _model()
    keys = set(model.state_dict())
    count = selective_compile.compile_blocks(model, ("SmolLM3DecoderLayer",), backend="eager", fullgraph=False)
    assert count == model.config.num_hidden_layers
    assert set(model.state_dict()) == keys, "compiling in place must keep parameter names"
    assert model(tok("hi", return_tensors="pt").input_ids).logits.isfinite().all()


def test_compile_blocks_refuses_a_class_that_is_not_there():
    model, _ = _model()
    with pytest.raises(ValueError, match="no submodule"):
        selective_compile.compile_blocks(model, ("NotABlock",), backend="eager")


@pytest.mark.parametrize("capability, gib, expected", [((9, 0), 79.6, "fp8-row"), ((10, 0), 178, "fp8-row"),
                                                       ((8, 9), 44.5, "fp8"), ((8, 0), 39.5, "none"), (None, 0, "none"),
                                                       # a 24 GB card (or GPU_MEMORY_LIMIT_GB): the low-memory mode
                                                       ((8, 9), 23.6, "nf4"), ((9, 0), 23.0, "nf4"), ((8, 6), 23.6, "nf4")])
def test_flux_precision_is_chosen_by_gpu_unless_named(monkeypatch, capability, gib, expected):
    from shared import flux

    monkeypatch.setattr(torch.cuda, "is_available", lambda: capability is not None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(flux, "gpu_memory_gb", lambda: gib)
    assert flux.transformer_precision("auto") == expected
    assert flux.transformer_precision("none") == "none" and flux.transformer_precision("fp8") == "fp8"


@pytest.mark.parametrize("choice, path, layer, least_cosine", [
    ("fp8", "fp8-weight-only", "Float8Tensor", 0.99),  # torchao float8 weight-only: the same bytes as int8
    ("int4", "hqq4", "HQQLinear", 0.9),  # HQQ 4-bit (on a GPU: SmolLM3's int4 kernels); 0.93 on the tiny random model
])
def test_gemma_quantizes_its_language_model_only_and_keeps_its_logits(monkeypatch, runners, choice, path, layer,
                                                                       least_cosine):
    """OPTIMIZE=quantize=fp8 / int4: every Linear of the language model is quantized, the vision tower stays
    16-bit, and the logits stay near those of the int8 default (same weights, same pruning)."""
    from tests.conftest import load_runner

    plain = runners("gemma3-4b-it")
    assert plain.options["quantize"] == "int8"
    monkeypatch.setenv("OPTIMIZE", f"quantize={choice},compile=off")
    runner = load_runner("gemma3-4b-it")
    runner.setup()
    assert path in runner.path
    modules = dict(runner.model.named_modules())
    language = [m for n, m in modules.items() if n.startswith("model.language_model.") and
                (type(m) is nn.Linear or type(m).__name__ == "HQQLinear")]
    vision = [m for n, m in modules.items() if type(m) is nn.Linear and "vision" in n]
    assert language and all(layer in (type(m).__name__, type(getattr(m, "weight", None)).__name__) for m in language)
    assert vision and all(type(m.weight) is nn.Parameter and m.weight.dtype == runner.hw.dtype for m in vision)
    ids = plain.encode([{"role": "user", "content": "hello there"}], {})["input_ids"]
    with torch.inference_mode():
        ours, theirs = runner.model(input_ids=ids).logits, plain.model(input_ids=ids).logits
    assert not torch.equal(ours, theirs)
    assert torch.nn.functional.cosine_similarity(ours.flatten(), theirs.flatten(), dim=0) > least_cosine


@pytest.mark.parametrize("optimize, tuned", [("", False), ("kernel_tuning=on", True)])
def test_smollm3_tunes_kernels_only_when_asked_even_after_hqq_turned_it_on(inductor_tuning, monkeypatch, optimize, tuned):
    # hqq's int4 patch switches the tuning on for the process; a cold boot then compiled each of SmolLM3's three
    # decode steps for ~180 s (H200), past Replicate's 600 s setup limit.
    from tests.conftest import runner_before_load

    monkeypatch.setenv("OPTIMIZE", optimize)
    runner = runner_before_load("smollm3-3b")
    inductor_tuning.coordinate_descent_tuning = True  # as hqq's patch leaves it on a GPU
    runner.load_model()
    assert inductor_tuning.coordinate_descent_tuning is tuned
