"""Candidates with planted regressions, for the canary's own tests.

A variant is a real predictor folder: a predict.py whose Runner subclasses the deployment's Runner,
plus the .cog/openapi_schema.json generated from that Runner the way `cog build` would. The Cog server
serves it like any deployment, so the canary sees what a broken release would really show: a black
image, a narrowed range in /openapi.json, a failed prediction.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import time
from pathlib import Path

from cog.input import FieldInfo
from PIL import Image

from shared.catalog import DEPLOYMENTS
from shared.schema import SCHEMA_PATH, build, render
from tests.conftest import runner_class

# What each plant does. Schema plants name the input they change, per kind of deployment.
OUTPUT_PLANTS = {"identical", "black", "blank", "wrong-size", "other-seed", "repeat", "empty", "slow", "error"}
SCHEMA_PLANTS = {
    # removed: the input disappears (clients still sending it are silently ignored)
    "removed-input": {"image": "output_format", "text": "mode"},
    # narrowed: the minimum rises above what a canary case sends
    "narrowed": {"image": ("width", {"ge": 768}), "text": ("max_new_tokens", {"ge": 80})},
    # changed default: clients that omit the input silently get something else
    "changed-default": {"image": ("num_inference_steps", {"default": 20}), "text": ("temperature", {"default": 1.0})},
}


def _kind(deployment: str) -> str:
    return "image" if DEPLOYMENTS[deployment].task in ("text-to-image", "image-to-image") else "text"


def _signature(base, deployment: str, plant: str) -> tuple[inspect.Signature, dict]:
    """The variant's run() signature, and the values to pass for inputs it no longer takes."""
    sig = inspect.signature(base.run)
    params, fill = dict(sig.parameters), {}
    change = SCHEMA_PLANTS.get(plant, {}).get(_kind(deployment))
    if plant == "removed-input":
        fill[change] = params.pop(change).default.default
    elif plant in ("narrowed", "changed-default"):
        name, replaced = change
        params[name] = params[name].replace(default=dataclasses.replace(params[name].default, **replaced))
    return sig.replace(parameters=list(params.values())), fill


def planted(deployment: str, plant: str):
    """A Runner class for `deployment` with `plant` built in."""
    if plant not in OUTPUT_PLANTS | set(SCHEMA_PLANTS):
        raise ValueError(f"unknown plant {plant!r}")
    base = runner_class(deployment)  # the variant's own module is `predict`: the deployment's loads under another name
    sig, fill = _signature(base, deployment, plant)

    # No closures over functions in run(): Cog's inspector follows them as if they were decorators.
    class Planted(base):
        PLANT, FILL, SIGNATURE = plant, fill, sig

        if inspect.isasyncgenfunction(base.run):  # the text runners (async, served concurrently)
            async def run(self, **inputs):
                started = time.perf_counter()
                pieces = [piece async for piece in super().run(**self._inputs(inputs))]
                for piece in self._text(pieces, started):
                    yield piece
        elif inspect.isgeneratorfunction(base.run):
            def run(self, **inputs):
                started = time.perf_counter()
                pieces = list(super().run(**self._inputs(inputs)))
                yield from self._text(pieces, started)
        else:
            def run(self, **inputs):
                started = time.perf_counter()
                return [self._image(path, started) for path in super().run(**self._inputs(inputs))]

        def _inputs(self, inputs):
            if self.PLANT == "error":
                raise RuntimeError("planted failure: the candidate crashes on every request")
            if self.PLANT == "other-seed" and inputs.get("seed") is not None:
                inputs["seed"] += 1
            # The server passes only the inputs a request sent; the rest take the signature's defaults.
            defaults = {n: p.default.default for n, p in self.SIGNATURE.parameters.items()
                        if isinstance(p.default, FieldInfo)}
            return {**defaults, **inputs, **self.FILL}

        def _slow(self, started):
            if self.PLANT == "slow":  # twice the time: wait as long as the real work took
                time.sleep(time.perf_counter() - started)

        def _text(self, pieces, started):
            self._slow(started)
            if self.PLANT == "repeat":
                return ["the answer is the answer is "] * 12
            return [] if self.PLANT == "empty" else pieces

        def _image(self, path, started):
            self._slow(started)
            if self.PLANT in ("black", "blank", "wrong-size"):
                with Image.open(path) as img:
                    fmt, size = img.format, img.size
                    if self.PLANT == "wrong-size":
                        out = img.convert("RGB").resize((size[0] // 2, size[1] // 2))
                    else:
                        out = Image.new("RGB", size, (0, 0, 0) if self.PLANT == "black" else (128, 128, 128))
                buffer = io.BytesIO()
                out.save(buffer, format=fmt)
                Path(path).write_bytes(buffer.getvalue())
            return path

    Planted.run.__signature__ = sig
    Planted.run.__annotations__ = {**{n: p.annotation for n, p in sig.parameters.items() if n != "self"},
                                   "return": sig.return_annotation}
    Planted.__name__ = Planted.__qualname__ = "Runner"
    return Planted


def variant_folder(deployment: str, plant: str, root: Path) -> Path:
    """Write the variant's predict.py and its generated schema under root; returns the folder."""
    folder = root / f"{deployment}-{plant}"
    (folder / SCHEMA_PATH).parent.mkdir(parents=True, exist_ok=True)
    (folder / "predict.py").write_text(
        f'"""{deployment} with a planted regression: {plant} (tests/canary/planted.py)."""\n\n'
        "from tests.canary.planted import planted\n\n"
        f"Runner = planted({deployment!r}, {plant!r})\n")
    (folder / SCHEMA_PATH).write_text(render(build(DEPLOYMENTS[deployment], folder=folder)))
    return folder
