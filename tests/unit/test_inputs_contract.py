"""Inputs are written out in each predict.py (what `cog build` can read) and defined once in shared/inputs.py:
an input of a shared name has exactly the shared fields, and no name is shared without a definition there."""

from collections import Counter

import pytest

from shared import catalog, inputs, schema

NAMES = list(catalog.DEPLOYMENTS)


@pytest.fixture(scope="module")
def runtime_inputs():
    return {name: schema.predictor_inputs(catalog.get(name).folder) for name in NAMES}


def drift(name: str, fields: dict) -> dict:
    """{input.field: (in predict.py, in shared/inputs.py)} for every shared field that differs."""
    contract = inputs.contract(catalog.get(name))
    wrong = {}
    for field_name, field in fields.items():
        for attr, want in contract.get(field_name, {}).items():
            got = getattr(field, attr)
            if (list(got) if attr == "choices" else got) != want:
                wrong[f"{field_name}.{attr}"] = (got, want)
    return wrong


@pytest.mark.parametrize("name", NAMES)
def test_each_shared_input_has_the_contracts_fields(runtime_inputs, name):
    assert drift(name, runtime_inputs[name]) == {}, f"{name}/predict.py differs from shared/inputs.py"


def test_every_input_name_used_twice_is_defined_once(runtime_inputs):
    counts = Counter(field for fields in runtime_inputs.values() for field in fields)
    shared = {field for field, n in counts.items() if n > 1}
    assert shared <= set(inputs.contract(catalog.get("flux-lora-txt2img"))), shared - set(inputs.SHARED)


def test_a_drifted_literal_is_reported(predict_variant):
    # A copy-paste slip in one predict.py: a seed bound and a choice that no longer match the table.
    folder = predict_variant("flux-lora-img2img", "le=4294967295", "le=2147483647")
    text = (folder / "predict.py").read_text().replace('choices=["png", "webp", "jpg"]', 'choices=["png", "jpg"]')
    (folder / "predict.py").write_text(text)
    assert set(drift("flux-lora-img2img", schema.predictor_inputs(folder))) == {"seed.le", "output_format.choices"}
