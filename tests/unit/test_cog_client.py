"""The client side of the local Cog server runner: 409 back-off (tenacity) and server-sent events (sseclient).

post_prediction waits out Cog's 409 "at capacity" (the slot is freed a moment after a 200), with a bound."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.cogserver import post_prediction


@pytest.fixture
def busy_server():
    """Answers 409 to the first `busy` POSTs, then 200 echoing the body."""
    state = {"busy": 0, "seen": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state["seen"] += 1
            status = 409 if state["seen"] <= state["busy"] else 200
            reply = json.dumps({"detail": "At capacity"} if status == 409 else {"echo": json.loads(body)}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()


def test_a_busy_server_is_retried_until_it_answers(busy_server):
    url, state = busy_server
    state["busy"] = 3
    r = post_prediction(url, {"prompt": "hi"}, timeout=5)
    assert r.status_code == 200 and r.json() == {"echo": {"input": {"prompt": "hi"}}}
    assert state["seen"] == 4  # three 409s, then the answer


def test_a_server_that_stays_busy_returns_its_409_after_the_bound(busy_server):
    url, state = busy_server
    state["busy"] = 10**6
    r = post_prediction(url, None, timeout=5, busy_wait=0.3, data=b"{}")
    assert r.status_code == 409 and state["seen"] >= 2  # retried, then gave the caller the server's answer


def test_server_sent_events_keep_a_generated_line_separator_inside_their_data():
    """A token may hold U+2028; Cog sends it raw in the JSON. Splitting text lines there (str.splitlines,
    httpx's line decoder) cut a chunk in two; events are split on bytes, per the SSE format."""
    from shared.cogserver import stream_prediction

    events = b'event: output\ndata: {"chunk": "a\xe2\x80\xa8b"}\n\nevent: completed\ndata: {"status": "succeeded"}\n\n'

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for i in range(0, len(events), 7):  # in pieces, as a stream arrives
                self.wfile.write(events[i:i + 7])
                self.wfile.flush()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        got = stream_prediction(f"http://127.0.0.1:{server.server_address[1]}", {"prompt": "hi"}, timeout=5)
    finally:
        server.shutdown()
    assert [event for event, _ in got] == ["output", "completed"]
    assert json.loads(got[0][1]) == {"chunk": "a\u2028b"}


def test_saved_outputs_are_every_image_of_a_list_and_streamed_text_is_one_file(tmp_path):
    from shared.cogserver import save_outputs, to_data_uri
    from tests.conftest import png_bytes

    pngs, images = [png_bytes([[[value] * 3] * 4] * 4) for value in (0, 255)], []
    for i, data in enumerate(pngs):
        (tmp_path / f"{i}.png").write_bytes(data)
        images.append(to_data_uri(tmp_path / f"{i}.png"))
    written = save_outputs("flux-lora-txt2img", {"id": "p1", "output": images}, folder=tmp_path / "out")
    assert [p.read_bytes() for p in written[:2]] == pngs
    record = json.loads(written[2].read_text())
    assert record["output"] == [f"(saved to {p.name})" for p in written[:2]]
    text = save_outputs("smollm3-3b", {"id": "p2", "output": ["Hel", "lo"]}, folder=tmp_path / "out")
    assert text[0].suffix == ".txt" and text[0].read_text() == "Hello"
