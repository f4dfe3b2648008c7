"""shared.request_guard: which requests reach Cog's server. The server side is in
tests/integration/test_cog_server_behaviour.py (the guarded server keeps serving after every such id)."""

import json

import pytest

from shared.request_guard import creates_prediction, input_problem, json_body, request_id_problem

BAD_IDS = ["a\u0000b", "x" * 129, "é" * 200, "../../x/y", "/etc/x", "a.b", "", 5, ["a"]]
GOOD_IDS = ["rrr4z55ocneqzikepnug6xezpe", "0b1c3a9e-7d7e-4bb0-9d0a-6a1b6c1f2e3d", "x" * 128, "a_b-C"]


def body(prediction_id) -> dict:
    return json_body(json.dumps({"id": prediction_id, "input": {"prompt": "hi"}}).encode())


@pytest.mark.parametrize("prediction_id", BAD_IDS)
@pytest.mark.parametrize("path", ["/predictions", "/trainings", "/predictions/ok"])
def test_an_id_in_the_body_that_cannot_be_a_folder_name_is_refused(prediction_id, path):
    method = "PUT" if path.count("/") == 2 else "POST"
    loc, problem = request_id_problem(method, path, body(prediction_id))
    assert loc == ["body", "id"] and "prediction id" in problem and "1 to 128" in problem


@pytest.mark.parametrize("raw", ["c%00d", "..%2F..%2Fx", "%2Fetc", "x" * 129, "%C3%A9" * 3, "%ff", "a.b"])
def test_an_id_in_the_path_is_read_as_the_server_decodes_it(raw):
    assert request_id_problem("PUT", f"/predictions/{raw}", {"input": {}})[0] == ["path", "id"]


@pytest.mark.parametrize("prediction_id", GOOD_IDS + [None])
def test_ids_that_fit_and_no_id_pass(prediction_id):
    assert request_id_problem("POST", "/predictions", body(prediction_id)) is None
    if prediction_id is not None:
        assert request_id_problem("PUT", f"/predictions/{prediction_id}?x=1", {"input": {}}) is None


@pytest.mark.parametrize("method,path,data", [
    ("POST", "/predictions", b"not json"),              # the server answers this itself
    ("POST", "/predictions", b'["a\\u0000b"]'),          # JSON, but no object: no id in it
    ("POST", "/predictions", b"\xff\xfe"),               # not even text
    ("POST", "/predictions/a%00b/cancel", b""),          # cancelling makes no folder
    ("GET", "/health-check", b""),
])
def test_requests_that_create_nothing_pass_unread(method, path, data):
    assert request_id_problem(method, path, json_body(data)) is None


PROPERTIES = {"prompt": {"type": "string"}, "seed": {"type": "integer", "nullable": True},
              "max_new_tokens": {"type": "integer", "default": 512}}


def test_null_for_a_nullable_input_is_left_out_as_the_schema_says():
    document = {"input": {"prompt": "hi", "seed": None}}
    assert input_problem(document, PROPERTIES) is None
    assert document == {"input": {"prompt": "hi"}}


def test_null_for_an_input_that_is_not_nullable_goes_on_for_the_server_to_refuse():
    document = {"input": {"prompt": None, "max_new_tokens": None}}
    assert input_problem(document, PROPERTIES) is None and document["input"] == {"prompt": None, "max_new_tokens": None}


def test_an_input_the_schema_does_not_name_is_refused_naming_it_and_the_inputs():
    loc, problem = input_problem({"input": {"prompt": "hi", "max_new_token": 3}}, PROPERTIES)
    assert loc == ["body", "input", "max_new_token"]
    assert problem.startswith("max_new_token is not an input") and "prompt, seed, max_new_tokens" in problem


@pytest.mark.parametrize("method,path,creates", [
    ("POST", "/predictions", True), ("POST", "/predictions?x=1", True), ("PUT", "/predictions/abc", True),
    ("POST", "/predictions/abc/cancel", False), ("GET", "/predictions/abc", False), ("POST", "/trainings", False),
])
def test_which_requests_carry_a_models_input(method, path, creates):
    assert creates_prediction(method, path) is creates
