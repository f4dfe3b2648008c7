"""Run a deployment under the real Cog HTTP server without Docker: the `cog predict` experience.

    python -m shared.cogserver predict flux-lora-txt2img -i prompt="a fox" -i trigger_word=Anime
    python -m shared.cogserver predict gemma3-4b-it -i image=@photo.jpg -i prompt="what is this?"
    python -m shared.cogserver serve smollm3-3b --port 5000

The server (`python -m cog.server.http`, coglet) runs in the deployment's folder, where its
`.cog/openapi_schema.json` makes it validate inputs, with the repo root on PYTHONPATH so `shared`
imports as it does in the image. Outputs are saved under outputs/<deployment>/; nothing the server
returned is dropped: images are decoded from their data URIs, streamed text is joined into a .txt,
and the full response JSON is kept beside them.
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import tenacity

from .catalog import DEPLOYMENTS, EXAMPLES, REPO_ROOT

OUTPUTS = REPO_ROOT / "outputs"


def parse_event(line: str) -> dict | None:
    """A runtime.log_event line (logfmt) back into its fields, or None for any other line. Dotted keys nest
    again; values read as JSON where they are JSON (numbers, true/false, lists), as text otherwise; empty is None."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split, lexer.quotes, lexer.commenters = True, '"', ""  # logfmt quotes with " only
    try:
        tokens = list(lexer)
    except ValueError:
        return None
    if not tokens or not tokens[0].startswith("event="):
        return None
    record: dict = {}
    for token in tokens:
        key, sep, raw = token.partition("=")
        if not sep or not key:
            return None
        *parents, last = key.split(".")
        target = record
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                return None
        try:
            target[last] = None if raw == "" else json.loads(raw)
        except ValueError:
            target[last] = raw
    record["event"] = tokens[0].partition("=")[2]  # an event name is text, whatever it looks like
    return record


def log_events(text: str, name: str) -> list[dict]:
    """The log events called `name` (runtime.log_event) in a server log or a prediction's `logs`: a line is
    the event itself, or coglet's JSON record with the event as its message."""
    found = []
    for line in text.splitlines():
        if name not in line:
            continue
        if line.startswith("{"):  # coglet's record around the worker's line
            try:
                line = json.loads(line).get("fields", {}).get("message", "")
            except (ValueError, AttributeError):
                continue
        event = parse_event(line)
        if event is not None and event.get("event") == name:
            found.append(event)
    return found


