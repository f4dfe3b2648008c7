"""Canary parts on their own: pins, target parsing, retry policy, semantic metrics, verdict logic, report."""

import json

import httpx
import numpy as np
import pytest
from replicate.exceptions import ReplicateError

from canary import pins, report, runner, sanity, semantic
from canary import thresholds as T
from canary.targets import CogTarget, ReplicateTarget, TargetError, is_transient, parse
from shared.catalog import DEPLOYMENTS
from shared.cogserver import data_uri
from tests.conftest import png_bytes


def test_one_pin_per_deployment_and_each_pin_is_a_version_of_its_own_model():
    pinned = pins.read()
    assert set(pinned) == set(DEPLOYMENTS)
    for name, ref in pinned.items():
        assert ref is None or pins.problem(name, ref) is None, (name, ref)


def test_a_pin_must_be_a_version_of_the_deployments_own_model(tmp_path):
    assert pins.problem("smollm3-3b", "cog-deployments/smollm3-3b:abc123") is None
    assert "not of smollm3-3b's model" in pins.problem("smollm3-3b", "cog-deployments/gemma3-4b-it:abc123")
    assert "only versions can be pinned" in pins.problem("smollm3-3b", "http://127.0.0.1:5000")
    with pytest.raises(LookupError, match="no stable pin"):
        pins.stable("smollm3-3b", _pins_file(tmp_path, {"smollm3-3b": None}))
    pinned = _pins_file(tmp_path, {"smollm3-3b": None})
    pins.pin("smollm3-3b", "cog-deployments/smollm3-3b:abc123", pinned)
    assert pins.stable("smollm3-3b", pinned) == "cog-deployments/smollm3-3b:abc123"


def _pins_file(folder, stable):
    path = folder / "pins.json"
    path.write_text(json.dumps({"version": 1, "stable": stable}))
    return path


def test_targets_are_read_from_their_three_forms():
    assert isinstance(parse("http://127.0.0.1:5000/"), CogTarget) and str(parse("http://127.0.0.1:5000/")) == "http://127.0.0.1:5000"
    version = parse("cog-deployments/smollm3-3b:5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa")
    assert isinstance(version, ReplicateTarget) and version.model == "cog-deployments/smollm3-3b"
    deployment = parse("deployment:cog-deployments/smollm3-3b")
    assert deployment.deployment == "cog-deployments/smollm3-3b" and deployment.version is None
    for bad in ("smollm3-3b", "cog-deployments/smollm3-3b", "ftp://x"):
        with pytest.raises(TargetError, match="cannot read target"):
            parse(bad)


@pytest.mark.parametrize("exc,transient", [
    (ReplicateError(status=503), True), (ReplicateError(status=429), True), (ReplicateError(status=500), True),
    (httpx.ConnectError("refused"), True),
    (ReplicateError(status=401), False), (ReplicateError(status=404), False), (ReplicateError(status=422), False),
    (ValueError("bug"), False),
])
def test_only_transient_failures_are_retried(exc, transient):
    assert is_transient(exc) is transient


def test_text_similarity_separates_a_paraphrase_from_an_unrelated_answer():
    a = "The sky looks blue because air molecules scatter short blue wavelengths of sunlight more than red ones."
    paraphrase = "Sunlight's blue light is scattered by the air much more than red light, so the sky appears blue."
    unrelated = "To bake bread, mix flour, water, yeast and salt, then let the dough rise for an hour."
    assert semantic.text_similarity(a, paraphrase) >= T.MIN_TEXT_SIMILARITY
    assert semantic.text_similarity(a, unrelated) < T.MIN_TEXT_SIMILARITY


def test_ssim_accepts_numerical_noise_and_rejects_another_image():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:128, 0:128]
    scene = np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.float64) + rng.normal(0, 20, (128, 128, 3))
    scene = scene.clip(0, 255)
    jitter = (scene + rng.normal(0, 2, scene.shape)).clip(0, 255)  # a new kernel's rounding
    other = rng.uniform(0, 255, scene.shape)
    assert semantic.image_ssim(png_bytes(scene), png_bytes(scene)) == pytest.approx(1.0)
    assert semantic.image_ssim(png_bytes(scene), png_bytes(jitter)) >= T.MIN_IMAGE_SSIM
    assert semantic.image_ssim(png_bytes(scene), png_bytes(other)) < T.MIN_IMAGE_SSIM
    assert semantic.image_ssim(png_bytes(scene), png_bytes(scene[:64])) is None


def test_a_loop_without_spaces_is_degenerate_and_varied_glued_text_is_not():
    assert any(p.startswith("degenerate") for p in sanity.text_problems("ab1xq!Zr7" * 30))
    rng = np.random.default_rng(1)
    varied = "".join(chr(c) for c in rng.integers(0x4E00, 0x4E00 + 3000, 200))  # 200 CJK characters, no spaces
    assert sanity.text_problems(varied) == []


def _outcome(*verdicts):
    out = runner.Outcome("smollm3-3b", "a", "b", 2, 3)
    for v in verdicts:
        out.add("case", "check", "s", "c", v, "why")
    return out


def test_exit_code_is_zero_only_when_every_check_passes():
    assert _outcome("pass", "pass").exit_code == 0
    assert _outcome("pass", "regression", "error").exit_code == 1
    assert _outcome("pass", "error").exit_code == 2
    assert _outcome().exit_code == 2  # nothing checked is not a pass


def test_report_rows_escape_table_syntax_and_the_token_is_redacted(monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_secret")
    out = runner.Outcome("smollm3-3b", "a", "b", 2, 3)
    out.add("case", "functional", "ok", "failed", "regression", "error | with pipe\nand r8_secret inside")
    md = report.markdown(out)
    assert "error \\| with pipe and *** inside" in md and "r8_secret" not in md
    assert len(md.splitlines()) == 7  # headline, blank, targets, blank, header, rule, one row


class _Target:
    """An in-memory target: a fixed schema and a fixed answer (the tier-3 tests use real Cog servers)."""

    kind = "memory"

    def __init__(self, output, schema_of="flux-lora-txt2img"):
        from shared.schema import committed

        self.output, self.openapi = output, committed(schema_of)

    def schema(self):
        return self.openapi

    def predict(self, inputs):
        from canary.targets import Prediction

        return Prediction("succeeded", self.output, predict_time=0.1)

    def fetch(self, output):
        from canary.targets import output_bytes

        return output_bytes(output)


def _image_uri(size):
    noise = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3))
    return data_uri(png_bytes(noise), "image/png")


@pytest.mark.parametrize("bad_output,check", [
    ("data:image/png;base64,bm90IGFuIGltYWdl", "sanity"),  # bytes that are not an image
    (["some", "text"], "sanity"),                          # text where an image was due
    ({"unexpected": 1}, "sanity"),
])
def test_an_unreadable_candidate_output_is_a_regression_not_a_crash(bad_output, check, monkeypatch):
    from canary import cases

    case = next(c for c in cases.load("flux-lora-txt2img") if c.name == "trigger")
    monkeypatch.setattr(cases, "load", lambda deployment: [case])
    outcome = runner.run("flux-lora-txt2img", _Target(_image_uri((512, 512))), _Target(bad_output), samples=1)
    assert outcome.exit_code == 1 and ("trigger", check) in outcome.failed(), outcome.rows
    assert ("trigger", "semantic") not in outcome.failed("pass")
