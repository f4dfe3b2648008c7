"""An `image` given as a URL: Cog downloads it before run(); this repo bounds that download (issue: hardening).

Before shared/url_input.py, a server sending one byte every few seconds held the only prediction slot for as
long as it kept sending (200 s and counting), and any size was accepted. Through the real Cog server, with
tiny Gemma and a loopback file server; the limits are lowered by the environment the operator would use.
"""

import pytest
import requests

from shared.catalog import EXAMPLES
from shared.cogserver import CogServer
from tests.conftest import TEST_SERVER_ENV
from tests.integration.conftest import failed, ok
from tests.mirror_server import MirrorServer

NAME = "gemma3-4b-it"
QUESTION = {"prompt": "What is this?", "max_new_tokens": 2, "seed": 1}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    with MirrorServer(tmp_path_factory.mktemp("images"), prefix="/img") as server:
        yield server


@pytest.fixture(scope="module")
def gemma():
    env = {**TEST_SERVER_ENV, "INPUT_DOWNLOAD_DEADLINE_S": "2", "INPUT_DOWNLOAD_MAX_MB": "1"}
    with CogServer(NAME, env=env, setup_timeout=300) as s:
        yield s


def test_a_url_that_drips_fails_at_the_deadline_and_the_server_serves_on(gemma, files):
    files.drip["slow.png"] = 0.5  # 200 bytes: 100 s if let run; never a pause long enough for a read timeout
    slow = files.add("slow.png", b"\x89PNG" + b"\0" * 196)
    body = failed(gemma.predict({**QUESTION, "image": slow}))
    assert "image: the download took longer than 2 s" in body["error"], body["error"]
    assert files.dripped["slow.png"] < 200, "cut at the deadline, not read to the end"
    ok(gemma.predict({**QUESTION, "image": files.add("cat.png", (EXAMPLES / "landscape.png").read_bytes())}))


def test_a_url_larger_than_the_cap_fails_naming_the_input(gemma, files):
    big = files.add("big.png", b"\x89PNG" + b"\0" * (2 * 2**20))
    body = failed(gemma.predict({**QUESTION, "image": big}))
    assert "image: the file is larger than 1 MiB" in body["error"], body["error"]


def test_a_url_that_is_missing_says_what_the_server_answered(gemma, files):
    body = failed(gemma.predict({**QUESTION, "image": f"{files.url}/nothing.png?signature=SECRET"}))
    assert "image:" in body["error"] and "HTTP 404" in body["error"], body["error"]
    assert "SECRET" not in body["error"] + body.get("logs", "")
    assert requests.get(f"{gemma.url}/health-check").json()["status"] == "READY"
