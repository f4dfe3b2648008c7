"""The text-generation runner: the decode engine behind it, seeds, compiled decode, limits and streaming stop."""

import threading

import pytest
import torch

from shared.llm import collect
from shared.runtime import InputError
from tests.conftest import load_runner


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each runner here compiles the same transformers code objects; Dynamo's per-code-object recompile
    limit (8) counts them all within one process, unlike a server that loads one model."""
    torch._dynamo.reset()


def _text(runner, **kw):
    args = dict(messages=[{"role": "user", "content": "hello there"}], max_new_tokens=12, temperature=0, top_p=0.9, seed=1)
    args.update(kw)
    return "".join(collect(runner.stream(**args)))


@pytest.mark.parametrize("name,option", [("smollm3-3b", "compile=on"), ("gemma3-4b-it", "compile=decode"),
                                         ("phi4-reasoning-plus", "compile=on")])
def test_compiled_decode_step_gives_the_same_greedy_text_as_the_eager_one(monkeypatch, name, option):
    def run(opt):
        monkeypatch.setenv("OPTIMIZE", opt)
        runner = load_runner(name)
        runner.setup()
        return runner, _text(runner, **({"images": [_image()]} if name == "gemma3-4b-it" else {}),
                             messages=_messages(name))

    compiled_runner, compiled = run(option)
    assert compiled_runner.engine.compiled and not any(any(c.is_sliding) for c in compiled_runner.engine.caches)
    eager_runner, eager = run(option.split("=")[0] + "=off")
    assert not eager_runner.engine.compiled
    assert compiled and compiled == eager


def _graphs() -> int:
    """Graphs Dynamo has compiled so far in this process (transformers deep-copies a counting backend)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _compiled_gemma(monkeypatch):
    """Gemma 3 (tiny: 6 layers, sliding window 16) with its decode step compiled (Dynamo, eager backend on CPU)."""
    monkeypatch.setenv("OPTIMIZE", "compile=decode")
    runner = load_runner("gemma3-4b-it")  # Dynamo was reset by the fresh_dynamo fixture
    before = _graphs()
    runner.setup()  # warm-up: compiles the decode step once
    assert _graphs() > before, "the decode step was not compiled at all"
    return runner


def _long_gemma_request(runner, tokens=24):
    return _text(runner, images=[_image()], messages=_messages("gemma3-4b-it"), max_new_tokens=tokens)


def test_compiled_decode_never_recompiles_past_the_sliding_window(monkeypatch):
    runner = _compiled_gemma(monkeypatch)
    graphs = _graphs()
    for tokens in (24, 40):  # decode steps well past the 16-token window, two request lengths
        assert _long_gemma_request(runner, tokens)
    assert _graphs() == graphs, "the decode step recompiled during generation"


def test_transformers_sliding_cache_would_recompile_every_step(monkeypatch):
    """Counterpart: the stock static cache (sliding layers guard on a Python int) does recompile."""
    from transformers import StaticCache

    runner = _compiled_gemma(monkeypatch)
    stock = StaticCache(config=runner.model.config, max_cache_len=runner.engine.caches[0].get_max_length())
    assert any(stock.is_sliding)
    monkeypatch.setattr(runner.engine, "cache_for", lambda total: (stock.reset(), stock)[1])
    monkeypatch.setattr(runner.batch, "row_tokens", 1)  # every request then runs alone, on the engine
    graphs = _graphs()
    _long_gemma_request(runner, 6)
    assert _graphs() > graphs + 1


def _image():
    from PIL import Image

    return Image.new("RGB", (64, 64), "blue")


def _messages(name):
    if name == "gemma3-4b-it":
        # Longer than the tiny model's 16-token sliding window, so the sliding-window masks matter.
        text = "describe this picture in a few careful words please"
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return [{"role": "user", "content": "hello there"}]


def test_same_seed_same_sampled_text_and_different_seed_differs(runners):
    runner = runners("phi4-reasoning-plus")
    a, b = _text(runner, temperature=1.0, seed=3), _text(runner, temperature=1.0, seed=3)
    assert a == b and a != _text(runner, temperature=1.0, seed=4)


def test_prompt_plus_new_tokens_beyond_the_context_is_an_input_error(runners, monkeypatch):
    runner = runners("phi4-reasoning-plus")
    prompt_tokens = runner.encode([{"role": "user", "content": "hello there"}], {})["input_ids"].shape[1]
    monkeypatch.setattr(runner, "max_positions", lambda: prompt_tokens + 50)  # the prompt fits, 90 more do not
    with pytest.raises(InputError, match=f"max_new_tokens: the prompt has {prompt_tokens} tokens, so max_new_tokens must be "
                                         "at most 50"):
        _text(runner, max_new_tokens=90)


