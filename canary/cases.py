"""The canary's inputs: one versioned case file per deployment (canary/cases/<deployment>.json).

A case is a fixed request (fixed seed where the model takes one) and what its output must look like.
"@name" values are files under shared/assets/examples/, sent as data URIs. Each case must be valid for
the deployment's committed input schema (checked in the tests), so a case never fails for its own sake;
against a candidate, `invalid_for` tells a rejected case apart from a broken model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from shared.cogserver import resolve_files

CASES = Path(__file__).resolve().parent / "cases"


@dataclass(frozen=True)
class Case:
    deployment: str
    name: str
    input: dict
    expect: dict  # {"kind": "image", "size": [w, h], "format": "PNG"} or {"kind": "text", "max_chars": n}

    def request(self) -> dict:
        """The input as sent: "@file" values read and encoded."""
        return resolve_files(self.input)


def _read(deployment: str) -> dict:
    path = CASES / f"{deployment}.json"
    if not path.exists():
        raise FileNotFoundError(f"no canary cases for {deployment!r}: expected {path}")
    data = json.loads(path.read_text())
    if data.get("deployment") != deployment:
        raise ValueError(f"{path}: says deployment {data.get('deployment')!r}, file is for {deployment!r}")
    return data


def load(deployment: str) -> list[Case]:
    return [Case(deployment, c["name"], c["input"], c["expect"]) for c in _read(deployment)["cases"]]


def version(deployment: str) -> int:
    """The case file's version: bumped whenever a case changes, so reports compare like with like."""
    return int(_read(deployment)["version"])


def invalid_for(case: Case, openapi: dict) -> list[str]:
    """Why `openapi`'s Input schema (a Cog server's /openapi.json) rejects this case; empty when it accepts it."""
    import jsonschema

    components = openapi["components"]
    # The Input schema refers to its enums as #/components/schemas/...: validate inside the whole document.
    document = {"$ref": "#/components/schemas/Input", "components": components}
    validator = jsonschema.Draft202012Validator(document)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or 'input'}: {e.message}"
                  for e in validator.iter_errors(case.input))
