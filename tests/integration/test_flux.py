"""Both FLUX deployments through the real Cog HTTP server on tiny weights."""

import numpy as np
import pytest

from shared.catalog import EXAMPLES
from shared.cogserver import to_data_uri
from tests.integration.conftest import decode_image, failed, huge_png_uri, ok, only, raw_bytes, rejected, worker_rss_mb

pytestmark = pytest.mark.integration

T2I = "flux-lora-txt2img"
I2I = "flux-lora-img2img"
FAST = {"prompt": "a lighthouse", "num_inference_steps": 2, "width": 256, "height": 256, "seed": 5}


def pixels(body) -> np.ndarray:
    return np.asarray(decode_image(only(body)).convert("RGB")).astype(np.int16)


def test_text_to_image_returns_a_png_of_the_asked_size_and_reports_the_seed(server):
    body = ok(server(T2I).predict(FAST))
    img = decode_image(only(body))
    assert img.format == "PNG" and img.size == (256, 256)
    assert body["metrics"]["seed"] == 5


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(server):
    a, b = ok(server(T2I).predict(FAST)), ok(server(T2I).predict(FAST))
    assert raw_bytes(only(a)) == raw_bytes(only(b))
    c = ok(server(T2I).predict({**FAST, "seed": 6}))
    assert raw_bytes(only(c)) != raw_bytes(only(a))


def test_num_outputs_gives_each_image_the_one_its_own_seed_gives_alone(server, example_image):
    import json

    body = ok(server(T2I).predict({**FAST, "num_outputs": 3}))
    images = [raw_bytes(uri) for uri in body["output"]]
    assert len(set(images)) == 3 and body["metrics"]["image_count"] == 3 and body["metrics"]["seeds"] == [5, 6, 7]
    assert [json.loads(decode_image(uri).text["generation"])["Seed"] for uri in body["output"]] == [5, 6, 7]
    assert images[1] == raw_bytes(only(ok(server(T2I).predict({**FAST, "seed": 6}))))
    last = ok(server(T2I).predict({**FAST, "seed": 2**32 - 1, "num_outputs": 2}))
    assert last["metrics"]["seeds"] == [2**32 - 1, 0]  # seeds wrap within the seed input's range
    assert raw_bytes(last["output"][1]) == raw_bytes(only(ok(server(T2I).predict({**FAST, "seed": 0}))))
    two = ok(server(I2I).predict({**FAST, "image": example_image, "num_outputs": 2}))
    assert len({raw_bytes(uri) for uri in two["output"]}) == 2 and two["metrics"]["seeds"] == [5, 6]


def test_go_fast_is_opt_in_and_says_what_it_skipped(server, example_image):
    """The default is the exact path (the request without go_fast gives the same bytes as go_fast=false);
    go_fast reports its skipped steps per image, in the metrics and in each PNG's text. Which steps the cache
    skips depends on the weights (tests/unit/test_step_cache.py forces both ways on the tiny model)."""
    import json

    steps = {**FAST, "num_inference_steps": 8}
    exact = ok(server(T2I).predict(steps))
    assert raw_bytes(only(exact)) == raw_bytes(only(ok(server(T2I).predict({**steps, "go_fast": False}))))
    assert "go_fast_steps_skipped" not in exact["metrics"]
    fast = ok(server(T2I).predict({**steps, "go_fast": True, "num_outputs": 2}))
    skipped = fast["metrics"]["go_fast_steps_skipped"]
    assert len(skipped) == 2 and all(0 <= n < 8 for n in skipped)
    made = [json.loads(decode_image(uri).text["generation"]) for uri in fast["output"]]
    assert [m["First block cache"] for m in made] == [f"threshold 0.08, {n} steps skipped" for n in skipped]
    img2img = ok(server(I2I).predict({**steps, "image": example_image, "go_fast": True}))
    assert len(img2img["metrics"]["go_fast_steps_skipped"]) == 1


def test_a_request_logs_where_its_time_went(server):
    """predict.end carries each phase's seconds (route, T5 + CLIP, generation, file), which the FLUX server
    benchmark reads to place predict_time (benchmarks/flux_speed.py)."""
    from benchmarks.flux_speed import median_phases
    from shared.cogserver import log_events

    body = ok(server(T2I).predict({**FAST, "num_outputs": 2}))
    [end] = log_events(body["logs"], "predict.end")
    assert set(end["phases"]) == {"route", "encode", "generate", "save"}
    assert end["phases"]["generate"] > 0 and end["phases"]["save"] > 0
    assert sum(end["phases"].values()) <= end["seconds"] + 0.005  # the phases lie inside the request
    assert median_phases([body["logs"]]) == {**end["phases"], "whole_run": end["seconds"]}


def test_a_random_seed_is_reported_and_reproduces_the_image(server):
    first = ok(server(T2I).predict({k: v for k, v in FAST.items() if k != "seed"}))
    again = ok(server(T2I).predict({**FAST, "seed": first["metrics"]["seed"]}))
    assert raw_bytes(only(first)) == raw_bytes(only(again))


