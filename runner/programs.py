"""Rule programs: discovery, front matter, param coercion, Jinja rendering and static checks.

A program is one `.cozo` file. Its id is its path with dots (`rules/retrieval/two_hop.cozo` ->
`retrieval.two_hop`, `patterns/add_use.cozo` -> `patterns.add_use`). Values reach Cozo only as
`$params`; Jinja `vars` shape the text and accept only identifiers, numbers, booleans and lists.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import yaml

from . import contracts as C
from .errors import UsageError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
PATTERNS_DIR = Path(__file__).resolve().parent.parent / "patterns"

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCALARS = {"String", "Int", "Float", "Bool", "Json", "Any"}
_WRITE_OPS = re.compile(r"(?<![:\w]):(put|replace|rm|insert|update|delete|create)\s+([A-Za-z_]\w*)")
_REMOVE_OP = re.compile(r"::remove\s+([A-Za-z_]\w*)")
_STORED_READ = re.compile(r"[*~]([A-Za-z_]\w*)(?::\w+)?\s*[\[{]")  # `*rel{`, `*rel:index{`, `~rel:fts{`
COMMENTS = re.compile(r"/\*.*?\*/|#[^\n]*", re.S)


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
    enum: list | None = None  # the only values allowed


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
    kind: str = "query"  # schema, pattern, write or query (runner/contracts.py)

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
            "kind": self.kind,
            "params": {
                p.name: {"type": p.type, "required": p.required, "default": p.default, "doc": p.doc,
                         **({"enum": p.enum} if p.enum is not None else {})}
                for p in self.params.values()
            },
            "vars": self.vars,
            "reads": self.reads,
            "writes": self.writes,
            **({"codes": self.meta.get("codes")} if self.kind == "pattern" else {}),
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
        raise UsageError(f"{where}:{C.key_line(text, 'id')}: front matter id {meta.get('id')!r} does not match "
                         f"its path ({pid})")
    try:
        kind = C.check_meta(where, text, pid, meta)
        params = {}
        for name, spec in (meta.get("params") or {}).items():
            try:
                params[name] = _param_spec(name, spec)
            except ValueError as exc:  # the line is looked up only for the message
                raise ValueError(f"{where}:{C.key_line(text, str(name), 'params')}: param {name}: {exc}") from None
        C.check_params(where, text, pid, kind, params)
        C.check_body(where, text, kind, set(params))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    vars_ = {}
    for name, spec in (meta.get("vars") or {}).items():
        default = spec.get("default") if isinstance(spec, dict) else spec
        try:
            vars_[name] = validate_var(name, default)
        except UsageError:  # again, with the line (looked up only for the message)
            validate_var(name, default, f"{where}:{C.key_line(text, str(name), 'vars')}")
    return Program(pid, path, text, origin, meta, params, vars_, list(meta["reads"]), list(meta["writes"]), kind)


def _param_spec(name: str, spec: Any) -> ParamSpec:
    """A declared param: known keys, a known type, a default of that type, enum values of it.
    Errors say what is wrong; the caller adds where."""
    if not _IDENT.match(str(name)):
        raise ValueError("not an identifier")
    spec = spec if isinstance(spec, dict) else {"type": spec}
    unknown = set(spec) - C.PARAM_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(C.PARAM_KEYS))})")
    t = str(spec.get("type", "String"))
    base = t[:-1] if t.endswith("?") else t
    while base.startswith("[") and base.endswith("]"):
        base = base[1:-1]
    if base not in _SCALARS:
        raise ValueError(f"unknown param type {t!r} (scalars: {', '.join(sorted(_SCALARS))}, "
                         f"lists [T], optional T?)")
    enum = spec.get("enum")
    try:
        if enum is not None:
            if not isinstance(enum, list) or not enum or t.startswith("["):
                raise ValueError(f"enum must be a non-empty list of {t} values")
            enum = [coerce(t, v, False, "enum value") for v in enum]
        default = spec.get("default")
        if default is not None:
            default = coerce(t, default, False, "default")
            if enum is not None and default not in enum:
                raise ValueError(f"default {default!r} is not one of its enum values")
    except UsageError as exc:
        raise ValueError(exc.message) from None
    if spec.get("required") and default is not None:
        raise ValueError("a required param has no use for a default")
    return ParamSpec(name=name, type=t, required=bool(spec.get("required", False)), default=default,
                     doc=str(spec.get("doc", "")), enum=enum)


# ---------------------------------------------------------------- discovery

class Registry:
    """All programs visible from a workspace: packaged ones, shadowed by `.parseltongue/` local ones."""

    def __init__(self, workspace: Path | None = None):
        self.workspace = workspace
        self.local_rules = workspace / ".parseltongue" / "rules" if workspace else None
        self.local_patterns = workspace / ".parseltongue" / "patterns" if workspace else None
        self.rules_root, self.patterns_root = _rules_roots()
        self._programs: dict[str, Program] | None = None
        self._problems: dict[str, str] = {}

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
        programs, self._problems = {}, {}
        for pid, (path, origin) in found.items():
            try:
                programs[pid] = load_program(path, pid, origin)
            except UsageError as exc:  # kept by id: a broken local program must not fall back to a packaged one
                self._problems[pid] = exc.message
        return programs

    def all(self) -> dict[str, Program]:
        """The programs that keep their contracts (see `problems` for the others)."""
        if self._programs is None:
            self._programs = self._scan()
        return self._programs

    def problems(self) -> dict[str, str]:
        """id -> `file:line: what is wrong` for every program that breaks its contract."""
        self.all()
        return dict(self._problems)

    def check(self, deep: bool | list[str] = False) -> None:
        """Every program keeps its contract, else UsageError with one `file:line: ...` line each.
        `deep` (True, or the ids of the programs under test) also checks the rendered text (`pt test`)."""
        problems = list(self.problems().values())
        if deep:
            for prog in self.all().values():
                if deep is not True and prog.id not in deep:
                    continue
                try:
                    self._check_text(prog)
                except UsageError as exc:
                    problems.append(exc.message)
                except ValueError as exc:
                    problems.append(str(exc))
        if problems:
            raise UsageError("\n".join(sorted(problems)))

    def _check_text(self, prog: Program) -> None:
        """The rendered program (default vars) and every branch and fragment it may include."""
        script = render(self, prog, dict(prog.vars))
        every = "\n".join([prog.source, *self._fragments(prog)])
        C.check_rendered(str(prog.path), prog.source, script, every, prog.kind, set(prog.params))
        check_access(prog, script, None)
        if prog.schema_rev is None:
            reads, writes = stored_accesses(every)
            dead = [r for r in prog.reads if r not in reads | writes]
            if dead:
                raise ValueError(f"{prog.path}:{C.key_line(prog.source, 'reads')}: reads {dead[0]!r} in its "
                                 f"front matter but never reads it")

    def _fragments(self, prog: Program) -> list[str]:
        """The text of every fragment the program includes, at any depth, whatever its vars."""
        env, seen, todo, out = self.jinja_env(), set(), [prog.source], []
        while todo:
            for name in jinja2.meta.find_referenced_templates(env.parse(todo.pop())):
                if name and name not in seen:
                    seen.add(name)
                    src = env.loader.get_source(env, name)[0]
                    out.append(src)
                    todo.append(src)
        return out

    def get(self, name: str) -> Program:
        """Exact id, or a unique suffix (`two_hop` finds `retrieval.two_hop`). A program that breaks
        its contract is an error when named, and so is any broken rule (not a pattern: `pt run
        fix` skips those with a warning, see `problems`)."""
        progs = self.all()
        known = set(progs) | set(self._problems)
        pid = name if name in known else None
        if pid is None:
            matches = sorted(p for p in known if p.endswith("." + name))
            if len(matches) > 1:
                raise UsageError(f"program name {name!r} is ambiguous: {', '.join(matches)}")
            if not matches:
                raise UsageError(f"no program named {name!r} (see `pt rules ls`)")
            pid = matches[0]
        if pid in self._problems:
            raise UsageError(self._problems[pid])
        broken_rules = sorted(p for p in self._problems if not p.startswith("patterns."))
        if broken_rules:
            raise UsageError(self._problems[broken_rules[0]])
        return progs[pid]

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
            if spec.enum is not None and out[name] not in spec.enum and out[name] is not None:
                raise UsageError(f"{prog.id}: param {name} must be one of {', '.join(map(str, spec.enum))}, "
                                 f"got {out[name]!r}")
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


@functools.lru_cache(maxsize=256)
def stored_accesses(script: str) -> tuple[frozenset[str], frozenset[str]]:
    """Stored relations the rendered script reads and writes (ephemeral `_rel` ignored); kept
    per text, as programs run many times a second (`pt watch`, ingest batches)."""
    text = C.code_only(script)
    reads = {m.group(1) for m in _STORED_READ.finditer(text)}
    writes = {m.group(2) for m in _WRITE_OPS.finditer(text)} | {m.group(1) for m in _REMOVE_OP.finditer(text)}
    return (frozenset(r for r in reads if not r.startswith("_")),
            frozenset(w for w in writes if not w.startswith("_")))


def check_access(prog: Program, script: str, relations: set[str] | None) -> None:
    """Declared reads/writes must exist (unless `relations` is None), and the script must touch
    nothing undeclared."""
    if prog.schema_rev is not None:
        return  # schema programs create the relations they declare
    for rel in prog.reads + prog.writes:
        if relations is not None and rel not in relations:
            raise UsageError(f"{prog.id}: declares relation {rel!r} that the schema does not have (run `pt init`?)")
    reads, writes = stored_accesses(script)
    undeclared_w = sorted(writes - set(prog.writes))
    if undeclared_w:
        raise UsageError(f"{prog.path}:{C.key_line(prog.source, 'writes')}: {prog.id}: writes {undeclared_w[0]!r} but its front matter does not declare it in writes")
    undeclared_r = sorted(reads - set(prog.reads) - set(prog.writes))
    if undeclared_r:
        raise UsageError(f"{prog.path}:{C.key_line(prog.source, 'reads')}: {prog.id}: reads {undeclared_r[0]!r} but its front matter does not declare it in reads")


# What ingest.keep_graph_size counts. A program that writes one of these drops the kept counts in
# its own transaction, so a kept count is never stale (a no-change ingest then need not count).
COUNTED = frozenset({"isg_nodes", "isg_edges"})
_DROP_KEPT_SIZE = "{?[key] <- [['graph_size']] :rm pt_meta {key}}"


def as_block(script: str) -> str:
    """The script as `{ }` blocks, to be chained with others in one script (one transaction).
    Nothing is put before its first line, so Cozo's error offsets keep their line."""
    if COMMENTS.sub("", script).lstrip().startswith("{"):
        return script
    return "{" + script + "\n}"


def drop_kept_size(prog: Program, script: str, relations: set[str]) -> str:
    """`script` (rendered from `prog`) with the kept graph counts dropped first when it writes
    nodes or edges (its result stays the last block's; the first line keeps its number)."""
    if prog.read_only or not COUNTED & set(prog.writes) or "pt_meta" not in relations:
        return script
    return _DROP_KEPT_SIZE + as_block(script)


def line_of(text: str, offset: int) -> int:
    """Cozo reports byte offsets into the script; users want lines."""
    return text.encode("utf-8")[:offset].count(b"\n") + 1
