"""Continuous batching (shared/batch_decode.py) on tiny models: each request gets what it would alone."""

import threading
import time

import pytest
import torch

from shared.batch_decode import BatchedDecoder, Job, Request
from shared.decode_engine import DecodeEngine, Sampling, same_memory
from tests.unit.test_decode_engine import _inputs, _model

SETTINGS = [Sampling(0, 1, 0), Sampling(1.0, 0.9, 1), Sampling(0.7, 0.95, 2), Sampling(1.0, 1.0, 3), Sampling(0, 1, 0)]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()


class Collector:
    def __init__(self):
        self.tokens, self.errors, self.done, self.steps_seen = [], [], threading.Event(), 0

    def __call__(self, tokens, error):
        if tokens is None:
            if error is not None:
                self.errors.append(error)
            self.done.set()
        else:
            self.tokens.extend(tokens)

    def result(self):
        assert self.done.wait(120), "the request never finished"
        assert not self.errors, self.errors
        return self.tokens


def _submit(decoder, inputs, n, sampling, stop_ids=()):
    collector = Collector()
    request = Request(inputs, n, sampling, stop_ids, collector)
    decoder.submit(request)
    return collector, request


def _alone(single, inputs, n, sampling, stop_ids=()):
    """The tokens a request gets alone from `single`'s model and cache sizes, on an engine of this thread's own:
    `single` is the decoder thread's (an engine serves one thread; its caches share one allocation)."""
    engine = DecodeEngine(single.model, [c.get_max_length() for c in single.caches], top_k=single.top_k)
    return [t for chunk in engine.generate(inputs, max_new_tokens=n, sampling=sampling, stop_ids=stop_ids) for t in chunk]


@pytest.mark.parametrize("name", ["smollm3-3b", "phi4-reasoning-plus", "gemma3-4b-it"])
def test_more_requests_than_rows_each_get_their_single_stream_tokens(name):
    """Five requests of different lengths and settings over three rows: they join and leave between steps,
    and each gets exactly the tokens the single-stream engine gives it (greedy and seeded sampling)."""
    model, tok = _model(name)
    inputs = _inputs(name, tok)
    single = DecodeEngine(model, [256])
    decoder = BatchedDecoder(model, rows=3, row_tokens=256, single=single)
    lengths = [12 + 3 * i for i in range(len(SETTINGS))]
    pending = [_submit(decoder, inputs, n, s)[0] for n, s in zip(lengths, SETTINGS, strict=True)]
    results = [c.result() for c in pending]
    for got, n, s in zip(results, lengths, SETTINGS, strict=True):
        assert got == _alone(single, inputs, n, s), s
    assert results[-1][:len(results[0])] == results[0] and results[1] != results[2]  # greedy twice; seeds differ


def test_rows_are_shared_at_once_and_a_stop_or_cancel_frees_a_row():
    model, tok = _model("smollm3-3b")
    inputs = _inputs("smollm3-3b", tok)
    single = DecodeEngine(model, [256])
    decoder = BatchedDecoder(model, rows=2, row_tokens=256, single=single)
    busy = []
    original = decoder._decode_chunk
    decoder._decode_chunk = lambda: busy.append(sum(r is not None for r in decoder.slots)) or original()
    free = _alone(single, inputs, 20, Sampling(0, 1, 0))
    stop = next(t for t in free[3:] if t not in free[:3])
    stopped, _ = _submit(decoder, inputs, 20, Sampling(0, 1, 0), stop_ids=[stop])
    cancelled, request = _submit(decoder, inputs, 200, Sampling(1.0, 0.9, 4))
    later, _ = _submit(decoder, inputs, 10, Sampling(1.0, 0.9, 5))  # waits for a free row
    assert stopped.result() == free[:free.index(stop) + 1]
    request.cancelled.set()
    cancelled.done.wait(60)
    assert 0 < len(cancelled.tokens) < 200
    assert later.result() == _alone(single, inputs, 10, Sampling(1.0, 0.9, 5))
    assert max(busy) == 2, "two requests never shared a step"


def test_an_empty_row_does_not_advance_while_others_decode():
    """One busy row decoding far more steps, in turn, than a row holds: the idle row must stay where it is
    (it once advanced with the others and ran off its row's end: IndexError after row_tokens steps)."""
    model, tok = _model("smollm3-3b")
    inputs = _inputs("smollm3-3b", tok)
    prompt = inputs["input_ids"].shape[1]
    single = DecodeEngine(model, [64])
    decoder = BatchedDecoder(model, rows=2, row_tokens=64, single=single, solo=False)  # each request in a row
    n = 64 - prompt  # each request fills its row
    for seed in range(4):  # 4 x n steps > 64: an idle row that advanced would be far past its end
        assert _submit(decoder, inputs, n, Sampling(1.0, 0.9, seed))[0].result() == \
            _alone(single, inputs, n, Sampling(1.0, 0.9, seed))
    assert decoder.positions.tolist() == [0, 0]


