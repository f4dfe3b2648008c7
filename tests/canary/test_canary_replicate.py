"""The Replicate path: the official `replicate` client against a loopback server speaking Replicate's API.

The fake (tests/canary/fake_replicate.py) forwards predictions to real Cog servers on tiny weights, serves
file outputs behind the token and can answer 503 on demand. A live run against Replicate itself happens
only when a token and a candidate are given in the environment.
"""

import json
import os

import pytest
from PIL import Image

from canary import pins
from canary.__main__ import main
from canary.targets import ReplicateTarget, TargetError

from .fake_replicate import FakeReplicate

IMAGE = "flux-lora-txt2img"
MODEL = f"cog-deployments/{IMAGE}"
TOKEN = "r8_canary-test-token-never-printed-5b1e"


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.05")
    with FakeReplicate(TOKEN) as server:
        monkeypatch.setenv("REPLICATE_BASE_URL", server.url)
        yield server


def _printed_and_written(capsys, folder) -> str:
    out = capsys.readouterr()
    return out.out + out.err + "".join(p.read_bytes().decode(errors="replace") for p in folder.rglob("*") if p.is_file())


@pytest.mark.integration
def test_a_version_against_a_deployment_passes_through_transient_failures(fake, stable, tmp_path, capsys):
    cog = stable(IMAGE).url
    stable_ref = fake.add_version(MODEL, "v1stable", cog)
    fake.add_version(MODEL, "v2candidate", cog)
    fake.deployments[MODEL] = "v2candidate"
    fake.fail_next.update(POST=2, GET=2)  # two creates and two reads answer 503 first

    code = main(["--candidate", f"deployment:{MODEL}", "--stable", stable_ref, "--samples", "2", "--out", str(tmp_path)])
    text = _printed_and_written(capsys, tmp_path)
    assert code == 0, text
    statuses = [(method, status) for method, _, status in fake.log]
    assert statuses.count(("POST", 503)) == 2 and statuses.count(("GET", 503)) == 2
    paths = [path for _, path, _ in fake.log]
    assert f"/v1/deployments/{MODEL}/predictions" in paths and "/v1/predictions" in paths
    assert any(p.startswith("/v1/files/") for p in paths)  # image outputs were fetched as URLs, with the token
    assert TOKEN not in text


@pytest.mark.integration
def test_a_regression_behind_replicate_is_caught(fake, stable, variants, tmp_path, capsys):
    stable_ref = fake.add_version(MODEL, "v1stable", stable(IMAGE).url)
    with variants(IMAGE, "black") as broken:
        candidate_ref = fake.add_version(MODEL, "v2black", broken.url)
        code = main(["--candidate", candidate_ref, "--stable", stable_ref, "--samples", "1", "--out", str(tmp_path)])
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert code == 1 and report["result"] == "regression"
    assert {r["check"] for r in report["rows"] if r["verdict"] == "regression"} >= {"sanity", "semantic"}
    # what each side returned is kept beside the report: the candidate's image really is black
    with Image.open(tmp_path / report["outputs"]["trigger/candidate"]) as black, \
            Image.open(tmp_path / report["outputs"]["trigger/stable"]) as reference:
        assert black.getextrema() == ((0, 0), (0, 0), (0, 0)) and reference.getextrema() != black.getextrema()


def test_a_missing_token_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    code = main(["--candidate", f"{MODEL}:v2", "--stable", f"{MODEL}:v1"])
    assert code == 2
    assert "REPLICATE_API_TOKEN is not set" in capsys.readouterr().err
    # a dry run needs no token, and says it is missing
    assert main(["--candidate", f"{MODEL}:v2", "--stable", f"{MODEL}:v1", "--dry-run"]) == 0
    assert "REPLICATE_API_TOKEN is NOT set" in capsys.readouterr().out


