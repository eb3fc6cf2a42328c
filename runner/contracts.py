"""Program contracts: what each kind of program must declare, checked when it loads.

Every program: `id` (its path), `version`, `summary`, `reads`, `writes`, and only known keys.
Its `$params` are declared (`params:`), each with a known type; a default has that type and an
`enum` lists the only values allowed. Kinds add their own rules:

- schema   (`schema_rev: N`): creates relations; an integer revision, in rules/schema/rev_NNN.cozo.
- pattern  (under `patterns/`): `codes` (rustc codes, or "*"), params `run_id` and `round`
           only required ones, `writes: []`, and its rows are exactly PATTERN_HEADERS.
- write    (non-empty `writes`) and query (`writes: []`): the common rules.

A broken contract is one line, `file:line: what is wrong`. The cheap checks here run on the
source when a program loads; `check_rendered` runs on the rendered text in `pt test` (includes
expanded: params used only there, params declared but never used).
"""
from __future__ import annotations

import re
from typing import Any

COMMON_KEYS = {"id", "version", "summary", "params", "vars", "reads", "writes", "ordered"}
REQUIRED_KEYS = ("id", "version", "summary", "reads", "writes")
KIND_KEYS = {"schema": {"schema_rev"}, "pattern": {"codes"}, "write": set(), "query": set()}
PARAM_KEYS = {"type", "required", "default", "doc", "enum"}
VAR_KEYS = {"default", "doc"}

# A pattern's rows, one per text edit (patterns/README.md): the columns, in order, and their types.
PATTERN_COLUMNS = {"diag": int, "alt": int, "tier": int, "file_path": str, "start": int, "end": int,
                   "replacement": str, "note": str}
PATTERN_HEADERS = list(PATTERN_COLUMNS)


def pattern_row_problem(row: dict) -> str:
    """What is wrong with one row a pattern returned ('' = nothing): the run-time half of its
    contract (a value's type is only known when it runs)."""
    for col, typ in PATTERN_COLUMNS.items():
        if col not in row:
            return f"its output lacks {col} (a pattern returns ?[{', '.join(PATTERN_HEADERS)}])"
        v = row[col]
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            return f"column {col} holds {v!r}, not {typ.__name__}"
    return ""
PATTERN_PARAMS = {"run_id": "String", "round": "Int"}
_CODE = re.compile(r"^E\d{4}$")

# Strings and comments, so that a `$` or `?[` inside them is not taken for code.
_NOISE = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"|/\*.*?\*/|#[^\n]*", re.S)
_PARAM_USE = re.compile(r"\$([A-Za-z_]\w*)")
_HEAD = re.compile(r"(?m)^\s*\?\[([^\]]*)\]\s*(?::=|<-|<~)")


def kind_of(pid: str, meta: dict) -> str:
    if meta.get("schema_rev") is not None:
        return "schema"
    if pid.startswith("patterns."):
        return "pattern"
    return "write" if meta.get("writes") else "query"


def key_line(text: str, key: str, under: str | None = None) -> int:
    """The front-matter line of `key` (of `under`'s block when given); 1 when not found."""
    inside = under is None
    for n, line in enumerate(text.splitlines()[1:], start=2):
        if line.strip() == "# ---":
            break
        body = line[1:]
        if under is not None and re.match(rf"\s?{re.escape(under)}\s*:", body):
            inside = True
            continue
        if inside and re.match(rf"\s*{re.escape(key)}\s*:", body):
            return n
    return 1


def code_only(text: str) -> str:
    """Strings and comments replaced by spaces, newlines kept (offsets and lines stay)."""
    # (a regex substitution per string and comment made this ~0.1 s of every command's start)
    return _NOISE.sub(lambda m: "\n".join(" " * len(part) for part in m.group(0).split("\n")), text)