def test_a_request_longer_than_a_row_runs_alone_and_the_others_still_run():
    model, tok = _model("smollm3-3b")
    inputs = _inputs("smollm3-3b", tok)
    single = DecodeEngine(model, [64, 512])
    decoder = BatchedDecoder(model, rows=2, row_tokens=64, single=single)
    short, _ = _submit(decoder, inputs, 10, Sampling(1.0, 0.9, 1))
    long, _ = _submit(decoder, inputs, 100, Sampling(1.0, 0.9, 2))  # prompt + 100 > 64
    after, _ = _submit(decoder, inputs, 10, Sampling(1.0, 0.9, 3))
    assert long.result() == _alone(single, inputs, 100, Sampling(1.0, 0.9, 2))
    assert short.result() == _alone(single, inputs, 10, Sampling(1.0, 0.9, 1))
    assert after.result() == _alone(single, inputs, 10, Sampling(1.0, 0.9, 3))


def test_a_failing_request_fails_alone_and_the_decoder_keeps_serving():
    model, tok = _model("smollm3-3b")
    inputs = _inputs("smollm3-3b", tok)
    single = DecodeEngine(model, [256])
    decoder = BatchedDecoder(model, rows=2, row_tokens=256, single=single)
    broken, _ = _submit(decoder, {"input_ids": torch.full((1, 5), 10**9)}, 10, Sampling(0, 1, 0))  # ids beyond the vocab
    assert broken.done.wait(60) and broken.errors
    fine, _ = _submit(decoder, inputs, 10, Sampling(0, 1, 0))
    assert fine.result() == _alone(single, inputs, 10, Sampling(0, 1, 0))


def test_the_compiled_batched_step_matches_and_compiles_once():
    from torch._dynamo.utils import counters

    model, tok = _model("smollm3-3b")
    inputs = _inputs("smollm3-3b", tok)
    single = DecodeEngine(model, [256])
    decoder = BatchedDecoder(model, rows=3, row_tokens=256, single=single, compile_step={"backend": "eager"})
    alone, submit, on_engine = [], decoder.submit, decoder._run_on_engine
    decoder._run_on_engine = lambda request, **kw: alone.append(request) or on_engine(request, **kw)
    decoder.submit = lambda request: submit(request) or time.sleep(0.05)  # each warm-up request finds the rows idle
    decoder.warm_up(inputs)
    decoder.submit, decoder._run_on_engine = submit, on_engine
    assert not alone, "warm-up requests ran alone on the engine: the batched step would compile in a user's request"
    graphs = counters["stats"]["unique_graphs"]
    pending = [_submit(decoder, inputs, 12 + i, s)[0] for i, s in enumerate(SETTINGS)]
    for i, (c, s) in enumerate(zip(pending, SETTINGS, strict=True)):
        assert c.result() == _alone(single, inputs, 12 + i, s)
    assert counters["stats"]["unique_graphs"] == graphs, "a request recompiled the batched step"


def test_rows_decode_a_chunk_of_steps_per_host_sync_and_never_past_their_budget():
    """The host reads tokens once per chunk of steps (a read per step left the GPU idle while the host
    handed tokens out): 33 tokens with chunk 8 are the prefill's token and 4 chunks. A request whose budget
    ends inside a chunk shortens that chunk, so a row filled to its end never writes past it."""
    model, tok = _model("smollm3-3b")
    inputs = _inputs("smollm3-3b", tok)
    prompt = inputs["input_ids"].shape[1]
    single = DecodeEngine(model, [64])
    decoder = BatchedDecoder(model, rows=2, row_tokens=64, single=single, chunk=8, solo=False)
    chunks = []
    original = decoder._decode_chunk
    decoder._decode_chunk = lambda: chunks.append(1) or original()
    assert _submit(decoder, inputs, 33, Sampling(1.0, 0.9, 7))[0].result() == _alone(single, inputs, 33, Sampling(1.0, 0.9, 7))
    assert len(chunks) == 4
    n = 64 - prompt  # not a multiple of 8 plus one: the last chunk is cut to the budget
    assert (n - 1) % 8
    assert _submit(decoder, inputs, n, Sampling(1.0, 0.9, 8))[0].result() == _alone(single, inputs, n, Sampling(1.0, 0.9, 8))


