"""The three text deployments through the real Cog HTTP server on tiny weights: plain and streamed (SSE)."""

import json

import pytest

from shared.cogserver import log_events
from tests.integration.conftest import failed, huge_png_uri, ok, rejected, worker_rss_mb

pytestmark = pytest.mark.integration

SMOL, PHI, GEMMA = "smollm3-3b", "phi4-reasoning-plus", "gemma3-4b-it"


def request(name, example_image, **extra):
    base = {"prompt": "Tell me about the sky.", "max_new_tokens": 16, "seed": 11}
    if name == GEMMA:
        base["image"] = example_image
    return {**base, **extra}


@pytest.mark.parametrize("name", [SMOL, PHI, GEMMA])
def test_generates_text_and_the_same_seed_gives_the_same_text(server, example_image, name):
    a = ok(server(name).predict(request(name, example_image)))
    b = ok(server(name).predict(request(name, example_image)))
    text = "".join(a["output"])
    assert text and text == "".join(b["output"])
    assert a["metrics"]["seed"] == 11 and 0 < a["metrics"]["output_token_count"] <= 16
    other = ok(server(name).predict(request(name, example_image, seed=12)))
    assert "".join(other["output"]) != text


@pytest.mark.parametrize("name", [SMOL, PHI, GEMMA])
def test_streaming_sends_the_same_text_as_it_is_generated(server, example_image, name):
    whole = "".join(ok(server(name).predict(request(name, example_image)))["output"])
    events = server(name).stream(request(name, example_image))
    kinds = [e for e, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "completed"
    chunks = [json.loads(data)["chunk"] for event, data in events if event == "output"]
    assert chunks and "".join(chunks) == whole
    assert json.loads(events[-1][1])["status"] == "succeeded"


@pytest.mark.parametrize("name", [SMOL, PHI, GEMMA])
def test_metrics_have_the_names_replicate_language_models_report(server, example_image, name):
    body = ok(server(name).predict(request(name, example_image)))
    m = body["metrics"]
    [start] = log_events(body["logs"], "predict.start")
    assert m["input_token_count"] == start["prompt_tokens"] > 0  # the prompt as the model read it, template included
    assert 0 < m["output_token_count"] <= 16
    assert 0 < m["time_to_first_token"] <= m["predict_time"]
    assert m["tokens_per_second"] > 0
    assert not {"output_tokens", "artifact"} & set(m)  # the old names, and a container path no client can open


@pytest.mark.parametrize("name", [SMOL, PHI, GEMMA])
def test_a_system_prompt_reaches_the_model(server, example_image, name):
    plain = ok(server(name).predict(request(name, example_image)))
    told = ok(server(name).predict(request(name, example_image,
                                           system_prompt="Answer like a pirate, in three words at most.")))
    # Replacing a default system message (SmolLM3's, Phi-4's) can make the prompt shorter: only "different".
    # (Where it goes in each template: tests/unit/test_system_prompt.py. Tiny random models' text barely
    # depends on the prompt, so the token count is what shows it here.)
    assert told["metrics"]["input_token_count"] != plain["metrics"]["input_token_count"]
    blank = ok(server(name).predict(request(name, example_image, system_prompt="   ")))
    assert blank["metrics"]["input_token_count"] == plain["metrics"]["input_token_count"]  # blank is the default


def test_a_think_flag_in_the_system_prompt_must_agree_with_the_mode(server, example_image):
    body = failed(server(SMOL).predict(request(SMOL, example_image, mode="think", system_prompt="Be brief. /no_think")))
    assert "system_prompt: contains /no_think but mode is think" in body["error"]
    ok(server(SMOL).predict(request(SMOL, example_image, mode="think", system_prompt="Be brief. /think")))


def test_think_and_no_think_use_different_prompts(server, example_image):
    think = ok(server(SMOL).predict(request(SMOL, example_image, mode="think")))
    no_think = ok(server(SMOL).predict(request(SMOL, example_image, mode="no_think")))
    assert log_events(think["logs"], "predict.start")[0]["enable_thinking"] is True
    assert log_events(no_think["logs"], "predict.start")[0]["enable_thinking"] is False
    assert "".join(think["output"]) != "".join(no_think["output"])


def test_greedy_decoding_ignores_the_seed(server, example_image):
    a = ok(server(PHI).predict(request(PHI, example_image, temperature=0, seed=1)))
    b = ok(server(PHI).predict(request(PHI, example_image, temperature=0, seed=2)))
    assert a["output"] == b["output"]


@pytest.mark.parametrize("name,field,value,words", [
    (SMOL, "temperature", 2.5, "maximum of 2"), (SMOL, "top_p", 1.5, "maximum of 1"),
    (SMOL, "max_new_tokens", 0, "minimum of 1"), (SMOL, "max_new_tokens", 20000, "maximum of 16384"),
    (SMOL, "mode", "ponder", "not one of"), (PHI, "temperature", -0.1, "minimum of 0"),
    (GEMMA, "max_new_tokens", 9000, "maximum of 8192"),
])
def test_out_of_range_inputs_are_rejected_by_the_server(server, example_image, name, field, value, words):
    assert words in rejected(server(name).predict(request(name, example_image, **{field: value})), field)


@pytest.mark.parametrize("name,missing", [(SMOL, "prompt"), (GEMMA, "image")])
def test_missing_required_inputs_are_rejected(server, example_image, name, missing):
    body = request(name, example_image)
    body.pop(missing)
    rejected(server(name).predict(body), missing)


def test_gemma_bad_image_fails_naming_the_field_and_keeps_serving(server, example_image):
    body = failed(server(GEMMA).predict(request(GEMMA, example_image, image="data:image/png;base64,bm90IGFuIGltYWdl")))
    assert "image: could not be decoded" in body["error"]
    ok(server(GEMMA).predict(request(GEMMA, example_image)))


def test_gemma_serves_its_compiled_window_not_all_128k_and_keeps_serving(server, example_image):
    # A 100k-character prompt was accepted (Gemma's context is 128k tokens) and its attention exhausted the
    # machine: the worker was killed and the server never served again (tests/fuzz.py). The window is the
    # compiled step's cache; past it the prompt is an input error, at once.
    body = failed(server(GEMMA).predict(request(GEMMA, example_image, prompt="x" * 20_000)))
    assert body["error"].count("prompt: has") and "10240 tokens per request" in body["error"]
    ok(server(GEMMA).predict(request(GEMMA, example_image)))


@pytest.mark.parametrize("name", [SMOL, GEMMA])
def test_simultaneous_requests_are_all_served_each_with_its_own_text(server, example_image, name):
    """Five requests at once: all are served together (the runner declares @cog.concurrent(max=8) and decodes
    them in one batch), and each gets the text its seed gives alone. A 409 is retried for at most 1 s: the
    server frees a slot a few ms after it answers (docs/operations.md); one slot would need seconds."""
    from concurrent.futures import ThreadPoolExecutor

    from shared.cogserver import post_prediction

    s = server(name)
    bodies = [request(name, example_image, seed=100 + i, temperature=1.0, max_new_tokens=12 + 4 * i) for i in range(5)]
    alone = ["".join(ok(s.predict(b))["output"]) for b in bodies]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: post_prediction(s.url, b, timeout=300, busy_wait=1.0), bodies))
    assert [a.status_code for a in answers] == [200] * len(bodies)
    together = ["".join(ok(a)["output"]) for a in answers]
    assert together == alone and len(set(alone)) == len(alone)


def test_huge_input_images_leave_no_memory_behind(server, example_image, tmp_path):
    """Gemma's image input: after three 12000x12000 PNGs (decoded at most 4096 px a side) the worker is back
    near where it was."""
    s = server(GEMMA)
    ok(s.predict(request(GEMMA, example_image)))
    before = worker_rss_mb(s)
    huge = huge_png_uri(tmp_path)
    for _ in range(3):
        ok(s.predict(request(GEMMA, huge)))
    grown = worker_rss_mb(s) - before
    assert grown < 400, f"the worker kept {grown:.0f} MB after three 12000x12000 inputs"
