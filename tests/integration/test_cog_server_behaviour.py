"""What Cog's own server (coglet 0.23.1) does with some requests, as docs/operations.md tells users.

These live in Cog, not here: each test pins the behaviour the docs describe, so an upgrade that changes it
fails here and the docs get updated with it."""

import json
from pathlib import Path

import requests

from shared.cogserver import log_events
from tests.integration.conftest import ok, rejected

NAME = "smollm3-3b"
SMALL = {"prompt": "hi", "max_new_tokens": 2}


def test_null_for_an_optional_input_is_refused_and_leaving_it_out_is_the_default(server):
    s = server(NAME)
    assert "integer" in rejected(requests.post(f"{s.url}/predictions", json={"input": {**SMALL, "seed": None}}), "seed")
    body = ok(s.predict(SMALL))
    assert isinstance(body["metrics"]["seed"], int)  # the documented way: omitted -> a random seed, reported


def test_an_input_the_schema_does_not_name_is_ignored(server):
    s = server(NAME)
    body = ok(s.predict({"prompt": "hi", "max_new_token": 3}))  # a typo of max_new_tokens
    [start] = log_events(body["logs"], "predict.start")
    assert start["max_new_tokens"] == 512  # the schema's default: the typo was dropped, not refused


def test_a_request_without_a_json_content_type_is_read_as_an_empty_input(server):
    s = server(NAME)
    r = requests.post(f"{s.url}/predictions", data=json.dumps({"input": SMALL}))
    assert "Field required" in rejected(r, "prompt")


def test_a_prediction_id_that_cannot_be_a_folder_name_blocks_the_server_until_it_restarts():
    """coglet 0.23.1 uses the id as a directory name; docs/operations.md gives the upstream reproduction and the
    advice (let only [A-Za-z0-9_-]{1,64} ids through, or send none). Its own server: this one is left stuck.
    When an upgrade fixes it, this test fails: update the docs with it. One slot, as the FLUX deployments have:
    a text deployment's 8 slots lose one per such id (test_each_bad_id_takes_one_slot_of_eight)."""
    from shared.cogserver import CogServer, post_prediction
    from tests.conftest import TEST_SERVER_ENV

    with CogServer(NAME, env={**TEST_SERVER_ENV, "COG_MAX_CONCURRENCY": "1"}, setup_timeout=300) as s:
        body = requests.post(f"{s.url}/predictions", json={"id": "a\u0000b", "input": SMALL}, timeout=60).json()
        assert body["status"] == "failed" and "output dir" in body["error"], body
        after = post_prediction(s.url, SMALL, timeout=60, busy_wait=3)  # retried for 3 s: not the brief 409 above
        assert after.status_code == 409  # and every request after it, until the process restarts
        assert requests.get(f"{s.url}/health-check", timeout=10).json()["status"] == "BUSY"


def test_each_bad_id_takes_one_slot_of_eight():
    """The text deployments serve 8 requests at once: one id that cannot be a folder name leaves 7 slots (still
    serving); 8 of them block the server as one does a single-slot server (coglet 0.23.1)."""
    from shared.cogserver import CogServer, post_prediction
    from tests.conftest import TEST_SERVER_ENV

    with CogServer(NAME, env=TEST_SERVER_ENV, setup_timeout=300) as s:
        for i in range(8):
            # Retried while 409 for up to 3 s: the good request just before frees its slot a few ms after it answers
            # (docs/operations.md), and a busy CI machine sent this one inside that window.
            body = post_prediction(s.url, None, timeout=60, busy_wait=3, json={"id": f"bad\u0000{i}", "input": SMALL}).json()
            assert body["status"] == "failed" and "output dir" in body["error"], body
            after = post_prediction(s.url, SMALL, timeout=60, busy_wait=3)
            assert after.status_code == (200 if i < 7 else 409), i