def test_the_decoder_thread_can_replay_inductor_cuda_graphs():
    """Inductor's CUDA-graph trees live in thread-local storage that a plain thread lacks: the first replay
    of the compiled step on the decoder's thread failed an assertion on the GPU (every request). The check
    Inductor makes there must pass on the decoder's thread."""
    model, tok = _model("smollm3-3b")
    decoder = BatchedDecoder(model, rows=2, row_tokens=64, single=DecodeEngine(model, [64]))
    assert decoder.call(lambda: torch._C._is_key_in_tls("tree_manager_containers"))
    from torch._inductor import cudagraph_trees

    assert decoder.call(lambda: cudagraph_trees.get_container(0) is not None)


def test_a_lone_request_runs_on_the_engine_and_moves_into_a_row_when_another_arrives():
    """Alone, a request decodes on the engine's one-row step (cheaper than the rows' step); when a second
    request arrives, the first one's KV, token and position move into a row and both decode together, each
    still getting exactly its single-stream tokens."""
    model, tok = _model("smollm3-3b")
    inputs = _inputs("smollm3-3b", tok)
    single = DecodeEngine(model, [256])
    decoder = BatchedDecoder(model, rows=2, row_tokens=256, single=single, chunk=4)
    engine_steps, row_steps = [], []
    engine_step, row_step = single.step, decoder.step
    single.step = lambda *a: engine_steps.append(1) or engine_step(*a)
    decoder.step = lambda *a: row_steps.append(int(decoder.busy.sum())) or row_step(*a)
    assert _submit(decoder, inputs, 30, Sampling(1.0, 0.9, 1))[0].result() == _alone(single, inputs, 30, Sampling(1.0, 0.9, 1))
    assert len(engine_steps) == 29 and not row_steps  # (the reference ran on an engine of its own)
    engine_steps.clear()

    advance, second = single.advance, []

    def arrive_during_the_third_chunk(stream, n):
        if len(engine_steps) == 8 and not second:  # the first request is 9 tokens in
            second.append(_submit(decoder, inputs, 20, Sampling(0.7, 0.95, 2))[0])
        return advance(stream, n)

    single.advance = arrive_during_the_third_chunk
    first = _submit(decoder, inputs, 40, Sampling(1.0, 0.9, 3))[0]
    got_first, got_second = first.result(), second[0].result()
    single.advance = advance
    assert got_first == _alone(single, inputs, 40, Sampling(1.0, 0.9, 3))
    assert got_second == _alone(single, inputs, 20, Sampling(0.7, 0.95, 2))
    assert 2 in row_steps, "the two requests never decoded in one step"


def _record_prefills(model, what) -> list:
    """Record `what(input_ids)` for every forward over more than one position (a prefill) of `model`."""
    seen, forward = [], model.forward

    def recording(*args, **kwargs):
        if kwargs["input_ids"].shape[1] > 1:
            seen.append(what(kwargs["input_ids"]))
        return forward(*args, **kwargs)

    model.forward = recording
    return seen


def _text_prompts(name, tok, n):
    """`n` text-only prompts of different lengths (Gemma's longer than its tiny 16-token sliding window)."""
    words = "the lighthouse keeper walked down to the shore at night and wrote about the ships he saw".split()
    texts = [" ".join(words[: 3 + 3 * i]) for i in range(n)]
    tokenizer = getattr(tok, "tokenizer", tok)
    return [dict(tokenizer(t, return_tensors="pt")) for t in texts]


def _image_prompts(tok, n):
    """`n` Gemma 3 chat prompts of different lengths; every other one with an image (each its own colour)."""
    from PIL import Image

    words = "describe this picture in a few careful words please and say what colour it is".split()
    prompts = []
    for i in range(n):
        content = [{"type": "text", "text": " ".join(words[: 3 + 3 * i])}]
        images = [Image.new("RGB", (64, 64), ("blue", "red", "green")[i % 3])] if i % 2 == 0 else None
        if images:
            content.insert(0, {"type": "image"})
        text = tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
        prompts.append(dict(tok(text=text, images=images, return_tensors="pt", add_special_tokens=False)))
    return prompts


