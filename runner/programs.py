"""Rule programs: discovery, front matter, param coercion, Jinja rendering and static checks.

A program is one `.cozo` file. Its id is its path with dots (`rules/retrieval/two_hop.cozo` ->
`retrieval.two_hop`, `patterns/add_use.cozo` -> `patterns.add_use`). Values reach Cozo only as
`$params`; Jinja `vars` shape the text and accept only identifiers, numbers, booleans and lists.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from .errors import UsageError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
PATTERNS_DIR = Path(__file__).resolve().parent.parent / "patterns"

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCALARS = {"String", "Int", "Float", "Bool", "Json", "Any"}
_WRITE_OPS = re.compile(r"(?<![:\w]):(put|replace|rm|insert|update|delete|create)\s+([A-Za-z_]\w*)")
_REMOVE_OP = re.compile(r"::remove\s+([A-Za-z_]\w*)")
_STORED_READ = re.compile(r"\*([A-Za-z_]\w*)\s*[\[{]")
_COMMENTS = re.compile(r"/\*.*?\*/|#[^\n]*", re.S)


def _rules_roots() -> list[Path]:
    """Package data directories (an editable install points at the checkout, a wheel at site-packages)."""
    import importlib.resources as ir

    roots = []
    for pkg, fallback in (("parseltongue.rules", RULES_DIR), ("parseltongue.patterns", PATTERNS_DIR)):
        try:
            roots.append(Path(str(ir.files(pkg))))
        except ModuleNotFoundError:
            roots.append(fallback)
    return roots


@dataclass
class ParamSpec:
    name: str
    type: str = "String"
    required: bool = False
    default: Any = None
    doc: str = ""


@dataclass
class Program:
    id: str
    path: Path
    source: str
    origin: str  # "package" or "local"
    meta: dict
    params: dict[str, ParamSpec] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        return str(self.meta.get("summary", ""))

    @property
    def read_only(self) -> bool:
        return not self.writes

    @property
    def schema_rev(self) -> int | None:
        rev = self.meta.get("schema_rev")
        return int(rev) if rev is not None else None

    @property
    def ordered(self) -> bool:
        """Programs that order their output (`:order`) keep it in golden files; others are sorted."""
        return bool(self.meta.get("ordered")) or ":order" in self.source

    def describe(self) -> dict:
        return {
            "id": self.id,
            "summary": self.summary,
            "version": self.meta.get("version"),
            "origin": self.origin,
            "path": str(self.path),
            "params": {
                p.name: {"type": p.type, "required": p.required, "default": p.default, "doc": p.doc}
                for p in self.params.values()
            },
            "vars": self.vars,
            "reads": self.reads,
            "writes": self.writes,
        }


# ---------------------------------------------------------------- front matter

def parse_front_matter(text: str, where: str) -> dict:
    lines = text.splitlines()
    if not lines or lines[0].strip() != "# ---":
        raise UsageError(f"{where}:1: rule file must start with a '# ---' front-matter block")
    body = []
    for n, line in enumerate(lines[1:], start=2):
        if line.strip() == "# ---":
            break
        if not line.startswith("#"):
            raise UsageError(f"{where}:{n}: front matter lines must start with '#'")
        body.append(line[2:] if line.startswith("# ") else line[1:])
    else:
        raise UsageError(f"{where}: front matter is not closed with '# ---'")
    try:
        meta = yaml.load("\n".join(body), Loader=_YAML_LOADER) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark else 1
        raise UsageError(f"{where}:{line}: bad front matter: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(meta, dict):
        raise UsageError(f"{where}:2: front matter must be a mapping")
    return meta


def _check_type(t: str, where: str) -> str:
    base = t[:-1] if t.endswith("?") else t
    while base.startswith("[") and base.endswith("]"):
        base = base[1:-1]
    if base not in _SCALARS:
        raise UsageError(f"{where}: unknown param type {t!r}")
    return t


_LOADED: dict[tuple, Program] = {}
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_program(path: Path, pid: str, origin: str) -> Program:
    """Parsed once per file version: flows run programs many times a second (`pt watch`)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read rule file: {exc.strerror}") from None
    key = (str(path), pid, origin, st.st_mtime_ns, st.st_size)
    if key not in _LOADED:
        _LOADED[key] = _load_program(path, pid, origin)
    return _LOADED[key]