def runner_class(deployment: str):
    """Import deployments/<name>/predict.py as its own module (never as `predict`) and return its Runner."""
    import importlib.util

    path = REPO_ROOT / "deployments" / deployment / "predict.py"
    spec = importlib.util.spec_from_file_location(f"predict_{deployment.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Runner


def declared_concurrency(predict_py: Path) -> int:
    """N of `@cog.concurrent(max=N)` on the runner's run(), as `cog build` reads it (1 without one).

    `python -m cog.server.http` takes its concurrency from COG_MAX_CONCURRENCY only (coglet 0.23.1)."""
    import ast

    for node in ast.walk(ast.parse(predict_py.read_text())):
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef) and node.name in ("run", "predict"):
            for decorator in node.decorator_list:
                func = getattr(decorator, "func", None)
                name = getattr(func, "attr", None) or getattr(func, "id", "")
                if isinstance(decorator, ast.Call) and name == "concurrent":
                    return next((int(k.value.value) for k in decorator.keywords if k.arg == "max"), 1)
    return 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CogServer:
    """A real Cog server for one deployment on a loopback port; use as a context manager."""

    def __init__(self, deployment: str, *, port: int | None = None, env: dict | None = None,
                 setup_timeout: float = 600, log_path: Path | None = None, folder: Path | None = None,
                 guard: bool = False):
        self.dep = DEPLOYMENTS[deployment]
        # Behind shared.request_guard (ids checked in front), as `python -m shared.request_guard` runs it.
        self.guard = guard
        # The predictor's folder (predict.py + .cog/): the deployment's own unless a variant is given.
        self.folder = Path(folder or self.dep.folder)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.setup_timeout = setup_timeout
        self.log_path = log_path or Path(tempfile.mkstemp(prefix=f"cog-{deployment}-", suffix=".log")[1])
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None

    def environment(self) -> dict:
        env = dict(os.environ)
        # The worker is started as `python -c ...` with the first python on PATH: make it this one.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env.update(PORT=str(self.port), COG_PREDICT_TYPE_STUB="predict.py:Runner", PYTHONUNBUFFERED="1")
        env.setdefault("COG_LOG_LEVEL", "warn")
        # A built image serves @cog.concurrent(max=N) requests at once; this server reads only the variable.
        env["COG_MAX_CONCURRENCY"] = str(declared_concurrency(self.folder / "predict.py"))
        if self.guard:
            env["COG_INNER_PORT"] = str(free_port())
        env.update(self.extra_env)
        return env

    def start(self) -> "CogServer":
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()  # a failed setup must not leave a server (with the caller's secrets in its env) behind
            raise
        return self

    def command(self) -> list[str]:
        """Cog's server on loopback, or the guard that starts it behind itself."""
        return [sys.executable, "-m", "shared.request_guard" if self.guard else "cog.server.http", "--host", "127.0.0.1"]

    def launch(self) -> "CogServer":
        """Start the process without waiting for setup (several servers can then set up at once)."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.folder, env=self.environment(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.setup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.dep.name}: Cog server exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                status = requests.get(f"{self.url}/health-check", timeout=2).json().get("status")
            except requests.RequestException:
                status = None
            if status == "READY":
                return
            if status in ("SETUP_FAILED", "DEFUNCT"):
                raise RuntimeError(f"{self.dep.name}: setup failed ({status}):\n{self.log_tail()}")
            time.sleep(0.25)
        raise TimeoutError(f"{self.dep.name}: not READY after {self.setup_timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def events(self, name: str) -> list[dict]:
        """The deployment's own log events called `name` (runtime.log_event), from coglet's JSON log lines."""
        return log_events(self.log_path.read_text(errors="replace"), name)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:  # whatever is left of its process group: the worker of a server that exited on its own
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self) -> "CogServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- requests ---------------------------------------------------------------------------------

    def predict(self, inputs: dict, *, timeout: float = 600) -> requests.Response:
        return post_prediction(self.url, inputs, timeout=timeout)

    def stream(self, inputs: dict, *, timeout: float = 600) -> list[tuple[str, str]]:
        return stream_prediction(self.url, inputs, timeout=timeout)


def stream_prediction(url: str, inputs: dict, *, timeout: float = 600) -> list[tuple[str, str]]:
    """POST with `Accept: text/event-stream`; returns the (event, data) pairs as they arrived."""
    import sseclient

    with post_prediction(url, inputs, timeout=timeout, stream=True, headers={"Accept": "text/event-stream"}) as r:
        if r.status_code != 200:
            raise RuntimeError(f"streaming request failed: {r.status_code} {r.text[:500]}")
        # sseclient splits events on bytes, then decodes: a generated U+2028 inside the JSON stays inside it
        # (httpx's line decoder, under httpx-sse, splits there and cuts the chunk in two).
        return [(event.event, event.data) for event in sseclient.SSEClient(r).events()]


def busy_retrying(busy_wait: float = 30) -> tenacity.Retrying:
    """Retry while the server answers 409 "at capacity", briefly and with a bound (then its answer is returned).

    The server frees its slot a moment after it answers, so a request sent right after the previous one can
    be turned away."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda response: response.status_code == 409),
        wait=tenacity.wait_exponential(multiplier=0.05, max=1.0),  # 50 ms, 100 ms, ... 1 s
        stop=tenacity.stop_after_delay(busy_wait),
        before_sleep=lambda state: state.outcome.result().close(),
        retry_error_callback=lambda state: state.outcome.result(),  # still busy: the caller sees the 409
    )


def post_prediction(url: str, inputs: dict | None, *, timeout: float, busy_wait: float = 30, **kwargs) -> requests.Response:
    """POST {url}/predictions, waiting while the server answers 409 "at capacity".

    The body is {"input": inputs}; with inputs None, the body given in kwargs (json= or data=) goes as it is.
    """
    if inputs is not None:
        kwargs["json"] = {"input": inputs}
    return busy_retrying(busy_wait)(requests.post, f"{url}/predictions", timeout=timeout, **kwargs)


# -- files in and out -----------------------------------------------------------------------------

def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def to_data_uri(path: Path) -> str:
    return data_uri(path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream")


def from_data_uri(uri: str) -> tuple[str, bytes]:
    """(mime type, bytes) of a data URI: how Cog returns file outputs when no upload URL is set."""
    header, _, payload = uri.partition(",")
    return header[5:].split(";")[0], base64.b64decode(payload)


def parse_inputs(pairs: list[str]) -> dict:
    """`key=value` pairs; `key=@path` sends a local file; numbers and booleans are typed as JSON."""
    inputs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"input {pair!r} is not key=value")
        if value.startswith("@"):
            inputs[key] = to_data_uri(Path(value[1:]))
            continue
        try:
            parsed = json.loads(value)
            inputs[key] = parsed if isinstance(parsed, (int, float, bool)) else value
        except json.JSONDecodeError:
            inputs[key] = value
    return inputs


def resolve_files(inputs: dict) -> dict:
    """Inputs with "@name" values replaced by the file shared/assets/examples/<name> as a data URI."""
    return {k: to_data_uri(EXAMPLES / v[1:]) if isinstance(v, str) and v.startswith("@") else v
            for k, v in inputs.items()}


