"""Named, switchable optimizations: defaults per deployment and device, overridden by one variable.

    OPTIMIZE="compile=off,quantize=fp8"

Benchmarks use this to measure the baseline and each variant in one run; operators use it to trade
start-up time for speed. Unknown names or values are an error, never silently ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ENV_VAR = "OPTIMIZE"


@dataclass(frozen=True)
class Option:
    default_gpu: str
    default_cpu: str
    choices: tuple[str, ...]
    why: str


def resolve(spec: dict[str, Option], *, cuda: bool, override: str | None = None) -> dict[str, str]:
    """The chosen value of every option: the device default unless OPTIMIZE names it."""
    chosen = {name: (o.default_gpu if cuda else o.default_cpu) for name, o in spec.items()}
    raw = override if override is not None else os.environ.get(ENV_VAR, "")
    for item in filter(None, (p.strip() for p in raw.split(","))):
        name, _, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if name not in spec:
            raise ValueError(f"{ENV_VAR}: unknown optimization {name!r}; known: {', '.join(spec)}")
        if not _allowed(spec[name], value):
            raise ValueError(f"{ENV_VAR}: {name}={value!r} not allowed; choose from {', '.join(spec[name].choices)}")
        chosen[name] = value
    return chosen


def _allowed(option: Option, value: str) -> bool:
    if value in option.choices:
        return True
    # "method:amount" choices such as prune=magnitude:0.2
    head, _, tail = value.partition(":")
    if f"{head}:<amount>" in option.choices:
        try:
            return 0.0 <= float(tail) < 1.0
        except ValueError:
            return False
    return False