def test_switching_lora_changes_pixels(server):
    base = pixels(ok(server(T2I).predict(FAST)))
    anime = pixels(ok(server(T2I).predict({**FAST, "trigger_word": "Anime"})))
    ghibsky = pixels(ok(server(T2I).predict({**FAST, "trigger_word": "ghibsky"})))
    assert np.abs(anime - ghibsky).mean() > 1 and np.abs(anime - base).mean() > 1 and np.abs(ghibsky - base).mean() > 1
    # and back to the base model: exactly the first image
    assert np.array_equal(pixels(ok(server(T2I).predict(FAST))), base)


@pytest.mark.parametrize("fmt,pil", [("webp", "WEBP"), ("jpg", "JPEG")])
def test_output_format_is_honoured(server, fmt, pil):
    body = ok(server(T2I).predict({**FAST, "output_format": fmt, "output_quality": 70}))
    assert decode_image(only(body)).format == pil


def test_sizes_are_rounded_to_what_flux_accepts_and_reported(server):
    body = ok(server(T2I).predict({**FAST, "width": 300, "height": 260}))
    assert decode_image(only(body)).size == (304, 256)
    assert (body["metrics"]["width"], body["metrics"]["height"]) == (304, 256)
    assert "size.rounded" in body["logs"]


@pytest.mark.parametrize("ratio,size", [("16:9", (1328, 752)), ("9:21", (624, 1440))])
def test_an_aspect_ratio_sets_a_one_megapixel_size_over_width_and_height(server, ratio, size):
    body = ok(server(T2I).predict({**FAST, "num_inference_steps": 1, "aspect_ratio": ratio}))
    assert decode_image(only(body)).size == size  # FAST's 256x256 is not used
    assert body["metrics"]["aspect_ratio"] == ratio


@pytest.mark.parametrize("field,value,words", [("aspect_ratio", "2:1", "not one of"),
                                               ("width", 9999, "maximum of 1440"), ("height", 64, "minimum of 256"),
                                               ("num_inference_steps", 0, "minimum of 1"), ("guidance_scale", 11, "maximum"),
                                               ("output_format", "gif", "not one of"), ("seed", -1, "minimum of 0"),
                                               ("num_outputs", 5, "maximum of 4"), ("num_outputs", 0, "minimum of 1")])
def test_out_of_range_inputs_are_rejected_by_the_server(server, field, value, words):
    assert words in rejected(server(T2I).predict({**FAST, field: value}), field)


def test_missing_prompt_is_rejected(server):
    rejected(server(T2I).predict({"num_inference_steps": 2}), "prompt")


def test_unknown_trigger_fails_clearly_and_the_server_keeps_serving(server):
    body = failed(server(T2I).predict({**FAST, "trigger_word": "Vaporwave"}))
    assert "trigger_word" in body["error"] and "GHIBSKY" in body["error"] and "Cinematic" in body["error"]
    ok(server(T2I).predict(FAST))


def test_a_prompt_longer_than_t5_reads_is_refused_not_cut_and_the_server_keeps_serving(server):
    # Tiny weights read 64 T5 tokens (FLUX.1-dev: 512); diffusers would drop the rest without a word.
    words = "a lighthouse on a cliff at sunset "
    body = failed(server(T2I).predict({**FAST, "prompt": words * 12}))
    assert body["error"].count("prompt") and "T5 tokens" in body["error"] and "at most 64" in body["error"]
    body = failed(server(T2I).predict({**FAST, "prompt": "x" * 1_000_000}))  # refused before tokenizing
    assert "1000000 characters" in body["error"]  # the character rule: the tokenizer never ran
    ok(server(T2I).predict({**FAST, "prompt": words * 2}))  # fits


def test_png_outputs_say_how_they_were_made(server, example_image):
    import json

    body = ok(server(T2I).predict({**FAST, "trigger_word": "anime", "guidance_scale": 4.0}))
    text = decode_image(only(body)).text
    made = json.loads(text["generation"])
    assert made["prompt"].endswith("a lighthouse") and "Anime" in made["prompt"]  # as the model read it
    assert (made["Seed"], made["Steps"], made["Distilled CFG Scale"], made["Size"]) == (5, 2, 4.0, "256x256")
    assert made["Lora"] == "open_image_preferences" and "@" in made["Model"] and "@" in made["Lora revision"]
    assert text["parameters"].startswith(made["prompt"] + "\n") and "Seed: 5, Size: 256x256" in text["parameters"]
    img2img = json.loads(decode_image(only(ok(server(I2I).predict(
        {**FAST, "image": example_image, "strength": 0.75, "num_inference_steps": 4})))).text["generation"])
    assert img2img["Denoising strength"] == 0.75 and img2img["Lora"] == "none"


def test_image_to_image_keeps_the_input_size_rounded(server, example_image):
    body = ok(server(I2I).predict({"image": example_image, "prompt": "a village", "num_inference_steps": 2, "seed": 1}))
    assert decode_image(only(body)).size == (336, 256)  # 320x240 grown to a 256 short side, 4:3 kept
    assert body["metrics"]["input_size"] == "320x240"