def _line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def check_meta(where: str, text: str, pid: str, meta: dict) -> str:
    """The front matter's keys for the program's kind. -> the kind; raises ValueError(msg)."""
    kind = kind_of(pid, meta)
    for key in REQUIRED_KEYS:
        if key not in meta:
            raise ValueError(f"{where}:1: missing front-matter key {key!r} (every program has "
                             f"{', '.join(REQUIRED_KEYS)})")
    allowed = COMMON_KEYS | KIND_KEYS[kind]
    for key in meta:
        if key not in allowed:
            hint = " (a pattern's tier is a column of its rows)" if key == "tier" else ""
            raise ValueError(f"{where}:{key_line(text, key)}: unknown front-matter key {key!r} for a "
                             f"{kind} program{hint} (allowed: {', '.join(sorted(allowed))})")
    if not isinstance(meta["version"], int) or isinstance(meta["version"], bool):
        raise ValueError(f"{where}:{key_line(text, 'version')}: version must be an integer")
    if not isinstance(meta["summary"], str) or not meta["summary"].strip():
        raise ValueError(f"{where}:{key_line(text, 'summary')}: summary must be a non-empty line")
    for key in ("reads", "writes"):
        val = meta[key]
        if not isinstance(val, list) or not all(isinstance(r, str) for r in val):
            raise ValueError(f"{where}:{key_line(text, key)}: {key} must be a list of relation names")
    for key in ("params", "vars"):
        if not isinstance(meta.get(key) or {}, dict):
            raise ValueError(f"{where}:{key_line(text, key)}: {key} must be a mapping of names to specs")
    for name, spec in (meta.get("vars") or {}).items():
        if isinstance(spec, dict) and set(spec) - VAR_KEYS:
            raise ValueError(f"{where}:{key_line(text, str(name), 'vars')}: var {name}: unknown keys "
                             f"{sorted(set(spec) - VAR_KEYS)} (allowed: {', '.join(sorted(VAR_KEYS))})")
    if kind == "schema":
        rev = meta["schema_rev"]
        if not isinstance(rev, int) or isinstance(rev, bool) or rev < 1:
            raise ValueError(f"{where}:{key_line(text, 'schema_rev')}: schema_rev must be a positive integer")
        if pid != f"schema.rev_{rev:03d}":
            raise ValueError(f"{where}:{key_line(text, 'schema_rev')}: schema_rev {rev} belongs in "
                             f"rules/schema/rev_{rev:03d}.cozo")
    if kind == "pattern":
        _check_pattern_meta(where, text, meta)
    return kind


def _check_pattern_meta(where: str, text: str, meta: dict) -> None:
    codes = meta.get("codes")
    if codes is None:
        raise ValueError(f"{where}:1: a pattern needs `codes:` - the rustc codes it answers, or [\"*\"] for all")
    if not isinstance(codes, list) or not codes:
        raise ValueError(f"{where}:{key_line(text, 'codes')}: codes must be a non-empty list of rustc codes (or [\"*\"])")
    for c in codes:
        if not (isinstance(c, str) and (c == "*" or _CODE.match(c))):
            raise ValueError(f"{where}:{key_line(text, 'codes')}: code {c!r} is not a rustc error code like E0308 (or \"*\")")
    if meta["writes"]:
        raise ValueError(f"{where}:{key_line(text, 'writes')}: a pattern only proposes edits: writes must be []")


def check_params(where: str, text: str, pid: str, kind: str, params: dict[str, Any]) -> None:
    """Kind rules on the parsed params (name -> ParamSpec-like: type, required, default)."""
    if kind != "pattern":
        return
    for name, t in PATTERN_PARAMS.items():
        spec = params.get(name)
        if spec is None or spec.type != t:
            raise ValueError(f"{where}:{key_line(text, 'params')}: a pattern declares param {name} ({t}): "
                             f"`pt run fix` passes run_id and round")
    if not params["run_id"].required:
        raise ValueError(f"{where}:{key_line(text, 'run_id', 'params')}: a pattern's run_id must be required")
    for name, spec in params.items():
        if name not in PATTERN_PARAMS and spec.required:
            raise ValueError(f"{where}:{key_line(text, name, 'params')}: a pattern's param {name} must have a "
                             f"default: `pt run fix` passes only run_id and round")


def check_body(where: str, text: str, kind: str, declared: set[str]) -> None:
    """The program text: `$params` declared, a pattern's output heads exact."""
    code = code_only(text)
    for m in _PARAM_USE.finditer(code):
        if m.group(1) not in declared:
            raise ValueError(f"{where}:{_line_at(code, m.start())}: ${m.group(1)} is not a declared param "
                             f"(declared: {', '.join(sorted(declared)) or 'none'})")
    if kind == "pattern":
        check_heads(where, code, PATTERN_HEADERS)


def check_heads(where: str, code: str, headers: list[str]) -> None:
    heads = list(_HEAD.finditer(code))
    if not heads:
        raise ValueError(f"{where}:1: no `?[{', '.join(headers)}]` rule: a pattern's rows are its edits")
    for m in heads:
        cols = [c.strip() for c in m.group(1).split(",")]
        if cols != headers:
            raise ValueError(f"{where}:{_line_at(code, m.start(1))}: a pattern outputs "
                             f"?[{', '.join(headers)}], not ?[{', '.join(cols)}]")


def check_rendered(where: str, text: str, script: str, every: str, kind: str, declared: set[str]) -> None:
    """On the rendered text (includes expanded): every `$param` declared; every declared one used
    in `every` (the program's text and every fragment it may include, whatever its vars)."""
    code = code_only(script)
    used = {m.group(1) for m in _PARAM_USE.finditer(code)}
    missing = sorted(used - declared)
    if missing:
        raise ValueError(f"{where}:1: ${missing[0]} (in an included fragment) is not a declared param")
    used |= {m.group(1) for m in _PARAM_USE.finditer(code_only(every))}
    unused = sorted(declared - used)
    if unused:
        raise ValueError(f"{where}:{key_line(text, unused[0], 'params')}: param {unused[0]} is declared but "
                         f"the program never uses ${unused[0]}")
    if kind == "pattern":
        check_heads(where, code, PATTERN_HEADERS)
