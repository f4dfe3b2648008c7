"""The stable pin of every deployment, in one file (canary/pins.json): the Replicate version it is judged against.

A pin is `cog-deployments/<deployment>:<version>`, always of the deployment's own Replicate model (so
one model's pin can never be used for another), or null until a first version is promoted.
`python -m canary promote` writes one pin; `python -m canary pins-commit` writes the pins a release
promoted, in one commit that it rebases and retries until it lands (a release runs one such job).
"""

from __future__ import annotations

import json
import subprocess
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


def commit(updates: dict[str, str], repo: Path, *, attempts: int = 5) -> str:
    """Write `updates` (deployment -> version) into pins.json on top of the remote's newest commit, commit,
    push; on a rejected push (someone else pushed meanwhile) drop the commit, rebase and write again."""
    for deployment, ref in updates.items():
        if why := problem(deployment, ref):
            raise ValueError(why)
    git = lambda *args: subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)  # noqa: E731
    path = repo / PINS.relative_to(PINS.parent.parent)
    message = "canary: promote " + ", ".join(f"{d} to {ref}" for d, ref in sorted(updates.items()))
    for _ in range(attempts):
        git("pull", "--rebase", "--quiet")
        for deployment, ref in updates.items():
            pin(deployment, ref, path)
        git("commit", "--quiet", "-m", message, "--", str(path.relative_to(repo)))
        try:
            git("push", "--quiet")
            break
        except subprocess.CalledProcessError:
            git("reset", "--quiet", "--hard", "HEAD~1")  # rejected: another commit landed first
    else:
        raise RuntimeError(f"could not push the pins after {attempts} attempts")
    return git("rev-parse", "HEAD").stdout.strip()
