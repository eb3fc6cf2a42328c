"""The Python API that mirrors the CLI: open a workspace's graph and run named programs.

    from parseltongue.runner.api import Pt
    with Pt.open("path/to/ws") as pt:
        rows = pt.query("two_hop", seeds=["fn:src/lib.rs::main"])

Tests, flows and the agent server all call `Pt.run`, the same code path as `pt query`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..adapters.store import Result, Store, StoreError, StoreLocked, open_store
from . import programs as P
from .errors import GateFailed, UsageError

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


def default_db(workspace: Path) -> str:
    return os.environ.get("PT_DB") or str(workspace / STATE_DIR / "graph.db")


class Pt:
    """A workspace, its program registry and its open store."""

    def __init__(self, workspace: Path, store: Store):
        self.workspace = workspace
        self.store = store
        self.registry = P.Registry(workspace)
        self._relations: set[str] | None = None

    @classmethod
    def open(cls, workspace: str | os.PathLike | None = None, db: str | None = None,
             init: bool = True) -> "Pt":
        ws = find_workspace(workspace, walk=workspace is None)
        target = db or default_db(ws)
        try:
            store = open_store(target)
        except StoreLocked as exc:
            raise UsageError(exc.message) from None
        except StoreError as exc:
            raise UsageError(exc.message) from None
        pt = cls(ws, store)
        if init:
            pt.ensure_schema()
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
        """Apply every schema program newer than the database, each in one transaction."""
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

    def compiled_path(self, prog: P.Program) -> Path:
        return self.workspace / STATE_DIR / "target" / "compiled" / f"{prog.id}.cozo"

    def compile(self, name: str, vars: dict | None = None) -> tuple[P.Program, str, Path]:
        prog = self.registry.get(name)
        script = P.render(self.registry, prog, P.bind_vars(prog, vars or {}))
        out = self.compiled_path(prog)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(script, encoding="utf-8")
        return prog, script, out

    def run(self, name: str, params: dict | None = None, vars: dict | None = None,
            from_cli: bool = False) -> Result:
        """Run a named program; values only as `$params`, read-only programs immutably."""
        prog = self.registry.get(name)
        bound = P.bind_params(prog, params or {}, from_cli=from_cli)
        script = P.render(self.registry, prog, P.bind_vars(prog, vars or {}))
        P.check_access(prog, script, self.relation_names())
        if "search_text" in prog.reads and "search_text" not in prog.writes:
            self._ensure_text_index()
        try:
            return self.store.run(script, bound, immutable=prog.read_only)
        except StoreError as exc:
            raise self._explain(prog, script, vars, exc) from None
        finally:
            if prog.schema_rev is not None:
                self._relations = None

    def _ensure_text_index(self) -> None:
        """A large ingest defers the full-text index (ingest.defer_text_index); the first program
        that reads search_text builds it (ingest.build_text_index, ~0.3 ms a node)."""
        if "search_text" not in self.relation_names():
            return
        if any(r.get("pending") for r in self.run("ingest.text_index_state").dicts()):
            sys.stderr.write("pt: building the full-text index (deferred by the last large ingest)...\n")
            sys.stderr.flush()
            with self.store.bulk():
                self.run("ingest.build_text_index")

    def query(self, program: str, /, **params: Any) -> list[dict]:
        """Rows as dicts; use `run` to pass Jinja vars."""
        return self.run(program, params).dicts()

    def _explain(self, prog: P.Program, script: str, vars: dict | None, exc: StoreError) -> Exception:
        where = str(prog.path)
        if exc.offset is not None:
            _, _, out = self.compile(prog.id, vars)
            where = f"{out}:{P.line_of(script, exc.offset)}"
        if exc.code.startswith("eval::assert_"):
            return GateFailed(f"{prog.id}: gate failed: {exc.message}")
        if isinstance(exc, StoreLocked):
            return UsageError(exc.message)
        return UsageError(f"{where}: {prog.id}: {exc.message}")