def _load_program(path: Path, pid: str, origin: str) -> Program:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where}: cannot read rule file: {exc}") from None
    meta = parse_front_matter(text, where)
    if meta.get("id") not in (None, pid):
        raise UsageError(f"{where}: front matter id {meta.get('id')!r} does not match its path ({pid})")
    params = {}
    for name, spec in (meta.get("params") or {}).items():
        spec = spec if isinstance(spec, dict) else {"type": spec}
        unknown = set(spec) - {"type", "required", "default", "doc"}
        if unknown:
            raise UsageError(f"{where}: param {name}: unknown keys {sorted(unknown)}")
        params[name] = ParamSpec(
            name=name,
            type=_check_type(str(spec.get("type", "String")), f"{where}: param {name}"),
            required=bool(spec.get("required", False)),
            default=spec.get("default"),
            doc=str(spec.get("doc", "")),
        )
    vars_ = {}
    for name, spec in (meta.get("vars") or {}).items():
        default = spec.get("default") if isinstance(spec, dict) else spec
        vars_[name] = validate_var(name, default, where)
    reads, writes = meta.get("reads") or [], meta.get("writes") or []
    if not all(isinstance(r, str) for r in reads + writes):
        raise UsageError(f"{where}: reads/writes must be lists of relation names")
    return Program(pid, path, text, origin, meta, params, vars_, list(reads), list(writes))


# ---------------------------------------------------------------- discovery

class Registry:
    """All programs visible from a workspace: packaged ones, shadowed by `.parseltongue/` local ones."""

    def __init__(self, workspace: Path | None = None):
        self.workspace = workspace
        self.local_rules = workspace / ".parseltongue" / "rules" if workspace else None
        self.local_patterns = workspace / ".parseltongue" / "patterns" if workspace else None
        self.rules_root, self.patterns_root = _rules_roots()
        self._programs: dict[str, Program] | None = None

    def _scan(self) -> dict[str, Program]:
        found: dict[str, tuple[Path, str]] = {}
        sources = [(self.rules_root, "", "package"), (self.patterns_root, "patterns.", "package")]
        if self.local_rules:
            sources += [(self.local_rules, "", "local"), (self.local_patterns, "patterns.", "local")]
        for root, prefix, origin in sources:
            if not root or not root.is_dir():
                continue
            for path in sorted(root.rglob("*.cozo")):
                rel = path.relative_to(root).with_suffix("")
                if rel.parts[0] == "lib" or rel.name.startswith("_"):
                    continue  # include fragments, not programs
                found[prefix + ".".join(rel.parts)] = (path, origin)
        return {pid: load_program(path, pid, origin) for pid, (path, origin) in found.items()}

    def all(self) -> dict[str, Program]:
        if self._programs is None:
            self._programs = self._scan()
        return self._programs

    def get(self, name: str) -> Program:
        """Exact id, or a unique suffix (`two_hop` finds `retrieval.two_hop`)."""
        progs = self.all()
        if name in progs:
            return progs[name]
        matches = [pid for pid in progs if pid.endswith("." + name)]
        if len(matches) == 1:
            return progs[matches[0]]
        if matches:
            raise UsageError(f"program name {name!r} is ambiguous: {', '.join(sorted(matches))}")
        raise UsageError(f"no program named {name!r} (see `pt rules ls`)")

    def jinja_env(self) -> jinja2.Environment:
        """One environment per set of include roots: Jinja caches included templates in it
        (and reloads them when their files change)."""
        roots = tuple(str(p) for p in (self.local_rules, self.rules_root) if p and p.is_dir())
        if roots not in _ENVS:
            _ENVS[roots] = jinja2.Environment(
                loader=jinja2.FileSystemLoader(list(roots)),
                undefined=jinja2.StrictUndefined,
                autoescape=False,
                keep_trailing_newline=True,
            )
        return _ENVS[roots]

    def golden_dir(self, prog: Program, golden_root: Path) -> Path:
        return golden_root.joinpath(*prog.id.split("."))


# ---------------------------------------------------------------- params and vars

def validate_var(name: str, value: Any, where: str = "vars") -> Any:
    """Only identifiers, numbers, booleans and lists of these may shape a script."""
    if not _IDENT.match(str(name)):
        raise UsageError(f"{where}: var name {name!r} is not an identifier")

    def ok(v: Any) -> bool:
        if isinstance(v, bool) or isinstance(v, (int, float)):
            return True
        return isinstance(v, str) and bool(_IDENT.match(v))

    if isinstance(value, list):
        if all(ok(v) for v in value):
            return value
    elif ok(value):
        return value
    raise UsageError(f"{where}: var {name} = {value!r} is not an identifier, number, boolean or list of these")


def _coerce_scalar(t: str, value: Any, from_cli: bool, what: str) -> Any:
    if t == "Any" or t == "Json":
        if from_cli and isinstance(value, str) and t == "Json":
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{what}: not valid JSON ({exc.msg})") from None
        return value
    if t == "String":
        if isinstance(value, str):
            return value
    elif t == "Bool":
        if isinstance(value, bool):
            return value
        if from_cli and isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif t == "Int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_cli and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif t == "Float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_cli and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    raise UsageError(f"{what}: expected {t}, got {value!r}")