def test_strength_changes_how_far_the_image_moves(server, example_image):
    common = {"image": example_image, "prompt": "a village", "num_inference_steps": 4, "seed": 1}
    low = pixels(ok(server(I2I).predict({**common, "strength": 0.3})))
    high = pixels(ok(server(I2I).predict({**common, "strength": 1.0})))
    assert np.abs(low - high).mean() > 1


def test_image_to_image_lora_switch_changes_pixels(server, example_image):
    common = {"image": example_image, "prompt": "a village", "num_inference_steps": 2, "seed": 1}
    a = pixels(ok(server(I2I).predict({**common, "trigger_word": "Manga"})))
    b = pixels(ok(server(I2I).predict({**common, "trigger_word": "GHIBSKY"})))
    assert np.abs(a - b).mean() > 1


def test_an_undecodable_image_fails_naming_the_field_and_the_server_keeps_serving(server, example_image):
    not_an_image = "data:image/png;base64,aGVsbG8gd29ybGQ="
    body = failed(server(I2I).predict({"image": not_an_image, "prompt": "x", "num_inference_steps": 2}))
    assert body["error"].count("image: could not be decoded") >= 1
    ok(server(I2I).predict({"image": example_image, "prompt": "x", "num_inference_steps": 2}))


def test_strength_too_low_for_any_step_fails_naming_the_field(server, example_image):
    body = failed(server(I2I).predict({"image": example_image, "prompt": "x", "num_inference_steps": 2, "strength": 0.2}))
    assert "strength" in body["error"] and "0.500" in body["error"]


def test_img2img_strength_out_of_range_is_rejected(server, example_image):
    assert "maximum of 1" in rejected(server(I2I).predict({"image": example_image, "prompt": "x", "strength": 1.5}), "strength")


def test_a_users_own_lora_is_served_and_a_bad_one_is_an_input_error(server, tmp_path):
    """`lora_weights`: a URL the server downloads, checks and hot-swaps in; one that does not fit fails the
    prediction naming the field, and the server keeps serving."""
    import torch
    from diffusers import FluxPipeline

    from shared import catalog
    from shared.builders import flux as flux_builder
    from tests.mirror_server import MirrorServer
    from tests.unit.test_user_lora import lora_bytes

    tiny = flux_builder.build_random(catalog.get(T2I), tiny=True, device="cpu", dtype=torch.float32,
                                     pipeline_cls=FluxPipeline).transformer
    with MirrorServer(tmp_path, prefix="/files") as files:
        good, too_big = files.add("mine.safetensors", lora_bytes(tiny)), files.add("r32.safetensors", lora_bytes(tiny, rank=32))
        base = ok(server(T2I).predict(FAST))
        mine = ok(server(T2I).predict({**FAST, "lora_weights": good}))
        assert mine["metrics"]["lora"] == "user" and np.abs(pixels(mine) - pixels(base)).mean() > 1.0
        made = decode_image(only(mine)).text["parameters"]  # the LoRA by its cache key: a URL may be signed
        assert "Lora: user " in made and files.url not in made and "mine.safetensors" not in made
        body = failed(server(T2I).predict({**FAST, "lora_weights": too_big}))
        assert "lora_weights: layer" in body["error"] and "rank 32, the slot holds at most 16" in body["error"]
        both = failed(server(T2I).predict({**FAST, "lora_weights": good, "trigger_word": "Anime"}))
        assert "not both" in both["error"]
        assert np.array_equal(pixels(ok(server(T2I).predict({**FAST, "lora_weights": good}))), pixels(mine))


@pytest.mark.parametrize("name", [I2I, "gemma3-4b-it"])
def test_a_path_on_the_server_is_never_read_as_the_image(server, name):
    """Only what the client sent: a server path is refused with one message, whether the file exists or not."""
    base = {"prompt": "a cat", "num_inference_steps": 2} if name == I2I else {"prompt": "what is it?", "max_new_tokens": 4}
    example = EXAMPLES / "landscape.png"
    errors = [failed(server(name).predict({**base, "image": path}))["error"]
              for path in ("/etc/passwd", "/etc/nonexistent", str(example))]
    assert len(set(errors)) == 1 and "image: must be an uploaded file, a data: URI or an http(s) URL" in errors[0]
    assert ok(server(name).predict({**base, "image": to_data_uri(example)}))


def test_huge_input_images_leave_no_memory_behind(server, example_image, tmp_path):
    """A 12000x12000 PNG (a few hundred KB) once grew the worker from 1.05 to 4.6 GB and kept it. Images are
    decoded at most 4096 px a side; after three of them the worker is back near where it was."""
    huge = huge_png_uri(tmp_path)
    s = server(I2I)
    common = {"prompt": "a village", "num_inference_steps": 2, "seed": 1}
    ok(s.predict({**common, "image": example_image}))
    before = worker_rss_mb(s)
    for _ in range(3):
        body = ok(s.predict({**common, "image": huge}))
        assert body["metrics"]["input_size"] == "4096x4096"  # reduced as it was decoded
    grown = worker_rss_mb(s) - before
    assert grown < 400, f"the worker kept {grown:.0f} MB after three 12000x12000 inputs"
