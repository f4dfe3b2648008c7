"""Where the canary sends its cases: a Cog HTTP server, a Replicate model version or a Replicate deployment.

    http://127.0.0.1:5000                   a Cog server (`make serve`, a local container)
    cog-deployments/smollm3-3b:<version>    a Replicate model version
    deployment:cog-deployments/smollm3-3b   a Replicate deployment (whatever release it serves now)

Every target answers the same two questions: what is your input schema, and what do you return for
this input. Replicate calls go through the official client (`replicate>=1,<2`); transient failures
(connection errors, 429, 5xx) are retried with exponential back-off, permanent ones (401, 404, 422)
are reported at once. The API token comes from REPLICATE_API_TOKEN and is never printed: every message
leaving this module passes through `redact`.
"""

from __future__ import annotations

import functools
import os
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import requests
import tenacity

from shared.cogserver import from_data_uri, post_prediction

TOKEN_ENV = "REPLICATE_API_TOKEN"
VERSION_REF = re.compile(r"^(?P<model>[\w.-]+/[\w.-]+):(?P<version>[0-9a-zA-Z]+)$")
DEPLOYMENT_REF = re.compile(r"^deployment:(?P<deployment>[\w.-]+/[\w.-]+)$")
TERMINAL = ("succeeded", "failed", "canceled")


class TargetError(RuntimeError):
    """A target could not be reached or refused the canary itself (not a model failure)."""


def redact(text: str) -> str:
    token = os.environ.get(TOKEN_ENV)
    return text.replace(token, "***") if token and text else text


@dataclass
class Prediction:
    status: str  # succeeded | failed | canceled | rejected (input refused by the schema)
    output: Any = None
    error: str | None = None
    predict_time: float | None = None  # the server's own metric, when it reports one
    wall_time: float = 0.0

    @property
    def seconds(self) -> float:
        return self.predict_time if self.predict_time is not None else self.wall_time

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


def output_bytes(output, fetch=requests.get) -> bytes:
    """A file output's bytes: a data URI (Cog) or a URL (Replicate); lists hold one file."""
    if isinstance(output, list) and len(output) == 1:
        output = output[0]
    if not isinstance(output, str):
        raise ValueError(f"expected a file output, got {type(output).__name__}")
    if output.startswith("data:"):
        return from_data_uri(output)[1]
    response = fetch(output, timeout=120)
    response.raise_for_status()
    return response.content


def output_text(output) -> str:
    """Streamed text arrives as a list of pieces; a plain string stays as it is."""
    if isinstance(output, list) and all(isinstance(x, str) for x in output):
        return "".join(output)
    if isinstance(output, str):
        return output
    raise ValueError(f"expected text, got {type(output).__name__}")


class CogTarget:
    """A Cog server's HTTP API: GET /openapi.json, POST /predictions."""

    kind = "cog"

    def __init__(self, url: str, *, timeout: float = 900):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def __str__(self) -> str:
        return self.url

    @functools.cached_property
    def _schema(self) -> dict:
        try:
            r = requests.get(f"{self.url}/openapi.json", timeout=30)
            r.raise_for_status()
        except requests.RequestException as e:
            raise TargetError(f"{self.url}: cannot read /openapi.json: {e}") from None
        return r.json()

    def schema(self) -> dict:
        """The input schema, read once: one run judges one server."""
        return self._schema

    def predict(self, inputs: dict) -> Prediction:
        started = time.perf_counter()
        try:
            r = post_prediction(self.url, inputs, timeout=self.timeout)
        except requests.RequestException as e:
            raise TargetError(f"{self.url}: POST /predictions: {e}") from None
        wall = time.perf_counter() - started
        if r.status_code == 422:  # the server's schema refused the input, field by field
            detail = "; ".join(f"{d['loc'][-1]}: {d['msg']}" for d in r.json().get("detail", []))
            return Prediction("rejected", error=detail or r.text[:300], wall_time=wall)
        if r.status_code != 200:
            return Prediction("failed", error=f"HTTP {r.status_code}: {r.text[:300]}", wall_time=wall)
        body = r.json()
        return Prediction(body.get("status", "failed"), body.get("output"), body.get("error"),
                          (body.get("metrics") or {}).get("predict_time"), wall)

    def fetch(self, output) -> bytes:
        return output_bytes(output)


