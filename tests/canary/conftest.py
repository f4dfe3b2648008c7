"""Tier 3: the canary against real Cog servers on tiny weights (stable, and candidates with planted regressions)."""

from contextlib import contextmanager

import pytest

from shared.cogserver import CogServer

from .planted import variant_folder


@pytest.fixture(scope="session")
def variants(tmp_path_factory):
    """serve(deployment, plant) -> a context manager running that variant's Cog server."""
    root = tmp_path_factory.mktemp("variants")

    @contextmanager
    def serve(deployment: str, plant: str):
        folder = variant_folder(deployment, plant, root)
        with CogServer(deployment, env={"WEIGHT_PROFILE": "tiny"}, folder=folder, setup_timeout=300) as server:
            yield server

    return serve


@pytest.fixture(scope="session")
def stable(server):
    """The unmodified deployment's Cog server (tests/conftest.py), kept for the session."""
    return server
