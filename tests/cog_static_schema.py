"""A faithful Python port of the static OpenAPI schema generator that `cog build` runs before Docker starts.

Since Cog 0.19 the Go CLI builds the schema from predict.py's *source* (tree-sitter, no Python runs) and fails the
build on any input it cannot resolve. We cannot run the CLI here (no Docker), so tests use this port to see what
the build will see. It follows the Go code function by function, including its blind spots: whatever Cog silently
drops (an f-string description, bounds passed through `**kwargs`, a `ge=` that names a constant) is dropped here
too, so a test comparing against the runtime (pydantic) schema catches the loss.

Ported from replicate/cog commit 6110c912377d4ded0f57165d305821a14a9a4418 (2026-08-21, `v0.22.0-5-g6110c912`;
pkg/schema is byte-identical to tag v0.22.0), the newest snapshot we could read on 2026-11-25; this repo pins Cog
0.23.1, so re-check pkg/schema against that tag when its source is available. Files ported:
pkg/schema/python/*.go (parser, phases, literals, module scope, imports, inputs, annotations, models, target),
pkg/schema/{types,schema_type,openapi_spec,errors}.go. The build wiring (pkg/image/build.go resolveBuildSchema,
pkg/schema/openapi/generate.go) is summarised in `generate_openapi`'s docstring.

Public API
----------
`parse(source, class_name)` returns the schemas Cog puts under `components.schemas`, in Cog's order:

    {
      "Input":  {"properties": {<param>: <property>, ...}, "required": [...], "title": "Input", "type": "object"},
      "Output": {<output schema>, "title": "Output"},
      <param>:  {"description": "An enumeration.", "enum": [...], "title": <param>, "type": "string"},  # per choices=
    }

("TrainingInput"/"TrainingOutput" with mode="train"; "required" only when non-empty.) A property is one of

    {"default"?, "deprecated"?, "description"?, "format"?, "items"?, "maxLength"?, "maximum"?, "minLength"?,
     "minimum"?, "nullable"?, "pattern"?, "title", "type", "x-cog-accept"?, "x-order"}           # plain input
    {"allOf": [{"$ref": "#/components/schemas/<param>"}], "default"?, "description"?, ..., "x-order"}  # choices=

Keys are sorted because Go marshals `map[string]any` alphabetically; "properties" keeps parameter order. Values
are what `json.loads` gives for Cog's JSON: a float with an integral value comes back as an int (Go writes 1.0
as `1`), and NaN/Inf fail the build as Go's encoder does. `generate_openapi` returns the whole document, where
streaming shows up as `paths["/predictions"]["post"]["x-cog-streaming"] = True` (only with `@cog.streaming`).

`StaticSchemaError` carries Cog's own message (`str(err)`, which `cog build` prints after "image build failed: ")
and the Go error kind (`err.kind`, e.g. "ErrDefaultNotResolvable").

Deviations: tree-sitter parses broken files; this needs valid Python (a SyntaxError is reported as ErrParse).
Node texts and types are rebuilt from `ast` plus the token stream, so parenthesised expressions, adjacent string
literals and comments inside brackets behave as tree-sitter sees them. Title-casing of non-ASCII names is ASCII-only.
"""

from __future__ import annotations

import ast
import bisect
import copy
import dataclasses
import decimal
import io
import math
import os
import posixpath
import sys
import tokenize
from dataclasses import dataclass, field

COG_COMMIT = "6110c912377d4ded0f57165d305821a14a9a4418"
COG_VERSION = "0.22.0"

__all__ = ["COG_COMMIT", "COG_VERSION", "StaticSchemaError", "generate_openapi", "parse"]


# --- errors.go -------------------------------------------------------------------------------------------------


