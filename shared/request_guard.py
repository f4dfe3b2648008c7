"""A check in front of Cog's server: prediction ids it cannot survive are refused before they reach it.

coglet 0.23.1 (the server in every image here) makes a folder named after each prediction id,
`/tmp/coglet/predictions/<id>`, before the prediction runs. An id with a NUL byte, or longer than a file
name may be (255 bytes), fails there, and that early return never gives the slot back: every later request
gets 409 "At capacity" until the process restarts. `"../../x"` or `"/x"` makes folders outside its own.
Replicate makes its own ids, so this only matters where clients reach the server themselves
(docs/operations.md has the upstream reproduction).

Run in the image instead of its default command (Cog's images keep tini as the entrypoint):

    docker run -p 5000:5000 --gpus all <image> python -m shared.request_guard

It starts Cog's server (`python -m cog.server.http`, any further arguments passed on) on a loopback port,
serves PORT (5000) itself, answers a request whose id does not match ID_PATTERN with 422 naming `id`, and
passes everything else through unchanged, streamed answers included. It stops with the server, and stops
the server when it is stopped.

While it is there, it also makes the server keep its schema's word on inputs (coglet 0.23.1 does not):
`null` for an input the schema calls nullable means "left out" (the server answers 422 `null is not of type
"integer"`), and an input the schema does not name is refused naming it (the server drops it without a word,
so a typo such as `max_new_token` was silently lost).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from urllib.parse import unquote

from aiohttp import ClientSession, ClientTimeout, DummyCookieJar, web
from yarl import URL

# Replicate's ids are 26 lowercase letters and digits, UUIDs 36 characters with hyphens: both fit, and no
# id that fits can be a path (no dot, no slash) or overrun a file name.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
ID_RULE = "letters, digits, '_' and '-', 1 to 128 of them"
# The routes whose id becomes a folder name: a create with the id in the path (PUT) or in the body (POST).
CREATE = re.compile(r"^/(?P<kind>predictions|trainings)(?:/(?P<id>[^/]*))?$")
# Headers about one hop of the connection, not the request: each side sets its own.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "host", "content-length"}
# Headers aiohttp's client would add on its own (a Content-Type for any body among them): the request goes on
# with the client's headers only, so the server answers it as it would have answered the client.
AUTO_HEADERS = ("Content-Type", "User-Agent", "Accept", "Accept-Encoding")
MAX_BODY_BYTES = 1 << 30  # images arrive as data URIs; Cog itself sets no limit, this one only bounds memory


def id_problem(prediction_id: object) -> str | None:
    """Why Cog's server cannot take this id, or None. None (no id) is fine: the server then makes one."""
    if prediction_id is None:
        return None
    if not isinstance(prediction_id, str) or not ID_PATTERN.fullmatch(prediction_id):
        return f"the prediction id must be {ID_RULE}"
    return None


def create_route(raw_path: str) -> re.Match | None:
    """/predictions, /trainings or either with an id (`kind`, `id`, as sent); the query left out."""
    return CREATE.match(raw_path.split("?", 1)[0])


def creates_prediction(method: str, raw_path: str) -> bool:
    route = create_route(raw_path)
    if route is None or route["kind"] != "predictions":
        return False
    return (method == "POST" and route["id"] is None) or (method == "PUT" and route["id"] is not None)


def json_body(body: bytes) -> object:
    """The request's JSON document, or None where it is none (the server answers that itself, naming no id)."""
    try:
        return json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return None


def request_id_problem(method: str, raw_path: str, document: object) -> tuple[list, str] | None:
    """(loc, problem) for the id a request would create a prediction under, or None if it can have it.

    `raw_path` is the path as sent: the server decodes an id's %2F into a slash after routing on it."""
    route = create_route(raw_path)
    if route is None or method not in ("POST", "PUT"):
        return None
    if method == "PUT" and route["id"] is not None:
        if problem := id_problem(unquote(route["id"], errors="replace")):
            return ["path", "id"], problem
    if isinstance(document, dict) and (problem := id_problem(document.get("id"))):
        return ["body", "id"], problem
    return None


