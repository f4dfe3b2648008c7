"""What `cog build` sees: every predict.py passes Cog's static schema generator, and the schema it derives
is the committed one (which the server validates against), input by input.

`cog build` cannot run here (no Docker, no Cog CLI): tests/cog_static_schema.py is a port of its generator.
It reads predict.py's source, so an input it cannot resolve fails the build, and one it half-reads (an
f-string description, bounds passed through **kwargs) silently loses those fields. The committed schema
comes from the predictor as Python runs it (shared/schema.py): any such loss makes the two differ.
"""

import re

import pytest
import yaml

from shared import catalog, schema
from tests.cog_static_schema import StaticSchemaError, generate_openapi, parse
from tests.conftest import ROOT

NAMES = list(catalog.DEPLOYMENTS)


def static_schema(folder, name) -> dict:
    """What `cog build -f deployments/<name>/cog.yaml`, run from the repo root (the build context), derives
    from the predict.py in `folder`: the Input, Output and enumeration schemas, and whether it streams."""
    class_name = yaml.safe_load((ROOT / "deployments" / name / "cog.yaml").read_text())["run"].partition(":")[2]
    source, path = (folder / "predict.py").read_text(), (folder / "predict.py").relative_to(ROOT).as_posix()
    document = generate_openapi(source, class_name, source_dir=str(ROOT), source_path=path)
    return {"components": parse(source, class_name, source_dir=str(ROOT), source_path=path),
            "streams": bool(document["paths"]["/predictions"]["post"].get("x-cog-streaming"))}


def differences(static: dict, runtime: dict) -> list[str]:
    """Every schema and the streaming flag where what cog build derives and the runtime schema disagree."""
    found = []
    s, r = static["components"], runtime["components"]["schemas"]
    for key, value in s.items():
        if key == "Input":
            for field in sorted(set(value["properties"]) | set(r["Input"]["properties"])):
                a, b = value["properties"].get(field), r["Input"]["properties"].get(field)
                if a != b:
                    keys = sorted(k for k in set(a or {}) | set(b or {}) if (a or {}).get(k, "-") != (b or {}).get(k, "-"))
                    found.append(f"input {field}: {keys}")
            if value.get("required", []) != r["Input"].get("required", []):
                found.append(f"required: {value.get('required')} != {r['Input'].get('required')}")
        elif value != r.get(key):
            found.append(f"component {key}")
    if static["streams"] != bool(runtime["paths"]["/predictions"]["post"].get("x-cog-streaming")):
        found.append("x-cog-streaming")
    return found


@pytest.mark.parametrize("name", NAMES)
def test_cog_build_resolves_every_input_to_the_committed_schema(name):
    static = static_schema(catalog.get(name).folder, name)
    assert differences(static, schema.committed(name)) == []


@pytest.mark.parametrize("name", NAMES)
def test_cog_yaml_pins_the_sdk_and_names_the_runner(name):
    config = yaml.safe_load((ROOT / "deployments" / name / "cog.yaml").read_text())
    assert config["run"] == f"deployments/{name}/predict.py:Runner"
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(config["build"].get("sdk_version", ""))), "pin build.sdk_version"
    cpu_cog = re.search(r"^cog==(\S+)", (ROOT / "requirements" / "cpu.txt").read_text(), re.M)[1]
    assert config["build"]["sdk_version"] == cpu_cog, "the image's SDK is the one the tests run"


# -- counter-examples: what the port must refuse or expose --------------------------------------------------------

def test_an_imported_default_fails_the_build(predict_variant):
    folder = predict_variant("smollm3-3b", 'prompt: str = Input(description="What to generate.", min_length=1)',
                     "prompt: str = inputs.PROMPT")
    with pytest.raises(StaticSchemaError, match=r"parameter 'prompt': default `inputs.PROMPT` cannot be statically resolved"):
        static_schema(folder, "smollm3-3b")


def test_an_f_string_description_and_kwargs_bounds_are_lost_and_caught(predict_variant):
    old = 'height: int = Input(default=768, ge=256, le=1440, description="Height in pixels (rounded to a multiple of 16)."),'
    new = ('height: int = Input(default=768, **dict(ge=256, le=1440), '
           'description=f"Height in pixels (rounded to a multiple of {16})."),')
    folder = predict_variant("flux-lora-txt2img", old, new)
    found = differences(static_schema(folder, "flux-lora-txt2img"), schema.build(catalog.get("flux-lora-txt2img"), folder))
    assert found == ["input height: ['description', 'maximum', 'minimum']"]


def test_adjacent_string_literals_reach_users_with_quotes_inside(predict_variant):
    old = 'description="Maximum number of tokens to generate."'
    folder = predict_variant("phi4-reasoning-plus", old, 'description="Maximum number of " "tokens to generate."')
    static = static_schema(folder, "phi4-reasoning-plus")
    assert static["components"]["Input"]["properties"]["max_new_tokens"]["description"] == \
        'Maximum number of " "tokens to generate.'
    assert differences(static, schema.build(catalog.get("phi4-reasoning-plus"), folder)) == \
        ["input max_new_tokens: ['description']"]
