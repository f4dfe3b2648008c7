"""A loopback stand-in for the part of Replicate's HTTP API the `replicate` client uses, forwarding to Cog.

Models, versions, deployments and predictions are real enough for the official client (`replicate>=1,<2`)
to run unchanged against it (REPLICATE_BASE_URL): versions map to Cog servers, predictions are Cog
predictions, file outputs become URLs on this server (behind the token, like api.replicate.com/v1/files),
and `fail_next` makes the next requests answer 503 so retries can be tested.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from shared.cogserver import from_data_uri, post_prediction


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class FakeReplicate:
    def __init__(self, token: str):
        self.token = token
        self.versions: dict[str, tuple[str, str]] = {}  # version id -> (owner/model, Cog URL)
        self.deployments: dict[str, str] = {}  # owner/name -> version id
        self.predictions: dict[str, dict] = {}
        self.files: dict[str, tuple[str, bytes]] = {}
        self.fail_next = {"GET": 0, "POST": 0}  # answer 503 to the next N requests of that method
        self.log: list[tuple[str, str, int]] = []  # (method, path, status)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add_version(self, model: str, version: str, cog_url: str) -> str:
        self.versions[version] = (model, cog_url)
        return f"{model}:{version}"

    def __enter__(self) -> "FakeReplicate":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- the API ---------------------------------------------------------------------------------------

    def route(self, method: str, path: str, body: dict | None):
        if m := re.fullmatch(r"/v1/models/([^/]+/[^/]+)", path):
            return 200, self._model(m[1])
        if m := re.fullmatch(r"/v1/models/([^/]+/[^/]+)/versions/(\w+)", path):
            if self.versions.get(m[2], ("",))[0] != m[1]:
                return 404, {"title": "Not found", "detail": f"version {m[2]} of {m[1]} not found", "status": 404}
            schema = requests.get(f"{self.versions[m[2]][1]}/openapi.json", timeout=30).json()
            return 200, {"id": m[2], "created_at": _now(), "cog_version": "0.23.1", "openapi_schema": schema}
        if m := re.fullmatch(r"/v1/deployments/([^/]+/[^/]+)", path):
            if m[1] not in self.deployments:
                return 404, {"title": "Not found", "detail": f"deployment {m[1]} not found", "status": 404}
            if method == "PATCH":
                self.deployments[m[1]] = body["version"]
            return 200, self._deployment(m[1])
        if m := re.fullmatch(r"/v1/deployments/([^/]+/[^/]+)/predictions", path):
            if m[1] not in self.deployments:
                return 404, {"title": "Not found", "detail": f"deployment {m[1]} not found", "status": 404}
            return self._create(self.deployments[m[1]], body["input"])
        if path == "/v1/predictions" and method == "POST":
            return self._create(body["version"], body["input"])
        if m := re.fullmatch(r"/v1/predictions/(\w+)(/cancel)?", path):
            if m[1] not in self.predictions:
                return 404, {"title": "Not found", "detail": "prediction not found", "status": 404}
            return 200, self.predictions[m[1]]
        return 404, {"title": "Not found", "detail": path, "status": 404}

    def _model(self, model: str) -> dict:
        owner, name = model.split("/")
        latest = next((v for v, (m, _) in reversed(self.versions.items()) if m == model), None)
        return {"url": f"https://replicate.com/{model}", "owner": owner, "name": name, "description": None,
                "visibility": "private", "github_url": None, "paper_url": None, "license_url": None,
                "run_count": 0, "cover_image_url": None, "default_example": None,
                "latest_version": {"id": latest, "created_at": _now(), "cog_version": "0.23.1",
                                   "openapi_schema": {}} if latest else None}

    def _deployment(self, name: str) -> dict:
        version = self.deployments[name]
        owner, short = name.split("/")
        return {"owner": owner, "name": short, "current_release": {
            "number": 1, "model": self.versions[version][0], "version": version, "created_at": _now(),
            "created_by": {"type": "organization", "username": owner, "name": owner, "github_url": None},
            "configuration": {"hardware": "gpu-h100", "min_instances": 0, "max_instances": 1}}}

    def _create(self, version: str, inputs: dict):
        if version not in self.versions:
            return 422, {"title": "Invalid version", "detail": f"version {version} does not exist", "status": 422}
        model, cog_url = self.versions[version]
        r = post_prediction(cog_url, inputs, timeout=600)
        if r.status_code == 422:
            return 422, {"title": "Input validation failed", "status": 422,
                         "detail": "; ".join(f"{d['loc'][-1]}: {d['msg']}" for d in r.json()["detail"])}
        cog = r.json()
        pid = f"p{next(self._ids)}"
        output = self._files(pid, cog.get("output"))
        self.predictions[pid] = {
            "id": pid, "model": model, "version": version, "input": inputs, "output": output,
            "logs": cog.get("logs", ""), "error": cog.get("error"), "status": cog.get("status", "failed"),
            "metrics": {"predict_time": (cog.get("metrics") or {}).get("predict_time")},
            "created_at": _now(), "started_at": _now(), "completed_at": _now(),
            "urls": {"get": f"{self.url}/v1/predictions/{pid}", "cancel": f"{self.url}/v1/predictions/{pid}/cancel"}}
        # Like Replicate, creation answers before the result: the client has to poll for it.
        return 201, {**self.predictions[pid], "status": "starting", "output": None, "completed_at": None}

    def _files(self, pid: str, output, index: int | None = None):
        """Data URIs become file URLs on this server, as Replicate serves outputs (each of a list too)."""
        if isinstance(output, list):
            return [self._files(pid, item, i) for i, item in enumerate(output)]
        if isinstance(output, str) and output.startswith("data:"):
            key = f"{pid}/output" + ("" if index is None else f"-{index}")
            self.files[key] = from_data_uri(output)
            return f"{self.url}/v1/files/{key}"
        return output

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _answer(self, status: int, body, content_type="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                # Logged before the answer goes out: a client that has its answer can read the log (it missed
                # the last request once, on a busy machine).
                fake.log.append((self.command, self.path, status))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    return self._answer(401, {"title": "Unauthenticated", "status": 401,
                                              "detail": "You did not pass a valid authentication token"})
                with fake._lock:
                    key = "POST" if self.command == "POST" else "GET"
                    if fake.fail_next[key] > 0:
                        fake.fail_next[key] -= 1
                        return self._answer(503, {"title": "Service Unavailable", "status": 503,
                                                  "detail": "planted transient failure"})
                if self.path.startswith("/v1/files/"):
                    mime, data = fake.files[self.path[len("/v1/files/"):]]
                    return self._answer(200, data, mime)
                status, answer = fake.route(self.command, self.path, body)
                self._answer(status, answer)

            do_GET = do_POST = do_PATCH = _serve

        return Handler
