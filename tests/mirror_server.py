"""A weight mirror on loopback for the tests: a static file server with byte ranges, and planted faults.

Serves `root` the way a bucket or CDN does (GET, `Range: bytes=a-b` -> 206), and can: require a bearer
token, cut a response after some bytes (once per file), fail every request for a file with a 500, and
count the bytes it served, so a test can tell a resumed download from one that started over.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class MirrorServer:
    def __init__(self, root: Path, *, prefix: str = "/mirror", token: str | None = None):
        self.root, self.prefix, self.token = Path(root), prefix.rstrip("/"), token
        self.cut_after: dict[str, int] = {}  # relative path -> bytes sent before the connection drops (once)
        self.broken: set[str] = set()  # relative paths answered with 500
        self.drip: dict[str, float] = {}  # relative path -> seconds between bytes (a server that never stops sending)
        self.dripped: dict[str, int] = {}  # relative path -> bytes of it sent so far, one at a time
        self.served = 0  # body bytes sent
        self.requests: list[tuple[str, str | None]] = []  # (relative path, Range header)
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add(self, rel: str, data: bytes) -> str:
        """Put a file on the server; returns its URL."""
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.root / rel).write_bytes(data)
        return f"{self.url}/{rel}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{self.prefix}"

    def __enter__(self) -> "MirrorServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                path = unquote(urlsplit(self.path).path)
                if not path.startswith(mirror.prefix + "/"):
                    return self.send_error(404)
                rel = path[len(mirror.prefix) + 1:]
                with mirror.lock:
                    mirror.requests.append((rel, self.headers.get("Range")))
                if mirror.token and self.headers.get("Authorization") != f"Bearer {mirror.token}":
                    return self.send_error(401)
                file = (mirror.root / rel).resolve()
                if mirror.root.resolve() not in file.parents or not file.is_file():
                    return self.send_error(404)
                if rel in mirror.broken:
                    return self.send_error(500)
                data = file.read_bytes()
                start, end = 0, len(data) - 1
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
                if match:
                    start, end = int(match[1]), min(int(match[2] or end), end)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:end + 1]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with mirror.lock:
                    cut = mirror.cut_after.pop(rel, None)
                if cut is not None:
                    body = body[:cut]  # fewer bytes than Content-Length, then the connection closes
                    self.close_connection = True
                with mirror.lock:  # counted before it goes out: a client that has the bytes can read the count
                    mirror.served += len(body)
                if rel in mirror.drip:
                    import time

                    for i in range(len(body)):
                        try:
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                        except (BrokenPipeError, ConnectionResetError):  # the client gave up: what a deadline does
                            return
                        with mirror.lock:
                            mirror.dripped[rel] = i + 1
                        time.sleep(mirror.drip[rel])
                else:
                    self.wfile.write(body)

        return Handler
