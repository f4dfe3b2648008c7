"""The text-generation runner: sampling, seeds, the static-cache decode path, limits and streaming stop."""

import threading

import pytest

from shared.llm import sampling_kwargs
from shared.runtime import InputError
from tests.conftest import load_runner


def test_temperature_or_top_p_zero_means_greedy():
    assert sampling_kwargs(0, 0.9) == {"do_sample": False}
    assert sampling_kwargs(0.7, 0) == {"do_sample": False}
    assert sampling_kwargs(0.7, 0.9) == {"do_sample": True, "temperature": 0.7, "top_p": 0.9}


def _text(runner, **kw):
    args = dict(messages=[{"role": "user", "content": "hello there"}], max_new_tokens=12, temperature=0, top_p=0.9, seed=1)
    args.update(kw)
    return "".join(runner.stream(**args))


@pytest.mark.parametrize("name,option", [("smollm3-3b", "compile=on"), ("gemma3-4b-it", "compile=decode")])
def test_static_cache_decode_path_gives_the_same_greedy_text(monkeypatch, name, option):
    def run(opt):
        monkeypatch.setenv("OPTIMIZE", opt)
        runner = load_runner(name)
        runner.setup()
        return runner, _text(runner, **({"images": [_image()]} if name == "gemma3-4b-it" else {}),
                             messages=_messages(name))

    static_runner, static = run(option)
    assert static_runner.model.generation_config.cache_implementation == "static"
    _, dynamic = run(option.split("=")[0] + "=off")
    assert static and static == dynamic


def _image():
    from PIL import Image

    return Image.new("RGB", (64, 64), "blue")


def _messages(name):
    if name == "gemma3-4b-it":
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hello"}]}]
    return [{"role": "user", "content": "hello there"}]


def test_generation_uses_the_kv_cache_even_when_the_config_says_not_to(runners, monkeypatch):
    runner = runners("smollm3-3b")
    assert runner.model.config.use_cache is False  # SmolLM3's published config
    seen = {}
    original = runner.model.generate

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(runner.model, "generate", spy)
    _text(runner)
    assert seen["use_cache"] is True


def test_same_seed_same_sampled_text_and_different_seed_differs(runners):
    runner = runners("phi4-reasoning-plus")
    a, b = _text(runner, temperature=1.0, seed=3), _text(runner, temperature=1.0, seed=3)
    assert a == b and a != _text(runner, temperature=1.0, seed=4)


def test_prompt_plus_new_tokens_beyond_the_context_is_an_input_error(runners, monkeypatch):
    runner = runners("phi4-reasoning-plus")
    monkeypatch.setattr(runner, "max_positions", lambda: 100)
    with pytest.raises(InputError, match="max_new_tokens: the prompt has \\d+ tokens"):
        _text(runner, max_new_tokens=90)


def test_closing_the_stream_stops_generation_early(runners, monkeypatch):
    from shared import llm

    runner = runners("phi4-reasoning-plus")
    steps = []
    original = llm._StopFlag.__call__
    monkeypatch.setattr(llm._StopFlag, "__call__", lambda self, *a, **k: steps.append(1) or original(self, *a, **k))
    before = threading.active_count()
    stream = runner.stream(messages=[{"role": "user", "content": "hi"}], max_new_tokens=5000, temperature=1.0,
                           top_p=1.0, seed=1)
    next(stream)
    stream.close()  # what Cog does when the client goes away or cancels
    assert threading.active_count() <= before, "the generation thread outlived the stream"
    assert 0 < len(steps) < 500, f"{len(steps)} decode steps ran after the consumer left"


def test_warmup_fixes_the_static_cache_size_for_later_requests(monkeypatch):
    """Requests of different lengths reuse the warmed cache size, so the compiled decode step is reused."""
    monkeypatch.setenv("OPTIMIZE", "compile=on,quantize=none")
    runner = load_runner("smollm3-3b")
    runner.setup()
    warmed = runner.model._previous_max_cache_length  # transformers' record of the largest cache so far
    assert warmed == runner.static_cache_tokens
    for n in (3, 40):
        _text(runner, max_new_tokens=n)
        assert runner.model._previous_max_cache_length == warmed