def coerce(t: str, value: Any, from_cli: bool, what: str) -> Any:
    if t.endswith("?"):
        if value is None:
            return None
        t = t[:-1]
    if t.startswith("["):
        inner = t[1:-1]
        if from_cli and isinstance(value, str):
            s = value.strip()
            if s.startswith("["):
                try:
                    value = json.loads(s)
                except json.JSONDecodeError as exc:
                    raise UsageError(f"{what}: not a valid JSON list ({exc.msg})") from None
            else:
                value = [v.strip() for v in s.split(",")] if s else []
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{what}: expected a list {t}, got {value!r}")
        if not from_cli and inner in ("Any", "Json"):
            # `Any` values pass as they are: no call per value (rows of facts, `[[Any]]`, hold
            # thousands per ingested file: ~9 ms for a 1,000-item file that way).
            return list(value)
        return [coerce(inner, v, from_cli, what) for v in value]
    return _coerce_scalar(t, value, from_cli, what)


def bind_params(prog: Program, given: dict[str, Any], from_cli: bool = False) -> dict[str, Any]:
    unknown = sorted(set(given) - set(prog.params))
    if unknown:
        known = ", ".join(sorted(prog.params)) or "none"
        raise UsageError(f"{prog.id}: unknown param {unknown[0]!r} (known: {known})")
    out = {}
    for name, spec in prog.params.items():
        if name in given:
            out[name] = coerce(spec.type, given[name], from_cli, f"{prog.id}: param {name}")
        elif spec.required:
            raise UsageError(f"{prog.id}: missing required param {name!r} ({spec.type})")
        else:
            out[name] = coerce(spec.type, spec.default, False, f"{prog.id}: default of {name}") \
                if spec.default is not None else None
    return out


def coerce_cli_params(prog: Program, given: dict[str, str]) -> dict[str, Any]:
    """Turn `-p key=value` strings into typed values; unknown names pass through to be reported."""
    return {k: coerce(prog.params[k].type, v, True, f"{prog.id}: param {k}") if k in prog.params else v
            for k, v in given.items()}


def bind_vars(prog: Program, given: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(prog.vars))
    if unknown:
        raise UsageError(f"{prog.id}: unknown var {unknown[0]!r} (known: {', '.join(sorted(prog.vars)) or 'none'})")
    out = dict(prog.vars)
    for name, value in given.items():
        out[name] = validate_var(name, value, f"{prog.id}: var")
    return out


def parse_cli_var(value: str) -> Any:
    """`-v kinds=CALLS,USES` or `-v hops=2` or `-v flag=true`."""
    s = value.strip()
    if s.startswith("["):
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            raise UsageError(f"var value {value!r} is not a valid JSON list") from None
    if "," in s:
        return [parse_cli_var(v) for v in s.split(",") if v.strip()]
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    return s


# ---------------------------------------------------------------- rendering and checks

_ENVS: dict[tuple, jinja2.Environment] = {}
_TEMPLATES: dict[tuple, jinja2.Template] = {}


def render(registry: Registry, prog: Program, vars_: dict[str, Any]) -> str:
    """Compiling a template costs ~10 ms; programs run many times, so compiled ones are kept."""
    env = registry.jinja_env()
    try:
        key = (id(env), prog.path, prog.source)
        if key not in _TEMPLATES:
            _TEMPLATES[key] = env.from_string(prog.source)
        return _TEMPLATES[key].render(**vars_)
    except jinja2.TemplateSyntaxError as exc:
        raise UsageError(f"{exc.filename or prog.path}:{exc.lineno}: template error: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise UsageError(f"{prog.path}: template error: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise UsageError(f"{prog.path}: include not found: {exc.name}") from None


def stored_accesses(script: str) -> tuple[set[str], set[str]]:
    """Stored relations the rendered script reads and writes (ephemeral `_rel` ignored)."""
    text = _COMMENTS.sub("", script)
    reads = {m.group(1) for m in _STORED_READ.finditer(text)}
    writes = {m.group(2) for m in _WRITE_OPS.finditer(text)} | {m.group(1) for m in _REMOVE_OP.finditer(text)}
    return {r for r in reads if not r.startswith("_")}, {w for w in writes if not w.startswith("_")}


def check_access(prog: Program, script: str, relations: set[str]) -> None:
    """Declared reads/writes must exist, and the script must touch nothing undeclared."""
    if prog.schema_rev is not None:
        return  # schema programs create the relations they declare
    for rel in prog.reads + prog.writes:
        if rel not in relations:
            raise UsageError(f"{prog.id}: declares relation {rel!r} that the schema does not have (run `pt init`?)")
    reads, writes = stored_accesses(script)
    undeclared_w = sorted(writes - set(prog.writes))
    if undeclared_w:
        raise UsageError(f"{prog.id}: writes {undeclared_w[0]!r} but its front matter does not declare it in writes")
    undeclared_r = sorted(reads - set(prog.reads) - set(prog.writes))
    if undeclared_r:
        raise UsageError(f"{prog.id}: reads {undeclared_r[0]!r} but its front matter does not declare it in reads")


def line_of(text: str, offset: int) -> int:
    """Cozo reports byte offsets into the script; users want lines."""
    return text.encode("utf-8")[:offset].count(b"\n") + 1
