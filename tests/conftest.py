"""Test tiers: tests/unit (CPU, seconds), tests/integration (real Cog server, tiny weights), tests/gpu (device)."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WEIGHT_PROFILE", "tiny")

from shared.cogserver import runner_class  # noqa: E402 (after the path is set); tests import it from here

# The environment of every test server: tiny weights, one compute thread. Tiny models gain nothing from a
# second thread, and on a busy 2-core machine a parallel region waits for whichever of its threads is
# descheduled: two identical servers then ran 1.6x apart for tens of seconds, which the canary's latency
# check rightly reads as a persistent slowdown.
TEST_SERVER_ENV = {"WEIGHT_PROFILE": "tiny", "OMP_NUM_THREADS": "1"}


def load_runner(deployment: str):
    """An instance of the deployment's Runner (not set up)."""
    return runner_class(deployment)()


def runner_before_load(deployment: str):
    """A text deployment's Runner holding what its setup() has before `load_model()` (its `prepare()`). A test
    then calls `load_model()` alone."""
    runner = load_runner(deployment)
    runner.prepare()
    return runner


def png_bytes(array) -> bytes:
    """An array of pixels (0-255) encoded as PNG: the bytes an image output arrives as."""
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def predict_variant(tmp_path):
    """make(name, old, new): a copy of a deployment's folder, beside it (where `cog build` would see it), with
    one edit of its predict.py; removed after the test."""
    import shutil

    from shared import catalog

    made = []

    def make(name: str, old: str, new: str) -> Path:
        folder = ROOT / "deployments" / f".variant-{tmp_path.name}-{len(made)}"
        shutil.copytree(catalog.get(name).folder, folder)
        made.append(folder)
        text = (folder / "predict.py").read_text()
        assert old in text, f"{old!r} not in {name}/predict.py"
        (folder / "predict.py").write_text(text.replace(old, new))
        return folder

    yield make
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def runners():
    """Set-up Runner instances on tiny weights, built once per session and shared."""
    cache = {}

    def get(deployment: str):
        if deployment not in cache:
            runner = load_runner(deployment)
            runner.setup()
            cache[deployment] = runner
        return cache[deployment]

    return get


@pytest.fixture(scope="session")
def server():
    """Start each deployment's real Cog server (tiny weights) once, on first use; stop all at the end."""
    from shared.cogserver import CogServer

    running = {}

    def get(name: str) -> CogServer:
        if name not in running:
            running[name] = CogServer(name, env=TEST_SERVER_ENV, setup_timeout=300).start()
        return running[name]

    yield get
    for s in running.values():
        s.stop()


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: run `make test-gpu` on the device machine (synthetic weights)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