class StaticSchemaError(Exception):
    """Cog's `*schema.SchemaError` (or a wrapped error): the static generator failed, so `cog build` fails."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def _err(kind: str, message: str) -> StaticSchemaError:  # schema.WrapError(kind, msg, nil)
    return StaticSchemaError(kind, message)


def _err_unsupported_type(msg: str) -> StaticSchemaError:  # errUnsupportedType / python.errUnsupported
    return StaticSchemaError("ErrUnsupportedType", f"unsupported type: {msg}")


def _err_optional_output() -> StaticSchemaError:
    return StaticSchemaError("ErrOptionalOutput", "unsupported output type: Optional is not allowed as a return type")


def _err_unresolvable_imported_type(name: str, module: str) -> StaticSchemaError:
    return StaticSchemaError(
        "ErrUnresolvableType",
        f"cannot resolve type '{name}' (imported from '{module}') - external types cannot be statically analyzed. "
        "If this is a JSON-shaped third-party type, mark it opaque with `from typing import Annotated`, "
        f"`from cog import Opaque`, and `field: Annotated[{name}, Opaque]`. "
        "Otherwise define it as a BaseModel subclass in your predict file, or provide a .pyi stub",
    )


def _err_unresolvable_type(name: str) -> StaticSchemaError:
    return StaticSchemaError(
        "ErrUnresolvableType",
        f"cannot resolve type '{name}' - it is not a primitive type (str, int, float, bool, Path) "
        "and no BaseModel definition was found in the predict file",
    )


def _wrapped(prefix: str, inner: StaticSchemaError) -> StaticSchemaError:  # fmt.Errorf("<prefix>: %w", err)
    return StaticSchemaError(inner.kind, f"{prefix}: {inner.message}")


# --- Go's strconv, which decides what counts as a number -------------------------------------------------------


def _underscore_ok(s: str) -> bool:  # strconv.underscoreOK
    saw, i = "^", 0
    if s[:1] in ("+", "-"):
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in ("b", "o", "x"):
        i, saw, hexa = 2, "0", s[1].lower() == "x"
    for c in s[i:]:
        if "0" <= c <= "9" or (hexa and "a" <= c.lower() <= "f"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
    return saw != "_"


def _go_parse_int(s: str) -> int | None:  # strconv.ParseInt(s, 0, 64)
    if not s:
        return None
    body, neg = s, False
    if body[0] in "+-":
        neg, body = body[0] == "-", body[1:]
    if not body:
        return None
    base, digits = 10, body
    if body[0] == "0":
        prefix = body[1].lower() if len(body) >= 3 else ""
        base, digits = {"b": (2, body[2:]), "o": (8, body[2:]), "x": (16, body[2:])}.get(prefix, (8, body[1:]))
    n, underscores = 0, False
    for c in digits:
        if c == "_":
            underscores = True
            continue
        if "0" <= c <= "9":
            d = ord(c) - 48
        elif "a" <= c.lower() <= "z":
            d = ord(c.lower()) - 87
        else:
            return None
        if d >= base:
            return None
        n = n * base + d
    if underscores and not _underscore_ok(body):
        return None
    n = -n if neg else n
    return n if -(1 << 63) <= n <= (1 << 63) - 1 else None


def _go_parse_float(s: str) -> float | None:  # strconv.ParseFloat(s, 64)
    if not s:
        return None
    # special(): [+-]inf, [+-]infinity, nan (any case)
    low = s.lower()
    unsigned = low[1:] if low[0] in "+-" else low
    if unsigned in ("inf", "infinity"):
        return -math.inf if low[0] == "-" else math.inf
    if low == "nan":
        return math.nan
    # readFloat(): sign, optional 0x, digits with at most one '.', exponent ('p' required for hex)
    i, n = 0, len(s)
    if s[0] in "+-":
        i = 1
    hexa = i + 2 < n and s[i] == "0" and s[i + 1].lower() == "x"
    if hexa:
        i += 2
    saw_dot = saw_digits = underscores = False
    while i < n:
        c = s[i]
        if c == "_":
            underscores = True
        elif c == ".":
            if saw_dot:
                break
            saw_dot = True
        elif "0" <= c <= "9" or (hexa and "a" <= c.lower() <= "f"):
            saw_digits = True
        else:
            break
        i += 1
    if not saw_digits:
        return None
    if i < n and s[i].lower() == ("p" if hexa else "e"):
        i += 1
        if i < n and s[i] in "+-":
            i += 1
        if i >= n or not "0" <= s[i] <= "9":
            return None
        while i < n and ("0" <= s[i] <= "9" or s[i] == "_"):
            underscores = underscores or s[i] == "_"
            i += 1
    elif hexa:
        return None
    if i != n or (underscores and not _underscore_ok(s)):
        return None
    try:
        value = float.fromhex(s.replace("_", "")) if hexa else float(s.replace("_", ""))
    except (OverflowError, ValueError):
        return None
    return None if math.isinf(value) else value  # overflow is ErrRange in Go


def _go_fmt_v(value) -> str:  # fmt.Sprintf("%v", x) for the JSON values a default can hold
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_fmt_float(value)
    if isinstance(value, list):
        return "[" + " ".join(_go_fmt_v(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_fmt_v(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _go_fmt_float(f: float) -> str:  # strconv.FormatFloat(f, 'g', -1, 64): %e once the exponent is < -4 or >= 6
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1, f) < 0 else "0"
    sign, digit_tuple, exp = decimal.Decimal(repr(f)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    exp += len(digit_tuple) - len(digits)
    dp = len(digits) + exp  # position of the decimal point
    neg = "-" if sign else ""
    if dp - 1 < -4 or dp - 1 >= 6:
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        e = dp - 1
        return f"{neg}{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{digits}"
    if dp >= len(digits):
        return neg + digits + "0" * (dp - len(digits))
    return f"{neg}{digits[:dp]}.{digits[dp:]}"


# --- tree-sitter's view of the source, rebuilt from ast + tokens ------------------------------------------------

_NL, _COMMENT, _OP, _STRING = tokenize.NL, tokenize.COMMENT, tokenize.OP, tokenize.STRING
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)  # Python 3.12+ splits f-strings into tokens
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)
_TRIVIA = {tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT}


@dataclass
class _Comment:
    """A `comment` node: tree-sitter makes comments named children of the list or argument list around them."""

    start: int
    end: int
    text: str


class _Source:
    """One Python file. Node texts and node types are the ones tree-sitter (and so Cog) would report.

    Two things `ast` hides matter to Cog: grouping parentheses (`("x")` is a `parenthesized_expression`, not a
    string) and comments (a comment inside `[...]` or `Input(...)` is a named child of that node).
    """

    def __init__(self, text: str):
        self.text = text.replace("\r\n", "\n").replace("\r", "\n")
        try:
            self.tree = ast.parse(self.text)
            raw_tokens = list(tokenize.generate_tokens(io.StringIO(self.text).readline))
        except (SyntaxError, tokenize.TokenError, ValueError) as exc:
            raise _err("ErrParse", f"tree-sitter parse failed: {exc}") from exc
        self._lines = self.text.split("\n")
        self._line_starts = [0]
        for line in self._lines[:-1]:
            self._line_starts.append(self._line_starts[-1] + len(line) + 1)
        self._toks = []  # (type, string, start, end) in character offsets
        for tok in raw_tokens:
            if tok.type in (tokenize.ENCODING, tokenize.ENDMARKER):
                continue
            self._toks.append((tok.type, tok.string, self._char(*tok.start), self._char(*tok.end)))
        self._tok_starts = [t[2] for t in self._toks]
        self._at_start: dict[int, int] = {}
        self._at_end: dict[int, int] = {}
        for i, (typ, _string, start, end) in enumerate(self._toks):
            if typ in _TRIVIA or start == end:
                continue
            self._at_start.setdefault(start, i)
            self._at_end[end] = i
        self._owned = self._syntax_parens()
        self._group_cache: dict[int, tuple[int, int, int]] = {}

    # positions

    def _char(self, row: int, col: int) -> int:
        if row > len(self._line_starts):  # NEWLINE/DEDENT the tokenizer adds after a last line without "\n"
            return len(self.text)
        return self._line_starts[row - 1] + col

    def _ast_off(self, lineno: int, col_byte: int) -> int:  # ast columns count UTF-8 bytes
        line = self._lines[lineno - 1]
        col = col_byte if line.isascii() else len(line.encode("utf-8")[:col_byte].decode("utf-8", "ignore"))
        return self._line_starts[lineno - 1] + col

    def raw_span(self, node) -> tuple[int, int]:
        if isinstance(node, _Comment):
            return node.start, node.end
        return self._ast_off(node.lineno, node.col_offset), self._ast_off(node.end_lineno, node.end_col_offset)

    def _syntax_parens(self) -> set[int]:
        """Token indexes of the parentheses that belong to a call's or class's argument list, not to grouping."""
        owned: set[int] = set()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call):
                func_end = self._at_end.get(self.raw_span(node.func)[1])
                close = self._at_end.get(self.raw_span(node)[1])
                if func_end is None or close is None:
                    continue
                opening = next((k for k in range(func_end + 1, close) if self._toks[k][:2] == (_OP, "(")), None)
                if opening is not None:
                    owned.update((opening, close))
            elif isinstance(node, ast.ClassDef) and (node.bases or node.keywords):
                k = self._at_start.get(self._ast_off(node.lineno, node.col_offset))
                if k is None:
                    continue
                while self._toks[k][:2] != (_OP, "("):
                    k += 1
                match = self._matching_paren(k)
                if match is not None:
                    owned.update((k, match))
        return owned

    def _matching_paren(self, k: int) -> int | None:
        depth = 0
        for j in range(k, len(self._toks)):
            typ, string = self._toks[j][:2]
            if typ == _OP and string == "(":
                depth += 1
            elif typ == _OP and string == ")":
                depth -= 1
                if depth == 0:
                    return j
        return None

    def _group(self, node) -> tuple[int, int, int]:
        """(number of grouping parentheses around node, start, end of the outermost group)."""
        key = id(node)
        if key in self._group_cache:
            return self._group_cache[key]
        start, end = self.raw_span(node)
        result = (0, start, end)
        i, j = self._at_start.get(start), self._at_end.get(end)
        if not isinstance(node, _Comment) and i is not None and j is not None:
            opens, closes = [], []
            k = i - 1
            while k >= 0:
                typ, string, s, _e = self._toks[k]
                if typ in (_NL, _COMMENT):
                    k -= 1
                    continue
                if typ == _OP and string == "(" and k not in self._owned:
                    opens.append(s)
                    k -= 1
                    continue
                break
            k = j + 1
            while k < len(self._toks):
                typ, string, _s, e = self._toks[k]
                if typ in (_NL, _COMMENT):
                    k += 1
                    continue
                if typ == _OP and string == ")" and k not in self._owned:
                    closes.append(e)
                    k += 1
                    continue
                break
            n = min(len(opens), len(closes))
            if n:
                result = (n, opens[n - 1], closes[n - 1])
        self._group_cache[key] = result
        return result

    def span(self, node) -> tuple[int, int]:  # the tree-sitter node's byte range
        _n, start, end = self._group(node)
        return start, end

    def text_of(self, node) -> str:  # python.Content(node, source)
        if isinstance(node, _Comment):
            return node.text
        start, end = self.span(node)
        return self.text[start:end]

    def ts_type(self, node) -> str:  # node.Type()
        if isinstance(node, _Comment):
            return "comment"
        if self._group(node)[0]:
            return "parenthesized_expression"
        if isinstance(node, ast.Constant):
            value = node.value
            if value is None:
                return "none"
            if value is True or value is False:
                return "true" if value else "false"
            if value is Ellipsis:
                return "ellipsis"
            if isinstance(value, (str, bytes)):
                return self._string_type(node)
            return "float" if isinstance(value, float) else "integer"
        if isinstance(node, ast.JoinedStr):
            return self._string_type(node)
        if isinstance(node, ast.Tuple):
            return "tuple" if self._is_parenthesized_tuple(node) else "expression_list"
        if isinstance(node, ast.UnaryOp):
            return "not_operator" if isinstance(node.op, ast.Not) else "unary_operator"
        if isinstance(node, ast.keyword):
            return "dictionary_splat" if node.arg is None else "keyword_argument"
        return _TS_TYPES.get(type(node), type(node).__name__.lower())

    def _string_type(self, node) -> str:
        """`string` for one literal, `concatenated_string` for adjacent literals ("a" "b")."""
        start, end = self.raw_span(node)
        i, j = self._at_start.get(start), self._at_end.get(end)
        if i is None or j is None:
            return "string"
        count, depth = 0, 0
        for typ, *_rest in self._toks[i : j + 1]:
            if typ == _STRING and depth == 0:
                count += 1
            elif _FSTRING_START is not None and typ == _FSTRING_START:
                count += depth == 0
                depth += 1
            elif _FSTRING_END is not None and typ == _FSTRING_END:
                depth -= 1
        return "concatenated_string" if count > 1 else "string"

    def _is_parenthesized_tuple(self, node: ast.Tuple) -> bool:
        start, end = self.raw_span(node)
        i, j = self._at_start.get(start), self._at_end.get(end)
        return i is not None and self._toks[i][:2] == (_OP, "(") and self._matching_paren(i) == j

    def comments_within(self, start: int, end: int, children) -> list[_Comment]:
        """Comments between start and end that are not inside any of the child nodes."""
        spans = [self.span(c) for c in children]
        found = []
        for k in range(bisect.bisect_left(self._tok_starts, start), len(self._toks)):
            typ, string, s, e = self._toks[k]
            if s >= end:
                break
            if typ == _COMMENT and not any(cs <= s < ce for cs, ce in spans):
                found.append(_Comment(s, e, string))
        return found

    def container_comments(self, node, children) -> list[_Comment]:
        start, end = self.raw_span(node)  # a list's or set's own brackets
        return self.comments_within(start, end, children)

    def call_arguments(self, call: ast.Call) -> list:
        """NamedChildren(argument_list) in source order: positional args, keywords, `**x`, and comments."""
        items = list(call.args) + list(call.keywords)
        start = self.span(call.func)[1]
        end = self.raw_span(call)[1]
        items += self.comments_within(start, end, items)
        return sorted(items, key=lambda n: self.span(n)[0])


_TS_TYPES = {
    ast.Name: "identifier",
    ast.Attribute: "attribute",
    ast.Call: "call",
    ast.List: "list",
    ast.Set: "set",
    ast.Dict: "dictionary",
    ast.BinOp: "binary_operator",
    ast.BoolOp: "boolean_operator",
    ast.Compare: "comparison_operator",
    ast.Subscript: "subscript",
    ast.Starred: "list_splat",
    ast.ListComp: "list_comprehension",
    ast.SetComp: "set_comprehension",
    ast.DictComp: "dictionary_comprehension",
    ast.GeneratorExp: "generator_expression",
    ast.Lambda: "lambda",
    ast.IfExp: "conditional_expression",
    ast.Await: "await",
    ast.NamedExpr: "named_expression",
}


# --- types.go: DefaultValue -------------------------------------------------------------------------------------


@dataclass
class _Default:
    """schema.DefaultValue: kind is none | bool | int | float | string | list | dict | set."""

    kind: str
    value: object = None  # bool, int, float or str; a list of _Default for list and set
    keys: list = field(default_factory=list)
    vals: list = field(default_factory=list)

    def to_json(self):  # DefaultValue.ToJSON
        if self.kind in ("list", "set"):
            return [v.to_json() for v in self.value]
        if self.kind == "dict":
            out = {}
            for k, v in zip(self.keys, self.vals, strict=False):
                out[k.value if k.kind == "string" else _go_fmt_v(k.to_json())] = v.to_json()
            return dict(sorted(out.items()))  # a Go map: marshalled with sorted keys
        return None if self.kind == "none" else self.value


# --- literals.go ------------------------------------------------------------------------------------------------


def _parse_string_literal(text: str) -> str | None:
    """literals.go parseStringLiteral: the raw text between the outer quotes, escapes left as written.

    Only bare and r-prefixed literals pass; f"", b"", u"", R"" and anything starting with "(" do not. Any other
    text that starts with a quote (adjacent literals, "a" + B, "x".upper()) loses one character at each end.
    """
    if text.startswith('"""') or text.startswith("'''"):
        return text[3:-3] if len(text) >= 6 else None
    if text.startswith('"') or text.startswith("'"):
        return text[1:-1] if len(text) >= 2 else None
    if text.startswith('r"') or text.startswith("r'"):
        return text[2:-1] if len(text) >= 3 else None
    return None


def _parse_number_literal(src: _Source, node) -> float | None:  # literals.go parseNumberLiteral
    return _go_parse_float(src.text_of(node).strip())


def _parse_bool_literal(src: _Source, node) -> bool | None:  # literals.go parseBoolLiteral
    kind = src.ts_type(node)
    if kind in ("true", "false"):
        return kind == "true"
    return {"True": True, "False": False}.get(src.text_of(node))


def _parse_default_value(src: _Source, node) -> _Default | None:  # literals.go parseDefaultValue
    kind = src.ts_type(node)
    text = src.text_of(node)
    if kind == "none":
        return _Default("none")
    if kind in ("true", "false"):
        return _Default("bool", kind == "true")
    if kind == "integer":
        n = _go_parse_int(text)
        return None if n is None else _Default("int", n)
    if kind == "float":
        f = _go_parse_float(text)
        return None if f is None else _Default("float", f)
    if kind in ("string", "concatenated_string"):
        s = _parse_string_literal(text)
        return None if s is None else _Default("string", s)
    if kind == "list":
        items = _parse_list_literal(src, node)
        return None if items is None else _Default("list", items)
    if kind == "dictionary":
        keys, vals = _parse_dict_literal(src, node)
        return _Default("dict", keys=keys, vals=vals)
    if kind == "set":
        items = _parse_set_literal(src, node)
        return None if items is None else _Default("set", items)
    if kind == "unary_operator":
        text = text.strip()
        n = _go_parse_int(text)
        if n is not None:
            return _Default("int", n)
        f = _go_parse_float(text)
        return None if f is None else _Default("float", f)
    if kind == "tuple":  # unlike a list, elements that don't parse are skipped
        items = [v for v in (_parse_default_value(src, e) for e in node.elts) if v is not None]
        return _Default("list", items)
    return None


