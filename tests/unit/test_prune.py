"""The prune filter map and the three pruning methods, on a real (tiny) SmolLM3."""

import pytest
import torch

from shared import catalog, prune
from shared.builders.text import build_random_causal_lm


@pytest.fixture()
def model():
    m, _ = build_random_causal_lm(catalog.get("smollm3-3b"), tiny=True, device="cpu", dtype=torch.float32)
    return m


def test_filter_allows_qkv_and_mlp_inputs_only(model):
    names = [n for n, _ in prune.prunable_layers(model)]
    kinds = {n.rsplit(".", 1)[1] for n in names}
    assert kinds == {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"}


@pytest.mark.parametrize("name", ["model.embed_tokens", "lm_head", "model.layers.0.self_attn.o_proj",
                                  "model.layers.0.mlp.down_proj", "model.norm", "model.layers.0.input_layernorm"])
def test_filter_refuses_embeddings_head_norms_and_output_projections(model, name):
    module = dict(model.named_modules())[name]
    assert not prune.is_prunable(name, module)


def test_magnitude_pruning_zeroes_the_smallest_weights(model):
    layer = dict(model.named_modules())["model.layers.0.self_attn.q_proj"]
    threshold = layer.weight.abs().flatten().kthvalue(int(0.3 * layer.weight.numel())).values
    report = prune.apply(model, "magnitude", 0.3)
    assert report["sparsity"] == pytest.approx(0.3, abs=0.01)
    assert (layer.weight.abs() > threshold)[layer.weight != 0].all()
    assert not hasattr(layer, "weight_orig"), "pruning must be made permanent"


def test_untouched_layers_keep_every_weight(model):
    down = dict(model.named_modules())["model.layers.0.mlp.down_proj"].weight.clone()
    prune.apply(model, "magnitude", 0.5)
    assert torch.equal(down, dict(model.named_modules())["model.layers.0.mlp.down_proj"].weight)


def test_structured_pruning_zeroes_whole_rows(model):
    prune.apply(model, "structured", 0.25)
    w = dict(model.named_modules())["model.layers.1.mlp.up_proj"].weight
    zero_rows = (w == 0).all(dim=1).sum().item()
    assert zero_rows == round(0.25 * w.shape[0])


def test_gradual_pruning_reaches_its_final_amount_on_a_cubic_schedule(model):
    report = prune.apply(model, "gradual", 0.4)
    assert report["schedule"][-1] == pytest.approx(0.4)
    assert report["schedule"] == sorted(report["schedule"])
    assert report["sparsity"] == pytest.approx(0.4, abs=0.01)


def test_scope_limits_pruning_to_a_submodule(model):
    report = prune.apply(model, "magnitude", 0.2, scope="model.layers.0.")
    assert report["layers"] == 5


@pytest.mark.parametrize("method,amount", [("random", 0.1), ("magnitude", 1.0), ("magnitude", -0.1)])
def test_bad_pruning_requests_are_refused(model, method, amount):
    with pytest.raises(ValueError):
        prune.apply(model, method, amount)


def test_2_4_keeps_the_two_largest_of_every_four_weights_in_a_row(model):
    layers = dict(prune.prunable_layers(model))
    before = {name: layer.weight.detach().clone() for name, layer in layers.items()}
    down = dict(model.named_modules())["model.layers.0.mlp.down_proj"].weight.clone()
    report = prune.apply(model, "2:4", 0.5)
    assert report["sparsity"] == 0.5
    for name, layer in layers.items():
        groups, original = layer.weight.reshape(-1, 4), before[name].reshape(-1, 4)
        assert ((groups == 0).sum(-1) == 2).all(), name
        kept = original.abs().topk(2, dim=-1).indices  # the two largest |w| of each group survive, unchanged
        assert torch.equal(groups.gather(-1, kept), original.gather(-1, kept)), name
    assert torch.equal(dict(model.named_modules())["model.layers.0.mlp.down_proj"].weight, down)
    with pytest.raises(ValueError, match="amount must be 0.5"):
        prune.apply(model, "2:4", 0.3)


def test_gemma_2_4_prunes_only_its_language_model_and_still_generates(monkeypatch):
    from shared.llm import collect
    from tests.conftest import load_runner
    from tests.unit.test_llm_runner import _image

    monkeypatch.setenv("OPTIMIZE", "prune=2:4,quantize=none")
    runner = load_runner("gemma3-4b-it")
    runner.setup()
    assert "2:4" in runner.path and "2:4-mask" in runner.path  # CPU: the masked dense weights
    pruned = [(n, m) for n, m in runner.model.named_modules() if prune.is_prunable(n, m)]
    assert any(n.startswith("model.language_model") for n, _ in pruned)
    for name, layer in pruned:
        zeros = (layer.weight.reshape(-1, 4) == 0).sum(-1)
        assert bool((zeros == 2).all()) == name.startswith("model.language_model"), name  # the vision tower is dense
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    text = "".join(collect(runner.stream(messages=messages, images=[_image()], max_new_tokens=8, temperature=0,
                                         top_p=0.9, seed=1)))
    assert text
