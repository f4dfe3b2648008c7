"""The canary's report: a markdown table for people, a JSON file for machines, same rows."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

from PIL import Image

from shared.catalog import source_commit

from . import thresholds as T
from .runner import Outcome

HEADLINE = {"pass": "PASS: the candidate matches stable", "regression": "REGRESSION: do not promote",
            "error": "ERROR: the canary could not judge every check (see the rows marked error)"}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(outcome: Outcome) -> str:
    lines = [f"## Canary: {outcome.deployment}: {HEADLINE[outcome.result]}", "",
             f"stable `{outcome.stable}` · candidate `{outcome.candidate}` · cases v{outcome.cases_version} · "
             f"{outcome.samples} sample(s) per side", "",
             "| case | check | stable | candidate | verdict |", "|---|---|---|---|---|"]
    for r in outcome.rows:
        verdict = r.verdict if r.verdict == "pass" or not r.detail else f"**{r.verdict}**: {r.detail}"
        lines.append("| " + " | ".join(_cell(x) for x in (r.case, r.check, r.stable, r.candidate, verdict)) + " |")
    return "\n".join(lines) + "\n"


def thresholds() -> dict:
    return {k: v for k, v in vars(T).items() if k.isupper()}


def save_outputs(outcome: Outcome, folder: Path) -> dict[str, str]:
    """Each side's first output per case, as a file a person can open: {"case/side": file name}."""
    saved = {}
    for (case, side), value in outcome.outputs.items():
        if isinstance(value, bytes):
            try:
                ext = "." + (Image.open(io.BytesIO(value)).format or "bin").lower()
            except OSError:
                ext = ".bin"
            path = folder / f"{case}-{side}{ext}"
            path.write_bytes(value)
        else:
            path = folder / f"{case}-{side}.txt"
            path.write_text(value, encoding="utf-8")
        saved[f"{case}/{side}"] = f"{folder.name}/{path.name}"
    return saved


def write(outcome: Outcome, folder: Path) -> tuple[Path, Path]:
    """<folder>/<deployment>-<UTC time>.md and .json, and the outputs compared in <deployment>-<UTC time>/.

    The markdown is also appended to the GitHub job summary when there is one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{outcome.deployment}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    md = markdown(outcome)
    stem.with_suffix(".md").write_text(md)
    stem.mkdir(exist_ok=True)
    record = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": source_commit(),
              "thresholds": thresholds(), **outcome.to_dict(), "outputs": save_outputs(outcome, stem)}
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    if summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(summary, "a") as f:
            f.write(md + "\n")
    return stem.with_suffix(".md"), stem.with_suffix(".json")