def _parse_list_literal(src: _Source, node) -> list[_Default] | None:  # literals.go parseListLiteral
    if src.ts_type(node) != "list":
        return None
    return _parse_elements(src, node)


def _parse_set_literal(src: _Source, node) -> list[_Default] | None:  # literals.go parseSetLiteral
    if src.ts_type(node) != "set":
        return None
    return _parse_elements(src, node)


def _parse_elements(src: _Source, node) -> list[_Default] | None:
    # A comment between the brackets is a named child that is not a literal, so the whole list fails.
    if src.container_comments(node, node.elts):
        return None
    items = []
    for element in node.elts:
        value = _parse_default_value(src, element)
        if value is None:
            return None
        items.append(value)
    return items


def _parse_dict_literal(src: _Source, node: ast.Dict) -> tuple[list, list]:  # literals.go parseDictLiteral
    keys, vals = [], []
    for key_node, val_node in zip(node.keys, node.values, strict=False):
        if key_node is None:  # **other
            continue
        key, val = _parse_default_value(src, key_node), _parse_default_value(src, val_node)
        if key is not None and val is not None:  # pairs that don't parse are skipped
            keys.append(key)
            vals.append(val)
    return keys, vals


# --- imports.go --------------------------------------------------------------------------------------------------


def _collect_imports(src: _Source) -> dict[str, tuple[str, str]]:
    """imports.go CollectImports: local name -> (module, original name), top-level statements only."""
    names: dict[str, tuple[str, str]] = {}
    for stmt in src.tree.body:
        if isinstance(stmt, ast.ImportFrom):
            if stmt.module == "__future__" and not stmt.level:
                continue  # a future_import_statement in tree-sitter, not an import
            module = "." * stmt.level + (stmt.module or "")
            for alias in stmt.names:
                if alias.name != "*":
                    names[alias.asname or alias.name] = (module, alias.name)
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                names[alias.asname or alias.name] = (alias.name, alias.name)
    for builtin in ("str", "int", "float", "bool", "list", "dict", "set", "None"):
        names.setdefault(builtin, ("builtins", builtin))
    return names


def _resolve_qualified_name(imports, name: str):  # ImportContext.ResolveQualifiedName -> (name, entry, ok)
    head, dot, rest = name.partition(".")
    if not dot:
        return name, ("", ""), False
    return rest, imports.get(head, ("", "")), True


def _is_annotated(imports, name: str) -> bool:  # ImportContext.isAnnotated
    resolved, (module, original), ok = _resolve_qualified_name(imports, name)
    if ok:
        return resolved == "Annotated" and module in ("typing", "typing_extensions") and original == module
    module, original = imports.get(name, ("", ""))
    return module in ("typing", "typing_extensions") and original == "Annotated"


def _is_opaque(imports, name: str) -> bool:  # ImportContext.IsOpaque
    resolved, (module, _original), ok = _resolve_qualified_name(imports, name)
    if ok:
        return resolved == "Opaque" and module == "cog"
    return imports.get(name) == ("cog", "Opaque")


# --- module_scope.go ---------------------------------------------------------------------------------------------


def _collect_module_scope(src: _Source) -> dict[str, _Default]:
    """module_scope.go collectModuleScope: `NAME = <literal>` at the top level of this file (nothing imported)."""
    scope: dict[str, _Default] = {}
    for stmt in src.tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:  # A = B = 1 parses as A = (B = 1): skipped
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            continue
        if src.ts_type(target) != "identifier":
            continue
        parsed = _parse_default_value(src, value)
        if parsed is not None:  # a later unresolvable assignment keeps the earlier value
            scope[target.id] = parsed
    return scope


def _resolve_string_expr(src: _Source, node, scope) -> str | None:  # module_scope.go resolveStringExpr
    s = _parse_string_literal(src.text_of(node))
    if s is not None:
        return s
    if src.ts_type(node) == "identifier":
        value = scope.get(node.id)
        if value is not None and value.kind == "string":
            return value.value
    return None


def _resolve_default_expr(src: _Source, node, scope) -> _Default | None:  # module_scope.go resolveDefaultExpr
    value = _parse_default_value(src, node)
    if value is not None:
        return value
    if src.ts_type(node) == "identifier":
        return scope.get(node.id)
    return None


def _resolve_choices_expr(src: _Source, node, scope) -> list[_Default] | None:  # module_scope.go resolveChoicesExpr
    kind = src.ts_type(node)
    if kind == "list":
        return _parse_list_literal(src, node)
    if kind == "identifier":
        value = scope.get(node.id)
        return list(value.value) if value is not None and value.kind == "list" else None
    if kind == "call":
        return _resolve_choices_call(src, node, scope)
    if kind == "binary_operator" and isinstance(node.op, ast.Add):
        left, right = _resolve_choices_expr(src, node.left, scope), _resolve_choices_expr(src, node.right, scope)
        return None if left is None or right is None else left + right
    return None


def _resolve_choices_call(src: _Source, node: ast.Call, scope) -> list[_Default] | None:
    """module_scope.go resolveChoicesCall: only list(NAME.keys()) and list(NAME.values()) of a module-level dict."""
    if src.text_of(node.func) != "list":
        return None
    args = src.call_arguments(node)
    if not args or src.ts_type(args[0]) != "call":
        return None
    inner = args[0]
    if src.ts_type(inner.func) != "attribute" or src.ts_type(inner.func.value) != "identifier":
        return None
    value = scope.get(inner.func.value.id)
    if value is None or value.kind != "dict":
        return None
    return {"keys": list(value.keys), "values": list(value.vals)}.get(inner.func.attr)


# --- inputs.go ----------------------------------------------------------------------------------------------------


@dataclass
class _InputInfo:  # inputs.go inputCallInfo
    default: _Default | None = None
    description: str | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    regex: str | None = None
    choices: list | None = None
    deprecated: bool | None = None
    accept: str | None = None


@dataclass
class _Registry:  # inputs.go inputRegistry: `Class.attr = Input(...)` and `def Class.m(...): return Input(...)`
    attributes: dict = field(default_factory=dict)
    methods: dict = field(default_factory=dict)  # key -> (param names, _InputInfo)


def _is_input_call(src: _Source, node, imports) -> bool:
    """inputs.go isInputCall: the callee's text is `Input` or a name imported as cog's Input (not `cog.Input`)."""
    if src.ts_type(node) != "call":
        return False
    name = src.text_of(node.func)
    if name == "Input":
        return True
    return imports.get(name) == ("cog", "Input")


def _to_uint64(n: float) -> int:  # Go's uint64(float64) on amd64
    return int(n) & ((1 << 64) - 1) if math.isfinite(n) else 1 << 63


def _parse_input_call(src: _Source, node: ast.Call, param_name: str, scope) -> _InputInfo:
    """inputs.go parseInputCall. Positional arguments and **kwargs are ignored; unparsable values are dropped."""
    info = _InputInfo()
    for kw in node.keywords:
        if kw.arg is None:
            continue  # dictionary_splat: whatever it carries never reaches the schema
        value = kw.value
        if kw.arg == "default":
            # An unresolvable default (an import, a call, an f-string) silently becomes None.
            info.default = _resolve_default_expr(src, value, scope) or _Default("none")
        elif kw.arg == "default_factory":
            raise _err(
                "ErrDefaultFactoryNotSupported",
                f"parameter '{param_name}': default_factory is not supported in static schema generation",
            )
        elif kw.arg == "description":
            description = _resolve_string_expr(src, value, scope)
            if description is not None:
                info.description = description
        elif kw.arg in ("ge", "le", "min_length", "max_length"):
            n = _parse_number_literal(src, value)  # a literal only: `ge=MIN` is dropped
            if n is not None:
                setattr(info, kw.arg, _to_uint64(n) if kw.arg.endswith("_length") else n)
        elif kw.arg in ("regex", "accept"):
            s = _parse_string_literal(src.text_of(value))
            if s is not None:
                setattr(info, kw.arg, s)
        elif kw.arg == "choices":
            items = _parse_list_literal(src, value)
            if items is None:
                items = _resolve_choices_expr(src, value, scope)
            if items is None:
                raise _err(
                    "ErrChoicesNotResolvable",
                    f"parameter '{param_name}': choices expression cannot be statically resolved",
                )
            info.choices = items
        elif kw.arg == "deprecated":
            flag = _parse_bool_literal(src, value)
            if flag is not None:
                info.deprecated = flag
    return info


def _collect_input_registry(src: _Source, imports, scope) -> _Registry:  # inputs.go collectInputRegistry
    registry = _Registry()
    for stmt in src.tree.body:
        if not isinstance(stmt, ast.ClassDef):
            continue
        for item in stmt.body:
            if isinstance(item, (ast.Assign, ast.AnnAssign)):
                targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                if len(targets) != 1 or src.ts_type(targets[0]) != "identifier" or item.value is None:
                    continue
                if not _is_input_call(src, item.value, imports):
                    continue
                key = f"{stmt.name}.{targets[0].id}"
                try:
                    registry.attributes[key] = _parse_input_call(src, item.value, key, scope)
                except StaticSchemaError:
                    pass  # collectInputAttribute drops entries it cannot parse
            elif isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                _collect_input_method(src, stmt.name, item, imports, scope, registry)
    return registry


def _collect_input_method(src: _Source, class_name: str, func, imports, scope, registry: _Registry) -> None:
    """inputs.go collectInputMethod: a method whose body has a top-level `return Input(...)`."""
    args = func.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
    call = next(
        (s.value for s in func.body if isinstance(s, ast.Return) and s.value is not None
         and _is_input_call(src, s.value, imports)),
        None,
    )
    if call is None:
        return
    key = f"{class_name}.{func.name}"
    try:
        registry.methods[key] = (names, _parse_input_call(src, call, key, scope))
    except StaticSchemaError:
        pass


def _resolve_input_reference(src: _Source, node, registry: _Registry) -> _InputInfo | None:
    """inputs.go resolveInputReference: `Class.attr` or `Class.method(...)` naming a registered Input()."""
    kind = src.ts_type(node)
    if kind == "attribute":
        info = registry.attributes.get(src.text_of(node))
        return copy.deepcopy(info)
    if kind != "call" or src.ts_type(node.func) != "attribute":
        return None
    method = registry.methods.get(src.text_of(node.func))
    if method is None:
        return None
    param_names, base = method
    resolved = copy.deepcopy(base)
    arg_values = {}
    position = 0
    for arg in src.call_arguments(node):  # comments and *args/**kwargs take positional slots, as in tree-sitter
        if isinstance(arg, ast.keyword) and arg.arg is not None:
            arg_values[arg.arg] = arg.value
        elif position < len(param_names):
            arg_values[param_names[position]] = arg
            position += 1
    # Call-site values override only these four, and only as plain literals (no module constants).
    for name, value in arg_values.items():
        if name == "default":
            parsed = _parse_default_value(src, value)
            if parsed is not None:
                resolved.default = parsed
        elif name == "description":
            s = _parse_string_literal(src.text_of(value))
            if s is not None:
                resolved.description = s
        elif name in ("ge", "le"):
            n = _parse_number_literal(src, value)
            if n is not None:
                setattr(resolved, name, n)
    return resolved