def example_inputs(deployment: str) -> dict:
    """The catalog's example request, with "@file" values read from shared/assets/examples/."""
    return resolve_files(DEPLOYMENTS[deployment].example)


def save_outputs(deployment: str, response: dict, folder: Path = OUTPUTS) -> list[Path]:
    """Write the prediction's output (decoded) and its full response JSON; returns the files written."""
    out = folder / deployment
    out.mkdir(parents=True, exist_ok=True)
    stem = time.strftime("%Y%m%d-%H%M%S") + f"-{response.get('id') or 'local'}"[:24]
    written = []
    output = response.get("output")
    files = [output] if isinstance(output, str) else output if isinstance(output, list) else []
    record = dict(response)
    if files and all(isinstance(x, str) and x.startswith("data:") for x in files):  # files: FLUX's images
        for i, uri in enumerate(files):
            mime, data = from_data_uri(uri)
            ext = mimetypes.guess_extension(mime) or ".bin"
            path = out / f"{stem}{f'-{i}' if len(files) > 1 else ''}{'.jpg' if ext == '.jpeg' else ext}"
            path.write_bytes(data)
            written.append(path)
        names = [f"(saved to {p.name})" for p in written]
        record["output"] = names[0] if isinstance(output, str) else names
    elif isinstance(output, list) and all(isinstance(x, str) for x in output):  # streamed text: its pieces
        path = out / f"{stem}.txt"
        path.write_text("".join(output), encoding="utf-8")
        written.append(path)
    meta = out / f"{stem}.json"
    meta.write_text(json.dumps(record, indent=2, default=str))
    written.append(meta)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a deployment under the real Cog server (no Docker).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="start the server, send one prediction, save outputs, stop")
    p.add_argument("deployment", choices=list(DEPLOYMENTS))
    p.add_argument("-i", "--input", action="append", default=[], help="key=value (key=@file for files)")
    p.add_argument("-I", "--inputs", default="", help="several key=value pairs in one shell-quoted string")
    p.add_argument("--example", action="store_true", help="send the catalog's example request")
    s = sub.add_parser("serve", help="start the server in the foreground")
    s.add_argument("deployment", choices=list(DEPLOYMENTS))
    s.add_argument("--port", type=int, default=5000)
    s.add_argument("--guard", action="store_true", help="behind shared.request_guard, as a self-hosted image runs")
    d = sub.add_parser("demo", help="every deployment: start its server, send its example, save the output")
    d.add_argument("deployments", nargs="*", default=list(DEPLOYMENTS))
    args = parser.parse_args(argv)

    if args.command == "demo":
        return demo(args.deployments)

    if args.command == "serve":
        server = CogServer(args.deployment, port=args.port, log_path=Path("/dev/stdout"), guard=args.guard)
        print(f"{args.deployment}: starting the Cog server on {server.url} (Ctrl-C stops it)", flush=True)
        os.chdir(server.dep.folder)
        os.execvpe(sys.executable, server.command(), server.environment())

    inputs = example_inputs(args.deployment) if args.example else {}
    inputs.update(parse_inputs(shlex.split(args.inputs) + args.input))
    return run_one(args.deployment, inputs)


def run_one(deployment: str, inputs: dict) -> int:
    with CogServer(deployment) as server:
        started = time.perf_counter()
        response = server.predict(inputs)
        elapsed = time.perf_counter() - started
        log_tail = server.log_tail()
    if response.status_code != 200:
        print(f"{deployment}: HTTP {response.status_code}: {response.text}", file=sys.stderr)
        return 1
    body = response.json()
    files = save_outputs(deployment, body)
    if body.get("status") != "succeeded":
        print(f"{deployment}: prediction {body.get('status')}: {body.get('error')}\n{log_tail}", file=sys.stderr)
        return 1
    print(f"{deployment}: {body.get('status')} in {elapsed:.1f}s, metrics {body.get('metrics')}")
    for f in files:
        print(f"  {f.relative_to(REPO_ROOT) if f.is_relative_to(REPO_ROOT) else f}")
    return 0


def demo(deployments: list[str]) -> int:
    from .weights import ENV_VAR

    profile = os.environ.get(ENV_VAR, "hub")
    print(f"Demo: each deployment under the real Cog server, {ENV_VAR}={profile}.")
    if profile == "tiny":
        print("Tiny weights are random: images are noise and text is gibberish. They prove the whole path\n"
              "(schema, server, LoRA hot-swap, streaming, outputs) works; for real results run with\n"
              f"{ENV_VAR}=hub and HF_TOKEN set on a GPU machine (see README).")
    failed = [name for name in deployments if run_one(name, example_inputs(name)) != 0]
    if failed:
        print(f"demo failed for: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"All {len(deployments)} outputs are under {OUTPUTS.relative_to(REPO_ROOT)}/.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
