"""Canary case files: present for every deployment, valid for its committed schema, covering what issue 4 asks."""

import copy
import json

import pytest
from PIL import Image

from canary import cases
from shared.catalog import DEPLOYMENTS, EXAMPLES
from shared.flux import MAX_SIDE, MIN_SIDE, SIZE_MULTIPLE
from shared.images import fit_size
from shared.schema import committed as _schema


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_every_case_is_valid_for_the_committed_schema(name):
    loaded = cases.load(name)
    assert loaded, f"{name} has no canary case"
    for case in loaded:
        assert cases.invalid_for(case, _schema(name)) == [], case.name
        assert case.expect["kind"] in ("image", "text")


@pytest.mark.parametrize("name", ["flux-lora-txt2img", "flux-lora-img2img"])
def test_image_deployments_have_a_trigger_and_a_no_trigger_case_with_fixed_seeds(name):
    loaded = cases.load(name)
    assert any("trigger_word" in c.input for c in loaded) and any("trigger_word" not in c.input for c in loaded)
    assert all("seed" in c.input for c in loaded)


@pytest.mark.parametrize("name", ["flux-lora-img2img", "gemma3-4b-it"])
def test_image_inputs_are_files_shipped_in_the_repo_and_sizes_follow_them(name):
    for case in cases.load(name):
        ref = case.input["image"]
        assert ref.startswith("@") and (EXAMPLES / ref[1:]).is_file()
        assert case.request()["image"].startswith("data:image/png;base64,")
        if case.expect["kind"] == "image":
            with Image.open(EXAMPLES / ref[1:]) as im:
                assert list(fit_size(im.width, im.height, multiple=SIZE_MULTIPLE, max_side=MAX_SIDE,
                                     min_side=MIN_SIDE)) == case.expect["size"]


def test_a_schema_that_narrows_a_range_or_drops_a_choice_rejects_the_case():
    schema = _schema("flux-lora-txt2img")
    webp = next(c for c in cases.load("flux-lora-txt2img") if c.name == "webp")
    narrowed = copy.deepcopy(schema)
    narrowed["components"]["schemas"]["Input"]["properties"]["width"]["maximum"] = 512
    assert any(e.startswith("width:") for e in cases.invalid_for(webp, narrowed))
    no_webp = copy.deepcopy(schema)
    enum_holder = json.dumps(no_webp)
    assert '"webp"' in enum_holder
    no_webp = json.loads(enum_holder.replace('"webp", ', "").replace(', "webp"', ""))
    assert any(e.startswith("output_format:") for e in cases.invalid_for(webp, no_webp))


def test_a_file_for_another_deployment_is_refused(tmp_path, monkeypatch):
    (tmp_path / "smollm3-3b.json").write_text(json.dumps({"version": 1, "deployment": "gemma3-4b-it", "cases": []}))
    monkeypatch.setattr(cases, "CASES", tmp_path)
    with pytest.raises(ValueError, match="says deployment 'gemma3-4b-it'"):
        cases.load("smollm3-3b")
