"""The catalog is the one source of names: folders, runners, Makefile, docs and examples follow it."""

import re

import pytest

from shared import catalog
from tests.conftest import ROOT

NAMES = list(catalog.DEPLOYMENTS)


def test_every_deployment_folder_is_in_the_catalog_and_back():
    folders = {p.name for p in (ROOT / "deployments").iterdir() if p.is_dir()}
    assert folders == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_runner_names_its_own_folder(name):
    text = (ROOT / "deployments" / name / "predict.py").read_text()
    assert re.search(rf'deployment = "{re.escape(name)}"', text), "Runner.deployment must equal the folder name"


@pytest.mark.parametrize("name", NAMES)
def test_each_deployment_is_documented_under_its_one_name(name):
    readme = (ROOT / "README.md").read_text()
    assert f"`{name}`" in readme
    assert catalog.get(name).replicate_model == f"{catalog.REPLICATE_OWNER}/{name}"
    assert f"cog-deployments/{name}" in (ROOT / "deployments" / name / "cog.yaml").read_text()


def test_model_ids_appear_only_in_the_catalog():
    ids = {d.checkpoint.repo_id for d in catalog.DEPLOYMENTS.values()} | {lora.repo_id for lora in catalog.STYLE_LORAS}
    offenders = []
    for path in list((ROOT / "shared").rglob("*.py")) + list((ROOT / "deployments").rglob("*.py")):
        if path.name == "catalog.py":
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(ROOT)}: {i}" for i in ids if i in text]
    assert not offenders, offenders


def test_triggers_are_the_published_ones_and_unique():
    triggers = [t.casefold() for lora in catalog.STYLE_LORAS for t in lora.triggers]
    assert len(triggers) == len(set(triggers)) == 13
    assert "ghibsky" in triggers and "3d model" in triggers


def test_flux_target_rank_covers_every_adapter():
    for dep in catalog.DEPLOYMENTS.values():
        for lora in dep.loras:
            assert lora.rank <= dep.lora_target_rank


@pytest.mark.parametrize("name", NAMES)
def test_example_files_exist(name):
    for value in catalog.get(name).example.values():
        if isinstance(value, str) and value.startswith("@"):
            assert (catalog.EXAMPLES / value[1:]).is_file()


def test_unknown_deployment_error_lists_known_ones():
    with pytest.raises(KeyError, match="smollm3-3b"):
        catalog.get("smollm4")


def test_results_name_the_commit_set_for_them_or_this_checkouts_head(monkeypatch):
    import re
    import subprocess

    from shared.catalog import REPO_ROOT, source_commit

    monkeypatch.delenv("COMMIT", raising=False)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", source_commit()) and source_commit() == head
    monkeypatch.setenv("COMMIT", "5fa812c00026285669a0bbdf0870b92b3e63bfd1")
    assert source_commit() == "5fa812c00026285669a0bbdf0870b92b3e63bfd1"
