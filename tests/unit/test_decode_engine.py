"""The decode engine (shared/decode_engine.py) against HF generate, its reference, on tiny models."""

import pytest
import torch

from shared import catalog
from shared.builders.text import build_random_causal_lm, build_random_gemma3
from shared.decode_engine import DecodeEngine, Sampling, exponential_noise, sample

GREEDY = Sampling(temperature=0.0, top_p=1.0, seed=0)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()


def _model(name: str):
    """A tiny random model whose greedy text is not one token repeated: with the default init (std 0.02)
    SmolLM3 and Phi-4 repeat one token, and equal-looking outputs would hide a wrong position or cache.
    Gemma 3 (embeddings scaled by sqrt(hidden)) varies as built, and repeats with larger weights."""
    build = build_random_gemma3 if name == "gemma3-4b-it" else build_random_causal_lm
    model, tok = build(catalog.get(name), tiny=True, device="cpu", dtype=torch.float32)
    if name == "gemma3-4b-it":
        return model.eval(), tok
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.15)
    return model.eval(), tok


def _inputs(name, tok):
    if name == "gemma3-4b-it":
        from PIL import Image

        # Longer than the tiny model's 16-token sliding window, with an image (prefill sees pixels).
        text = tok.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                         "text": "describe this picture in a few careful words please"}]}],
                                       tokenize=False, add_generation_prompt=True)
        return dict(tok(text=text, images=[Image.new("RGB", (64, 64), "blue")], return_tensors="pt",
                        add_special_tokens=False))
    return dict(tok("the lighthouse keeper walked down to the shore at night", return_tensors="pt"))


def _tokens(engine, inputs, **kw):
    kw.setdefault("sampling", GREEDY)
    return [t for chunk in engine.generate(inputs, **kw) for t in chunk]


@pytest.mark.parametrize("name", ["smollm3-3b", "phi4-reasoning-plus", "gemma3-4b-it"])
def test_greedy_tokens_equal_hf_generate(name):
    model, tok = _model(name)
    inputs = _inputs(name, tok)
    prompt = inputs["input_ids"].shape[1]
    with torch.inference_mode():
        # No stop token: the engine leaves stopping to its caller and never masks one, while min_new_tokens would
        # (-inf): where the end-of-turn token led (Gemma with an image, step 13) HF then took the runner-up.
        reference = model.generate(**inputs, max_new_tokens=24, do_sample=False, eos_token_id=None,
                                   use_cache=True)[0, prompt:].tolist()
    assert len(reference) == 24
    assert len(set(reference)) > 4, "the reference is degenerate: it would not tell a wrong position apart"
    engine = DecodeEngine(model, [64, 256], top_k=0)
    assert _tokens(engine, inputs, max_new_tokens=24) == reference
    # Twice: a reused cache must not remember the last request.
    assert _tokens(engine, inputs, max_new_tokens=24) == reference


@pytest.mark.parametrize("name", ["smollm3-3b", "gemma3-4b-it"])
def test_the_buckets_share_one_allocation_and_each_gives_the_tokens_of_a_cache_of_its_own(name):
    model, tok = _model(name)
    inputs = _inputs(name, tok)
    engine = DecodeEngine(model, [256, 64], top_k=0)
    small, large = engine.caches
    for s, big in zip(small.layers, large.layers, strict=True):
        assert (s.keys.shape[2], big.keys.shape[2]) == (64, 256)
        # One memory: the small cache's tensors are the large one's first positions, not tensors of their own.
        assert s.keys.untyped_storage().data_ptr() == big.keys.untyped_storage().data_ptr() == s.keys.data_ptr()
        assert s.values.untyped_storage().data_ptr() == big.values.untyped_storage().data_ptr()
    alone = {n: _tokens(DecodeEngine(model, [size], top_k=0), inputs, max_new_tokens=n) for n, size in ((20, 64), (150, 256))}
    # Short, long, short: each request writes the memory the other one reads.
    for n in (20, 150, 20):
        assert _tokens(engine, inputs, max_new_tokens=n) == alone[n], n


def test_compiled_step_gives_the_eager_tokens_and_never_recompiles_across_settings():
    from torch._dynamo.utils import counters

    model, tok = _model("smollm3-3b")
    inputs = _inputs("smollm3-3b", tok)
    eager = DecodeEngine(model, [64, 256])
    compiled = DecodeEngine(model, [64, 256], compile_step={"backend": "eager"})
    before = counters["stats"]["unique_graphs"]
    compiled.warm_up(inputs)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs - before == 2  # one per cache size, in the warm-up
    for sampling in (GREEDY, Sampling(1.0, 0.9, 1), Sampling(0.5, 0.3, 2), Sampling(1e-45, 0.9, 3)):
        assert _tokens(compiled, inputs, max_new_tokens=20, sampling=sampling) == \
            _tokens(eager, inputs, max_new_tokens=20, sampling=sampling)
    assert _tokens(compiled, inputs, max_new_tokens=100) == _tokens(eager, inputs, max_new_tokens=100)  # the larger cache
    assert counters["stats"]["unique_graphs"] == graphs, "a request recompiled the step"


def test_compiled_prefill_gives_the_eager_tokens_for_every_prompt_length_without_recompiling():
    from torch._dynamo.testing import CompileCounter

    model, tok = _model("smollm3-3b")
    eager = DecodeEngine(model, [64, 256])
    counter = CompileCounter()
    compiled = DecodeEngine(model, [64, 256], compile_prefill={"backend": counter})
    words = "the lighthouse keeper walked down to the shore at night and counted every ship".split()
    prompts = [dict(tok(" ".join(words[:n]), return_tensors="pt")) for n in (3, 7, 11, 15)]
    assert len({p["input_ids"].shape[1] for p in prompts}) == 4
    compiled.warm_up(prompts[0])  # as setup does: each cache, fresh and reused (transformers' lazy layers)
    graphs = counter.frame_count
    assert graphs >= 1  # the prefill did go through the compiler
    for prompt in prompts:
        assert _tokens(compiled, prompt, max_new_tokens=12) == _tokens(eager, prompt, max_new_tokens=12)
    assert _tokens(compiled, prompts[0], max_new_tokens=100) == _tokens(eager, prompts[0], max_new_tokens=100)
    assert counter.frame_count == graphs, "a prompt length or the larger cache recompiled the prefill"


