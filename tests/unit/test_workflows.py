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


def test_canary_runs_after_the_push_on_a_cpu_runner_and_gates_promotion():
    canary = _workflow("canary.yml")
    triggers = canary.get("on", canary.get(True))
    assert {"workflow_call", "workflow_dispatch", "deployment"} <= set(triggers)
    check, promote = canary["jobs"]["canary"], canary["jobs"]["promote"]
    assert check["runs-on"] == "ubuntu-latest"  # CPU: the models run on Replicate
    assert any("make canary" in s.get("run", "") for s in check["steps"])
    assert promote["needs"] == "canary" and "success()" in promote["if"]
    assert any("canary promote" in s.get("run", "") for s in promote["steps"])

    release = _workflow("release.yml")["jobs"]
    assert release["candidates"]["needs"] == "push" and release["canary"]["needs"] == "candidates"
    assert release["canary"]["uses"] == "./.github/workflows/canary.yml"
    assert release["canary"]["with"]["promote"] is True


def test_every_deployment_can_be_chosen_by_hand():
    from shared.catalog import DEPLOYMENTS

    for name in ("canary.yml", "release.yml"):
        doc = _workflow(name)
        options = doc.get("on", doc.get(True))["workflow_dispatch"]["inputs"]["deployment"]["options"]
        assert options == list(DEPLOYMENTS), name