def test_behind_the_request_guard_no_id_blocks_the_server():
    """The mitigation this repository ships (shared.request_guard, `python -m shared.request_guard` in the
    image): the ids that block a bare server above are answered 422 naming `id`, and the one-slot server
    still serves, streams and takes a good id of the client's own. It also keeps the schema's word on inputs."""
    import uuid

    from shared.cogserver import CogServer, busy_retrying, post_prediction, stream_prediction
    from tests.conftest import TEST_SERVER_ENV

    outside = f"guard-{uuid.uuid4().hex}"  # "../../<outside>" would be /tmp/<outside> on a bare server
    with CogServer(NAME, env={**TEST_SERVER_ENV, "COG_MAX_CONCURRENCY": "1"}, setup_timeout=300, guard=True) as s:
        for bad in ["a\u0000b", "x" * 300, "é" * 200, f"../../{outside}/y"]:
            r = requests.post(f"{s.url}/predictions", json={"id": bad, "input": SMALL}, timeout=60)
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "id"], (bad, r.text)
        for raw in ["c%00d", f"..%2F..%2F{outside}"]:
            r = requests.put(f"{s.url}/predictions/{raw}", json={"input": SMALL}, timeout=60)
            assert r.status_code == 422 and "1 to 128" in r.json()["detail"][0]["msg"], (raw, r.text)
        after = post_prediction(s.url, SMALL, timeout=60, busy_wait=3)
        assert after.status_code == 200 and after.json()["status"] == "succeeded", after.text
        # Each request right after another is retried while 409 (busy_retrying): this server's one slot is freed a
        # few ms after the previous answer.
        mine = busy_retrying(3)(requests.put, f"{s.url}/predictions/my-own_id-1", json={"input": SMALL}, timeout=60).json()
        assert (mine["id"], mine["status"]) == ("my-own_id-1", "succeeded")
        events = [event for event, _ in stream_prediction(s.url, SMALL, timeout=60)]
        assert events[0] == "start" and events[-1] == "completed" and "output" in events
        # The schema's word kept: null for the nullable seed is "left out" (the bare server: 422, test above);
        # a typo is refused naming it (the bare server drops it, test above); a null that is not allowed still is not.
        assert isinstance(ok(s.predict({**SMALL, "seed": None}))["metrics"]["seed"], int)
        typo = post_prediction(s.url, {**SMALL, "max_new_token": 3}, timeout=60, busy_wait=3)
        assert "not an input" in rejected(typo, "max_new_token")
        not_nullable = post_prediction(s.url, {**SMALL, "max_new_tokens": None}, timeout=60, busy_wait=3)
        assert "integer" in rejected(not_nullable, "max_new_tokens")
        # Passed through as sent: without a JSON Content-Type the server answers as it does directly (above).
        as_text = post_prediction(s.url, None, timeout=60, busy_wait=3, data=json.dumps({"input": SMALL}))
        assert "Field required" in rejected(as_text, "prompt")
        assert requests.get(f"{s.url}/health-check", timeout=10).json()["status"] == "READY"
    assert not (Path("/tmp") / outside).exists()  # the bare server makes /tmp/coglet/predictions/../../<outside>


def test_the_request_guard_and_the_server_stop_together():
    """Stopping the guard stops Cog's server (a `docker stop` reaches only the guard); a server that exits
    takes the guard with it (the container stops, as a bare server's would)."""
    import signal

    import psutil

    from shared.cogserver import CogServer
    from tests.conftest import TEST_SERVER_ENV

    for stopped in ("guard", "server"):
        with CogServer(NAME, env=TEST_SERVER_ENV, setup_timeout=300, guard=True) as s:
            guard = psutil.Process(s.proc.pid)
            [server] = [p for p in guard.children() if "cog.server.http" in " ".join(p.cmdline())]
            (guard if stopped == "guard" else server).send_signal(signal.SIGTERM)
            gone, alive = psutil.wait_procs([guard, server], timeout=60)
            assert not alive, (stopped, alive)
