"""Is a candidate's input schema backward compatible with stable's?

Breaking: an input removed, a range narrowed (minimum raised, maximum lowered), a choice removed,
an optional input made required, a type changed. A changed default is reported as breaking unless
the caller allows it (`allow_default_changes`), because clients that omit the input get a new result.
Adding an optional input, widening a range or adding a choice is compatible. The output's type
changing (one file to a list of files, say) breaks every client that reads it: breaking unless the caller
allows it (`allow_output_change`, for a release that means it and says so to its users).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    input: str
    kind: str  # removed | narrowed | choices | required | type | default
    detail: str


def _inputs(schema: dict) -> tuple[dict, set[str], dict]:
    comps = schema["components"]["schemas"]
    inp = comps["Input"]
    return inp["properties"], set(inp.get("required", [])), comps


def _choices(prop: dict, comps: dict) -> list | None:
    for ref in prop.get("allOf", []):
        name = ref.get("$ref", "").rsplit("/", 1)[-1]
        if name in comps and "enum" in comps[name]:
            return comps[name]["enum"]
    return prop.get("enum")


def _type(prop: dict, comps: dict):
    if prop.get("type"):
        return prop["type"], prop.get("format")
    for ref in prop.get("allOf", []):
        target = comps.get(ref.get("$ref", "").rsplit("/", 1)[-1], {})
        if target.get("type"):
            return target["type"], target.get("format")
    return None, None


def _output(schema: dict) -> dict:
    """The Output schema without its words (title, description): what a client parses."""
    def bare(node):
        if isinstance(node, dict):
            return {k: bare(v) for k, v in node.items() if k not in ("title", "description")}
        return [bare(v) for v in node] if isinstance(node, list) else node
    return bare(schema["components"]["schemas"].get("Output", {}))


def compare(stable: dict, candidate: dict, *, allow_default_changes: bool = False,
            allow_output_change: bool = False) -> list[Finding]:
    """Breaking differences from stable to candidate (empty when compatible)."""
    s_props, s_required, s_comps = _inputs(stable)
    c_props, c_required, c_comps = _inputs(candidate)
    findings = []
    for name, sp in s_props.items():
        cp = c_props.get(name)
        if cp is None:
            findings.append(Finding(name, "removed", "input no longer accepted"))
            continue
        if _type(sp, s_comps) != _type(cp, c_comps):
            findings.append(Finding(name, "type", f"{_type(sp, s_comps)} -> {_type(cp, c_comps)}"))
        if "minimum" in cp and ("minimum" not in sp or cp["minimum"] > sp["minimum"]):
            findings.append(Finding(name, "narrowed", f"minimum {sp.get('minimum')} -> {cp['minimum']}"))
        if "maximum" in cp and ("maximum" not in sp or cp["maximum"] < sp["maximum"]):
            findings.append(Finding(name, "narrowed", f"maximum {sp.get('maximum')} -> {cp['maximum']}"))
        s_choices, c_choices = _choices(sp, s_comps), _choices(cp, c_comps)
        if s_choices is not None and c_choices is not None and set(s_choices) - set(c_choices):
            findings.append(Finding(name, "choices", f"removed {sorted(set(s_choices) - set(c_choices))}"))
        if name in c_required and name not in s_required:
            findings.append(Finding(name, "required", "optional input became required"))
        if sp.get("default") != cp.get("default") and not allow_default_changes:
            findings.append(Finding(name, "default", f"{sp.get('default')!r} -> {cp.get('default')!r}"))
    for name in c_required - set(s_props):
        findings.append(Finding(name, "required", "new required input"))
    if not allow_output_change and _output(stable) != _output(candidate):
        findings.append(Finding("(output)", "output", f"{_output(stable)} -> {_output(candidate)}"))
    return findings
