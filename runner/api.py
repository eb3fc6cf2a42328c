"""The Python API that mirrors the CLI: open a workspace's graph and run named programs.

    from parseltongue.runner.api import Pt
    with Pt.open("path/to/ws") as pt:
        rows = pt.query("two_hop", seeds=["fn:src/lib.rs::main"])

Tests, flows and the agent server all call `Pt.run`, the same code path as `pt query`.
"""
from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ..adapters.fs import rust_files
from ..adapters.store import Result, Store, StoreCorrupt, StoreError, StoreLocked, file_lock, open_store
from . import programs as P
from .errors import Busy, GateFailed, PtError, UsageError

STATE_DIR = ".parseltongue"


def find_workspace(start: str | os.PathLike | None = None, walk: bool = True) -> Path:
    """Walking up from `start`: the first directory holding `.parseltongue/` or a `[workspace]`
    Cargo.toml; failing both, the nearest package (Cargo.toml), else `start` itself. A
    `.parseltongue/` in a directory without a Cargo.toml above a package does not capture it (a
    stray state directory in /tmp or $HOME must not make every crate below one workspace)."""
    base = Path(start or os.getcwd()).resolve()
    if not base.is_dir():
        raise UsageError(f"workspace {base} is not a directory")
    if not walk:  # a root named explicitly (-C, Pt.open(ws)) is the root
        return base
    nearest_package = None
    for d in (base, *base.parents):
        manifest = d / "Cargo.toml"
        if (d / STATE_DIR).is_dir():
            return nearest_package if nearest_package and not manifest.is_file() else d
        if manifest.is_file():
            nearest_package = nearest_package or d
            try:
                if "[workspace]" in manifest.read_text(encoding="utf-8", errors="replace"):
                    return d
            except OSError:
                pass
    return nearest_package or base


def workspace_path(ws: Path, arg: str | os.PathLike, cwd: Path | None = None) -> str:
    """The workspace-relative POSIX path that a PATH argument names ("" for the root itself): the
    one function every command reads paths with. A relative PATH is read from the current
    directory, as the shell completed it; where that names nothing and the same path under the
    root does (`pt -C ws hydrate src/a.rs` run from elsewhere), from the root. A path outside the
    workspace, after `..` and symlinks, is refused (exit 2)."""
    cwd = Path(cwd or os.getcwd())
    p = Path(arg).expanduser()
    if not p.is_absolute():
        here, there = cwd / p, ws / p
        p = there if not here.exists() and (there.exists() or not _inside(here, ws)) else here
    lexical = Path(os.path.normpath(p))
    real = p.resolve()
    if not _inside(real, ws.resolve()):
        raise UsageError(f"{arg} is outside the workspace {ws}")
    rel = lexical.relative_to(ws) if _inside(lexical, ws) else real.relative_to(ws.resolve())
    return "" if rel == Path(".") else rel.as_posix()


def _inside(p: Path, root: Path) -> bool:
    p = Path(os.path.normpath(p))
    return p == root or root in p.parents


def named_files(ws: Path, paths: list[str]) -> tuple[list[str], list[str]]:
    """The files that workspace-relative paths name (a directory: the `.rs` files under it, as
    a full ingest would see them; a missing path: a deleted file), and the directories among them."""
    files, dirs, tree = [], [], None
    for rel in paths:
        if (ws / rel).is_dir():
            tree = tree if tree is not None else rust_files(ws)
            dirs.append(rel)
            files += [f for f in tree if f.startswith(rel + "/") or not rel]
        else:
            files.append(rel)
    return list(dict.fromkeys(files)), dirs


def default_db(workspace: Path) -> str:
    return os.environ.get("PT_DB") or str(workspace / STATE_DIR / "graph.db")


