"""CI definitions are valid and run what the README promises."""

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
        assert job.get("runs-on") and job.get("steps"), name
        for step in job["steps"]:
            assert "run" in step or "uses" in step, f"{name}: step without run/uses"


def test_ci_and_the_ci_script_run_the_readme_test_command():
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    steps = [s.get("run", "") for w in WORKFLOWS for j in yaml.safe_load(w.read_text())["jobs"].values() for s in j["steps"]]
    assert any("make test" in run for run in steps)