def replicate_client():
    """The official client, with the token from the environment; a clear error when it is missing."""
    import replicate

    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise TargetError(f"{TOKEN_ENV} is not set: Replicate targets need an API token "
                          "(https://replicate.com/account/api-tokens; in CI a repository secret). "
                          "A Cog URL (http://...) needs none.")
    return replicate.Client(api_token=token, base_url=os.environ.get("REPLICATE_BASE_URL"))


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the network, rate limits and server-side errors. Not: auth, not found, bad input."""
    import httpx
    from replicate.exceptions import ReplicateError

    if isinstance(exc, ReplicateError):
        return exc.status in (408, 429) or (exc.status or 0) >= 500
    return isinstance(exc, (httpx.TransportError, requests.ConnectionError, requests.Timeout))


def retrying(attempts: int = 6, backoff: float = 1.0) -> tenacity.Retrying:
    """Retry transient failures, waiting backoff, 2*backoff, 4*backoff ... seconds (at most 60)."""
    return tenacity.Retrying(retry=tenacity.retry_if_exception(is_transient),
                             wait=tenacity.wait_exponential(multiplier=backoff, max=60),
                             stop=tenacity.stop_after_attempt(attempts), reraise=True)


def api_error(ref: str, what: str, e: Exception) -> TargetError:
    """A failed Replicate call as one line: which target, which call, which status, transient or not."""
    from replicate.exceptions import ReplicateException

    if isinstance(e, ReplicateException):
        kind = "transient, gave up after retries" if is_transient(e) else "permanent"
        return TargetError(redact(f"{ref}: {what}: HTTP {getattr(e, 'status', None)} ({kind}): {e}"))
    return TargetError(redact(f"{ref}: {what}: {e.__class__.__name__}: {e}"))  # network, after retries


def call(ref: str, what: str, fn, *args, retry: tenacity.Retrying | None = None, **kwargs):
    """fn(*args, **kwargs) retried on transient errors; any failure becomes a TargetError naming `what`."""
    try:
        return (retry or retrying())(fn, *args, **kwargs)
    except Exception as e:
        raise api_error(ref, what, e) from None


class ReplicateTarget:
    """A Replicate model version (`owner/model:version`) or deployment (`deployment:owner/name`)."""

    kind = "replicate"

    def __init__(self, ref: str, *, client=None, attempts: int = 6, backoff: float = 1.0,
                 timeout: float = 1800):
        self.ref = ref
        version, deployment = VERSION_REF.match(ref), DEPLOYMENT_REF.match(ref)
        if not (version or deployment):
            raise TargetError(f"{ref!r} is neither owner/model:version nor deployment:owner/name")
        self.model, self.version = (version["model"], version["version"]) if version else (None, None)
        self.deployment = deployment["deployment"] if deployment else None
        self._client = client
        self.timeout = timeout
        self._retrying = retrying(attempts, backoff)

    def __str__(self) -> str:
        return self.ref

    @property
    def client(self):
        if self._client is None:
            self._client = replicate_client()
        return self._client

    def call(self, what: str, fn, *args, **kwargs):
        return call(self.ref, what, fn, *args, retry=self._retrying, **kwargs)

    @functools.cached_property
    def release(self) -> tuple[str, str]:
        """(model, version) this target serves: a deployment's release, read once, so that one run
        judges one version even if the deployment moves meanwhile."""
        if self.deployment:
            release = self.call("get deployment", self.client.deployments.get, self.deployment).current_release
            if release is None:
                raise TargetError(f"{self.ref}: the deployment has no release yet")
            return release.model, release.version
        return self.model, self.version

    @functools.cached_property
    def _schema(self) -> dict:
        model, version = self.release
        found = self.call("get model", self.client.models.get, model)
        return self.call("get version", found.versions.get, version).openapi_schema

    def schema(self) -> dict:
        return self._schema

    def predict(self, inputs: dict) -> Prediction:
        from replicate.exceptions import ReplicateError

        started = time.perf_counter()
        create = (functools.partial(self.client.deployments.predictions.create, self.deployment) if self.deployment
                  else functools.partial(self.client.predictions.create, version=self.version))
        try:
            prediction = self._retrying(create, input=inputs)
        except Exception as e:
            if isinstance(e, ReplicateError) and e.status == 422:  # the version's schema refused the input
                return Prediction("rejected", error=redact(e.detail or str(e)), wall_time=time.perf_counter() - started)
            raise api_error(self.ref, "create prediction", e) from None
        deadline = time.monotonic() + self.timeout
        while prediction.status not in TERMINAL:
            if time.monotonic() > deadline:
                self.call("cancel prediction", prediction.cancel)
                return Prediction("failed", error=f"no result after {self.timeout:.0f}s",
                                  wall_time=time.perf_counter() - started)
            time.sleep(self.client.poll_interval)  # REPLICATE_POLL_INTERVAL, as the client's own wait()
            self.call("get prediction", prediction.reload)
        metrics = prediction.metrics or {}
        return Prediction(prediction.status, prediction.output, prediction.error, metrics.get("predict_time"),
                          time.perf_counter() - started)

    def fetch(self, output) -> bytes:
        # Files on the API host (api.replicate.com/v1/files/...) need the token; delivery URLs do not.
        api_host = urlparse(os.environ.get("REPLICATE_BASE_URL") or "https://api.replicate.com").netloc

        def get(url, timeout):
            headers = {"Authorization": f"Bearer {os.environ[TOKEN_ENV]}"} if urlparse(url).netloc == api_host else {}
            return self.call("fetch output", requests.get, url, headers=headers, timeout=timeout)

        return output_bytes(output, fetch=get)


def parse(spec: str, **kwargs) -> CogTarget | ReplicateTarget:
    if spec.startswith(("http://", "https://")):
        return CogTarget(spec)
    if VERSION_REF.match(spec) or DEPLOYMENT_REF.match(spec):
        return ReplicateTarget(spec, **kwargs)
    raise TargetError(f"cannot read target {spec!r}: expected http(s)://host:port (a Cog server), "
                      "owner/model:version (a Replicate version) or deployment:owner/name")
