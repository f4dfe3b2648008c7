"""The committed OpenAPI schemas are current and carry the input contract of each deployment."""


import pytest

from shared import schema
from shared.catalog import DEPLOYMENTS


def _inputs(name):
    doc = schema.committed(name)
    return doc, doc["components"]["schemas"]["Input"]


@pytest.mark.parametrize("name", list(DEPLOYMENTS))
def test_committed_schema_matches_the_predictor(name):
    committed = (DEPLOYMENTS[name].folder / schema.SCHEMA_PATH).read_text()
    assert committed == schema.render(schema.build(DEPLOYMENTS[name])), "stale: run `make schemas`"


def test_stale_check_fails_on_a_changed_schema(tmp_path, monkeypatch):
    dep = DEPLOYMENTS["phi4-reasoning-plus"]
    path = dep.folder / schema.SCHEMA_PATH
    original = path.read_text()
    try:
        path.write_text(original.replace('"default": 2048', '"default": 999'))
        assert schema.main(["--check", dep.name]) == 1
    finally:
        path.write_text(original)
    assert schema.main(["--check", dep.name]) == 0


# name: {input: (default, minimum, maximum)} as the issue fixes them
CONTRACT = {
    "flux-lora-txt2img": {"height": (768, 256, 1440), "width": (768, 256, 1440), "num_inference_steps": (30, 1, 50),
                          "guidance_scale": (3.5, 0, 10), "output_quality": (90, 1, 100)},
    "flux-lora-img2img": {"strength": (0.7, 0, 1), "num_inference_steps": (30, 1, 50), "guidance_scale": (3.5, 0, 10)},
    "smollm3-3b": {"max_new_tokens": (512, 1, 16384), "temperature": (0.7, 0, 2), "top_p": (0.9, 0, 1)},
    "phi4-reasoning-plus": {"max_new_tokens": (2048, 1, 16384), "temperature": (0.7, 0, 2), "top_p": (0.95, 0, 1)},
    "gemma3-4b-it": {"max_new_tokens": (256, 1, 8192), "temperature": (0.7, 0, 2), "top_p": (0.9, 0, 1)},
}
REQUIRED = {"flux-lora-txt2img": ["prompt"], "flux-lora-img2img": ["image", "prompt"], "smollm3-3b": ["prompt"],
            "phi4-reasoning-plus": ["prompt"], "gemma3-4b-it": ["image", "prompt"]}


@pytest.mark.parametrize("name", list(DEPLOYMENTS))
def test_defaults_and_ranges_are_the_published_contract(name):
    _, inp = _inputs(name)
    for field, (default, lo, hi) in CONTRACT[name].items():
        prop = inp["properties"][field]
        assert (prop["default"], prop["minimum"], prop["maximum"]) == (default, lo, hi), field
    assert inp["required"] == REQUIRED[name]
    assert inp["properties"]["seed"].get("nullable") is True


def test_choices_are_enumerations():
    doc, inp = _inputs("smollm3-3b")
    assert inp["properties"]["mode"]["default"] == "no_think"
    assert doc["components"]["schemas"]["mode"]["enum"] == ["no_think", "think"]
    doc, _ = _inputs("flux-lora-txt2img")
    assert doc["components"]["schemas"]["output_format"]["enum"] == ["png", "webp", "jpg"]


@pytest.mark.parametrize("name,streams", [("flux-lora-txt2img", False), ("smollm3-3b", True), ("gemma3-4b-it", True),
                                          ("phi4-reasoning-plus", True)])
def test_text_deployments_declare_streaming(name, streams):
    doc, _ = _inputs(name)
    assert bool(doc["paths"]["/predictions"]["post"].get("x-cog-streaming")) is streams