# --- types.go: input types -----------------------------------------------------------------------------------------

_PRIMITIVES = ("bool", "float", "int", "str", "Path", "File", "Secret", "Any")  # PrimitiveFromName


def _primitive_json_type(primitive: str) -> dict:  # PrimitiveType.JSONType
    return {
        "bool": {"type": "boolean"},
        "float": {"type": "number"},
        "int": {"type": "integer"},
        "str": {"type": "string"},
        "Path": {"type": "string", "format": "uri"},
        "File": {"type": "string", "format": "uri"},
        "Secret": {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True},
    }.get(primitive, {"type": "object"})


@dataclass(frozen=True)
class _Ann:  # schema.TypeAnnotation: kind is simple | generic | union
    kind: str
    name: str = ""
    args: tuple = ()


@dataclass
class _InputType:  # schema.InputType: kind is primitive | any | array | union
    kind: str
    primitive: str = ""
    elem: _InputType | None = None
    variants: list = field(default_factory=list)
    nullable: bool = False


@dataclass
class _FieldType:  # schema.FieldType: repetition is required | optional | repeated | optional_repeated
    primitive: str
    repetition: str = "required"


def _input_primitive(primitive: str) -> _InputType:  # InputPrimitive
    return _InputType("any", "Any") if primitive == "Any" else _InputType("primitive", primitive)


def _unwrap_optional(ann: _Ann):  # UnwrapOptional
    if ann.kind == "generic" and ann.name == "Optional" and len(ann.args) == 1:
        return ann.args[0], True
    if ((ann.kind == "generic" and ann.name == "Union") or ann.kind == "union") and len(ann.args) == 2:
        for i, arg in enumerate(ann.args):
            if arg.kind == "simple" and arg.name == "None":
                return ann.args[1 - i], True
    return ann, False


def _unwrap_opaque_annotated(ann: _Ann, imports):  # unwrapOpaqueAnnotated
    if ann.kind != "generic" or not _is_annotated(imports, ann.name) or len(ann.args) < 2:
        return ann, False
    for metadata in ann.args[1:]:
        if metadata.kind == "simple" and _is_opaque(imports, metadata.name):
            return ann.args[0], True
    return ann, False


def _opaque_container_name(name: str, imports):  # opaqueContainerName
    resolved, (module, original), ok = _resolve_qualified_name(imports, name)
    if ok:
        if module in ("typing", "typing_extensions") and original == module and resolved in ("List", "Optional", "Union"):
            return resolved, True
        return "", False
    if name in imports:
        module, original = imports[name]
        if module == "builtins" and original == "list":
            return "list", True
        if module in ("typing", "typing_extensions") and original in ("List", "Optional", "Union"):
            return original, True
        return "", False
    return ("list", True) if name == "list" else ("", False)


def _unwrap_opaque_optional(ann: _Ann, imports):  # unwrapOpaqueOptional
    if ann.kind == "generic":
        name, ok = _opaque_container_name(ann.name, imports)
        if not ok:
            return ann, False
        if name == "Optional" and len(ann.args) == 1:
            return ann.args[0], True
        if name == "Union" and len(ann.args) == 2:
            for i, arg in enumerate(ann.args):
                if arg.kind == "simple" and arg.name == "None":
                    return ann.args[1 - i], True
    return _unwrap_optional(ann)


def _opaque_field_type(inner: _Ann, imports) -> _FieldType:  # opaqueFieldType
    unwrapped, ok = _unwrap_opaque_annotated(inner, imports)
    if ok:
        return _opaque_field_type(unwrapped, imports)
    if inner.kind == "simple":
        name, ok = _opaque_container_name(inner.name, imports)
        if ok and name in ("List", "list"):
            return _FieldType("Any", "repeated")
    if inner.kind == "generic":
        outer, is_container = _opaque_container_name(inner.name, imports)
        optional_inner, ok = _unwrap_opaque_optional(inner, imports)
        if ok:
            rep = "optional_repeated" if _opaque_field_type(optional_inner, imports).repetition == "repeated" else "optional"
            return _FieldType("Any", rep)
        if not is_container:
            return _FieldType("Any", "required")
        if outer in ("List", "list"):
            return _FieldType("Any", "repeated")
        if outer == "Optional" and len(inner.args) == 1:
            rep = "optional_repeated" if _opaque_field_type(inner.args[0], imports).repetition == "repeated" else "optional"
            return _FieldType("Any", rep)
    if inner.kind == "union":
        optional_inner, ok = _unwrap_optional(inner)
        if ok:
            rep = "optional_repeated" if _opaque_field_type(optional_inner, imports).repetition == "repeated" else "optional"
            return _FieldType("Any", rep)
    return _FieldType("Any", "required")


def _input_type_from_field_type(ft: _FieldType) -> _InputType:  # inputTypeFromFieldType
    it = _InputType("any", "Any") if ft.primitive == "Any" else _input_primitive(ft.primitive)
    if ft.repetition in ("repeated", "optional_repeated"):
        it = _InputType("array", elem=it)
    if ft.repetition in ("optional", "optional_repeated"):
        it.nullable = True
    return it


def _field_type_from_input_type(it: _InputType) -> _FieldType:  # fieldTypeFromInputType
    repetition = "optional" if it.nullable else "required"
    if it.kind == "primitive":
        return _FieldType(it.primitive, repetition)
    if it.kind == "array":
        rep = "optional_repeated" if it.nullable else "repeated"
        if it.elem is not None and it.elem.kind == "primitive":
            return _FieldType(it.elem.primitive, rep)
        return _FieldType("Any", rep)
    return _FieldType("Any", repetition)


def _resolve_input_type(ann: _Ann, imports, typed_dicts) -> _InputType:  # types.go resolveInputType
    inner, ok = _unwrap_opaque_annotated(ann, imports)
    if ok:
        return _input_type_from_field_type(_opaque_field_type(inner, imports))
    if ann.kind == "simple":
        name = ann.name
        if typed_dicts.get(name):
            return _InputType("any", "Any")
        qualified_module = ""
        resolved, (module, original), ok = _resolve_qualified_name(imports, name)
        if ok:
            name, qualified_module = resolved, module
            if typed_dicts.get(f"{original}.{name}"):
                return _InputType("any", "Any")
        if typed_dicts.get(name) or name in ("dict", "Dict"):
            return _InputType("any", "Any")
        if name not in _PRIMITIVES:
            if qualified_module:
                raise _err_unresolvable_imported_type(name, qualified_module)
            if name in imports:
                raise _err_unresolvable_imported_type(name, imports[name][0])
            raise _err_unsupported_type(name)
        return _input_primitive(name)
    if ann.kind == "generic":
        outer = _resolve_qualified_name(imports, ann.name)[0]
        if outer in ("dict", "Dict"):
            return _InputType("any", "Any")
        if outer == "Optional":
            if len(ann.args) != 1:
                raise _err_unsupported_type(f"Optional expects exactly 1 type argument, got {len(ann.args)}")
            return dataclasses.replace(_resolve_input_type(ann.args[0], imports, typed_dicts), nullable=True)
        if outer == "Union":
            return _resolve_input_union(ann.args, imports, typed_dicts)
        if _is_annotated(imports, ann.name):
            if not ann.args:
                raise _err_unsupported_type("Annotated expects at least 1 type argument")
            return _resolve_input_type(ann.args[0], imports, typed_dicts)
        if outer in ("List", "list"):
            if len(ann.args) != 1:
                raise _err_unsupported_type(f"List expects exactly 1 type argument, got {len(ann.args)}")
            opaque_inner, ok = _unwrap_opaque_annotated(ann.args[0], imports)
            if ok:
                elem = _input_type_from_field_type(_opaque_field_type(opaque_inner, imports))
            else:
                elem = _resolve_input_type(ann.args[0], imports, typed_dicts)
            if elem.nullable or elem.kind in ("array", "union"):
                raise _err_unsupported_type("nested generics like List[Optional[X]] are not supported")
            return _InputType("array", elem=elem)
        raise _err_unsupported_type(f"{outer}[...] is not a supported input type")
    if ann.kind == "union":
        return _resolve_input_union(ann.args, imports, typed_dicts)
    raise _err_unsupported_type("unknown type annotation")


def _resolve_input_union(args, imports, typed_dicts) -> _InputType:  # types.go resolveInputUnion
    variants, nullable = [], False
    for arg in args:
        if arg.kind == "simple" and arg.name == "None":
            nullable = True
            continue
        if arg.kind == "union" or (arg.kind == "generic" and arg.name == "Union"):
            raise _err_unsupported_type("nested union inputs are not supported")
        variant = _resolve_input_type(arg, imports, typed_dicts)
        if variant.kind == "union":
            raise _err_unsupported_type("nested union inputs are not supported")
        variants.append(variant)
    if not variants:
        raise _err_unsupported_type("union inputs must include at least one non-None type")
    if len(variants) == 1:
        return dataclasses.replace(variants[0], nullable=variants[0].nullable or nullable)
    for variant in variants:
        _validate_union_variant(variant)
    return _InputType("union", variants=variants, nullable=nullable)


def _validate_union_variant(it: _InputType) -> None:  # types.go validateUnionVariant
    if it.nullable:
        raise _err_unsupported_type("nested nullable variants are not supported in union inputs")
    if it.kind == "primitive" and it.primitive in ("Path", "File", "Secret"):
        raise _err_unsupported_type(f"{it.primitive} is not supported in union inputs")
    if it.kind == "array" and it.elem is not None:
        _validate_union_variant(it.elem)
    if it.kind == "union":
        raise _err_unsupported_type("nested union inputs are not supported")


@dataclass
class _InputField:  # schema.InputField
    name: str
    order: int
    field_type: _FieldType
    input_type: _InputType
    info: _InputInfo = field(default_factory=_InputInfo)


def _validate_input_field(f: _InputField) -> None:  # types.go ValidateInputField
    i = f.info
    if f.input_type.kind == "union" and (
        i.choices or i.ge is not None or i.le is not None or i.min_length is not None
        or i.max_length is not None or i.regex is not None
    ):
        raise _err_unsupported_type("constraints and choices are not supported on union inputs")


# --- annotations.go ----------------------------------------------------------------------------------------------