class Pt:
    """A workspace, its program registry and its open store."""

    def __init__(self, workspace: Path, store: Store):
        self.workspace = workspace
        self.store = store
        self.registry = P.Registry(workspace)
        self._relations: set[str] | None = None
        self.missing = ""  # why this is an empty stand-in for a graph that does not exist yet
        # False: a program reading search_text while another process builds it answers from the
        # files indexed so far (`pt query`), and `text_partial` says how far the build is
        self.wait_for_text = True
        self.text_partial: dict | None = None
        # Lends PreFlight's ra stage a running rust-analyzer (adapters.rust_analyzer.SessionSource):
        # Dobby sets its warm worker's; None starts a session per check.
        self.ra_source = None

    @classmethod
    def open(cls, workspace: str | os.PathLike | None = None, db: str | None = None,
             init: bool = True, create: bool = True) -> "Pt":
        """Open a workspace's graph. `create`: make the database (and `.parseltongue/`) when it
        is missing. Read-only commands pass False: they create nothing, and without a graph they
        answer from an empty one in memory (`missing` then says so). `init`: bring a new
        database to the schema and refuse one at another revision."""
        ws = find_workspace(workspace, walk=workspace is None)
        target = db or default_db(ws)
        sqlite = target != "mem"
        new = sqlite and not Path(target).exists()
        if new and not Path(target).parent.is_dir() and Path(target).parent != ws / STATE_DIR:
            raise UsageError(f"database {target}: no such directory {Path(target).parent}")
        if new and not create:
            return cls._empty(ws, f"no graph at {target} yet: run `pt ingest` to build it")
        if new and Path(target).parent == ws / STATE_DIR:
            ensure_state_dir(ws)
        try:
            # Sharing the lock waits for a process that is creating or migrating the database;
            # creating it, this process holds it exclusively from before the file exists.
            with file_lock(target, exclusive=new) if sqlite else nullcontext():
                pt = cls(ws, open_store(target))
                try:
                    if init and not create and pt.current_rev() == 0:
                        pt.close()
                        return cls._empty(ws, f"the graph at {target} is empty: run `pt ingest` to build it")
                    if init:
                        pt.ensure_schema()
                except BaseException:
                    pt.close()
                    raise
        except StoreError as exc:
            raise store_error(exc) from None
        return pt

    @classmethod
    def _empty(cls, ws: Path, why: str) -> "Pt":
        pt = cls(ws, open_store("mem"))
        pt.migrate()
        pt.missing = why
        return pt

    def __enter__(self) -> "Pt":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------ schema

    def schema_programs(self) -> list[P.Program]:
        progs = [p for p in self.registry.all().values() if p.schema_rev is not None]
        return sorted(progs, key=lambda p: p.schema_rev)

    def latest_rev(self) -> int:
        return max((p.schema_rev for p in self.schema_programs()), default=0)

    def current_rev(self) -> int:
        if "pt_meta" not in self.relation_names():
            return 0
        rows = self.store.run("?[v] := *pt_meta{key: 'schema_rev', value: v}", immutable=True).rows
        return int(rows[0][0]) if rows else 0

    def relation_names(self) -> set[str]:
        """Cached: relations change only through schema programs, which clear the cache."""
        if self._relations is None:
            self._relations = {r[0] for r in self.store.run("::relations", immutable=True).rows}
        return self._relations

    def migrate(self) -> list[str]:
        """Apply every schema program newer than the database, each in one transaction, holding
        the database's lock so that no other process opens it half-migrated."""
        with file_lock(self.store.path, exclusive=True) if self.store.path else nullcontext():
            self._relations = None  # another process may have migrated it meanwhile
            current, applied = self.current_rev(), []
            for prog in self.schema_programs():
                if prog.schema_rev > current:
                    self.run(prog.id)
                    applied.append(prog.id)
        return applied

    def ensure_schema(self) -> None:
        """A fresh database is initialised; an older one must be migrated explicitly."""
        current = self.current_rev()
        if current == 0:
            self.migrate()
        elif current < self.latest_rev():
            raise UsageError(f"database schema rev {current} is older than this pt (rev {self.latest_rev()}): "
                             f"run `pt init` to migrate it")
        elif current > self.latest_rev():
            raise UsageError(f"database schema rev {current} is newer than this pt (rev {self.latest_rev()}): "
                             f"upgrade parseltongue")

    # ------------------------------------------------------------ programs

    def compile(self, name: str, vars: dict | None = None) -> tuple[P.Program, str, Path]:
        return compile_program(self.workspace, self.registry, name, vars)

    def run(self, name: str, params: dict | None = None, vars: dict | None = None,
            from_cli: bool = False) -> Result:
        """Run a named program; values only as `$params`, read-only programs immutably."""
        prog = self.registry.get(name)
        bound = P.bind_params(prog, params or {}, from_cli=from_cli)
        if self.missing and not prog.read_only:
            raise UsageError(f"{prog.id} writes to the graph, and there is none: {self.missing}")
        script = P.render(self.registry, prog, P.bind_vars(prog, vars or {}))
        P.check_access(prog, script, self.relation_names())
        if "search_text" in prog.reads and "search_text" not in prog.writes and not prog.id.startswith("ingest."):
            self._ensure_text_index()  # (ingest programs are what builds it)
        script = P.drop_kept_size(prog, script, self.relation_names())
        try:
            return self.store.run(script, bound, immutable=prog.read_only)
        except StoreError as exc:
            raise self._explain(prog, script, vars, exc) from None
        finally:
            if prog.schema_rev is not None:
                self._relations = None

    def _ensure_text_index(self) -> None:
        """A large ingest defers the full-text index (ingest.defer_text_index) and `pt ingest`
        starts its build in the background; the first program that reads search_text waits for
        that build, or builds what is missing (runner/text_index.py, ~0.3 ms a node)."""
        if "search_text" not in self.relation_names():
            return
        from . import text_index

        def notice(msg: str) -> None:
            sys.stderr.write(f"pt: {msg}...\n")
            sys.stderr.flush()

        self.text_partial = text_index.build(self, notice, wait=self.wait_for_text)

    def query(self, program: str, /, **params: Any) -> list[dict]:
        """Rows as dicts; use `run` to pass Jinja vars."""
        return self.run(program, params).dicts()

    def unknown_seeds(self, seeds: list[str]) -> list[str]:
        """The seed ids that name no node of the graph (retrieval.unknown_nodes), for the caller
        to name; a UsageError when none of them is known (the answer would be empty for nothing)."""
        found = {r["id"] for r in self.query("retrieval.unknown_nodes", ids=list(seeds))} if seeds else set()
        unknown = list(dict.fromkeys(s for s in seeds if s in found))  # in the order given
        if unknown and set(unknown) >= set(seeds):
            raise UsageError(f"no node has the id{'s' * (len(unknown) > 1)} {', '.join(unknown)} "
                             f"(ids of a file: `pt query list_nodes_by_file -p file=PATH`; new files: `pt ingest`)")
        return unknown

    def _explain(self, prog: P.Program, script: str, vars: dict | None, exc: StoreError) -> Exception:
        where = str(prog.path)
        if exc.offset is not None:
            _, _, out = self.compile(prog.id, vars)
            where = f"{out}:{P.line_of(script, exc.offset)}"
        if exc.code.startswith("eval::assert_"):
            return GateFailed(f"{prog.id}: gate failed: {exc.message}")
        if isinstance(exc, (StoreLocked, StoreCorrupt)):
            return store_error(exc)
        return UsageError(f"{where}: {prog.id}: {exc.message}")


