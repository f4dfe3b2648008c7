"""The local Cog server runner cleans up after itself."""

import os
import time

import pytest

from shared.cogserver import CogServer

pytestmark = pytest.mark.integration


def test_a_failed_setup_leaves_no_server_behind(predict_variant):
    folder = predict_variant("smollm3-3b", "    def load_model(self):\n",
                             "    def load_model(self):\n        raise RuntimeError('planted setup failure')\n")
    server = CogServer("smollm3-3b", env={"WEIGHT_PROFILE": "tiny", "HF_TOKEN": "hf_sentinel"}, folder=folder,
                       setup_timeout=120)
    with pytest.raises(RuntimeError, match="planted setup failure|setup failed|exited"):
        with server:
            pass
    assert server.proc.poll() is not None, "the server process is still running"
    deadline = time.monotonic() + 10  # killed processes are reaped by init, not at once
    while time.monotonic() < deadline and _group_alive(server.proc.pid):
        time.sleep(0.1)
    assert not _group_alive(server.proc.pid), "its worker is still running"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