@pytest.mark.parametrize("name", ["smollm3-3b", "phi4-reasoning-plus", "gemma3-4b-it", "gemma3-4b-it+images"])
def test_requests_arriving_together_are_prefilled_in_one_forward_and_get_their_single_stream_tokens(name):
    """Four prompts of different lengths that find free rows are prefilled in one right-padded forward (one
    after another, eight prompts held eight simultaneous requests' decoding for a quarter to half a second on
    the H100), and each request still gets exactly what it would alone, greedy and sampled; for Gemma 3 also
    with images in some of them. A request cancelled while it waited is answered and takes no row."""
    model, tok = _model(name.removesuffix("+images"))
    prompts = _image_prompts(tok, 5) if name.endswith("+images") else _text_prompts(name, tok, 5)
    assert len({p["input_ids"].shape[1] for p in prompts}) == 5
    single = DecodeEngine(model, [256])
    decoder = BatchedDecoder(model, rows=4, row_tokens=256, single=single)
    prefills = _record_prefills(model, lambda ids: tuple(ids.shape))
    hold = threading.Event()
    decoder.submit(Job(hold.wait))  # the decoder is busy meanwhile
    settings = SETTINGS[:4]
    pending = [_submit(decoder, p, 14, s)[0] for p, s in zip(prompts[:2], settings[:2], strict=True)]
    gone, gone_request = _submit(decoder, prompts[4], 14, SETTINGS[4])
    gone_request.cancelled.set()
    pending += [_submit(decoder, p, 14, s)[0] for p, s in zip(prompts[2:4], settings[2:], strict=True)]
    hold.set()
    results = [c.result() for c in pending]
    assert gone.result() == []
    del model.forward
    assert prefills == [(4, max(p["input_ids"].shape[1] for p in prompts[:4]))], prefills
    for got, prompt, s in zip(results, prompts[:4], settings, strict=True):
        assert got == _alone(single, prompt, 14, s), s
    # The one-row prefill cache serves only inputs a joint prefill does not know: never allocated here.
    assert not any(layer.is_initialized for layer in decoder.prefill_cache.layers)


def test_a_joint_prefill_stays_within_its_padded_size(monkeypatch):
    """Prompts whose padded forward would pass PREFILL_TOGETHER_TOKENS are prefilled in more than one."""
    from shared import batch_decode

    model, tok = _model("smollm3-3b")
    prompts = _text_prompts("smollm3-3b", tok, 4)
    longest = max(p["input_ids"].shape[1] for p in prompts)
    monkeypatch.setattr(batch_decode, "PREFILL_TOGETHER_TOKENS", 2 * longest)
    single = DecodeEngine(model, [256])
    decoder = BatchedDecoder(model, rows=4, row_tokens=256, single=single)
    sizes = _record_prefills(model, lambda ids: ids.numel())
    hold = threading.Event()
    decoder.submit(Job(hold.wait))
    pending = [_submit(decoder, p, 6, Sampling(1.0, 0.9, i))[0] for i, p in enumerate(prompts)]
    hold.set()
    results = [c.result() for c in pending]
    del model.forward
    assert len(sizes) > 1 and max(sizes) <= 2 * longest, sizes
    for i, (got, prompt) in enumerate(zip(results, prompts, strict=True)):
        assert got == _alone(single, prompt, 6, Sampling(1.0, 0.9, i))


@pytest.mark.parametrize("name", ["smollm3-3b", "gemma3-4b-it"])
def test_the_rows_share_the_engines_kv_memory_and_every_request_keeps_its_tokens(name):
    """The engine's buckets and the rows are views of one allocation (SmolLM3: 1.4 GB instead of 2.6). Each use
    overwrites what the others read: a lone request in a bucket shorter than a row (its heads laid out closer
    together than a row's) moves into row 0 when another arrives; a request longer than a row then writes
    across every row's memory; two requests in rows follow. Each gets its single-stream tokens."""
    model, tok = _model(name)
    prompts = _text_prompts(name, tok, 3)
    short = prompts[0]
    assert short["input_ids"].shape[1] + 15 <= 32
    single = DecodeEngine(model, [32, 512], reserve_tokens=2 * 64)
    decoder = BatchedDecoder(model, rows=2, row_tokens=64, single=single, chunk=4)
    assert all(same_memory(decoder.cache, c) for c in single.caches), "the rows or a bucket have memory of their own"

    advance, second = single.advance, []

    def arrive_during_the_second_chunk(stream, n):
        if stream.cache is single.caches[0] and not second:
            second.append(_submit(decoder, prompts[1], 20, Sampling(0.7, 0.95, 2))[0])
        return advance(stream, n)

    single.advance = arrive_during_the_second_chunk
    first = _submit(decoder, short, 15, Sampling(1.0, 0.9, 3))[0]
    got = [first.result(), second[0].result()]
    single.advance = advance
    long = _submit(decoder, prompts[2], 120, Sampling(1.0, 0.9, 4))[0]  # past a row: alone, in the 512 bucket
    after = [_submit(decoder, p, 20, Sampling(0, 1, 0))[0] for p in prompts[:2]]
    got += [long.result()] + [c.result() for c in after]
    want = [_alone(single, short, 15, Sampling(1.0, 0.9, 3)), _alone(single, prompts[1], 20, Sampling(0.7, 0.95, 2)),
            _alone(single, prompts[2], 120, Sampling(1.0, 0.9, 4))] + [_alone(single, p, 20, Sampling(0, 1, 0))
                                                                      for p in prompts[:2]]
    assert got == want
