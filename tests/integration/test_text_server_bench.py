"""The text server benchmark's own code (benchmarks/text_speed.py) on tiny weights, CPU: the requests a device
run sends, checked where it is cheap, so a GPU call is not the first to find that Gemma's need an image."""

import pytest

from benchmarks import text_speed

pytestmark = pytest.mark.integration


def test_gemma_figures_send_its_image_and_serve_every_case_and_all_requests_at_once(server):
    extra, cases, concurrent = text_speed.request_plan("gemma3-4b-it", long=False, tokens=6, concurrent_tokens=4)
    assert set(cases) == {"6_tokens", "image_question_128", "ttft_512_token_prompt"}
    cases["image_question_128"]["max_new_tokens"] = 5  # CPU: the case's shape, not its length
    row = text_speed.server_figures(server("gemma3-4b-it"), 1, extra, cases, concurrent)
    for case in cases:
        (run,) = row[case]["runs"]
        assert run["tokens"] >= 1 and run["predict_time"] > 0 and run["ttft"] is not None
    together = row["concurrent_8x4"]
    assert together["served"] == 8 and together["refused"] == 0 and together["other"] == []
    assert together["tokens"] >= 8
    # Repeated like every case (one run after a warm-up here), each with where the server's time went.
    (run,) = together["runs"]
    assert run["start_spread_s"] is not None and run["start_spread_s"] >= 0 and len(run["ttft_s"]) == 8
    assert row["recompiles_after_setup"] == 0


def test_a_text_only_deployment_sends_no_image():
    extra, cases, _ = text_speed.request_plan("smollm3-3b", long=True)
    assert extra == {} and set(cases) == {"512_tokens", "4000_tokens", "ttft_512_token_prompt"}


@pytest.mark.parametrize("path, fmt", [
    ("transformers-cuda+pruna-hqq4-int4mm+static-cache+compiled-decode", "int4"),
    ("transformers-cuda+hqq4-gemlite+static-cache+compiled-decode+grouped-decode-attention", "int4"),
    ("transformers-cuda+magnitude:0.1+int8-weight-only+static-cache+compiled-decode", "int8"),
    ("transformers-cuda+magnitude:0.1+fp8-weight-only+static-cache+compiled-decode", "int8"),
    ("transformers-cuda+static-cache+compiled-decode", "bf16"),
    ("unsloth-bnb4+compiled-decode", "int4"),
    ("unsloth+compiled-decode", "bf16"),
])
def test_each_served_path_is_held_to_the_roofline_of_its_weight_format(path, fmt):
    assert text_speed.weight_format(path) == fmt


def test_rooflines_rise_as_weights_shrink():
    import torch

    model = torch.nn.Module()
    model.layer = torch.nn.Linear(64, 64, bias=False)
    model.lm_head = torch.nn.Linear(64, 32, bias=False)
    model.get_output_embeddings = lambda: model.lm_head
    roof = text_speed.rooflines(model, tbs=1.0)
    # bytes: bf16 4096*2 + 2048*2; int8 4096 + 4096; int4 4096*(0.5 + 4/64) + 4096
    assert roof == {"bf16": round(1e12 / 12288, 1), "int8": round(1e12 / 8192, 1), "int4": round(1e12 / 6400, 1)}


def test_the_image_baseline_generates_from_the_image_and_question_the_server_gets():
    import io

    import torch

    from shared import catalog
    from shared.builders.text import build_random_gemma3
    from shared.cogserver import from_data_uri
    from shared.images import load_rgb

    extra, cases, _ = text_speed.request_plan("gemma3-4b-it", long=False)
    model, processor = build_random_gemma3(catalog.get("gemma3-4b-it"), tiny=True, device="cpu", dtype=torch.float32)
    image = load_rgb(io.BytesIO(from_data_uri(extra["image"])[1]))
    base = text_speed.hf_image_baseline(model, processor, image, cases["image_question_128"]["prompt"], 3, 2)
    assert len(base["seconds"]) == 2 and base["median_s"] > 0 and base["new_tokens"] == 3


@pytest.mark.parametrize("name", ["smollm3-3b", "gemma3-4b-it"])
def test_the_time_to_first_token_prompt_has_512_tokens_with_the_chat_template(name):
    # It once sent a prompt said to be ~560 tokens that SmolLM3's template made 1,501.
    prompt, tokens = text_speed.prompt_of_tokens(name, 512)
    assert abs(tokens - 512) <= 25 and prompt.startswith(text_speed.SENTENCE)
    assert text_speed.request_plan(name, long=False)[1]["ttft_512_token_prompt"]["prompt"] == prompt


def test_phi4s_reasoning_system_prompt_alone_is_over_512_tokens_so_its_shortest_prompt_is_sent():
    prompt, tokens = text_speed.prompt_of_tokens("phi4-reasoning-plus", 512)
    assert prompt == text_speed.SENTENCE and 512 < tokens < 800


def test_the_gemma_server_reports_the_prompt_tokens_it_counted(server):
    extra, cases, concurrent = text_speed.request_plan("gemma3-4b-it", long=False, tokens=2, concurrent_tokens=1)
    (run,) = text_speed.server_figures(server("gemma3-4b-it"), 1, extra, {"ttft": cases["ttft_512_token_prompt"]},
                                       concurrent, rows_at_once=1)["ttft"]["runs"]
    # the templated prompt plus the image's tokens (the tiny model's image is a few tokens)
    assert run["input_tokens"] >= text_speed.prompt_of_tokens("gemma3-4b-it", 512)[1]


def test_fidelity_compares_each_configuration_as_the_deployment_loads_it(monkeypatch):
    """text-fidelity on tiny Gemma: the deployment's own loading, reference and configurations from the same
    seeded weights. An unchanged configuration matches the reference exactly; 4-bit weights do not."""
    import argparse

    monkeypatch.setenv("WEIGHT_PROFILE", "tiny")
    monkeypatch.setenv("OPTIMIZE", "")  # the benchmark sets it per configuration; the test's own is restored
    args = argparse.Namespace(deployment="gemma3-4b-it", configs="same=prune=none,quantize=none;int4=prune=none,quantize=int4")
    result = text_speed.bench_text_fidelity(args)
    assert result["reference"]["optimize"] == "prune=none,quantize=none,compile=off"
    same, int4 = result["configs"]["same"], result["configs"]["int4"]
    assert same["top1_agreement"] == 1.0 and same["logit_cosine"] == pytest.approx(1.0, abs=1e-4)
    assert "hqq4" in int4["path"] and int4["logit_cosine"] < 0.999 and int4["positions"] == same["positions"] > 0


def test_the_requests_at_the_defaults_leave_max_new_tokens_to_the_deployment(server, monkeypatch):
    """`--at-defaults`: the same 8 requests at once without max_new_tokens, so each runs to the deployment's own
    default (where Phi-4's 2,048 once did not fit a batched row); all served, each with its first token."""
    from shared import cogserver

    sent = []
    post = cogserver.post_prediction
    monkeypatch.setattr(cogserver, "post_prediction", lambda url, inputs, **kw: sent.append(inputs) or post(url, inputs, **kw))
    extra, _, concurrent = text_speed.request_plan("gemma3-4b-it", long=False, tokens=2, concurrent_tokens=3)
    row = text_speed.server_figures(server("gemma3-4b-it"), 1, extra, {}, concurrent, at_defaults=True)
    together = row["concurrent_8_at_defaults"]
    assert together["served"] == 8 and together["refused"] == 0 and len(together["ttft_s"]) == 8
    assert [s.get("max_new_tokens") for s in sent] == [3] * 16 + [None] * 8  # warm-up and run, then at the defaults