def test_closing_the_stream_stops_generation_early(runners, monkeypatch):
    runner = runners("phi4-reasoning-plus")
    steps = []
    original = runner.engine.step
    monkeypatch.setattr(runner.engine, "step", lambda *a: steps.append(1) or original(*a))
    list(collect(runner.stream(messages=[{"role": "user", "content": "hi"}], max_new_tokens=20, temperature=1.0,
                               top_p=1.0, seed=1)))
    assert steps, "the counter sees no decode step: the check below would pass by construction"
    steps.clear()
    before = threading.active_count()
    stream = collect(runner.stream(messages=[{"role": "user", "content": "hi"}], max_new_tokens=5000, temperature=1.0,
                                   top_p=1.0, seed=1))
    next(stream)
    stream.close()  # what Cog does when the client goes away or cancels
    assert threading.active_count() <= before, "a thread of the stream outlived it"
    # How many steps run before the close lands depends on the threads' timing (none, on a busy machine):
    # only the bound is checked.
    assert len(steps) < 500, f"{len(steps)} decode steps ran after the consumer left"


def test_requests_take_the_smallest_warm_cache_and_only_a_longer_one_grows_it(monkeypatch):
    """The compiled decode step (and its CUDA graphs) stays valid only while each cache keeps its shape."""
    from shared.decode_engine import new_static_cache

    monkeypatch.setenv("OPTIMIZE", "compile=on,quantize=none")
    runner = load_runner("smollm3-3b")
    runner.setup()
    engine = runner.engine
    caches = list(engine.caches)
    assert [c.get_max_length() for c in caches] == [2048, 4608, runner.static_cache_tokens]
    with torch.inference_mode():
        assert engine.cache_for(100) is caches[0]
        assert engine.cache_for(2048) is caches[0]
        assert engine.cache_for(2049) is caches[1]
        assert engine.cache_for(4609) is caches[2]
    assert _text(runner, max_new_tokens=3) and engine.caches == caches
    monkeypatch.setattr(runner.batch, "row_tokens", 1)  # requests run alone, on the engine's caches
    engine.caches[-1] = new_static_cache(runner.model, 16)  # smaller than the next request
    engine.caches[:-1] = []
    assert _text(runner, max_new_tokens=20)
    assert engine.caches[-1].get_max_length() > 20


@pytest.mark.parametrize("name", ["smollm3-3b", "gemma3-4b-it"])
def test_grouped_attention_is_an_option_of_every_text_deployment_with_the_same_text(monkeypatch, name):
    extra = {"images": [_image()]} if name == "gemma3-4b-it" else {}

    def run(opt):
        monkeypatch.setenv("OPTIMIZE", opt)
        runner = load_runner(name)
        runner.setup()
        return runner, _text(runner, messages=_messages(name), temperature=0.8, **extra)

    grouped_runner, grouped = run("attention=grouped")
    assert grouped_runner.path.endswith("+grouped_decode") and grouped_runner.options["attention"] == "grouped"
    plain_runner, plain = run("attention=sdpa")
    assert "grouped" not in plain_runner.path
    assert grouped and grouped == plain


def _phi4_in_4_bits(monkeypatch, quantize: str):
    """Phi-4 set up under OPTIMIZE=quantize=`quantize` with the compiled step, and its modules by name. Its 4-bit
    modes leave lm_head the only 16-bit Linear, as Unsloth's load does."""
    monkeypatch.setenv("OPTIMIZE", f"quantize={quantize},compile=on")
    runner = load_runner("phi4-reasoning-plus")
    runner.setup()
    assert runner.engine.compiled
    modules = dict(runner.model.named_modules())
    assert [n for n, m in modules.items() if type(m) is torch.nn.Linear] == ["lm_head"]
    return runner, modules


