"""CI definitions are valid and run what the README promises."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_well_formed(path: Path):
    doc = yaml.safe_load(path.read_text())
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on:` key as True
    assert triggers, "no trigger"
    assert doc["jobs"], "no jobs"
    for name, job in doc["jobs"].items():
        if "uses" in job:  # a call to a reusable workflow
            assert (ROOT / job["uses"]).is_file(), job["uses"]
            continue
        assert job.get("runs-on") and job.get("steps"), name
        for step in job["steps"]:
            assert "run" in step or "uses" in step, f"{name}: step without run/uses"


def test_ci_and_the_ci_script_run_the_readme_test_command():
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    jobs = [j for w in WORKFLOWS for j in yaml.safe_load(w.read_text())["jobs"].values()]
    steps = [s.get("run", "") for j in jobs for s in j.get("steps", [])]
    assert any("make test" in run for run in steps)


def test_workflows_pass_the_github_workflow_schema():
    # check-jsonschema ships SchemaStore's GitHub workflow schema: no network needed.
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                             *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n    stepz: []\n")
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                             str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "stepz" in result.stdout


def _workflow(name: str) -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())


def _runs(job: dict) -> list[str]:
    return [s.get("run", "") for s in job["steps"]]


def _step(job: dict, text: str) -> int:
    """Index of the first step whose command contains `text`."""
    return next(i for i, run in enumerate(_runs(job)) if text in run)


def test_the_canary_workflow_runs_on_a_cpu_runner_and_gates_promotion():
    canary = _workflow("canary.yml")
    triggers = canary.get("on", canary.get(True))
    assert {"workflow_call", "workflow_dispatch", "deployment"} <= set(triggers)
    check, promote = canary["jobs"]["canary"], canary["jobs"]["promote"]
    assert check["runs-on"] == "ubuntu-latest"  # CPU: the models run on Replicate
    assert any("make canary" in run for run in _runs(check))
    assert promote["needs"] == "canary" and "success()" in promote["if"]
    assert _step(promote, "canary promote") < _step(promote, "canary pins-commit")


def test_a_release_shows_users_nothing_before_the_canary_passes():
    release = _workflow("release.yml")
    assert release["concurrency"]["group"] == "release" and release["concurrency"]["cancel-in-progress"] is False
    job = release["jobs"]["release"]
    assert job["environment"] == "production"
    test_push, judge = _step(job, '/$D-test"'), _step(job, "python -m canary --deployment")
    assert _step(job, "docker image prune") < test_push, "disk is freed before the CUDA build"
    assert _step(job, "--test-model") > test_push
    assert judge == _step(job, "canary bootstrap"), "stable pin or first release: one step decides"
    production = _step(job, 'cog push "r8.im/$OWNER/$D"')
    promote = _step(job, "canary promote")
    assert test_push < judge < production <= promote
    # Steps run only while everything before them succeeded: a failed canary stops the production push.
    assert "if" not in job["steps"][production] and "if" not in job["steps"][promote]


def test_one_job_writes_every_pin_even_when_another_deployment_failed():
    pins = _workflow("release.yml")["jobs"]["pins"]
    assert pins["needs"] == "release" and pins["if"] == "${{ !cancelled() }}"
    assert pins["permissions"]["contents"] == "write"
    assert any("canary pins-commit" in run for run in _runs(pins))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_replicate_token_reaches_only_the_steps_that_use_it(path: Path):
    doc = yaml.safe_load(path.read_text())
    for name, job in doc["jobs"].items():
        assert "secrets." not in str(job.get("env", {})), f"{name}: a secret in the job's environment"
        for step in job.get("steps", []):
            if "secrets." in str(step.get("env", {})):
                assert any(word in step.get("run", "") for word in ("cog ", "canary")), step.get("name")
            if "make setup" in step.get("run", "") or "pip install" in step.get("run", ""):
                assert "secrets." not in str(step.get("env", {})), f"{name}: third-party installs see the token"


def test_every_deployment_can_be_chosen_by_hand():
    from shared.catalog import DEPLOYMENTS

    for name in ("canary.yml", "release.yml"):
        doc = _workflow(name)
        options = doc.get("on", doc.get(True))["workflow_dispatch"]["inputs"]["deployment"]["options"]
        assert options == list(DEPLOYMENTS), name