def _split_top_level(s: str, sep: str) -> list[str]:  # splitTopLevelPipes / splitTopLevelCommas
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def _parse_type_from_string(s: str) -> _Ann | None:  # annotations.go parseTypeFromString
    s = s.strip()
    if not s:
        return None
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        return _parse_type_from_string(s[1:-1])
    parts = _split_top_level(s, "|")
    if len(parts) > 1:
        members = [_parse_type_from_string(p.strip()) for p in parts]
        return None if None in members else _Ann("union", args=tuple(members))
    bracket = s.find("[")
    if bracket >= 0 and s.endswith("]"):
        args = [_parse_type_from_string(p.strip()) for p in _split_top_level(s[bracket + 1 : -1], ",")]
        if None in args or not args:
            return None
        return _Ann("generic", s[:bracket].strip(), tuple(args))
    for part in s.split("."):
        if not part or not all(c.isascii() and (c.isalnum() or c == "_") for c in part):
            return None
    return _Ann("simple", s)


def _annotation_kind(src: _Source, node) -> str:
    """The node type of an annotation in tree-sitter-python v0.21.0 (Cog's grammar): `Name[...]` is a generic_type and a
    union starting with one a union_type; both reach parseTypeAnnotation's text fallback. Other forms are expressions."""
    kind = src.ts_type(node)
    leftmost = node
    while src.ts_type(leftmost) == "binary_operator" and isinstance(leftmost.op, ast.BitOr):
        leftmost = leftmost.left
    if src.ts_type(leftmost) == "subscript" and src.ts_type(leftmost.value) == "identifier":
        return "generic_type" if leftmost is node else "union_type"
    return kind


def _parse_type_annotation(src: _Source, node, top: bool = True) -> _Ann:  # annotations.go parseTypeAnnotation
    kind = _annotation_kind(src, node) if top else src.ts_type(node)
    text = src.text_of(node)
    if kind == "identifier":
        return _Ann("simple", text)
    if kind == "subscript":
        elements = node.slice.elts if src.ts_type(node.slice) == "expression_list" else [node.slice]
        value_end = src.span(node.value)[1]
        children = list(elements) + src.comments_within(value_end, src.raw_span(node)[1], elements)
        children.sort(key=lambda n: src.span(n)[0])
        args = tuple(_parse_type_annotation(src, child, top=False) for child in children)
        return _Ann("generic", src.text_of(node.value), args) if args else _Ann("simple", src.text_of(node.value))
    if kind == "binary_operator":
        if not isinstance(node.op, ast.BitOr):
            raise _err_unsupported_type("non-union binary operator in type annotation")
        members = []
        for side in (node.left, node.right):  # nested unions flatten
            ann = _parse_type_annotation(src, side, top=False)
            members.extend(ann.args if ann.kind == "union" else (ann,))
        return _Ann("union", args=tuple(members))
    if kind == "none":
        return _Ann("simple", "None")
    if kind == "attribute":
        return _Ann("simple", text)
    if kind in ("string", "concatenated_string"):
        ann = _parse_type_from_string(text.lstrip("\"'").rstrip("\"'"))
        if ann is None:
            raise _err_unsupported_type(f"string annotation: {text}")
        return ann
    ann = _parse_type_from_string(text)
    if ann is None:
        raise _err_unsupported_type(f"{kind}: {text}")
    return ann


def _decorator_expression(src: _Source, decorator):  # annotations.go decoratorExpression
    return decorator.func if src.ts_type(decorator) == "call" else decorator


def _is_cog_decorator(src: _Source, decorator, imports, name: str) -> bool:
    """annotations.go expressionIsCogStreaming / expressionIsCogConcurrent: `cog.<name>` or `from cog import <name>`."""
    expr = _decorator_expression(src, decorator)
    kind = src.ts_type(expr)
    if kind == "attribute":
        head, _dot, attr = src.text_of(expr).partition(".")
        return attr == name and imports.get(head) == ("cog", "cog")
    if kind == "identifier":
        return imports.get(src.text_of(expr)) == ("cog", name)
    return False


def _function_concurrency_max(src: _Source, func, imports) -> int | None:  # annotations.go functionConcurrencyMax
    for decorator in func.decorator_list:
        if not _is_cog_decorator(src, decorator, imports, "concurrent"):
            continue
        if src.ts_type(decorator) != "call":
            return 1
        args = src.call_arguments(decorator)
        if not args:
            return 1
        arg = args[0]
        if len(args) != 1 or not isinstance(arg, ast.keyword) or arg.arg != "max":
            raise _err("ErrUnsupportedType", "@concurrent only supports literal integer max=... arguments")
        value = _parse_default_value(src, arg.value)
        if value is None or value.kind != "int":
            raise _err("ErrUnsupportedType", "@concurrent max must be an integer literal")
        if value.value < 1:
            raise _err("ErrUnsupportedType", "@concurrent max must be at least 1")
        return value.value
    return None


# --- schema_type.go: output types -------------------------------------------------------------------------------


@dataclass
class _SchemaType:  # schema.SchemaType: kind is primitive | any | array | dict | object | iterator | concat_iterator
    kind: str
    primitive: str = ""
    items: _SchemaType | None = None
    value_type: _SchemaType | None = None
    fields: dict | None = None  # name -> (_SchemaType, default, required)
    elem: _SchemaType | None = None
    nullable: bool = False

    def json_schema(self, top_level: bool = True) -> dict:  # SchemaType.JSONSchema / jsonSchema
        result = self._core_schema()
        if top_level:
            result["title"] = "Output"
        if self.nullable:
            result["nullable"] = True
        return _go_map(result)

    def _core_schema(self) -> dict:  # SchemaType.coreSchema
        if self.kind == "primitive":
            return _primitive_json_type(self.primitive)
        if self.kind == "any":
            return {"type": "object"}
        if self.kind == "array":
            return {"type": "array", "items": self.items.json_schema(False) if self.items else {"type": "object"}}
        if self.kind == "dict":
            result = {"type": "object"}
            if self.value_type is not None:
                result["additionalProperties"] = self.value_type.json_schema(False)
            return result
        if self.kind == "object":
            if self.fields is None:
                return {"type": "object"}
            properties, required = {}, []
            for name, (st, default, is_required) in self.fields.items():
                prop = st.json_schema(False)
                prop["title"] = _title_case(name)
                if is_required and default is None:
                    required.append(name)
                properties[name] = _go_map(prop)
            result = {"type": "object", "properties": properties}
            if required:
                result["required"] = required
            return result
        items = self.elem.json_schema(False) if self.elem else {"type": "object"}
        result = {"type": "array", "items": items, "x-cog-array-type": "iterator"}
        if self.kind == "concat_iterator":
            result["x-cog-array-display"] = "concatenate"
        return result


def _resolve_schema_type(ann: _Ann, imports, models, seen=None) -> _SchemaType:  # schema_type.go resolveSchemaType
    inner, ok = _unwrap_opaque_annotated(ann, imports)
    if ok:
        if _unwrap_opaque_optional(inner, imports)[1]:
            raise _err_optional_output()
        return _opaque_schema_type(inner, imports)
    if ann.kind == "generic" and _is_annotated(imports, ann.name):
        if not ann.args:
            raise _err_unsupported_type("Annotated expects at least 1 type argument")
        return _resolve_schema_type(ann.args[0], imports, models, seen)
    if ann.kind == "simple":
        return _resolve_simple_schema_type(ann, imports, models, seen)
    if ann.kind == "generic":
        return _resolve_generic_schema_type(ann, imports, models, seen)
    return _resolve_union_schema_type(ann)


def _opaque_schema_type(inner: _Ann, imports) -> _SchemaType:  # schema_type.go opaqueSchemaType
    outer, ok = _opaque_container_name(inner.name, imports) if inner.kind in ("simple", "generic") else ("", False)
    if ok and outer in ("list", "List") and (inner.kind == "simple" or len(inner.args) == 1):
        return _SchemaType("array", items=_SchemaType("primitive", "Any"))
    return _SchemaType("primitive", "Any")


def _resolve_simple_schema_type(ann: _Ann, imports, models, seen) -> _SchemaType:
    name = ann.name
    if name in models:
        return _resolve_named_model(name, models[name], imports, models, seen)
    qualified_module, qualified = "", False
    resolved, (module, original), ok = _resolve_qualified_name(imports, name)
    if ok:
        name, qualified_module, qualified = resolved, module, True
        if f"{original}.{name}" in models:
            return _resolve_named_model(f"{original}.{name}", models[f"{original}.{name}"], imports, models, seen)
    if not qualified and name in models:
        return _resolve_named_model(name, models[name], imports, models, seen)
    if name in ("Any", "dict", "Dict"):
        return _SchemaType("any")
    outer, ok = _opaque_container_name(ann.name, imports)
    if ok and outer in ("list", "List"):
        return _SchemaType("array", items=_SchemaType("any"))
    if name not in _PRIMITIVES:
        if qualified_module:
            raise _err_unresolvable_imported_type(name, qualified_module)
        if name in imports:
            raise _err_unresolvable_imported_type(name, imports[name][0])
        raise _err_unresolvable_type(name)
    return _SchemaType("primitive", name)


def _resolve_named_model(name, fields, imports, models, seen) -> _SchemaType:  # resolveNamedModelToSchemaType
    seen = {} if seen is None else seen
    if seen.get(name):
        return _SchemaType("any")  # a recursive model becomes an opaque object
    seen[name] = True
    try:
        result = {}
        for f in fields:  # resolveModelToSchemaType
            try:
                st, required = _resolve_field_schema_type(f.type, imports, models, seen)
            except StaticSchemaError as exc:
                raise _wrapped(f'field "{f.name}"', exc) from exc
            if f.key_required is not None:
                required = f.key_required
            if f.default is not None:
                required = False
            result[f.name] = (st, f.default, required)
        return _SchemaType("object", fields=result)
    finally:
        seen.pop(name, None)


def _resolve_generic_schema_type(ann: _Ann, imports, models, seen) -> _SchemaType:
    outer = _resolve_qualified_name(imports, ann.name)[0]
    if outer in ("dict", "Dict"):
        if len(ann.args) == 2:
            try:
                value = _resolve_schema_type(ann.args[1], imports, models, seen)
            except StaticSchemaError as exc:
                raise _wrapped("resolving dict value type", exc) from exc
            return _SchemaType("dict", value_type=value)
        if not ann.args:
            return _SchemaType("any")
        raise _err_unsupported_type("dict expects 0 or 2 type arguments")
    if outer == "Optional":
        if len(ann.args) != 1:
            raise _err_unsupported_type("Optional expects exactly 1 type argument")
        raise _err_optional_output()
    if outer == "Union":
        return _resolve_union_schema_type(_Ann("union", args=ann.args))
    list_name, ok = _opaque_container_name(ann.name, imports)
    if ok and list_name in ("List", "list"):
        if len(ann.args) != 1:
            raise _err_unsupported_type("list expects exactly 1 type argument")
        return _SchemaType("array", items=_resolve_schema_type(ann.args[0], imports, models, seen))
    if outer in ("Iterator", "AsyncIterator"):
        if len(ann.args) != 1:
            raise _err_unsupported_type("Iterator expects exactly 1 type argument")
        return _SchemaType("iterator", elem=_resolve_schema_type(ann.args[0], imports, models, seen))
    if outer in ("ConcatenateIterator", "AsyncConcatenateIterator"):
        if len(ann.args) != 1:
            raise _err_unsupported_type("ConcatenateIterator expects exactly 1 type argument")
        inner = ann.args[0]
        if inner.kind != "simple":
            raise _err_unsupported_type("ConcatenateIterator element type must be a simple type")
        if inner.name != "str":
            raise StaticSchemaError("ErrConcatIteratorNotStr", f"ConcatenateIterator element type must be str, got {inner.name}")
        return _SchemaType("concat_iterator", elem=_SchemaType("primitive", "str"))
    raise _err_unsupported_type(f"{outer}[...] is not a supported output type")