def test_phi4_has_a_4bit_mode_its_path_names(monkeypatch):
    """OPTIMIZE=quantize=4bit: Unsloth's NF4 load on a GPU; on CPU, bitsandbytes NF4 over the same layers, under
    the compiled decode step."""
    runner, modules = _phi4_in_4_bits(monkeypatch, "4bit")
    assert runner.path == "transformers (CPU)+bitsandbytes.nf4+compiled-decode"
    assert sum(type(m).__name__ == "Linear4bit" and m.weight.quant_type == "nf4" for m in modules.values()) > 0
    assert _text(runner, messages=_messages("phi4-reasoning-plus"))
    # Its rows are 5 x 2,048, within the single-stream cache's positions: its KV memory is that cache's alone (the
    # 8 x 2,048 it was measured with took 3.4 GB of its 13.0; the 16-bit default has 8 x 4,096).
    assert (runner.batch.rows, runner.batch.row_tokens) == (5, 2048)
    assert runner.engine.kv.tokens == runner.engine.caches[-1].get_max_length() >= 5 * 2048
    # Eight at once, as run() accepts them: five decode together, three wait for a row; each gets its lone text.
    import asyncio

    async def text(seed):
        pieces = []
        async for piece in runner.stream(messages=_messages("phi4-reasoning-plus"), max_new_tokens=12, temperature=0,
                                         top_p=0.9, seed=seed):
            pieces.append(piece)
        return "".join(pieces)

    async def together():
        return await asyncio.gather(*(text(seed) for seed in range(8)))

    busy = []
    step = runner.batch._decode_chunk
    runner.batch._decode_chunk = lambda: busy.append(sum(r is not None for r in runner.batch.slots)) or step()
    alone = _text(runner, messages=_messages("phi4-reasoning-plus"))
    assert asyncio.run(together()) == [alone] * 8
    assert max(busy) == 5


def set_up_and_say(monkeypatch, name: str, optimize: str, **kw):
    """A runner of `name` set up under OPTIMIZE=`optimize`, and its greedy text for the model's test messages."""
    monkeypatch.setenv("OPTIMIZE", optimize)
    runner = load_runner(name)
    runner.setup()
    return runner, _text(runner, messages=_messages(name), **kw)


def test_smollm3_prefill_compiled_is_an_option_with_the_eager_text(monkeypatch):
    """OPTIMIZE=prefill=compiled: the prompt's forward through torch.compile (Dynamo's eager backend on CPU)."""
    compiled_runner, compiled = set_up_and_say(monkeypatch, "smollm3-3b", "prefill=compiled")
    assert "compiled-prefill" in compiled_runner.path
    assert compiled_runner.engine._compiled_prefill is not None  # the compiled wrapper serves
    eager_runner, eager = set_up_and_say(monkeypatch, "smollm3-3b", "prefill=eager")
    assert eager_runner.engine._compiled_prefill is None
    assert compiled and compiled == eager


@pytest.mark.parametrize("value, single, batched", [("one-row", True, False), ("on", True, True), ("off", False, False)])
def test_gemma_kernel_tuning_one_row_tunes_the_single_stream_step_only(monkeypatch, value, single, batched):
    """Inductor reads the tuning switch when it compiles a step, in each warm-up, on the decoder's thread: with
    one-row it is on for the single-stream step's and off for the 8-row step's (whose tuning ran a cold boot past
    600 s). The single-stream warm-up runs on that thread too (a job), so `single` is also read there."""
    from torch._inductor import config as inductor_config

    from shared.batch_decode import BatchedDecoder
    from shared.compile import tune_kernels
    from shared.decode_engine import DecodeEngine

    seen = {}

    def single_warm_up(engine, inputs, steps=3):
        seen["single"] = inductor_config.coordinate_descent_tuning
        return 0.0

    monkeypatch.setattr(DecodeEngine, "warm_up", single_warm_up)
    # Each read on the decoder's thread, where the steps compile (Inductor's settings are per thread from torch 2.12).
    monkeypatch.setattr(BatchedDecoder, "warm_up", lambda decoder, inputs, steps=3: seen.update(
        batched=decoder.call(lambda: inductor_config.coordinate_descent_tuning)))
    monkeypatch.setenv("OPTIMIZE", f"compile=decode,kernel_tuning={value}")
    before = inductor_config.coordinate_descent_tuning
    try:
        load_runner("gemma3-4b-it").setup()
    finally:  # (monkeypatch would delete a config entry on undo: ConfigModule keeps none in __dict__)
        tune_kernels(before)
    assert seen == {"single": single, "batched": batched}


