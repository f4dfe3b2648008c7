"""The canary against two real Cog servers on loopback: no false alarm, and every planted regression caught.

Candidates are real predictor variants (tests/canary/planted.py) served by the Cog server, not edited
reports. Each planted regression must be flagged by the check that owns it, and by no check that
should not notice it (a slower candidate is not a semantic regression).
"""

import json

import pytest

from canary.__main__ import main
from canary.runner import run
from shared.catalog import DEPLOYMENTS

# plant -> (checks that must flag it, checks that may also flag it as a consequence)
IMAGE = "flux-lora-txt2img"
TEXT = "smollm3-3b"
PLANTED = [
    (IMAGE, "black", {"sanity", "semantic"}, set()),
    (IMAGE, "blank", {"sanity", "semantic"}, set()),
    (IMAGE, "wrong-size", {"sanity", "semantic"}, set()),
    (IMAGE, "other-seed", {"semantic"}, set()),
    (IMAGE, "slow", {"latency"}, set()),
    (IMAGE, "error", {"functional"}, set()),
    # the webp case's output_format is dropped by the server: the candidate answers PNG
    (IMAGE, "removed-input", {"schema", "sanity"}, set()),
    # the case at width 512 is rejected by the candidate's server
    (IMAGE, "narrowed", {"schema", "functional"}, set()),
    (IMAGE, "changed-default", {"schema"}, set()),
    (TEXT, "repeat", {"sanity", "semantic"}, set()),
    (TEXT, "empty", {"sanity", "semantic"}, set()),
    (TEXT, "slow", {"latency"}, set()),
    # `mode` is dropped: the think case silently runs without thinking
    (TEXT, "removed-input", {"schema"}, {"semantic"}),
]


def _regressions(outcome) -> set[str]:
    return {check for _, check in outcome.failed()}


@pytest.mark.integration
@pytest.mark.parametrize("deployment", [IMAGE, TEXT])
def test_an_identical_candidate_passes_five_runs_out_of_five(deployment, stable, variants, tmp_path, capsys, cpu_burner):
    # Under load: every core also runs a spinning process (cpu_burner), the busy machine that made the
    # old fixed-ratio latency check cry wolf on 13 of 32 tests.
    with variants(deployment, "identical") as candidate:
        codes = [main(["--stable", stable(deployment).url, "--candidate", candidate.url, "--out", str(tmp_path / str(i))])
                 for i in range(5)]
    printed = capsys.readouterr().out
    assert codes == [0] * 5, printed
    reports = [json.loads(next((tmp_path / str(i)).glob("*.json")).read_text()) for i in range(5)]
    for r in reports:
        assert r["result"] == "pass" and r["deployment"] == deployment
        checks = {row["check"] for row in r["rows"]}
        assert checks == {"schema", "functional", "sanity", "semantic", "latency"}, checks
    assert "| case | check | stable | candidate | verdict |" in printed
    kept = reports[0]["outputs"]
    assert set(kept) == {f"{case}/{side}" for case in {r["case"] for r in reports[0]["rows"]} - {"(all)"}
                         for side in ("stable", "candidate")}
    first = next(iter({k.split("/")[0] for k in kept}))
    assert (tmp_path / "0" / kept[f"{first}/stable"]).read_bytes() == (tmp_path / "0" / kept[f"{first}/candidate"]).read_bytes()


@pytest.mark.integration
@pytest.mark.parametrize("deployment", sorted(DEPLOYMENTS))
def test_every_deployments_cases_pass_against_its_own_server(deployment, stable):
    # Each case file end to end: inputs accepted, outputs of the expected size/format/length and sane.
    url = stable(deployment).url
    outcome = run(deployment, _cog(url), _cog(url), samples=1)
    assert outcome.exit_code == 0, [r for r in outcome.rows if r.verdict != "pass"]


@pytest.mark.integration
@pytest.mark.parametrize("deployment,plant,must,may", PLANTED, ids=[f"{d}-{p}" for d, p, _, _ in PLANTED])
def test_a_planted_regression_is_caught_by_its_check(deployment, plant, must, may, stable, variants, request):
    if plant == "slow":
        request.getfixturevalue("cpu_burner")  # a really slower candidate is caught on a busy machine too
    with variants(deployment, plant) as candidate:
        outcome = run(deployment, _cog(stable(deployment).url), _cog(candidate.url))
    flagged = _regressions(outcome)
    assert outcome.exit_code == 1, outcome.rows
    assert must <= flagged, f"{plant}: expected {must} among {flagged}"
    assert flagged <= must | may, f"{plant}: false alarm in {flagged - must - may}"


@pytest.mark.integration
def test_an_intended_default_change_passes_with_the_flag(stable, variants):
    with variants(IMAGE, "changed-default") as candidate:
        outcome = run(IMAGE, _cog(stable(IMAGE).url), _cog(candidate.url), samples=1, allow_default_changes=True)
    assert outcome.exit_code == 0, outcome.rows


@pytest.mark.integration
def test_a_broken_stable_is_an_error_not_a_pass(stable, variants):
    with variants(IMAGE, "error") as broken:
        outcome = run(IMAGE, _cog(broken.url), _cog(stable(IMAGE).url), samples=1)
    assert outcome.exit_code == 2 and outcome.failed("error") and not outcome.failed(), outcome.rows


@pytest.mark.integration
def test_comparing_two_different_deployments_is_refused(stable, capsys):
    code = main(["--stable", stable(TEXT).url, "--candidate", stable(IMAGE).url])
    assert code == 2
    assert f"serves {TEXT}, not {IMAGE}" in capsys.readouterr().err


def test_dry_run_sends_nothing_and_says_what_would_run(capsys):
    # Nothing listens on these ports: a dry run that tried to reach them would fail.
    code = main(["--deployment", IMAGE, "--stable", "http://127.0.0.1:9", "--candidate", "http://127.0.0.1:9",
                 "--samples", "2", "--dry-run"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "nothing is sent" in printed and "3 case(s) x 2 sample(s) x 2 sides = 12 predictions" in printed
    assert '"trigger_word": "Anime"' in printed


def _cog(url):
    from canary.targets import CogTarget

    return CogTarget(url)


@pytest.mark.integration
def test_a_first_release_is_judged_without_a_stable(stable, variants, tmp_path):
    """No pin yet: the bootstrap checks pass the real deployment and stop a broken first version."""
    from canary.runner import bootstrap
    from shared.schema import committed

    args = ["bootstrap", "--deployment", IMAGE, "--samples", "1", "--out", str(tmp_path)]
    assert main([*args, "--candidate", stable(IMAGE).url]) == 0
    with variants(IMAGE, "black") as black:
        outcome = bootstrap(IMAGE, _cog(black.url), committed(IMAGE), samples=1)
    assert outcome.exit_code == 1 and _regressions(outcome) == {"sanity"}, outcome.rows
    with variants(IMAGE, "removed-input") as removed:
        outcome = bootstrap(IMAGE, _cog(removed.url), committed(IMAGE), samples=1)
    assert "schema" in _regressions(outcome), outcome.rows