def _resolve_union_schema_type(ann: _Ann) -> _SchemaType:  # resolveUnionSchemaType
    if _unwrap_optional(ann)[1]:
        raise _err_optional_output()
    raise _err_unsupported_type("union types are not supported as output")


def _resolve_field_schema_type(ann: _Ann, imports, models, seen):  # resolveFieldSchemaType -> (type, required)
    inner, ok = _unwrap_opaque_annotated(ann, imports)
    if ok:
        optional_inner, is_optional = _unwrap_field_optional(inner, imports)
        if is_optional:
            return dataclasses.replace(_opaque_schema_type(optional_inner, imports), nullable=True), False
        return _opaque_schema_type(inner, imports), True
    if ann.kind == "generic" and _is_annotated(imports, ann.name):
        if not ann.args:
            raise _err_unsupported_type("Annotated expects at least 1 type argument")
        return _resolve_field_schema_type(ann.args[0], imports, models, seen)
    inner, ok = _unwrap_field_optional(ann, imports)
    if ok:
        return dataclasses.replace(_resolve_schema_type(inner, imports, models, seen), nullable=True), False
    return _resolve_schema_type(ann, imports, models, seen), True


def _unwrap_field_optional(ann: _Ann, imports):  # unwrapFieldOptional
    inner, ok = _unwrap_opaque_optional(ann, imports)
    return (inner, True) if ok else _unwrap_optional(ann)


# --- models.go: BaseModel and TypedDict classes (output objects, TypedDict inputs) -------------------------------


@dataclass
class _ModelField:  # schema.ModelField
    name: str
    type: _Ann
    default: _Default | None = None
    key_required: bool | None = None


@dataclass
class _ModuleSummary:  # python.ModuleSummary
    imports: dict | None
    models: dict
    typed_dicts: dict
    source_path: str


@dataclass
class _ModelCtx:  # models.go modelParseContext
    imports: dict
    typed_dicts: dict
    loaded_modules: dict
    source_path: str
    resolved_models: dict | None = None


def _collect_model_classes(src: _Source, ctx: _ModelCtx) -> dict[str, list[_ModelField]]:  # collectModelClasses
    models: dict[str, list[_ModelField]] = {}
    for stmt in src.tree.body:
        if not isinstance(stmt, ast.ClassDef):
            continue
        is_base_model = _inherits_from_base_model(src, stmt, ctx.imports)
        is_typed_dict, required_by_default, parents = _typed_dict_class_info(src, stmt, ctx.imports, ctx.typed_dicts)
        if not is_base_model and not is_typed_dict:
            continue
        fields = _extract_class_annotations(src, stmt, ctx.imports, is_typed_dict, required_by_default)
        if is_typed_dict:
            parent_fields = []
            for parent in parents:
                if parent in models:
                    parent_fields.append(models[parent])
                elif ctx.resolved_models is not None and parent in ctx.resolved_models:
                    parent_fields.append(ctx.resolved_models[parent])
            merged: dict[str, _ModelField] = {}
            for f in [f for pf in parent_fields for f in pf] + fields:
                merged[f.name] = f  # a redefined field keeps its first position
            fields = list(merged.values())
        models[stmt.name] = fields
        if is_typed_dict:
            ctx.typed_dicts[stmt.name] = True
    return models


def _class_bases(src: _Source, cls: ast.ClassDef) -> list[str]:  # identifier/attribute superclasses, as text
    return [src.text_of(b) for b in cls.bases if src.ts_type(b) in ("identifier", "attribute")]


def _inherits_from_base_model(src: _Source, cls: ast.ClassDef, imports) -> bool:  # InheritsFromBaseModel
    base_models = {("cog", "BaseModel"), ("pydantic", "BaseModel"), ("pydantic.v1", "BaseModel")}
    for base in cls.bases:
        kind, text = src.ts_type(base), src.text_of(base)
        if kind == "identifier" and (text == "BaseModel" or imports.get(text) in base_models):
            return True
        if kind == "attribute" and text.endswith(".BaseModel"):
            return True
    return False


def _typed_dict_class_info(src: _Source, cls: ast.ClassDef, imports, typed_dicts):  # TypedDictClassInfo
    is_typed_dict, required_by_default, parents = False, True, []
    for base in cls.bases:
        kind, text = src.ts_type(base), src.text_of(base)
        if kind == "identifier":
            if text == "TypedDict" or imports.get(text) in (("typing", "TypedDict"), ("typing_extensions", "TypedDict")):
                is_typed_dict = True
            elif typed_dicts.get(text):
                is_typed_dict = True
                parents.append(text)
        elif kind == "attribute":
            if text.endswith(".TypedDict"):
                is_typed_dict = True
            elif typed_dicts.get(text):
                is_typed_dict = True
                parents.append(text)
    for kw in cls.keywords:
        if kw.arg == "total" and src.text_of(kw.value).strip() == "False":
            required_by_default = False
    return is_typed_dict, required_by_default, parents


def _extract_class_annotations(src: _Source, cls, imports, is_typed_dict, required_by_default):
    """models.go extractClassAnnotations: `name: T [= literal]` lines; a default that isn't a literal is ignored."""
    fields = []
    for stmt in cls.body:
        if not isinstance(stmt, ast.AnnAssign) or src.ts_type(stmt.target) != "identifier":
            continue
        try:
            ann = _parse_type_annotation(src, stmt.annotation)
        except StaticSchemaError:
            continue
        default = _parse_default_value(src, stmt.value) if stmt.value is not None else None
        ann, key_required = _typed_dict_field_info(ann, imports, is_typed_dict, required_by_default)
        fields.append(_ModelField(stmt.target.id, ann, default, key_required))
    return fields


def _typed_dict_field_info(ann: _Ann, imports, is_typed_dict, required_by_default):  # typedDictFieldInfo
    if not is_typed_dict:
        return ann, None
    if ann.kind != "generic" or len(ann.args) != 1:
        return ann, required_by_default
    name = ann.name
    if name == "NotRequired" or name.endswith(".NotRequired"):
        return ann.args[0], False
    if name == "Required" or name.endswith(".Required"):
        return ann.args[0], True
    module, original = imports.get(name, ("", ""))
    if module in ("typing", "typing_extensions") and original in ("Required", "NotRequired"):
        return ann.args[0], original == "Required"
    return ann, required_by_default


_KNOWN_EXTERNAL = {  # models.go isKnownExternalModule
    "builtins", "typing", "typing_extensions", "collections", "abc", "enum", "dataclasses", "os", "sys", "io", "json",
    "re", "math", "pathlib", "functools", "itertools", "contextlib", "concurrent", "asyncio", "multiprocessing",
    "threading", "logging", "warnings", "unittest", "pytest", "numpy", "torch", "tensorflow", "jax", "scipy",
    "sklearn", "transformers", "diffusers", "accelerate", "safetensors", "PIL", "cv2", "skimage", "requests", "httpx",
    "aiohttp", "fastapi", "flask", "pydantic", "cog",
}


def _is_known_external_module(module: str) -> bool:
    top = module[: module.index(".")] if module.find(".") > 0 else module
    return top.lstrip(".") in _KNOWN_EXTERNAL


def _go_join(*parts: str) -> str:  # filepath.Join: skips empty parts, then Clean
    kept = [p for p in parts if p]
    return posixpath.normpath(posixpath.join(*kept)) if kept else ""


def _go_dir(path: str) -> str:  # filepath.Dir
    return posixpath.normpath(posixpath.dirname(path)) if posixpath.dirname(path) else "."


def _module_to_file_path(module: str, source_path: str = "") -> str:  # models.go moduleToFilePath
    """`shared.flux` -> shared/flux.py (never shared/__init__.py); `.x` is relative to the importing file."""
    if module.startswith(".") and source_path:
        level = len(module) - len(module.lstrip("."))
        clean = module.lstrip(".")
        if not clean:
            return ""
        base = _go_dir(source_path)
        base = "" if base == "." else base
        for _ in range(level - 1):
            if not base:
                break
            base = _go_dir(base)
            base = "" if base == "." else base
        return _go_join(base, *clean.split(".")) + ".py"
    clean = module.lstrip(".")
    return _go_join(*clean.split(".")) + ".py" if clean else ""


def _nested_import_module(module: str, original: str) -> str:  # models.go nestedImportModule
    if not module or not original:
        return module
    return "." + original if module == "." else f"{module}.{original}"