def input_problem(document: dict, properties: dict) -> tuple[list, str] | None:
    """Drop from document["input"] each null the schema allows (nullable: left out means its default);
    (loc, problem) for an input the schema does not name."""
    inputs = document.get("input")
    if not isinstance(inputs, dict):
        return None  # missing or not an object: the server's own answer names it
    for name in list(inputs):
        if name not in properties:
            return ["body", "input", name], f"{name} is not an input of this model; its inputs: {', '.join(properties)}"
        if inputs[name] is None and properties[name].get("nullable"):
            del inputs[name]
    return None


def refusal(loc: list, problem: str) -> web.Response:
    # The shape of Cog's own 422, so clients that read `detail` show it the same way.
    detail = [{"loc": loc, "msg": problem, "type": "value_error"}]
    return web.json_response({"detail": detail}, status=422)


def passed_on(headers) -> dict:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


def make_app(upstream: str) -> web.Application:
    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        document = json_body(body)
        if refused := request_id_problem(request.method, request.raw_path, document):
            return refusal(*refused)
        session: ClientSession = request.app["session"]
        if (isinstance(document, dict) and creates_prediction(request.method, request.raw_path)
                and (properties := await input_properties(request.app))):
            inputs = document.get("input")
            sent = len(inputs) if isinstance(inputs, dict) else None
            if refused := input_problem(document, properties):
                return refusal(*refused)
            if sent is not None and len(inputs) != sent:  # a null left out; else the body goes as it came
                body = json.dumps(document).encode()
        try:
            # The path exactly as it was sent (encoded=True): decoding and encoding it again could change it.
            async with session.request(request.method, URL(upstream + request.raw_path, encoded=True),
                                       headers=passed_on(request.headers), data=body or None,
                                       skip_auto_headers=AUTO_HEADERS) as answer:
                response = web.StreamResponse(status=answer.status, reason=answer.reason,
                                              headers=passed_on(answer.headers))
                await response.prepare(request)
                # Pieces as they arrive: a streamed prediction's events reach the client one by one.
                async for piece in answer.content.iter_any():
                    await response.write(piece)
                await response.write_eof()
                return response
        except OSError as e:  # refused or reset: the server is not up (yet), or went away
            return web.json_response({"detail": f"Cog server not reachable: {e.__class__.__name__}"}, status=502)

    known: dict = {}  # the schema's inputs, once read

    async def input_properties(app: web.Application) -> dict | None:
        """The model's inputs from the server's own schema, read once it answers (None until then)."""
        if "inputs" not in known:
            try:
                async with app["session"].get(f"{upstream}/openapi.json") as answer:
                    if answer.status == 200:
                        schema = await answer.json()
                        known["inputs"] = schema["components"]["schemas"]["Input"]["properties"]
            except (OSError, ValueError, KeyError):
                pass  # not up yet: the request goes on unchecked, and the server validates it as ever
        return known.get("inputs")

    async def open_session(app: web.Application):
        # No total timeout: a synchronous prediction holds its request for as long as it runs. Bytes pass as
        # they are (no decompression), and the server's own cookies are not kept between clients.
        app["session"] = ClientSession(timeout=ClientTimeout(total=None), auto_decompress=False,
                                       cookie_jar=DummyCookieJar())
        yield
        await app["session"].close()

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_route("*", "/{tail:.*}", forward)
    app.cleanup_ctx.append(open_session)
    return app


def inner_port(outer: int) -> int:
    return int(os.environ.get("COG_INNER_PORT", outer + 1))


async def serve(host: str, port: int, server: subprocess.Popen, upstream: str) -> int:
    # A client that hangs up cancels its forwarded request too, as it would talking to the server directly.
    runner = web.AppRunner(make_app(upstream), handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while server.poll() is None and not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            except TimeoutError:
                pass
    finally:
        await runner.cleanup()
    if server.poll() is None:  # stopped from outside: stop the server the same way
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return server.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="0.0.0.0", help="where this guard listens (the port is $PORT, 5000)")
    args, server_args = parser.parse_known_args(argv)
    port = int(os.environ.get("PORT", "5000"))
    inner = inner_port(port)
    # Cog's server reads its port from PORT; it listens on loopback only, so nothing reaches it unchecked.
    server = subprocess.Popen([sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1", *server_args],
                              env={**os.environ, "PORT": str(inner)})
    return asyncio.run(serve(args.host, port, server, f"http://127.0.0.1:{inner}"))


if __name__ == "__main__":
    sys.exit(main())
