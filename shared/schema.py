"""Generate a deployment's OpenAPI schema from its predictor, the way `cog build` does.

The Cog server validates inputs only when `.cog/openapi_schema.json` exists next to predict.py, and
only the Go CLI (which needs Docker) writes it. This builds the same document from Cog's own Python
introspection (`cog._inspector`), so ranges, choices and required fields come from the `Input(...)`
definitions and nowhere else.

    python -m shared.schema            # (re)write every deployment's schema
    python -m shared.schema --check    # fail if any committed schema is stale
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from .catalog import DEPLOYMENTS, Deployment

SCHEMA_PATH = Path(".cog") / "openapi_schema.json"


def _title(name: str) -> str:
    return name.replace("_", " ").title()


def _predictor_info(folder: Path):
    from cog import _inspector

    sys.path.insert(0, str(folder))
    try:
        sys.modules.pop("predict", None)
        info = _inspector.create_predictor("predict", "Runner")
        streaming = _is_streaming(importlib.import_module("predict").Runner)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("predict", None)
    return info, streaming


def predictor_inputs(folder: Path) -> dict:
    """The inputs of the predictor in `folder` as Cog's Python SDK reads them: name -> field (default, ge, ...)."""
    return _predictor_info(folder)[0].inputs


def _is_streaming(runner_cls) -> bool:
    # Cog's CLI marks a predictor streaming when run() yields a ConcatenateIterator under @cog.streaming.
    return "ConcatenateIterator" in str(runner_cls.run.__annotations__.get("return", ""))


def input_schema(info) -> tuple[dict, dict]:
    """(Input schema, extra component schemas for enumerations)."""
    properties, required, enums = {}, [], {}
    for name, field in sorted(info.inputs.items(), key=lambda kv: kv[1].order):
        # As `cog build` writes it (tests/cog_static_schema.py): an input with choices is a reference to its
        # enumeration, without a title of its own; an optional input has a null default.
        prop = {"x-order": field.order} if field.choices else {"title": _title(name), "x-order": field.order}
        if field.choices:
            enums[name] = {"title": name, "description": "An enumeration.", "enum": list(field.choices),
                           **field.type.json_type()}
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop.update(field.type.json_type())
        if field.description:
            prop["description"] = field.description
        for key, value in (("minimum", field.ge), ("maximum", field.le), ("minLength", field.min_length),
                           ("maxLength", field.max_length), ("pattern", field.regex)):
            if value is not None:
                prop[key] = int(value) if prop.get("type") == "integer" else value
        if field.default is not None:
            prop["default"] = field.type.json_encode(field.default) if not field.choices else field.default
        elif _is_required(field):
            required.append(name)
        else:
            prop.update(default=None, nullable=True)
        if field.deprecated:
            prop["deprecated"] = True
        properties[name] = prop
    schema = {"title": "Input", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema, enums


def _is_required(field) -> bool:
    # Optional inputs are annotated Optional[...] (repetition OPTIONAL); anything else without a default is required.
    return field.type.repetition.name in ("REQUIRED", "REPEATED")


def build(dep: Deployment, folder: Path | None = None) -> dict:
    """The schema of `dep`'s predictor, or of a variant of it in `folder` (its own predict.py)."""
    info, streaming = _predictor_info(folder or dep.folder)
    inp, enums = input_schema(info)
    post = {
        "summary": "Predict",
        "operationId": "predict_predictions_post",
        "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictionRequest"}}}},
        "responses": {"200": {"description": "Successful Response",
                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictionResponse"}}}},
                      "422": {"description": "Validation Error"}},
    }
    if streaming:
        post["x-cog-streaming"] = True
    return {
        "openapi": "3.0.2",
        "info": {"title": dep.title, "version": "0.1.0", "description": dep.description,
                 "x-deployment": dep.name, "x-model": f"{dep.checkpoint.repo_id}@{dep.checkpoint.revision}"},
        "paths": {"/predictions": {"post": post}},
        "components": {"schemas": {
            "Input": inp,
            "Output": info.output.json_type(),
            "PredictionRequest": {"title": "PredictionRequest", "type": "object", "properties": {
                "id": {"title": "Id", "type": "string", "nullable": True},
                "input": {"$ref": "#/components/schemas/Input"},
                "webhook": {"title": "Webhook", "type": "string", "format": "uri", "nullable": True}}},
            "PredictionResponse": {"title": "PredictionResponse", "type": "object", "properties": {
                "id": {"title": "Id", "type": "string", "nullable": True},
                "input": {"$ref": "#/components/schemas/Input"},
                "output": {"$ref": "#/components/schemas/Output"},
                "status": {"title": "Status", "type": "string"},
                "error": {"title": "Error", "type": "string", "nullable": True},
                "logs": {"title": "Logs", "type": "string"},
                "metrics": {"title": "Metrics", "type": "object"}}},
            **enums,
        }},
    }


def committed(name: str) -> dict:
    """The schema committed for a deployment (what its image's Cog server validates against)."""
    return json.loads((DEPLOYMENTS[name].folder / SCHEMA_PATH).read_text())


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed schema differs")
    parser.add_argument("deployments", nargs="*", default=list(DEPLOYMENTS))
    args = parser.parse_args(argv)
    stale = []
    for name in args.deployments:
        dep = DEPLOYMENTS[name]
        path = dep.folder / SCHEMA_PATH
        text = render(build(dep))
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("stale OpenAPI schema(s), run `make schemas`:\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
