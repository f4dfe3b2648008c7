"""Fused Q/K/V and gate/up projections (shared/fused_projections.py, OPTIMIZE=fuse_projections=on), tiny models
on CPU: the same logits and tokens as the unfused model, fewer matmuls in the compiled step, nothing kept between
forwards, and SmolLM3's HQQ path quantizing the fused Linears."""

import copy

import pytest
import torch

from shared.decode_engine import DecodeEngine
from shared.fused_projections import SharedInputLinear, fuse_projections
from tests.conftest import load_runner
from tests.unit.test_decode_engine import _inputs, _model, _tokens
from tests.unit.test_llm_runner import set_up_and_say


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()


def _linear_ops_per_step(model, inputs) -> list[int]:
    """F.linear calls in each graph Dynamo traces for the engine's compiled one-token step."""
    seen = []

    def backend(gm, example_inputs):
        seen.append(sum(1 for n in gm.graph.nodes if n.op == "call_function" and "linear" in str(n.target)))
        return gm.forward

    torch._dynamo.reset()
    _tokens(DecodeEngine(model, [64], compile_step={"backend": backend}), inputs, max_new_tokens=3)
    return seen


def test_fused_smollm3_gives_the_same_logits_and_compiled_tokens_with_fewer_matmuls():
    model, tok = _model("smollm3-3b")
    inputs = _inputs("smollm3-3b", tok)
    fused = copy.deepcopy(model)
    layers = model.config.num_hidden_layers
    assert fuse_projections(fused) == 2 * layers
    with torch.no_grad():
        torch.testing.assert_close(fused(**inputs).logits, model(**inputs).logits)
    # 7 Linears per layer become 4 (and lm_head): one graph, no break at the views
    assert _linear_ops_per_step(model, inputs) == [7 * layers + 1]
    assert _linear_ops_per_step(fused, inputs) == [4 * layers + 1]
    torch._dynamo.reset()
    compiled = DecodeEngine(fused, [64], compile_step={"backend": "eager"})
    assert _tokens(compiled, inputs, max_new_tokens=24) == _tokens(DecodeEngine(model, [64]), inputs, max_new_tokens=24)


def test_nothing_is_kept_once_every_view_has_read_its_part():
    model, tok = _model("smollm3-3b")
    fuse_projections(model)
    with torch.no_grad():
        model(**_inputs("smollm3-3b", tok))
    shared = [m for m in model.modules() if isinstance(m, SharedInputLinear)]
    assert shared and all(m._input is None and m._outputs is None and m._reads == 0 for m in shared)


def test_a_new_input_is_never_served_a_stale_output():
    torch.manual_seed(0)
    parts = [torch.nn.Linear(6, n) for n in (4, 2, 2)]
    shared = SharedInputLinear(parts)
    q, k, v = shared.views()
    x, y = torch.randn(3, 6), torch.randn(3, 6)
    torch.testing.assert_close(q(x), parts[0](x))
    torch.testing.assert_close(k(y), parts[1](y))  # a different input before v read x's: computed afresh
    torch.testing.assert_close(v(y), parts[2](y))


def test_phi4_is_fused_already():
    model, _ = _model("phi4-reasoning-plus")
    assert fuse_projections(model) == 0


def test_smollm3_hqq_quantizes_the_fused_linears_and_keeps_the_text(monkeypatch):
    fused, fused_text = set_up_and_say(monkeypatch, "smollm3-3b", "quantize=hqq,fuse_projections=on")
    assert "fused-projections:" in fused.path and "hqq4" in fused.path
    names = {name for name, m in fused.model.named_modules() if type(m).__name__ == "HQQLinear"}
    assert any(name.endswith("qkv_proj.fused") for name in names) and any(name.endswith("gate_up_proj.fused") for name in names)
    assert not any(name.endswith(("q_proj", "gate_proj")) for name in names) and not any("lm_head" in n for n in names)
    _, plain_text = set_up_and_say(monkeypatch, "smollm3-3b", "quantize=hqq")
    assert fused_text and fused_text == plain_text


def test_pruna_cannot_take_fused_projections(monkeypatch):
    monkeypatch.setenv("OPTIMIZE", "quantize=pruna-hqq,fuse_projections=on")
    with pytest.raises(ValueError, match="fuse_projections=on needs quantize=none, hqq or hqq-gemlite"):
        load_runner("smollm3-3b").setup()


def test_gemma_int8_takes_the_fused_linears_of_its_language_model_and_keeps_the_text(monkeypatch):
    from tests.unit.test_llm_runner import _image

    fused, fused_text = set_up_and_say(monkeypatch, "gemma3-4b-it", "quantize=int8,fuse_projections=on", images=[_image()])
    assert "fused-projections:" in fused.path
    int8 = {name for name, m in fused.model.named_modules()
            if isinstance(m, torch.nn.Linear) and type(m.weight).__name__ != "Parameter"}
    assert any(n.startswith("model.language_model") and n.endswith("qkv_proj.fused") for n in int8)
    assert not any(n.startswith("model.vision_tower") for n in int8)  # the vision tower stays 16-bit, fused or not
    _, plain_text = set_up_and_say(monkeypatch, "gemma3-4b-it", "quantize=int8", images=[_image()])
    assert fused_text and fused_text == plain_text
