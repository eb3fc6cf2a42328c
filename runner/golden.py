"""Golden tests of rule programs: `golden/<program path>/<case>.yaml` -> `<case>.expected`.

A case names its inputs; the program runs on a fresh store and its canonical output is compared
with `.expected`. A failure leaves `<case>.actual` beside it; `pt test --update` rewrites expected.

Case keys (all optional):
  params / vars      passed to the program as in `pt query`
  facts              {relation: [ {column: value, ...}, ... ]} loaded before the run
  fixture            a workspace ingested before the run: a path relative to the directory that
                     holds `golden/` (the repo for pt's own cases: `tests/fixtures/ingest_ws`), or
                     `./DIR` beside the case
  dump               relations (`rel` or `rel:col1,col2`) whose contents are appended (for writers)
  schema             true: append every relation's columns (for schema programs)
  setup              [[program, params], ...] run before the program (e.g. a proposal before a flip)

A fix pattern's case names a small crate and a seed file instead of facts:
  fixture + seed     the crate (a path as above: tests/fixtures/NAME, examples/shapes, or ./DIR
                     beside the case, as in a workspace's .parseltongue/golden/) is copied,
                     ingested and checked with the real `cargo check` exactly as `pt run fix`
                     round 0 does (`fix.seed_facts`); the
                     pattern runs on those facts and each candidate - the rows of one (diag, alt) -
                     is shown as a unified diff of the source it would fix.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from ..adapters.store import open_store
from .api import Pt
from .contracts import pattern_row_problem
from .diffs import unified_diff
from .errors import PtError, UsageError
from .fix_text import Tree, apply_edits
from .programs import PACKAGE_ROOT, Program, Registry

GOLDEN_ROOT = PACKAGE_ROOT / "golden"


@dataclass
class Case:
    program: str
    path: Path

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def expected_path(self) -> Path:
        return self.path.with_suffix(".expected")

    @property
    def actual_path(self) -> Path:
        return self.path.with_suffix(".actual")

    @property
    def label(self) -> str:
        return f"{self.program}/{self.name}"


@dataclass
class Outcome:
    case: Case
    ok: bool
    actual: str
    message: str = ""


def discover(root: Path, registry_programs: dict[str, Program], only: str | None = None) -> list[Case]:
    """Cases under `root`; a case belongs to the program whose id matches its directory."""
    cases = []
    for path in sorted(root.rglob("*.yaml")):
        pid = ".".join(path.parent.relative_to(root).parts)
        if pid not in registry_programs:
            raise UsageError(f"{path}: no program {pid!r} for this golden case")
        if only and not (pid == only or pid.startswith(only + ".") or str(path).startswith(only)
                         or pid.endswith("." + only)):
            continue
        cases.append(Case(pid, path))
    return cases


def _canon(value: Any) -> Any:
    if isinstance(value, float):
        r = round(value, 6)
        return 0.0 if r == 0 else r
    if isinstance(value, list):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in sorted(value.items())}
    return value


def _rows_block(headers: list[str], rows: list[list[Any]], ordered: bool) -> list[str]:
    canon = [_canon(r) for r in rows]
    if not ordered:
        canon.sort(key=lambda r: json.dumps(r, sort_keys=True))
    lines = ["headers: " + json.dumps(headers)]
    lines += ["  " + json.dumps(r, sort_keys=True, ensure_ascii=False) for r in canon]
    return lines


def load_facts(pt: Pt, facts: dict[str, list[dict]]) -> None:
    """Rows as dicts; missing columns take the schema default. One transaction per relation."""
    for rel, rows in (facts or {}).items():
        if not rows:
            continue
        cols = sorted({c for r in rows for c in r})
        data = [[r.get(c) for c in cols] for r in rows]
        missing = [i for i, r in enumerate(rows) if set(r) != set(cols)]
        if missing:
            raise UsageError(f"facts for {rel}: every row must name the same columns (row {missing[0]} differs)")
        pt.store.run(f"?[{', '.join(cols)}] <- $rows :put {rel} {{{', '.join(cols)}}}", {"rows": data})


def run_case(case: Case, engine: str = "mem", fixture_loader: Callable | None = None,
             registry: Registry | None = None) -> Outcome:
    """Run one case on a fresh store; `registry` is the program set of the invoking workspace."""
    spec = yaml.safe_load(case.path.read_text(encoding="utf-8")) or {}
    with tempfile.TemporaryDirectory(prefix="pt-golden-") as tmp:
        store = open_store("mem" if engine == "mem" else str(Path(tmp) / "graph.db"))
        ws = Path(tmp) / "ws"
        ws.mkdir()
        pt = Pt(ws, store)
        pt.registry = registry or Registry(None)
        try:
            actual = _execute(pt, case, spec, fixture_loader)
        finally:
            pt.close()
    expected = case.expected_path.read_text(encoding="utf-8") if case.expected_path.exists() else None
    if expected == actual:
        return Outcome(case, True, actual)
    msg = "no .expected file (run `pt test --update`)" if expected is None else "output differs from .expected"
    return Outcome(case, False, actual, msg)


def fixture_path(case: Case, name: str) -> Path:
    """A case's fixture: `./x` beside the case, else relative to the directory holding `golden/`
    (cases name their fixtures, so the runner knows no test layout)."""
    if name.startswith(("./", "../")):
        return (case.path.parent / name).resolve()
    root = next((p.parent for p in case.path.parents if p.name == "golden"), GOLDEN_ROOT.parent)
    return (root / name).resolve()


def _execute(pt: Pt, case: Case, spec: dict, fixture_loader: Callable | None) -> str:
    prog = pt.registry.get(case.program)
    if spec.get("seed"):
        return _pattern_case(pt, case, spec, prog)
    # Schema programs are tested by applying the revisions before them, then themselves.
    for sp in pt.schema_programs():
        if prog.schema_rev is None or sp.schema_rev < prog.schema_rev:
            pt.run(sp.id)
    if spec.get("fixture"):
        if fixture_loader is None:
            raise UsageError(f"{case.path}: fixture cases need the ingest flow")
        fixture_loader(pt, fixture_path(case, spec["fixture"]))
    load_facts(pt, spec.get("facts") or {})
    for step in spec.get("setup") or []:
        pt.run(step[0], step[1] if len(step) > 1 else {})
    out: list[str] = [f"# program: {prog.id}"]
    try:
        res = pt.run(prog.id, spec.get("params") or {}, spec.get("vars") or {})
        out += ["# result"] + _rows_block(res.headers, res.rows, prog.ordered)
    except PtError as exc:
        # Gate failures are part of a program's contract; the message is the output.
        out += [f"# error (exit {exc.exit_code})", _portable(pt, exc.message)]
    for item in spec.get("dump") or []:
        # `relation` or `relation:col1,col2` (leave out columns such as mtimes that vary per checkout)
        rel, _, cols = item.partition(":")
        names = [c.strip() for c in cols.split(",")] if cols else _columns(pt, rel)
        res = pt.store.run(f"?[{', '.join(names)}] := *{rel}{{{', '.join(names)}}}")
        out += [f"# relation {item}"] + _rows_block(res.headers, res.rows, False)
    if spec.get("schema"):
        out.append("# schema")
        for name, cols in sorted(pt.store.relations().items()):
            keys = ", ".join(f"{c}: {t}" for c, t, k in cols if k)
            vals = ", ".join(f"{c}: {t}" for c, t, k in cols if not k)
            out.append(f"  {name} {{{keys} => {vals}}}")
    return "\n".join(out) + "\n"


def _pattern_case(pt: Pt, case: Case, spec: dict, prog: Program) -> str:
    """A pattern on real rustc output: the errors, then each candidate as a before/after diff."""
    from .fix import seed_facts  # the fix flow's own capture: the case sees what `pt run fix` sees

    if prog.kind != "pattern" or not spec.get("fixture"):
        raise UsageError(f"{case.path}: `seed` cases are for patterns and name a `fixture` crate")
    name = str(spec["fixture"])
    src = fixture_path(case, name)
    if not (src / "Cargo.toml").is_file():
        raise UsageError(f"{case.path}: no fixture crate {src}")
    registry = pt.registry
    pt = Pt(_fixture_copy(src), pt.store)  # the same store; a workspace whose mirror stays warm
    pt.registry = registry
    pt.ensure_schema()
    run_id = "golden"
    seed_facts(pt, spec["seed"], run_id)
    params = {"run_id": run_id, "round": 0, **(spec.get("params") or {})}
    at = {"run_id": run_id}
    diags = pt.store.run("?[diag, file_path, line, col, code, message] := *fix_diag{run_id: $run_id, round: 0, "
                         "diag, file_path, line, col, code, message}", at).rows
    out = [f"# program: {prog.id}", f"# crate: {name}, "
           f"seed: {spec['seed']}",
           f"# errors (cargo check): {len(diags)}"]
    out += [f"  [{d}] {f}:{line}:{col} {code}: {msg}" for d, f, line, col, code, msg in sorted(diags)]
    try:
        rows = pt.run(prog.id, params).dicts()
    except PtError as exc:
        return "\n".join(out + [f"# error (exit {exc.exit_code})", _portable(pt, exc.message)]) + "\n"
    bad = next((p for p in map(pattern_row_problem, rows) if p), "")
    if bad:  # as `pt run fix` would skip it
        return "\n".join(out + ["# error: a row breaks the pattern's contract", bad]) + "\n"
    cands: dict[tuple, list] = {}
    for r in rows:
        cands.setdefault((r["diag"], r["alt"]), []).append(r)
    out.append(f"# candidates: {len(cands)}")
    tree = Tree(pt.workspace)  # round 0: the texts the facts were taken from
    for (diag, alt), edits in sorted(cands.items()):
        tiers = sorted({e["tier"] for e in edits})
        notes = sorted({e["note"] for e in edits})
        out.append(f"## diag {diag} alt {alt}, tier {'/'.join(map(str, tiers))}: {'; '.join(notes)}")
        out += edits_diff(tree, edits)
    return "\n".join(out) + "\n"


def _fixture_copy(src: Path) -> Path:
    """A copy of the fixture crate at a path named by its content: cases of the same crate (and
    both engines) share it, so its PreFlight mirror and cargo target dir stay warm (a cold
    `cargo check` costs about twice a warm one). Cases only read it (a program error's compiled
    text may land in its .parseltongue/, which is not part of the content)."""
    skip = ("target", ".parseltongue", "Cargo.lock")
    files = sorted(p for p in src.rglob("*") if p.is_file() and not set(skip) & set(p.relative_to(src).parts))
    h = hashlib.blake2b(digest_size=8)
    for p in files:
        h.update(p.relative_to(src).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    dest = Path(tempfile.gettempdir()) / "pt-golden-crates" / f"{src.name}-{h.hexdigest()}"
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = Path(tempfile.mkdtemp(prefix=f".{src.name}-", dir=dest.parent))
        shutil.copytree(src, part, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*skip))
        try:
            part.rename(dest)
        except OSError:  # another run made it first: the same content
            shutil.rmtree(part, ignore_errors=True)
    return dest


def edits_diff(tree: Tree, edits: list[dict]) -> list[str]:
    """One candidate's edits spliced in as `pt run fix` does (runner/fix_text.py), as the unified
    diff the user would be shown."""
    new = apply_edits(tree, [(e["file_path"], e["start"], e["end"], e["replacement"]) for e in edits])
    if new is None:
        return ["   (no candidate: the edits overlap, fall outside the text or change nothing)"]
    return unified_diff([(f, tree.get(f), text) for f, text in new.items()]).splitlines()


def _portable(pt: Pt, message: str) -> str:
    return message.replace(str(pt.workspace), "<ws>").replace(str(PACKAGE_ROOT), "<pt>")


def _columns(pt: Pt, rel: str) -> list[str]:
    return [c["column"] for c in pt.store.run(f"::columns {rel}").dicts()]


def run_all(cases: list[Case], engine: str, update: bool, fixture_loader: Callable | None = None,
            registry: Registry | None = None) -> list[Outcome]:
    outcomes = []
    for case in cases:
        outcome = run_case(case, engine, fixture_loader, registry)
        if update:
            case.expected_path.write_text(outcome.actual, encoding="utf-8")
            case.actual_path.unlink(missing_ok=True)
            outcome = Outcome(case, True, outcome.actual, "updated")
        elif outcome.ok:
            case.actual_path.unlink(missing_ok=True)
        else:
            case.actual_path.write_text(outcome.actual, encoding="utf-8")
        outcomes.append(outcome)
    return outcomes


def default_fixture_loader() -> Callable | None:
    """Fixture cases ingest the workspace they name into the case's store."""
    try:
        from .ingest import ingest
    except ImportError:
        return None

    def load(pt: Pt, path: Path) -> None:
        if not path.is_dir():
            raise UsageError(f"no fixture workspace {path}")
        ingest(path, pt.store)

    return load