def test_same_seed_same_tokens_whatever_ran_before_and_seeds_differ():
    model, tok = _model("smollm3-3b")
    engine = DecodeEngine(model, [64])
    inputs = _inputs("smollm3-3b", tok)
    first = _tokens(engine, inputs, max_new_tokens=16, sampling=Sampling(1.0, 0.95, 7))
    torch.manual_seed(123)  # the global RNG plays no part
    _tokens(engine, inputs, max_new_tokens=5, sampling=Sampling(1.0, 0.95, 8))
    assert _tokens(engine, inputs, max_new_tokens=16, sampling=Sampling(1.0, 0.95, 7)) == first
    assert _tokens(engine, inputs, max_new_tokens=16, sampling=Sampling(1.0, 0.95, 8)) != first


def test_a_stop_token_ends_the_output_and_nothing_after_it_is_returned():
    model, tok = _model("smollm3-3b")
    engine = DecodeEngine(model, [64], chunk=8)
    inputs = _inputs("smollm3-3b", tok)
    free = _tokens(engine, inputs, max_new_tokens=24)
    stop = next(t for t in free[3:] if t not in free[:3])  # mid-chunk, first seen at its position
    cut = free.index(stop)
    assert _tokens(engine, inputs, max_new_tokens=24, stop_ids=[stop]) == free[:cut + 1]
    assert _tokens(engine, inputs, max_new_tokens=24, stop_ids=[free[0]]) == free[:1]  # the prefill's token


def test_first_token_comes_alone_then_chunks_and_cancel_stops_at_a_chunk():
    model, tok = _model("smollm3-3b")
    engine = DecodeEngine(model, [256], chunk=4)
    inputs = _inputs("smollm3-3b", tok)
    chunks = list(engine.generate(inputs, max_new_tokens=11, sampling=GREEDY))
    assert [len(c) for c in chunks] == [1, 4, 4, 2]
    steps = []
    original = engine.step
    engine.step = lambda *a: steps.append(1) or original(*a)
    seen = list(engine.generate(inputs, max_new_tokens=200, sampling=GREEDY, cancelled=lambda: len(steps) >= 6))
    assert len(steps) == 8 and sum(map(len, seen)) == 9  # stopped at the chunk after the request went away


def _expected(logits, temperature, top_p, top_k=0):
    probs = torch.softmax(logits / temperature, -1)
    ordered, order = probs.sort(descending=True)
    keep = (ordered.cumsum(-1) - ordered) <= top_p
    if top_k:
        keep &= torch.arange(len(ordered)) < top_k
    out = torch.zeros_like(probs)
    out[order[keep]] = ordered[keep]
    return out / out.sum()


@pytest.mark.parametrize("temperature,top_p,top_k", [(1.0, 1.0, 0), (0.7, 0.8, 0), (1.3, 0.95, 4)])
def test_sampling_draws_from_the_tempered_nucleus(temperature, top_p, top_k):
    """20,000 seeds at one position: frequencies match the distribution HF's temperature, top_k and top_p
    define, and tokens outside the nucleus never come. Deterministic: the noise is a function of the seed."""
    logits = torch.randn(12, generator=torch.Generator().manual_seed(1)) * 2
    n = 20_000
    drawn = sample(logits.expand(n, -1), torch.arange(n), torch.full((n,), 9), torch.full((n,), temperature),
                   torch.full((n,), top_p), top_k)
    frequencies = torch.bincount(drawn, minlength=12).float() / n
    expected = _expected(logits, temperature, top_p, top_k)
    assert frequencies[expected == 0].sum() == 0
    assert torch.allclose(frequencies, expected, atol=0.015), (frequencies, expected)


def test_the_noise_is_uniform_and_independent_across_seeds_positions_and_tokens():
    seeds = torch.arange(4000)
    noise = exponential_noise(seeds, torch.zeros_like(seeds), 64)
    assert noise.min() > 0 and torch.isfinite(noise).all()
    assert abs(noise.mean().item() - 1.0) < 0.01  # Exp(1)
    shifted = exponential_noise(seeds, torch.ones_like(seeds), 64)
    assert torch.corrcoef(torch.stack([noise.flatten(), shifted.flatten()]))[0, 1].abs() < 0.01
    assert torch.corrcoef(torch.stack([noise[:, :-1].flatten(), noise[:, 1:].flatten()]))[0, 1].abs() < 0.01


def test_the_stand_in_gemma_sees_its_image():
    """transformers initializes Gemma 3's image projector to zeros: every image then reached the language model as
    the same vectors, and image tests (which image went to which request, the vision tower once per request)
    passed whatever the images were. The stand-in's projector is random, as a trained one is nonzero."""
    from PIL import Image

    model, tok = _model("gemma3-4b-it")
    text = tok.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it"}]}],
                                   tokenize=False, add_generation_prompt=True)
    engine = DecodeEngine(model, [128], top_k=0)
    texts = [_tokens(engine, dict(tok(text=text, images=[Image.new("RGB", (64, 64), colour)], return_tensors="pt",
                                      add_special_tokens=False)), max_new_tokens=12) for colour in ("blue", "red")]
    assert texts[0] != texts[1]
