"""Each image builds from the repo root: cog.yaml paths resolve, requirements agree, the context suffices."""

import fnmatch
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from shared.catalog import DEPLOYMENTS
from tests.conftest import ROOT

NAMES = list(DEPLOYMENTS)

# Where an image must differ from the CPU environment (requirements/cpu.txt), and why.
EXCEPTIONS = {
    "torch": "CPU runs torch 2.13.0+cpu (the wheel on disk); images use 2.11.0, the CUDA build tested on the device",
    "transformers@phi4-reasoning-plus": "Unsloth 2026.10.9 pins transformers <= 5.17.0",
    "hqq@smollm3-3b": "Pruna 0.3.4 pins hqq 0.2.7.post1",
    "torchao@smollm3-3b": "Pruna 0.3.4 needs torchao < 0.17",
    "peft@smollm3-3b": "Pruna 0.3.4 needs peft < 0.19 (kept out of the FLUX images: it breaks compiled hot-swap)",
}


def _pins(path):
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not pinned with =="
            pins[name.lower().replace("_", "-")] = version
    return pins


def _config(name):
    return yaml.safe_load((ROOT / "deployments" / name / "cog.yaml").read_text())


@pytest.mark.parametrize("name", NAMES)
def test_cog_yaml_paths_resolve_from_the_repo_root(name):
    cfg = _config(name)
    predict_path, _, cls = cfg["run"].partition(":")
    assert (ROOT / predict_path).is_file() and cls == "Runner"
    assert (ROOT / cfg["build"]["python_requirements"]).is_file()


@pytest.mark.parametrize("name", NAMES)
def test_cuda_python_and_packages_are_pinned(name):
    build = _config(name)["build"]
    assert build["gpu"] is True and build["cuda"] and build["python_version"] == "3.12"
    assert "torch" in _pins(ROOT / build["python_requirements"])


@pytest.mark.parametrize("name", NAMES)
def test_image_requirements_agree_with_the_cpu_environment(name):
    cpu = _pins(ROOT / "requirements" / "cpu.txt")
    image = _pins(ROOT / "deployments" / name / "requirements.txt")
    mismatched = {pkg: (image[pkg], cpu[pkg]) for pkg in image.keys() & cpu.keys()
                  if image[pkg] != cpu[pkg] and pkg not in EXCEPTIONS and f"{pkg}@{name}" not in EXCEPTIONS}
    assert not mismatched, f"versions differ from requirements/cpu.txt without a listed reason: {mismatched}"


def test_gpu_only_libraries_stay_in_their_own_image():
    owners = {"pruna": {"smollm3-3b"}, "unsloth": {"phi4-reasoning-plus"},
              # Unsloth imports it even for 16-bit loads; FLUX's low-memory mode (transformer=nf4) is NF4 layers
              "bitsandbytes": {"phi4-reasoning-plus", "flux-lora-txt2img", "flux-lora-img2img"}}
    for pkg, allowed in owners.items():
        holders = {n for n in NAMES if pkg in _pins(ROOT / "deployments" / n / "requirements.txt")}
        assert holders == allowed, pkg


def _context_files():
    """The files `cog build -f deployments/X/cog.yaml` sends from the root, per .dockerignore."""
    rules = [r.strip() for r in (ROOT / ".dockerignore").read_text().splitlines() if r.strip() and not r.startswith("#")]
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    kept = []
    for rel in tracked:
        include = True
        for rule in rules:
            negate, pattern = rule.startswith("!"), rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(rel, pattern + "/*") or rel.startswith(pattern + "/"):
                include = negate
        if include:
            kept.append(rel)
    return kept


def test_build_context_excludes_tests_and_outputs():
    files = _context_files()
    assert any(f.startswith("shared/") for f in files) and any(f.startswith("deployments/") for f in files)
    assert not any(f.startswith(("tests/", "outputs/", ".venv/", "benchmarks/")) for f in files)


@pytest.mark.parametrize("name", NAMES)
def test_predictor_imports_from_the_build_context_alone(name, tmp_path):
    for rel in _context_files():
        dest = tmp_path / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    cfg = _config(name)
    code = ("import importlib.util, sys; sys.path.insert(0, '.'); "
            f"spec = importlib.util.spec_from_file_location('predict', {cfg['run'].split(':')[0]!r}); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "import shared; assert shared.__file__.startswith(sys.argv[1]), shared.__file__; print(m.Runner.deployment)")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == name


def test_make_help_names_every_target():
    # `make help` prints the Makefile's header; a target missing there is one users never find.
    makefile = (ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split()
    header = "\n".join(line for line in makefile.splitlines() if line.startswith("#   "))
    missing = [t for t in phony if t not in ("help", "$(DEPLOYMENTS)") and not re.search(rf"\b{re.escape(t)}\b", header)]
    assert not missing, f"not in `make help`: {missing}"
    assert "make <deployment>" in header