def _load_models_from_module(ctx: _ModelCtx, source_dir: str, module: str):  # modelParseContext.loadModelsFromModule
    if _is_known_external_module(module):
        return None
    py_path = _module_to_file_path(module, ctx.source_path)
    if not py_path:
        return None
    key = posixpath.normpath(py_path)
    if key in ctx.loaded_modules:
        return ctx.loaded_modules[key].models
    ctx.loaded_modules[key] = _ModuleSummary(None, {}, {}, key)  # placeholder: breaks import cycles
    try:
        with open(os.path.join(source_dir, py_path), encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        del ctx.loaded_modules[key]
        return None
    except OSError as exc:
        print(f'cog: warning: failed to read "{os.path.join(source_dir, py_path)}": {exc}', file=sys.stderr)
        return None
    try:
        src = _Source(text)
    except StaticSchemaError:
        return None
    file_ctx = _ModelCtx(_collect_imports(src), {}, ctx.loaded_modules, key)
    models = _collect_model_classes(src, file_ctx)
    file_ctx.resolved_models = models
    _resolve_external_models(source_dir, models, file_ctx)
    file_ctx.resolved_models = models
    models.update(_collect_model_classes(src, file_ctx))
    ctx.loaded_modules[key] = _ModuleSummary(file_ctx.imports, models, file_ctx.typed_dicts, key)
    _refresh_loaded_module_aliases(ctx.loaded_modules)
    _resolve_external_models(source_dir, models, file_ctx)
    ctx.loaded_modules[key] = _ModuleSummary(file_ctx.imports, models, file_ctx.typed_dicts, key)
    return models


def _propagate_alias(local_name, entry, src_models, dst_models, src_typed, dst_typed):  # propagateImportedAliasFrom
    if entry[1] in src_models:
        dst_models[local_name] = src_models[entry[1]]
    if src_typed.get(entry[1]):
        dst_typed[local_name] = True


def _refresh_loaded_module_aliases(loaded: dict) -> None:  # models.go refreshLoadedModuleAliases
    for summary in list(loaded.values()):
        if summary.imports is None:
            continue
        for local_name, entry in summary.imports.items():
            py_path = _module_to_file_path(entry[0], summary.source_path)
            imported = loaded.get(posixpath.normpath(py_path)) if py_path else None
            if imported is not None:
                _propagate_alias(local_name, entry, imported.models, summary.models, imported.typed_dicts, summary.typed_dicts)


def _resolve_external_models(source_dir: str, models: dict, ctx: _ModelCtx) -> None:  # models.go resolveExternalModels
    """Merge BaseModel/TypedDict classes from local .py files this file imports (relative to source_dir)."""
    for local_name, entry in list(ctx.imports.items()):
        module, nested = entry[0], False
        module_models = _load_models_from_module(ctx, source_dir, module)
        if module_models is None:
            nested_module = _nested_import_module(entry[0], entry[1])
            if nested_module != entry[0]:
                module, nested = nested_module, True
                module_models = _load_models_from_module(ctx, source_dir, module)
        if module_models is None:
            _propagate_alias(local_name, entry, models, models, ctx.typed_dicts, ctx.typed_dicts)
            continue
        for name, fields in module_models.items():
            models[f"{local_name}.{name}"] = fields
        py_path = _module_to_file_path(module, ctx.source_path)
        summary = ctx.loaded_modules.get(posixpath.normpath(py_path)) if py_path else None
        if summary is not None:
            for name in summary.typed_dicts:
                ctx.typed_dicts[f"{local_name}.{name}"] = True
        if nested or entry[1] == entry[0] or entry[0] == ".":
            continue
        summary_typed = summary.typed_dicts if summary is not None else ctx.typed_dicts
        _propagate_alias(local_name, entry, module_models, models, summary_typed, ctx.typed_dicts)
        for name, fields in module_models.items():  # mergeDiscoveredModels: unqualified, first one wins
            models.setdefault(name, fields)


# --- target.go: which function is the predictor -----------------------------------------------------------------


@dataclass
class _PyFile:  # target.go pythonFileContext
    src: _Source
    imports: dict
    scope: dict
    registry: _Registry
    models: dict
    typed_dicts: dict
    source_dir: str
    source_path: str
    mode: str
    file_cache: dict
    loading: set


def _find_class(src: _Source, name: str) -> ast.ClassDef | None:  # target.go findClassByName (top level only)
    return next((s for s in src.tree.body if isinstance(s, ast.ClassDef) and s.name == name), None)


def _find_function(src: _Source, name: str):  # target.go findStandaloneFunction
    return next(
        (s for s in src.tree.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name == name), None
    )


def _find_target(file: _PyFile, target: str):  # target.go findTargetCallableNode -> (function node, file)
    method_name = "train" if file.mode == "train" else "predict"
    cls = _find_class(file.src, target)
    if cls is not None:
        if file.mode == "predict":
            return _find_predict_method(file, cls, target)
        for stmt in cls.body:  # findNamedMethodInClass: no inheritance for train()
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == method_name:
                return stmt, file
        raise _err("ErrMethodNotFound", f"{target}.{method_name} not found")
    func = _find_function(file.src, target)
    if func is None and target != method_name:
        func = _find_function(file.src, method_name)
    if func is None:
        raise _err("ErrPredictorNotFound", target)
    return func, file


def _find_predict_method(file: _PyFile, cls: ast.ClassDef, class_name: str):  # target.go findPredictMethodInClass
    run, predict = _collect_predict_methods(file, cls, class_name, set())
    if run is not None:
        return run
    if predict is not None:
        print(f"cog: warning: {class_name}.predict() is deprecated; use run() instead", file=sys.stderr)
        return predict
    raise _err("ErrMethodNotFound", f"{class_name} must define run() or predict()")


def _collect_predict_methods(file: _PyFile, cls, class_name: str, seen: set):  # target.go collectPredictMethods
    """run()/predict() on the class, else on its bases: same-file classes, then classes imported from local files."""
    key = (id(file.src), class_name)
    if key in seen:
        return None, None
    seen.add(key)
    run = predict = None
    for stmt in cls.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if stmt.name == "run":
                run = (stmt, file)
            elif stmt.name == "predict":
                predict = (stmt, file)
    for parent in _class_bases(file.src, cls):
        parent_file, parent_class = file, parent
        parent_node = _find_class(file.src, parent)
        if parent_node is None:
            parent_file, parent_node, parent_class = _resolve_imported_parent_class(file, parent)
            if parent_node is None:
                continue
        parent_run, parent_predict = _collect_predict_methods(parent_file, parent_node, parent_class, seen)
        run = run or parent_run
        predict = predict or parent_predict
    return run, predict


def _resolve_imported_parent_class(file: _PyFile, parent: str):  # target.go resolveImportedParentClass
    if not file.source_dir:
        return None, None, ""
    head, dot, rest = parent.partition(".")
    if dot:
        if head not in file.imports:
            return None, None, ""
        module, imported_name = file.imports[head]
        class_name = rest
    elif parent in file.imports:
        module, imported_name = file.imports[parent]
        class_name = imported_name
    else:
        return None, None, ""
    parent_file = _load_py_file(file, module)
    if parent_file is None:
        parent_file = _load_py_file(file, _nested_import_module(module, imported_name))
    if parent_file is None:
        return None, None, ""
    node = _find_class(parent_file.src, class_name)
    return (parent_file, node, class_name) if node is not None else (None, None, "")


def _load_py_file(file: _PyFile, module: str) -> _PyFile | None:  # target.go loadPythonFileContext
    if _is_known_external_module(module):
        return None
    py_path = _module_to_file_path(module, file.source_path)
    if not py_path:
        return None
    full_path = os.path.normpath(os.path.join(file.source_dir, py_path))
    if full_path in file.file_cache:
        return file.file_cache[full_path]
    if full_path in file.loading:
        return None
    file.loading.add(full_path)
    try:
        try:
            with open(full_path, encoding="utf-8") as fh:
                src = _Source(fh.read())
        except (OSError, StaticSchemaError):
            return None
        loaded = _build_file(src, file.source_dir, py_path, file.mode, {}, file.file_cache, file.loading)
        file.file_cache[full_path] = loaded
        return loaded
    finally:
        file.loading.discard(full_path)


def _build_file(src, source_dir, source_path, mode, loaded_modules, file_cache, loading) -> _PyFile:
    """The per-file phases of parser.go: imports, module scope, models (+ imported ones), input registry."""
    imports = _collect_imports(src)
    scope = _collect_module_scope(src)
    ctx = _ModelCtx(imports, {}, loaded_modules, source_path)
    models = _collect_model_classes(src, ctx)
    ctx.resolved_models = models
    if source_dir:
        _resolve_external_models(source_dir, models, ctx)
        ctx.resolved_models = models
        models.update(_collect_model_classes(src, ctx))
    registry = _collect_input_registry(src, imports, scope)
    return _PyFile(src, imports, scope, registry, models, ctx.typed_dicts, source_dir, source_path, mode, file_cache, loading)


# --- inputs.go extractInputs: the parameters of run()/predict() -------------------------------------------------


def _extract_inputs(func, file: _PyFile) -> dict[str, _InputField]:  # inputs.go extractInputs
    src, args = file.src, func.args
    positional = args.posonlyargs + args.args
    defaults = dict(zip(positional[len(positional) - len(args.defaults):], args.defaults, strict=False))
    defaults.update((a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=False) if d is not None)
    params = positional + ([args.vararg] if args.vararg else []) + args.kwonlyargs + ([args.kwarg] if args.kwarg else [])
    splats = {id(args.vararg), id(args.kwarg)}
    inputs: dict[str, _InputField] = {}
    order = 0
    for param in sorted(params, key=lambda a: src.raw_span(a)[0]):
        default = defaults.get(param)
        if param.annotation is None:
            if default is not None:  # default_parameter; a bare untyped parameter is skipped without a word
                raise _err("ErrMissingTypeAnnotation", f"parameter '{param.arg}' on {func.name} has no type annotation")
            continue
        if id(param) in splats:  # `*args: T` is a typed_parameter whose first child is not an identifier
            raise _err("ErrParse", "typed_parameter has no identifier")
        field_ = _parse_parameter(file, param, default, order)
        inputs[field_.name] = field_
        order += 1
    return inputs


def _parse_parameter(file: _PyFile, param, default, order: int) -> _InputField:
    """inputs.go parseTypedParameter / parseTypedDefaultParameter."""
    src, name = file.src, param.arg
    input_type = _resolve_input_type(_parse_type_annotation(src, param.annotation), file.imports, file.typed_dicts)
    field_ = _InputField(name, order, _field_type_from_input_type(input_type), input_type)
    if default is None:
        _validate_input_field(field_)
        return field_
    if _is_input_call(src, default, file.imports):  # 1. a direct Input(...) call
        info = _parse_input_call(src, default, name, file.scope)
    else:  # 2. Class.attr / Class.method(...) naming an Input() in this file
        info = _resolve_input_reference(src, default, file.registry)
        if info is None:  # 3. a literal or a module-level constant of this file
            value = _resolve_default_expr(src, default, file.scope)
            if value is None:
                raise _err(
                    "ErrDefaultNotResolvable",
                    f"parameter '{name}': default `{src.text_of(default)}` cannot be statically resolved",
                )
            info = _InputInfo(default=value)
    if info.accept is not None and field_.field_type.primitive not in ("Path", "File"):  # inputFieldWithInfo
        raise _err("ErrAcceptOnNonFileType", f"accept is only valid on Path or File inputs (parameter '{name}')")
    field_.info = info
    _validate_input_field(field_)
    return field_


# --- parser.go: the pipeline --------------------------------------------------------------------------------------


@dataclass
class _PredictorInfo:  # schema.PredictorInfo
    inputs: dict
    output: _SchemaType
    mode: str
    supports_streaming: bool
    concurrency_max: int | None
    is_async: bool


def _normalize_source_path(source_dir: str, source_path: str) -> str:  # parser.go normalizeSourcePath
    if not source_path:
        return ""
    if not os.path.isabs(source_path) or not source_dir:
        clean = posixpath.normpath(source_path)
        rel = clean
    else:
        rel = posixpath.normpath(os.path.relpath(source_path, source_dir))
    if os.path.isabs(rel) or rel == ".." or rel.startswith("../"):
        raise _err("ErrParse", f'source path "{source_path}" is outside source directory')
    return rel


def _parse_predictor(source: str, target: str, mode: str, source_dir: str, source_path: str) -> _PredictorInfo:
    """parser.go ParseWithOptions (legacy predict() allowed, as `cog build` does)."""
    if mode not in ("predict", "train"):
        raise ValueError(f"mode must be 'predict' or 'train', not {mode!r}")
    source_path = _normalize_source_path(source_dir, source_path)
    file = _build_file(_Source(source), source_dir, source_path, mode, {}, {}, set())
    func, target_file = _find_target(file, target)
    inputs = _extract_inputs(func, target_file)
    if func.returns is None:
        raise _err("ErrMissingReturnType", func.name)
    src, imports = target_file.src, target_file.imports
    output = _resolve_schema_type(_parse_type_annotation(src, func.returns), imports, target_file.models)
    is_async = isinstance(func, ast.AsyncFunctionDef)
    streaming = any(_is_cog_decorator(src, d, imports, "streaming") for d in func.decorator_list)
    if streaming and output.kind not in ("iterator", "concat_iterator"):
        raise _err(
            "ErrUnsupportedType",
            "@streaming requires Iterator[...], AsyncIterator[...], ConcatenateIterator[...] or AsyncConcatenateIterator[...] "
            "return type",
        )
    concurrency_max = _function_concurrency_max(src, func, imports)
    if concurrency_max is not None and concurrency_max > 1 and not is_async:
        raise _err("ErrUnsupportedType", "@concurrent(max > 1) requires an async run() or predict() method")
    return _PredictorInfo(inputs, output, mode, streaming, concurrency_max, is_async)


# --- openapi_spec.go ------------------------------------------------------------------------------------------------


def _title_case(name: str) -> str:  # types.go TitleCase: snake_case -> "Snake Case"
    return " ".join(p[:1].upper() + p[1:] if p[:1].isascii() else p for p in name.split("_"))


def _go_map(d: dict) -> dict:
    """A Go map[string]any: json.Marshal writes its keys sorted."""
    return dict(sorted(d.items()))


def _input_type_json_schema(it: _InputType) -> dict:  # openapi_spec.go inputTypeJSONSchema
    if it.kind == "primitive":
        schema = _primitive_json_type(it.primitive)
    elif it.kind == "array":
        schema = {"type": "array", "items": _input_type_json_schema(it.elem) if it.elem else {"type": "object"}}
    elif it.kind == "union":
        variants = []
        for variant in it.variants:
            variant_schema = _input_type_json_schema(variant)
            if it.nullable:
                variant_schema["nullable"] = True
            variants.append(_go_map(variant_schema))
        schema = {"anyOf": variants}
    else:
        schema = {"type": "object"}
    if it.nullable:
        schema["nullable"] = True
    return _go_map(schema)


def _build_input_schema(info: _PredictorInfo):  # openapi_spec.go buildInputSchema -> (schema, enums)
    properties, required, enums = {}, [], []
    for name, f in info.inputs.items():
        i = f.info
        prop = {"x-order": f.order}
        if i.choices:
            # The enum component is named after the parameter itself, and the property gets no title or type.
            enum_type = _primitive_json_type(f.field_type.primitive).get("type") or "string"
            enums.append((name, _go_map({
                "title": name,
                "description": "An enumeration.",
                "enum": [c.to_json() for c in i.choices],
                "type": enum_type,
            })))
            prop["allOf"] = [{"$ref": "#/components/schemas/" + name}]
        else:
            prop["title"] = _title_case(name)
            prop.update(_input_type_json_schema(f.input_type))
        repetition = f.field_type.repetition
        nullable = repetition in ("optional", "optional_repeated") or f.input_type.nullable
        if f.field_type.primitive == "Secret" and repetition == "required" and i.default is not None and i.default.kind == "none":
            nullable = True  # `api_key: Secret = Input(default=None)` means an optional credential
        # default=None on a non-nullable input is no default at all: the input stays required.
        has_default = i.default is not None and not (i.default.kind == "none" and not nullable)
        if not has_default and (f.input_type.kind == "union" or repetition in ("required", "repeated")):
            required.append(name)
        if has_default:
            prop["default"] = i.default.to_json()
        if nullable:
            prop["nullable"] = True
        if i.description is not None:
            prop["description"] = i.description
        if i.ge is not None:
            prop["minimum"] = i.ge
        if i.le is not None:
            prop["maximum"] = i.le
        if i.min_length is not None:
            prop["minLength"] = i.min_length
        if i.max_length is not None:
            prop["maxLength"] = i.max_length
        if i.regex is not None:
            prop["pattern"] = i.regex
        if i.deprecated:
            prop["deprecated"] = True
        if i.accept is not None:
            prop["x-cog-accept"] = i.accept
        properties[name] = _go_map(prop)
    schema = {"title": "Input", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return _go_map(schema), enums


def _response(description: str, schema: dict) -> dict:
    return _go_map({"description": description, "content": {"application/json": {"schema": schema}}})


def _model_components(info: _PredictorInfo) -> dict:
    """The first entries of components.schemas: Input, Output, then one enum per choices= input (buildOpenAPISpec)."""
    input_key, output_key = ("TrainingInput", "TrainingOutput") if info.mode == "train" else ("Input", "Output")
    input_schema, enums = _build_input_schema(info)
    input_schema["title"] = input_key
    components = {input_key: _go_map(input_schema), output_key: info.output.json_schema()}
    for name, schema in enums:
        components[name] = schema  # a parameter named like a component replaces it in place, as in Go
    return components


def _build_openapi_spec(info: _PredictorInfo, version: str) -> dict:  # openapi_spec.go buildOpenAPISpec
    train = info.mode == "train"
    noun = "training" if train else "prediction"
    input_key, output_key = ("TrainingInput", "TrainingOutput") if train else ("Input", "Output")
    request, response = f"{noun.title()}Request", f"{noun.title()}Response"
    components = _model_components(info)
    ref = "#/components/schemas/"
    timestamp = {"type": "string", "format": "date-time"}
    components[request] = _go_map({"title": request, "type": "object", "properties": _go_map({
        "id": {"title": "Id", "type": "string"}, "input": {"$ref": ref + input_key}})})
    components[response] = _go_map({"title": response, "type": "object", "properties": _go_map({
        "input": {"$ref": ref + input_key},
        "output": {"$ref": ref + output_key},
        "id": {"title": "Id", "type": "string"},
        "version": {"title": "Version", "type": "string"},
        "created_at": _go_map({"title": "Created At", **timestamp}),
        "started_at": _go_map({"title": "Started At", **timestamp}),
        "completed_at": _go_map({"title": "Completed At", **timestamp}),
        "status": {"title": "Status", "type": "string"},
        "error": {"title": "Error", "type": "string"},
        "logs": {"title": "Logs", "type": "string"},
        "metrics": {"title": "Metrics", "type": "object"},
    })})
    components["Status"] = _go_map({
        "title": "Status",
        "description": "An enumeration.",
        "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
        "type": "string",
    })
    components["HTTPValidationError"] = _go_map({"title": "HTTPValidationError", "type": "object", "properties": {
        "detail": _go_map({"title": "Detail", "type": "array", "items": {"$ref": ref + "ValidationError"}})}})
    components["ValidationError"] = _go_map({
        "title": "ValidationError",
        "required": ["loc", "msg", "type"],
        "type": "object",
        "properties": _go_map({
            "loc": _go_map({"title": "Location", "type": "array",
                            "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}),
            "msg": {"title": "Message", "type": "string"},
            "type": {"title": "Error Type", "type": "string"},
        }),
    })
    ok_empty = {"200": _response("Successful Response", {})}
    validation = _response("Validation Error", {"$ref": ref + "HTTPValidationError"})
    main_operation = {
        "summary": "Train" if train else "Predict",
        "description": f"Run a single {noun} on the model",
        "operationId": f"{'train' if train else 'predict'}_{noun}s_post",
        "requestBody": {"content": {"application/json": {"schema": {"$ref": ref + request}}}},
        "responses": {"200": _response("Successful Response", {"$ref": ref + response}), "422": validation},
    }
    if not train and info.supports_streaming:
        main_operation["x-cog-streaming"] = True
    paths = {
        "/": {"get": _go_map({"summary": "Root", "operationId": "root__get", "responses": ok_empty})},
        "/health-check": {"get": _go_map({
            "summary": "Healthcheck", "operationId": "healthcheck_health_check_get", "responses": ok_empty})},
        f"/{noun}s": {"post": _go_map(main_operation)},
        f"/{noun}s/{{{noun}_id}}/cancel": {"post": _go_map({
            "summary": "Cancel",
            "operationId": f"cancel_{noun}s__{noun}_id__cancel_post",
            "parameters": [_go_map({
                "required": True,
                "schema": {"title": _title_case(f"{noun}_id"), "type": "string"},
                "name": f"{noun}_id",
                "in": "path",
            })],
            "responses": {"200": _response("Successful Response", {}), "422": validation},
        })},
    }
    return _go_map({
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": version},
        "paths": paths,
        "components": {"schemas": components},
    })


def _json_roundtrip(value):
    """What json.loads returns for Go's encoding: integral floats lose their ".0", NaN/Inf fail the build."""
    if isinstance(value, dict):
        return {k: _json_roundtrip(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_roundtrip(v) for v in value]
    if isinstance(value, float) and not isinstance(value, bool):
        if math.isnan(value) or math.isinf(value):
            raise _err("ErrOther", f"json: unsupported value: {_go_fmt_float(value)}")
        return int(value) if value.is_integer() and abs(value) < 1e21 else value
    return value


# --- public API ------------------------------------------------------------------------------------------------------


def generate_openapi(
    source: str,
    class_name: str,
    *,
    mode: str = "predict",
    source_dir: str | None = None,
    source_path: str = "",
    version: str = COG_VERSION,
) -> dict:
    """The whole OpenAPI document `cog build` would bake into the image (schema.GenerateFromSourceWithPath).

    `class_name` is the part after ":" in cog.yaml's `predict:`/`run:` (a class, or a module-level function).
    `source_dir` is the project root (the folder holding cog.yaml; with `cog build -f sub/cog.yaml` run from the
    repository root, that root); only with it does the parser open other local files, and only for two things:
    base classes of the predictor class (to find an inherited run()) and BaseModel/TypedDict classes used as
    types. Defaults, descriptions and constants are never read from another file. `source_path` is predict.py's
    path relative to `source_dir` (needed for `from .x import` forms).

    In the build (pkg/image/build.go resolveBuildSchema) this runs for every `cog build` unless `--openapi-schema
    FILE` or COG_OPENAPI_SCHEMA=FILE supplies a ready schema (or the hidden `--skip-schema-validation` is given);
    its error fails the build as "image build failed: <message>". An explicit build.sdk_version (or COG_SDK_WHEEL
    pinned to a PyPI version) below 0.17.0 is refused outright. The result is then checked by kin-openapi.
    """
    info = _parse_predictor(source, class_name, mode, source_dir or "", source_path)
    spec = _build_openapi_spec(info, version)
    return _json_roundtrip(spec)


def parse(source: str, class_name: str, *, mode: str = "predict", source_dir: str | None = None, source_path: str = "") -> dict:
    """The model's own part of `components.schemas`: Input, Output and one enum schema per `choices=` input, in
    Cog's order (see the module docstring for the exact shape). Arguments as for `generate_openapi`."""
    info = _parse_predictor(source, class_name, mode, source_dir or "", source_path)
    return _json_roundtrip(_model_components(info))
