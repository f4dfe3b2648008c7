"""Canary building blocks: schema compatibility and output sanity, each shown to pass and to fail."""

import copy
import io

import numpy as np
import pytest

from canary import schema_compat, sanity
from shared import schema
from shared.catalog import DEPLOYMENTS
from tests.conftest import png_bytes


_schema = schema.committed


@pytest.mark.parametrize("name", list(DEPLOYMENTS))
def test_an_identical_schema_is_compatible(name):
    assert schema_compat.compare(_schema(name), _schema(name)) == []


def _planted(name, change):
    candidate = copy.deepcopy(_schema(name))
    change(candidate["components"]["schemas"])
    return schema_compat.compare(_schema(name), candidate)


def test_a_removed_input_is_breaking():
    findings = _planted("flux-lora-txt2img", lambda c: c["Input"]["properties"].pop("guidance_scale"))
    assert [(f.input, f.kind) for f in findings] == [("guidance_scale", "removed")]


def test_a_narrowed_range_is_breaking_and_a_widened_one_is_not():
    narrowed = _planted("smollm3-3b", lambda c: c["Input"]["properties"]["max_new_tokens"].update(maximum=4096))
    assert [(f.input, f.kind) for f in narrowed] == [("max_new_tokens", "narrowed")]
    assert _planted("smollm3-3b", lambda c: c["Input"]["properties"]["max_new_tokens"].update(maximum=32768)) == []


def test_a_changed_default_is_breaking_unless_allowed():
    def change(c):
        c["Input"]["properties"]["temperature"]["default"] = 0.3

    assert [f.kind for f in _planted("phi4-reasoning-plus", change)] == ["default"]
    candidate = copy.deepcopy(_schema("phi4-reasoning-plus"))
    change(candidate["components"]["schemas"])
    assert schema_compat.compare(_schema("phi4-reasoning-plus"), candidate, allow_default_changes=True) == []


def test_a_changed_output_type_is_breaking_unless_allowed_and_its_words_are_not():
    one_file = {"title": "Output", "type": "string", "format": "uri"}  # the FLUX output before num_outputs
    stable = copy.deepcopy(_schema("flux-lora-txt2img"))
    stable["components"]["schemas"]["Output"] = one_file
    findings = schema_compat.compare(stable, _schema("flux-lora-txt2img"))
    assert [(f.input, f.kind) for f in findings] == [("(output)", "output")] and "array" in findings[0].detail
    assert schema_compat.compare(stable, _schema("flux-lora-txt2img"), allow_output_change=True) == []
    assert _planted("flux-lora-txt2img", lambda c: c["Output"].update(title="Images", description="new words")) == []


def test_a_removed_choice_and_a_new_required_input_are_breaking():
    findings = _planted("smollm3-3b", lambda c: c["mode"].update(enum=["no_think"]))
    assert [(f.input, f.kind) for f in findings] == [("mode", "choices")]

    def add_required(c):
        c["Input"]["properties"]["style"] = {"type": "string"}
        c["Input"]["required"].append("style")

    assert [(f.input, f.kind) for f in _planted("smollm3-3b", add_required)] == [("style", "required")]


def test_a_new_optional_input_is_compatible():
    def add_optional(c):
        assert "answer_language" not in c["Input"]["properties"]  # new, not a change to an existing input
        c["Input"]["properties"]["answer_language"] = {"type": "string"}

    assert _planted("gemma3-4b-it", add_optional) == []


# -- output sanity -------------------------------------------------------------------------------

def test_a_real_generated_image_is_sane(runners):
    flux = runners("flux-lora-txt2img")
    route = flux.router.route("Anime")
    image, _ = flux.generate_image({"prompt": "a cat", "width": 256, "height": 256}, steps=2, guidance=3.5, seed=1, route=route)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    assert sanity.image_problems(buf.getvalue(), expected_size=(256, 256), expected_format="PNG") == []


@pytest.mark.parametrize("array,problem", [(np.zeros((64, 64, 3)), "black"), (np.full((64, 64, 3), 180), "uniform")])
def test_black_and_uniform_images_are_caught(array, problem):
    assert any(p.startswith(problem) for p in sanity.image_problems(png_bytes(array)))


def test_wrong_size_format_and_garbage_are_caught():
    noisy = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 96, 3)))
    problems = sanity.image_problems(noisy, expected_size=(64, 64), expected_format="JPEG")
    assert any("size 96x64" in p for p in problems) and any("format PNG" in p for p in problems)
    assert sanity.image_problems(b"not an image")[0].startswith("does not decode")


def test_ordinary_text_is_sane_and_bad_text_is_caught():
    assert sanity.text_problems("The sky is blue because air scatters short wavelengths more than long ones.") == []
    assert sanity.text_problems("   ") == ["empty"]
    assert sanity.text_problems(b"\xff\xfe broken") == ["not valid UTF-8"]
    assert any(p.startswith("degenerate") for p in sanity.text_problems("I am a robot. " * 40))
    assert any("more than 10" in p for p in sanity.text_problems("a reasonably long answer", max_chars=10))
