"""Tier 3: the canary against real Cog servers on tiny weights (stable, and candidates with planted regressions)."""

from contextlib import contextmanager

import pytest

from shared.cogserver import CogServer
from tests.conftest import TEST_SERVER_ENV

from .planted import variant_folder


@pytest.fixture(scope="session")
def variants(tmp_path_factory):
    """serve(deployment, plant) -> a context manager running that variant's Cog server."""
    root = tmp_path_factory.mktemp("variants")

    @contextmanager
    def serve(deployment: str, plant: str):
        folder = variant_folder(deployment, plant, root)
        with CogServer(deployment, env=TEST_SERVER_ENV, folder=folder, setup_timeout=300) as server:
            yield server

    return serve


def _spin(stop):
    while not stop.is_set():
        sum(i * i for i in range(10_000))


@pytest.fixture
def cpu_burner():
    """Every core busy with other work for the whole test, as on a shared CI machine: one spinning process a
    core, in a new process group (they die with the test even if it fails)."""
    import multiprocessing
    import os

    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    burners = [context.Process(target=_spin, args=(stop,), daemon=True) for _ in range(os.cpu_count() or 2)]
    for p in burners:
        p.start()
    yield len(burners)
    stop.set()
    for p in burners:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()


@pytest.fixture(scope="session")
def stable(server):
    """The unmodified deployment's Cog server (tests/conftest.py), kept for the session."""
    return server