def compile_program(ws: Path, registry: P.Registry, name: str,
                    vars: dict | None = None) -> tuple[P.Program, str, Path]:
    """Render a program to `.parseltongue/target/compiled/ID.cozo` (Cozo reports byte offsets;
    this is the text they point into). Needs no database."""
    prog = registry.get(name)
    script = P.render(registry, prog, P.bind_vars(prog, vars or {}))
    out = ensure_state_dir(ws) / "target" / "compiled" / f"{prog.id}.cozo"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(script, encoding="utf-8")
    return prog, script, out


def store_error(exc: StoreError, other: type[PtError] = UsageError) -> PtError:
    """A store error as one line and one exit code for every command: busy past the wait
    (Busy, 4), a damaged file (2), anything else as `other`."""
    if isinstance(exc, StoreLocked):
        return Busy(exc.message)
    return UsageError(exc.message) if isinstance(exc, StoreCorrupt) else other(exc.message)


def ensure_state_dir(ws: Path) -> Path:
    """`.parseltongue/`, made with a `.gitignore` of its own: nothing in it belongs in git."""
    state = ws / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    ignore = state / ".gitignore"
    if not ignore.exists():
        try:
            ignore.write_text("*\n", encoding="utf-8")
        except OSError:
            pass  # a read-only state dir still works; git will just list it
    return state