def test_a_wrong_token_is_permanent_and_never_printed(fake, monkeypatch, tmp_path, capsys):
    fake.add_version(MODEL, "v1", "http://127.0.0.1:9")
    wrong = TOKEN + "-revoked"
    monkeypatch.setenv("REPLICATE_API_TOKEN", wrong)
    code = main(["--candidate", f"{MODEL}:v1", "--stable", f"{MODEL}:v1", "--out", str(tmp_path)])
    text = _printed_and_written(capsys, tmp_path)
    assert code == 2 and "HTTP 401 (permanent)" in text, text
    assert wrong not in text and TOKEN not in text
    assert len(fake.log) == 1, fake.log  # a permanent error is not retried


def test_an_unknown_version_is_reported_once_not_retried(fake, tmp_path, capsys):
    code = main(["--deployment", IMAGE, "--candidate", f"{MODEL}:nosuchversion", "--stable", f"{MODEL}:nosuchversion",
                 "--out", str(tmp_path)])
    text = _printed_and_written(capsys, tmp_path)
    assert code == 2 and "HTTP 404 (permanent)" in text
    assert [(path, status) for _, path, status in fake.log] == [
        (f"/v1/models/{MODEL}", 200), (f"/v1/models/{MODEL}/versions/nosuchversion", 404)]  # asked once, not retried


def test_transient_errors_are_retried_with_backoff_then_reported(fake):
    fake.add_version(MODEL, "v1", "http://127.0.0.1:9")
    fake.fail_next["POST"] = 100
    target = ReplicateTarget(f"{MODEL}:v1", attempts=3, backoff=0.01)
    with pytest.raises(TargetError, match=r"HTTP 503 \(transient, gave up after retries\)"):
        target.predict({"prompt": "x"})
    assert [(m, s) for m, _, s in fake.log] == [("POST", 503)] * 3


def test_promote_moves_the_replicate_deployment_and_the_pin(fake, monkeypatch, tmp_path, capsys):
    path = tmp_path / "pins.json"
    path.write_text(pins.PINS.read_text())
    monkeypatch.setattr(pins, "PINS", path)
    fake.add_version(MODEL, "v1", "http://127.0.0.1:9")
    fake.add_version(MODEL, "v2", "http://127.0.0.1:9")
    fake.deployments[MODEL] = "v1"
    assert main(["promote", "--deployment", IMAGE, "--candidate", f"{MODEL}:v2", "--update-replicate-deployment"]) == 0
    assert fake.deployments[MODEL] == "v2"
    assert pins.read(path)[IMAGE] == f"{MODEL}:v2"
    # a version of another model can never become this deployment's pin
    assert main(["promote", "--deployment", "smollm3-3b", "--candidate", f"{MODEL}:v2"]) == 2
    assert "not of smollm3-3b's model" in capsys.readouterr().err
    assert pins.read(path)["smollm3-3b"] is None


def test_latest_names_the_newest_pushed_version(fake, capsys):
    fake.add_version(MODEL, "v1", "http://127.0.0.1:9")
    fake.add_version(MODEL, "v2", "http://127.0.0.1:9")
    assert main(["latest", "--deployment", IMAGE]) == 0
    assert capsys.readouterr().out.strip() == f"{MODEL}:v2"


LIVE = os.environ.get("CANARY_LIVE_CANDIDATE")


@pytest.mark.skipif(not (os.environ.get("REPLICATE_API_TOKEN") and LIVE),
                    reason="live Replicate run: needs REPLICATE_API_TOKEN and CANARY_LIVE_CANDIDATE=owner/model:version "
                           "(and a stable pin or CANARY_LIVE_STABLE); neither is available here, so only the loopback "
                           "API above is exercised")
def test_live_replicate_run(tmp_path):
    args = ["--candidate", LIVE, "--samples", "1", "--out", str(tmp_path)]
    if os.environ.get("CANARY_LIVE_STABLE"):
        args += ["--stable", os.environ["CANARY_LIVE_STABLE"]]
    assert main(args) == 0, next(tmp_path.glob("*.md")).read_text()
