"""A bounded subset of the fuzz run (tests/fuzz.py) against each deployment's real server, in every CI run.

The full run (300+ requests per deployment) is `python -m tests.fuzz <deployment>`; its last result is in
docs/operations.md. A planted fault shows the judge can fail (test_the_judge_...)."""

import random

import pytest

from shared import catalog
from tests import fuzz

SUBSET = 60  # requests per deployment: ~10-30 s each on tiny weights


@pytest.mark.parametrize("name", sorted(catalog.DEPLOYMENTS))
def test_fuzzed_requests_keep_every_promise_and_the_server_serving(server, name):
    report = fuzz.run(name, server(name).url, SUBSET, seed=7, log=lambda *_: None)
    assert report.sent == SUBSET
    assert not report.violations, report.violations[:5]
    assert {k.split(":")[0] for k in report.outcomes} >= {"valid", "hostile", "invalid"}


def test_the_judge_catches_a_5xx_a_stuck_slot_a_refused_valid_input_and_an_error_without_its_field():
    class Response:
        def __init__(self, status_code, body=None, text=""):
            self.status_code, self._body, self.text = status_code, body or {}, text

        def json(self):
            return self._body

    gen = fuzz.Generator("smollm3-3b", random.Random(1))
    valid = fuzz.Case("valid", {"input": gen.valid_input()})
    hostile = fuzz.Case("hostile", {"input": {**gen.valid_input(), "temperature": 0.0}}, "temperature")
    assert fuzz.judge(valid, Response(500), "smollm3-3b") == "HTTP 500"
    assert "stuck" in fuzz.judge(valid, Response(409), "smollm3-3b")
    assert "refused" in fuzz.judge(valid, Response(422, text="seed: bad"), "smollm3-3b")
    assert "valid input failed" in fuzz.judge(valid, Response(200, {"status": "failed", "error": "boom"}), "smollm3-3b")
    assert "without naming it" in fuzz.judge(hostile, Response(200, {"status": "failed", "error": "boom"}), "smollm3-3b")
    assert fuzz.judge(hostile, Response(200, {"status": "failed", "error": "temperature: too low"}), "smollm3-3b") is None
    assert fuzz.judge(valid, Response(200, {"status": "succeeded", "output": ["hi"]}), "smollm3-3b") is None
    assert "without an output" in fuzz.judge(valid, Response(200, {"status": "succeeded", "output": []}), "smollm3-3b")
    hidden_only = {"status": "succeeded", "output": [], "metrics": {"output_token_count": 1}}
    assert fuzz.judge(valid, Response(200, hidden_only), "smollm3-3b") is None
