"""shared/step_cache.py, FLUX's opt-in go_fast, on the tiny pipeline: it skips what it says it skips, computes
the exact image when it skips nothing, and leaves the transformer as it found it."""

import numpy as np
import pytest
import torch

from shared import step_cache


@pytest.fixture(scope="module")
def flux(runners):
    return runners("flux-lora-txt2img")


def _pixels(flux, seed=3, steps=6, **go_fast):
    route = flux.router.route("Anime")
    image, _ = flux.generate_image({"prompt": route.apply_to("a cat"), "width": 256, "height": 256}, steps=steps,
                                   guidance=3.5, seed=seed, route=route, **go_fast)
    return np.asarray(image).astype(np.int16)


def _generate_with(flux, monkeypatch, threshold, steps=6):
    """One go_fast generation at `threshold`; (pixels, what it reports, calls of the last block)."""
    monkeypatch.setattr(step_cache, "THRESHOLD", threshold)
    calls = []
    hook = flux.pipe.transformer.single_transformer_blocks[-1].register_forward_hook(lambda *_: calls.append(1))
    stats = {}
    try:
        pixels = _pixels(flux, steps=steps, go_fast=stats)
    finally:
        hook.remove()
    return pixels, stats, len(calls)


def test_skipping_nothing_gives_the_exact_image(flux, monkeypatch):
    exact = _pixels(flux)
    pixels, stats, calls = _generate_with(flux, monkeypatch, threshold=0.0)
    assert (stats["steps_computed"], stats["steps_skipped"], calls) == (6, 0, 6)
    assert np.array_equal(pixels, exact)


def test_a_skipped_step_runs_the_first_block_only(flux, monkeypatch):
    exact = _pixels(flux)
    pixels, stats, calls = _generate_with(flux, monkeypatch, threshold=1e9)  # every step after the first is "alike"
    assert (stats["steps_computed"], stats["steps_skipped"], calls) == (1, 5, 1)
    assert not np.array_equal(pixels, exact)  # the cached residuals are not the blocks' own


def test_the_transformer_is_left_as_it_was_and_the_exact_path_still_exact(flux):
    transformer = flux.pipe.transformer
    names = [name for name, _ in transformer.named_modules()]
    blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    before = _pixels(flux, seed=5)
    stats = {}
    _pixels(flux, seed=5, go_fast=stats)
    assert stats["steps_computed"] + stats["steps_skipped"] == 6
    assert [name for name, _ in transformer.named_modules()] == names  # LoRA hot-swap finds layers by these
    after = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    assert len(after) == len(blocks) and all(a is b for a, b in zip(blocks, after, strict=True))
    assert np.array_equal(_pixels(flux, seed=5), before)


def test_the_decision_compares_what_the_first_block_added_with_the_last_full_step():
    state = step_cache.CacheState(threshold=0.1)
    assert state.decide(torch.ones(4))  # nothing to compare with yet
    state.head_residual, state.tail_residual = torch.ones(4), (torch.zeros(1), torch.zeros(1))
    assert not state.decide(torch.full((4,), 1.05))  # 5% changed: alike
    assert state.decide(torch.full((4,), 1.2))  # 20%: computed


def test_a_graphed_transformer_runs_eagerly_under_the_cache_and_gets_its_graph_back():
    class Graphed:
        def __init__(self, eager):
            self.eager = eager

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer_blocks = torch.nn.ModuleList([torch.nn.Identity()])
            self.single_transformer_blocks = torch.nn.ModuleList([torch.nn.Identity()])

    model = Model()
    graphed = Graphed(model.forward)
    model.forward = graphed
    with step_cache.first_block_cache(model):
        assert model.forward == graphed.eager and isinstance(model.transformer_blocks[0], step_cache._Head)
    assert model.forward is graphed and isinstance(model.transformer_blocks[0], torch.nn.Identity)
