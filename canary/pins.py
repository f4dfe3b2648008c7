"""The stable pin of every deployment, in one file (canary/pins.json): the Replicate version it is judged against.

A pin is `cog-deployments/<deployment>:<version>`, always of the deployment's own Replicate model (so
one model's pin can never be used for another), or null until a first version is promoted.
`python -m canary promote` is the only writer.
"""

from __future__ import annotations

import json
from pathlib import Path

from shared.catalog import DEPLOYMENTS

from .targets import VERSION_REF

PINS = Path(__file__).resolve().parent / "pins.json"


def read(path: Path | None = None) -> dict[str, str | None]:
    return json.loads((path or PINS).read_text())["stable"]


def problem(deployment: str, ref: str) -> str | None:
    """Why `ref` cannot be `deployment`'s stable pin (None when it can)."""
    match = VERSION_REF.match(ref or "")
    expected = DEPLOYMENTS[deployment].replicate_model
    if not match:
        return f"{ref!r} is not a Replicate version ({expected}:<version>): only versions can be pinned"
    if match["model"] != expected:
        return f"{ref!r} is a version of {match['model']}, not of {deployment}'s model {expected}"
    return None


def stable(deployment: str, path: Path | None = None) -> str:
    ref = read(path).get(deployment)
    if ref is None:
        raise LookupError(f"{deployment} has no stable pin in {(path or PINS).name} yet: pass --stable (a Cog URL or a "
                          "Replicate version), or promote a first version with `python -m canary promote`")
    return ref


def pin(deployment: str, ref: str, path: Path | None = None) -> None:
    if why := problem(deployment, ref):
        raise ValueError(why)
    path = path or PINS
    data = json.loads(path.read_text())
    data["stable"][deployment] = ref
    path.write_text(json.dumps(data, indent=2) + "\n")