@pytest.mark.parametrize("name", ["smollm3-3b", "phi4-reasoning-plus", "gemma3-4b-it"])
def test_the_served_rows_and_buckets_share_one_kv_allocation_which_setup_reports(monkeypatch, caplog, name):
    """As served, the batched decoder's rows and every cache size of the engine are views of one KV allocation
    (the longer of the two: 8 x 2,048 rows or the largest cache), and setup's log line says its size."""
    import logging

    from shared.cogserver import parse_event
    from shared.decode_engine import same_memory

    with caplog.at_level(logging.INFO, logger="cogdeploy"):
        runner = load_runner(name)
        runner.setup()
    rows, engine = runner.batch, runner.engine
    assert all(same_memory(rows.cache, cache) for cache in engine.caches)
    config = runner.model.config.get_text_config(decoder=True)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4  # K and V, float32
    tokens = max(rows.rows * rows.row_tokens, engine.caches[-1].get_max_length())
    [done] = [parse_event(r.getMessage()) for r in caplog.records if r.getMessage().startswith("event=setup.done")]
    assert done["kv_cache_gb"] == round(tokens * per_token / 1e9, 3)
    assert _text(runner, max_new_tokens=4)


def _defaults(runner) -> dict:
    """The deployment's run() inputs with their declared defaults (Cog's Input objects carry them)."""
    import inspect

    params = inspect.signature(type(runner).run).parameters
    return {name: getattr(p.default, "default", None) for name, p in params.items() if name != "self"}


@pytest.mark.parametrize("name,template_kwargs", [("smollm3-3b", {"enable_thinking": False}),
                                                  ("smollm3-3b", {"enable_thinking": True}),
                                                  ("phi4-reasoning-plus", {}), ("gemma3-4b-it", {})])
def test_a_request_at_the_defaults_fits_a_batched_row(runners, name, template_kwargs):
    """Requests longer than a row run one at a time: a deployment whose default request (its own system prompt,
    the catalog's example prompt, the default max_new_tokens) does not fit a row serves simultaneous users one
    after another. Phi-4's reasoning system prompt is ~720 tokens and its default 2,048 new tokens: its rows
    were 2,048 long, so none of its default requests was ever batched."""
    from shared import catalog
    from shared.catalog import EXAMPLES
    from shared.images import load_rgb

    runner, example = runners(name), catalog.get(name).example
    images = [load_rgb(EXAMPLES / example["image"].lstrip("@"))] if "image" in example else None
    content = [{"type": "image"}, {"type": "text", "text": example["prompt"]}] if images else example["prompt"]
    inputs = runner.encode([{"role": "user", "content": content}], template_kwargs, images)
    needed = inputs["input_ids"].shape[1] + _defaults(runner)["max_new_tokens"]
    assert needed <= runner.batch.row_tokens, f"{name}: {needed} tokens, rows of {runner.batch.row_tokens}"


@pytest.mark.parametrize("value", ["dequantize", "dequantize-compiled", "tinygemm"])
def test_int4_prefill_dequantize_patches_the_loaded_model_and_names_it_in_the_path(monkeypatch, value):
    """OPTIMIZE=int4_prefill=dequantize hands the loaded model to shared/int4_prefill.py (its tinygemm layers exist on
    a GPU only: tests/gpu/test_int4_prefill_gpu.py); tinygemm leaves it alone. On CPU the real call finds nothing."""
    from shared import int4_prefill, llm

    seen = []

    def patch(model, compiled):
        seen.append((model, compiled))
        return int4_prefill.use_dequantized_prefill(model, compiled) or "patched"

    monkeypatch.setattr(llm, "use_dequantized_prefill", patch)
    runner, text = set_up_and_say(monkeypatch, "smollm3-3b", f"int4_prefill={value}")
    assert text
    assert seen == ([(runner.model, value == "dequantize-compiled")] if value != "tinygemm" else [])
    assert runner.path.endswith("+patched") == (value != "tinygemm")


def test_phi4_int4_mode_quantizes_unsloths_16bit_load_with_hqq_and_keeps_the_small_rows(monkeypatch):
    """OPTIMIZE=quantize=int4: Unsloth's 16-bit load (plain transformers on CPU), then HQQ 4-bit on every Linear but
    lm_head (tinygemm's layers on a GPU, HQQ's own here), with the 4-bit mode's 5 rows of 2,048."""
    runner, modules = _phi4_in_4_bits(monkeypatch, "int4")
    assert runner.path == "transformers (CPU)+hqq4+compiled-decode"
    assert sum(type(m).__name__ == "HQQLinear" for m in modules.values()) == 4 * runner.model.config.num_hidden_layers
    assert (runner.batch.rows, runner.batch.row_tokens) == (5, 2048)
    assert _text(runner, messages=_messages("phi4-reasoning-plus"))
